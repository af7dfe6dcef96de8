"""One run, as an admin reads it afterwards: its outcome in words, who, when, why, how
long; each invoice it touched with what happened to it in that run; each invoice's
attempts in order (POST, lookup, link) with the request and the answer, secrets
redacted; and, in plain words, whether the invoice may already be in Oppen.

Also the run history with its filters, and attempt counts per invoice that agree with
the timeline (a POST and two lookups are "1 envío · 2 consultas", never "Intentos 1").
Read only; no Streamlit, no HTTP.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..mapping import as_date
from ..settings import Settings
from . import read_models, schema

# What a run came to, as a person says it.
OUTCOMES = {
    "queued": "en cola", "running": "en curso", "complete": "completa", "partial": "parcial",
    "failed": "fallida", "stopped": "detenida por Oppen caído", "interrupted": "interrumpida",
    "cancelled": "cancelada",
}
KIND_LABELS = {"audit": "Auditoría", "resend": "Reenvío", "link": "Vinculación",
               "reconcile": "Conciliación"}
ATTEMPT_KINDS = {"post": "POST", "lookup": "consulta", "link": "vínculo"}
ATTEMPT_OUTCOMES = {
    "sent": "aceptada", "unverified": "respuesta sin la factura", "duplicate": "duplicada",
    "rejected": "rechazada", "unknown": "sin respuesta clara", "refused": "no llegó a Oppen",
    "auth": "credenciales rechazadas", "found": "encontrada en Oppen",
    "not_found": "no está en Oppen", "conflict": "conflicto", "linked": "vinculada",
}
# The breaker's reason (oppen/retry.py) starts this way.
BREAKER = "Oppen no responde"
REDACTED = "***"
_SECRET_KEYS = re.compile(r"pass|token|secret|authorization|api[_-]?key|cookie", re.I)
MAX_HISTORY = 500


def _now_ok(row: Mapping, now: dt.datetime, lease_seconds: float) -> bool:
    beat = row.get("heartbeat_at") or row.get("started_at")
    return beat is not None and now - beat <= dt.timedelta(seconds=lease_seconds)


def _summary(row: Mapping) -> dict:
    try:
        return json.loads(row["result_json"]) if row.get("result_json") else {}
    except ValueError:
        return {}


def outcome(row: Mapping, *, now: dt.datetime, lease_seconds: float) -> str:
    """A key of OUTCOMES for a run row (`oppen_runs` columns)."""
    state = row["state"]
    if state == "queued":
        return "queued"
    if state == schema.RUNNING:
        return "running" if _now_ok(row, now, lease_seconds) else "interrupted"
    if state == "cancelled":
        return "cancelled"
    if state == schema.INTERRUPTED:
        return "interrupted"
    summary = _summary(row)
    message = " ".join(filter(None, (row.get("message"), summary.get("message"))))
    if BREAKER in message:
        return "stopped"
    if state != schema.DONE:
        return "failed"
    total = summary.get("total", row.get("total") or 0)
    sent = summary.get("exitosas", row.get("exitosas") or 0)
    if total == 0 or sent == total:
        return "complete"
    return "failed" if sent == 0 else "partial"


def _run(row: Mapping, now: dt.datetime, lease_seconds: float) -> dict:
    finished = row["finished_at"]
    end = finished or (now if row["state"] == schema.RUNNING else row.get("heartbeat_at"))
    key = outcome(row, now=now, lease_seconds=lease_seconds)
    summary = _summary(row)
    return {
        "id": row["id"], "kind": row["kind"], "tipo": KIND_LABELS.get(row["kind"], row["kind"]),
        "usuario": row["username"], "motivo": row["reason"], "local": row["local"],
        "fecha": as_date(row["fecha"]) if row["fecha"] else None,
        "inicio": row["started_at"], "fin": finished,
        "duracion_s": read_models.run_seconds(row, end),
        "resultado_clave": key, "resultado": OUTCOMES[key],
        "total": row["total"] or 0, "exitosas": row["exitosas"] or 0,
        "fallidas": row["fallidas"] or 0, "mensaje": row["message"],
        "errores": summary.get("errores") or [], "resumen": summary,
    }


def runs(engine: Engine, settings: Settings, *, local: str | None = None,
         user: str | None = None, kind: str | None = None, outcomes: Iterable[str] = (),
         desde: dt.date | None = None, hasta: dt.date | None = None,
         limit: int = MAX_HISTORY, now: dt.datetime | None = None) -> list[dict]:
    """The run history of this target, newest first, filtered by local, user, kind,
    outcome (keys of OUTCOMES) and start day."""
    r = schema.oppen_runs
    query = sa.select(r).where(r.c.target == settings.target)
    if local:
        query = query.where(r.c.local == local)
    if user:
        query = query.where(r.c.username == user)
    if kind:
        query = query.where(r.c.kind == kind)
    if desde:
        query = query.where(r.c.started_at >= dt.datetime.combine(desde, dt.time()) - dt.timedelta(hours=3))
    if hasta:
        query = query.where(r.c.started_at < dt.datetime.combine(hasta, dt.time()) + dt.timedelta(days=1, hours=3))
    wanted = set(outcomes)
    # Outcomes are judged in Python (from the summary): read more rows when filtering.
    query = query.order_by(r.c.started_at.desc(), r.c.id.desc()).limit(limit * (5 if wanted else 1))
    with schema.reading(engine) as conn:
        now = now or schema.db_now(conn)
        rows = [_run(row._mapping, now, settings.lease_seconds) for row in conn.execute(query)]
    if wanted:
        rows = [x for x in rows if x["resultado_clave"] in wanted]
    return rows[:limit]


def run_users(engine: Engine, settings: Settings) -> list[str]:
    r = schema.oppen_runs
    with schema.reading(engine) as conn:
        return sorted(u for u in conn.execute(sa.select(r.c.username).distinct().where(
            r.c.target == settings.target, r.c.username.is_not(None))).scalars())


def redact(value, secrets: Iterable[str | None] = ()):
    """A JSON value with every field that looks like a credential blanked, and every
    configured secret blanked wherever it appears in text."""
    if isinstance(value, Mapping):
        return {k: (REDACTED if _SECRET_KEYS.search(str(k)) else redact(v, secrets))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret and len(secret) >= 4:
                value = value.replace(secret, REDACTED)
    return value


def pretty(text: str | None, secrets: Iterable[str | None] = ()) -> str:
    """A stored body pretty-printed as JSON (or as it is, when it is not JSON), redacted."""
    if not text:
        return ""
    try:
        return json.dumps(redact(json.loads(text), secrets), ensure_ascii=False, indent=2)
    except ValueError:
        return redact(text, secrets)


def _secrets(settings: Settings) -> tuple[str | None, ...]:
    return (settings.password,)


def may_be_in_oppen(invoice: Mapping, attempts: list[Mapping]) -> str:
    """Whether this invoice may already be in Oppen, in plain words."""
    if invoice["state"] == schema.SENT:
        sernr = f" (SerNr {invoice['sernr']})" if invoice.get("sernr") else ""
        return f"Está en Oppen{sernr}: no se vuelve a enviar."
    if invoice["state"] == schema.CONFLICT:
        return ("Oppen tiene una factura con este número pero con otros datos: revisala en "
                "Oppen antes de hacer nada; no se envía sola.")
    if invoice.get("needs_lookup"):
        return ("Puede que ya esté en Oppen: un envío no tuvo una respuesta clara. Antes de "
                "cualquier nuevo envío se la busca en Oppen por su número, así que no se duplica.")
    last = attempts[-1] if attempts else None
    if last is None:
        return "No se intentó enviar en esta corrida: no está en Oppen por esta corrida."
    if last["outcome"] in ("rejected", "refused", "auth", "not_found"):
        return "No está en Oppen: " + ("Oppen la rechazó." if last["outcome"] == "rejected" else
                                       "el último intento no llegó a Oppen." if last["outcome"] != "not_found"
                                       else "la consulta no la encontró.")
    if last["outcome"] == "duplicate":
        return ("Oppen ya tiene una factura con este número (duplicada): compará los datos en "
                "Facturas fallidas antes de reenviar.")
    return "No está en Oppen."


def attempt_counts(engine: Engine, state_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """{state id: {"post": n, "lookup": n, "link": n}}: what each invoice's timeline holds."""
    a = schema.oppen_attempts
    out: dict[int, dict[str, int]] = defaultdict(lambda: {"post": 0, "lookup": 0, "link": 0})
    ids = list(state_ids)
    with schema.reading(engine) as conn:
        for part in schema.chunks(ids):
            for row in conn.execute(sa.select(a.c.oppen_invoice_id, a.c.kind, sa.func.count())
                                    .where(a.c.oppen_invoice_id.in_(part))
                                    .group_by(a.c.oppen_invoice_id, a.c.kind)):
                out[row[0]][row[1]] = row[2]
    return {i: dict(out[i]) for i in ids}


def counts_text(counts: Mapping[str, int]) -> str:
    """'1 envío · 2 consultas' (what the timeline shows)."""
    parts = []
    for key, one, many in (("post", "envío", "envíos"), ("lookup", "consulta", "consultas"),
                           ("link", "vínculo", "vínculos")):
        n = counts.get(key, 0)
        if n:
            parts.append(f"{n} {one if n == 1 else many}")
    return " · ".join(parts) or "ninguno"


def runs_of_day(engine: Engine, settings: Settings, local: str, fecha: dt.date) -> list[dict]:
    """The runs that touched a local/day (its audit, resends of it, links), newest first."""
    a, t, r = schema.oppen_attempts, schema.oppen_invoices, schema.oppen_runs
    with schema.reading(engine) as conn:
        ids = set(conn.execute(sa.select(r.c.id).where(
            r.c.target == settings.target, r.c.local == local, r.c.fecha == fecha)).scalars())
        ids |= set(conn.execute(sa.select(a.c.run_id).distinct().join(
            t, t.c.id == a.c.oppen_invoice_id).where(
            t.c.target == settings.target, t.c.local == local, t.c.fecha == fecha,
            a.c.run_id.is_not(None))).scalars())
        now = schema.db_now(conn)
        rows = conn.execute(sa.select(r).where(r.c.id.in_(ids or {-1}))
                            .order_by(r.c.started_at.desc(), r.c.id.desc())).all()
    return [_run(x._mapping, now, settings.lease_seconds) for x in rows]


def runs_of_invoice(engine: Engine, state_id: int) -> list[int]:
    a = schema.oppen_attempts
    with schema.reading(engine) as conn:
        return sorted({x for x in conn.execute(sa.select(a.c.run_id).distinct().where(
            a.c.oppen_invoice_id == state_id, a.c.run_id.is_not(None))).scalars()}, reverse=True)


_A, _T = schema.oppen_attempts, schema.oppen_invoices
DETAIL_ATTEMPT_COLUMNS = (_A.c.id, _A.c.oppen_invoice_id, _A.c.kind, _A.c.at, _A.c.outcome,
                          _A.c.http_status, _A.c.duration_ms, _A.c.error, _A.c.response_body)
DETAIL_INVOICE_COLUMNS = (_T.c.id, _T.c.factura_id, _T.c.reference, _T.c.official_sernr,
                          _T.c.local, _T.c.fecha, _T.c.monto, _T.c.state, _T.c.sernr,
                          _T.c.needs_lookup, _T.c.request_body)


def detail(engine: Engine, settings: Settings, run_id: int) -> dict | None:
    """Everything about one run, or None when it does not exist for this target."""
    r, a, t = schema.oppen_runs, schema.oppen_attempts, schema.oppen_invoices
    with schema.reading(engine) as conn:
        row = conn.execute(sa.select(r).where(r.c.id == run_id,
                                              r.c.target == settings.target)).first()
        if row is None:
            return None
        now = schema.db_now(conn)
        # Only the columns shown: a resend of thousands of invoices reads as many rows,
        # and on MariaDB the driver's decoding of every column was most of the time.
        attempts = conn.execute(sa.select(*DETAIL_ATTEMPT_COLUMNS).where(a.c.run_id == run_id)
                                .order_by(a.c.at, a.c.id)).all()
        ids = sorted({x.oppen_invoice_id for x in attempts})
        invoices = {}
        for part in schema.chunks(ids):
            for inv in conn.execute(sa.select(*DETAIL_INVOICE_COLUMNS).where(t.c.id.in_(part))):
                invoices[inv.id] = inv._mapping
    run = _run(row._mapping, now, settings.lease_seconds)
    secrets = _secrets(settings)
    timeline: dict[int, list[dict]] = defaultdict(list)
    for x in attempts:
        inv = invoices.get(x.oppen_invoice_id) or {}
        if x.kind == "post":
            request = pretty(inv.get("request_body"), secrets)
        elif x.kind == "lookup":
            request = (f"GET /genericapi/{settings.api}/Invoice?OfficialSerNr="
                       f"{inv.get('official_sernr') or ''}")
        else:
            request = ""
        timeline[x.oppen_invoice_id].append({
            "at": x.at, "kind": x.kind, "tipo": ATTEMPT_KINDS.get(x.kind, x.kind),
            "outcome": x.outcome, "resultado": ATTEMPT_OUTCOMES.get(x.outcome, x.outcome),
            "http_status": x.http_status, "duracion_ms": x.duration_ms, "error": x.error,
            "request": request, "response": pretty(x.response_body, secrets)})
    items = []
    for state_id in ids:
        inv = invoices.get(state_id)
        if inv is None:
            continue
        steps = timeline[state_id]
        counts = {"post": 0, "lookup": 0, "link": 0}
        for step in steps:
            counts[step["kind"]] = counts.get(step["kind"], 0) + 1
        last = steps[-1] if steps else None
        items.append({
            "id": state_id, "factura_id": inv["factura_id"], "referencia": inv["reference"],
            "local": inv["local"], "fecha": as_date(inv["fecha"]), "monto": inv["monto"],
            "state": inv["state"], "sernr": inv["sernr"], "needs_lookup": bool(inv["needs_lookup"]),
            "en_esta_corrida": last["resultado"] if last else "",
            "intentos": counts, "intentos_texto": counts_text(counts),
            "ultimo_error": last["error"] if last else None,
            "http_status": last["http_status"] if last else None,
            "puede_estar": may_be_in_oppen(inv, steps), "timeline": steps})
    seen = {i["referencia"] for i in items}
    not_tried = [{"referencia": e.get("factura"), "error": e.get("error")}
                 for e in run["errores"] if e.get("factura") not in seen]
    return {**run, "facturas": items, "sin_intentos": not_tried}
