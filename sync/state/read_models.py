"""Read models for the console's screens, computed in the database.

Each function answers one screen's question with a few grouped queries (GROUP BY
over the (local, fecha) / (target, state, fecha) indexes) and returns plain dicts;
none loads a whole table into memory, and none writes. Also here: the display of
our naive-UTC times in Argentina's time, which the console and tests share.

No Streamlit, no HTTP.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import schema
from ..mapping import as_date
from ..messages import ERROR_KIND_LABELS
from ..settings import AR_TZ, Settings, local_today  # noqa: F401  (local_today re-exported)
from .schema import CONFLICT, EXCLUDED, FAILED, INVALID, PENDING, SENDING, SENT

RUN_KIND_LABELS = {"audit": "Auditoría", "resend": "Reenvío", "link": "Vinculación",
                   "reconcile": "Conciliación"}
RUN_STATE_LABELS = {schema.RUNNING: "en curso", schema.DONE: "terminada",
                    schema.INTERRUPTED: "interrumpida", schema.ERROR: "con error"}
# The worker's own runs and the queue's states (sync/worker.py).
RUN_KIND_LABELS.update({"retry": "Reintento automático", "pickup": "Auditado en ventas"})
RUN_STATE_LABELS.update({schema.QUEUED: "en cola", schema.CANCELLED: "cancelada"})
# What "failed" means on the failed-invoices screen (plus pending with an error).
PROBLEM_STATES = (FAILED, INVALID, CONFLICT)
MAX_ROWS = 5000
ABANDONED = ("Interrumpida: la sincronización que la enviaba dejó de responder; se verificará "
             "en Oppen antes de reenviarla")


# --- time ---------------------------------------------------------------------------

def to_local(value: dt.datetime | None) -> dt.datetime | None:
    """A naive-UTC time from our tables as an aware Argentina time."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(AR_TZ)


def fmt_datetime(value: dt.datetime | None) -> str:
    """'24/11/2026 09:15' in Argentina's time; '' for None."""
    local = to_local(value)
    return local.strftime("%d/%m/%Y %H:%M") if local else ""


def fmt_date(value: dt.date | str | None) -> str:
    if value is None:
        return ""
    return as_date(value).strftime("%d/%m/%Y")


def _money(value) -> Decimal:
    return Decimal(0) if value is None else Decimal(str(value))


# --- error kinds ----------------------------------------------------------------------

def kind_label(kind: str | None) -> str:
    """An error kind (schema.ERROR_KINDS) as a person reads it; NULL reads as 'Otro'."""
    return ERROR_KIND_LABELS.get(kind or schema.ERROR_UNKNOWN,
                                 ERROR_KIND_LABELS[schema.ERROR_UNKNOWN])


# --- Auditoría: the locals of one day ---------------------------------------------------

def _sync_counts(conn, settings: Settings, where: Sequence, keys: Sequence) -> dict:
    """{key tuple: {state: (count, amount)}} from oppen_invoices grouped by keys + state."""
    t = schema.oppen_invoices
    out: dict = defaultdict(dict)
    query = (sa.select(*keys, t.c.state, sa.func.count(), sa.func.sum(t.c.monto))
             .where(t.c.target == settings.target, *where)
             .group_by(*keys, t.c.state))
    for row in conn.execute(query):
        key = tuple(as_date(v) if k.name == "fecha" else v for k, v in zip(keys, row[:len(keys)]))
        state, count, amount = row[len(keys):]
        out[key][state] = (count, _money(amount))
    return out


def _split(states: Mapping[str, tuple[int, Decimal]], facturas: int) -> dict:
    """Counts by what a person calls them; 'pendientes' includes never-synced invoices."""
    count = {s: states.get(s, (0, Decimal(0)))[0] for s in schema.STATES}
    registered = sum(count.values())
    return {
        "enviadas": count[SENT],
        "fallidas": count[FAILED],
        "invalidas": count[INVALID],
        "conflictos": count[CONFLICT],
        "pendientes": count[PENDING] + count[SENDING] + max(0, facturas - registered),
        "monto_enviado": states.get(SENT, (0, Decimal(0)))[1],
    }


def day_status(row: Mapping) -> str:
    """One phrase an auditor understands: can this local be audited, and how did it go."""
    if row["auditado"]:
        if row["fallidas"] or row["conflictos"] or row["invalidas"]:
            return "Auditado · con errores de envío"
        if row["pendientes"]:
            return "Auditado · pendiente de envío"
        return "Auditado · enviado a Oppen" if row["facturas"] else "Auditado · sin facturas"
    if not row["cerrado"]:
        return "No cerrado"
    if row["anticipos_pendientes"]:
        return "Anticipos pendientes"
    return "Listo para auditar"


def day_table(engine: Engine, settings: Settings, fecha: dt.date) -> list[dict]:
    """Every local with something on `fecha`: closing, audit, advances, invoices, sync."""
    f, c, la, an = schema.facturas_trns, schema.cierres_locales, schema.locales_auditados, schema.anticipos
    start, end = schema.day_bounds(fecha)
    with schema.reading(engine) as conn:
        facturas = {r.local: (r.n, _money(r.monto)) for r in conn.execute(
            sa.select(f.c.local, sa.func.count().label("n"), sa.func.sum(f.c.monto).label("monto"))
            .where(f.c.fecha >= start, f.c.fecha < end, f.c.estado == "ok")
            .group_by(f.c.local))}
        cierres = {r.local: r.cerrado_en for r in conn.execute(
            sa.select(c.c.local, c.c.cerrado_en).where(c.c.fecha == fecha))}
        audits = {r.local: (r.auditor, r.auditado_en) for r in conn.execute(
            sa.select(la.c.local, la.c.auditor, la.c.auditado_en).where(la.c.fecha == fecha))}
        advances = {r.local: r.n for r in conn.execute(
            sa.select(an.c.local, sa.func.count().label("n"))
            .where(an.c.fecha == fecha, an.c.estado == "pendiente").group_by(an.c.local))}
        sync = _sync_counts(conn, settings, [schema.oppen_invoices.c.fecha == fecha],
                            [schema.oppen_invoices.c.local])
    rows = []
    for local in sorted(set(facturas) | set(cierres) | set(audits) | set(advances)):
        count, amount = facturas.get(local, (0, Decimal(0)))
        auditor, audited_at = audits.get(local, (None, None))
        row = {"local": local, "fecha": fecha, "cerrado": local in cierres,
               "cerrado_en": cierres.get(local), "auditado": local in audits,
               "auditor": auditor, "auditado_en": audited_at,
               "anticipos_pendientes": advances.get(local, 0), "facturas": count,
               "monto": amount, **_split(sync.get((local,), {}), count)}
        row["estado"] = day_status(row)
        rows.append(row)
    return rows


def known_locals(engine: Engine) -> list[str]:
    """Every local the host application knows (from its closings and audits)."""
    c, la = schema.cierres_locales, schema.locales_auditados
    with schema.reading(engine) as conn:
        names = set(conn.execute(sa.select(c.c.local).distinct()).scalars())
        names |= set(conn.execute(sa.select(la.c.local).distinct()).scalars())
    return sorted(names)


# --- Locales auditados ------------------------------------------------------------------

def audited_days(engine: Engine, settings: Settings, desde: dt.date, hasta: dt.date, *,
                 local: str | None = None, limit: int = MAX_ROWS) -> list[dict]:
    """The audited local/days in [desde, hasta], newest first, with their invoices' sync."""
    f, la, t = schema.facturas_trns, schema.locales_auditados, schema.oppen_invoices
    start, _ = schema.day_bounds(desde)
    _, end = schema.day_bounds(hasta)
    with schema.reading(engine) as conn:
        query = (sa.select(la.c.local, la.c.fecha, la.c.auditor, la.c.auditado_en)
                 .where(la.c.fecha >= desde, la.c.fecha <= hasta)
                 .order_by(la.c.fecha.desc(), la.c.local).limit(limit))
        dia = sa.func.date(f.c.fecha, type_=sa.Date).label("dia")
        fw = [f.c.fecha >= start, f.c.fecha < end]
        tw = [t.c.fecha >= desde, t.c.fecha <= hasta]
        if local:
            query = query.where(la.c.local == local)
            fw.append(f.c.local == local)
            tw.append(t.c.local == local)
        fq = (sa.select(f.c.local, dia, sa.func.count().label("n"),
                        sa.func.sum(f.c.monto).label("monto"))
              .where(*fw, id_span(conn, fw), f.c.estado == "ok")
              .group_by(f.c.local, dia))
        audits = conn.execute(query).all()
        facturas = {(r.local, as_date(r.dia)): (r.n, _money(r.monto))
                    for r in conn.execute(fq)}
        # Grouped in the order of ix_oppen_invoices_fecha (target, fecha, local, state,
        # monto): read from the index alone, in order, with no temporary table.
        sync = _sync_counts(conn, settings, tw, [t.c.fecha, t.c.local])
    rows = []
    for a in audits:
        key = (a.local, as_date(a.fecha))
        count, amount = facturas.get(key, (0, Decimal(0)))
        rows.append({"local": a.local, "fecha": key[1], "auditor": a.auditor,
                     "auditado_en": a.auditado_en, "facturas": count, "monto": amount,
                     **_split(sync.get((key[1], key[0]), {}), count)})
    return rows


def id_span(conn, where: Sequence):
    """A condition on facturas_trns.id that every row meeting `where` (conditions on
    fecha and local only) meets: the range of ids those rows have.

    A period of the host's invoices is, nearly always, a run of consecutive ids (they
    are written as they are sold). Through ix_facturas_trns_fecha each of its rows is
    one lookup of the clustered primary key, 75,000 of them for 30 days on MariaDB,
    which then prefers to scan the whole table (over a second, a million rows); a range
    of the primary key reads the same rows in order. The bounds come from the indexes
    alone, and the condition holds for every row the query wants, so the result is the
    same however ids and days relate (at worst the range is the whole table, which was
    the plan anyway)."""
    f = schema.facturas_trns
    if conn.dialect.name == "sqlite":
        # A rowid lookup is cheap there, and the extra range led its planner to a skip
        # scan of ix_facturas_trns_local_fecha that was slower than the plain plan.
        return sa.true()
    low, high = conn.execute(sa.select(sa.func.min(f.c.id), sa.func.max(f.c.id))
                             .where(*where)).one()
    return sa.false() if low is None else f.c.id.between(low, high)


# --- Facturas fallidas ------------------------------------------------------------------

def failed_invoices(engine: Engine, settings: Settings, *, local: str | None = None,
                    desde: dt.date | None = None, hasta: dt.date | None = None,
                    estados: Iterable[str] | None = None, limit: int = MAX_ROWS) -> list[dict]:
    """Invoices that did not reach Oppen and need a person: failed, invalid, conflict,
    and pending ones that carry an error (e.g. authentication failed)."""
    t, a, la = schema.oppen_invoices, schema.oppen_attempts, schema.locales_auditados
    wanted = set(estados) if estados else set(PROBLEM_STATES) | {PENDING}
    hard = [s for s in PROBLEM_STATES if s in wanted]
    if not hard and PENDING not in wanted:
        return []
    with schema.reading(engine) as conn:
        branches = _problem_branches(conn, settings, hard, PENDING in wanted)
        # The page first: the ids of its rows, sorted and limited from the entries of
        # ix_oppen_invoices_state (target, state, fecha, local, reference); then the
        # details, the audit and the last attempt of those rows alone. Sorting whole rows,
        # each with its last attempt looked up, before the LIMIT took seconds on MariaDB
        # with a chain's history. Each branch is sorted and limited on its own, so the one
        # that reads the index alone stays so (a condition on a column outside the index,
        # OR-ed into it, made MariaDB read every row of every state).
        selects = []
        for condition in branches:
            branch = sa.select(t.c.id, t.c.fecha, t.c.local, t.c.reference).where(
                t.c.target == settings.target, condition)
            if local:
                branch = branch.where(t.c.local == local)
            if desde:
                branch = branch.where(t.c.fecha >= desde)
            if hasta:
                branch = branch.where(t.c.fecha <= hasta)
            selects.append(branch.order_by(*_page_order(t.c)).limit(limit))
        if len(selects) == 1:
            page = selects[0].subquery()
        else:
            both = sa.union_all(*(sa.select(x.subquery().c) for x in selects)).subquery()
            page = sa.select(both).order_by(*_page_order(both.c)).limit(limit).subquery()
        # Per row of the page only, from ix_oppen_attempts_invoice alone.
        last_attempt = (sa.select(sa.func.max(a.c.at)).where(a.c.oppen_invoice_id == page.c.id)
                        .scalar_subquery())
        query = (sa.select(t.c.id, t.c.factura_id, t.c.reference, t.c.local, t.c.fecha,
                           t.c.tipo, t.c.monto, t.c.state, t.c.last_error, t.c.last_http_status,
                           t.c.attempts, t.c.needs_lookup, t.c.updated_at, t.c.error_kind,
                           last_attempt.label("ultimo_intento"), la.c.id.label("audit_id"))
                 .select_from(page.join(t, t.c.id == page.c.id)
                              .outerjoin(la, sa.and_(la.c.local == t.c.local,
                                                     la.c.fecha == t.c.fecha)))
                 .order_by(*_page_order(page.c)))
        rows = conn.execute(query).all()
    # Unpacked rather than read by attribute: five times cheaper on a page of 5,000.
    return [{
        "id": id_, "factura_id": factura_id, "referencia": reference, "local": row_local,
        "fecha": as_date(fecha), "tipo": tipo, "monto": monto,
        # An abandoned claim reads as what it is for a person: pending, to verify.
        "estado": PENDING if state == SENDING else state,
        "error": last_error or (ABANDONED if state == SENDING else
                                "Todavía no se intentó: la sincronización se interrumpió"),
        "http_status": http_status, "intentos": attempts, "ultimo_intento": last,
        "actualizado": updated_at, "tipo_error": kind_label(error_kind),
        "duplicada": error_kind == schema.ERROR_DUPLICATE and state == FAILED,
        "auditado": audit_id is not None,
        "requiere_verificacion": bool(needs_lookup),
    } for (id_, factura_id, reference, row_local, fecha, tipo, monto, state, last_error,
           http_status, attempts, needs_lookup, updated_at, error_kind, last, audit_id) in rows]


def _page_order(c) -> tuple:
    """Facturas fallidas' order: newest day first, then local and reference."""
    return c.fecha.desc(), c.local, c.reference, c.id


def _problem_branches(conn, settings: Settings, hard: Sequence[str], pending: bool) -> list:
    """The conditions on oppen_invoices whose union is the problem rows: the `hard`
    states, and when `pending`, the pending and abandoned rows a person has to resend.

    Pending with a reason, or left behind by a run that died (never attempted, or
    claimed and abandoned): all of them need someone to resend. Pending rows of a
    local/day whose run is alive right now are that run's business, not a problem."""
    t, L = schema.oppen_invoices, schema.oppen_run_locks
    if not pending:
        return [t.c.state.in_(hard)]
    now = schema.db_now(conn)   # leases are on the database's clock, not this host's
    # The live locks are a handful of rows, read first: the pending rows of every other
    # local/day are then a plain range of the index, and only the few of a day being run
    # right now are read for their last_error. The locals compare in SQL as before,
    # under the column's collation.
    live = conn.execute(sa.select(L.c.local, L.c.fecha).where(
        L.c.target == settings.target, L.c.lease_until >= now)).all()
    plain = t.c.state.in_([*hard, PENDING])
    # A claim whose lease ran out: its run died while sending it.
    abandoned = sa.and_(t.c.state == SENDING, t.c.claim_until < now)
    if not live:
        return [plain, abandoned]
    running = sa.or_(*(sa.and_(t.c.local == x.local, t.c.fecha == x.fecha) for x in live))
    return [sa.and_(plain, sa.not_(sa.and_(t.c.state == PENDING, running))), abandoned,
            sa.and_(t.c.state == PENDING, running, t.c.last_error.is_not(None))]


# --- Conciliación ---------------------------------------------------------------------------

def _latest_reconciliations(settings: Settings, desde: dt.date, hasta: dt.date,
                            local: str | None = None):
    """The id of the last reconciliation of each local/day in [desde, hasta] (one index
    range: ix_oppen_reconciliations_day)."""
    r = schema.oppen_reconciliations
    query = (sa.select(sa.func.max(r.c.id).label("id"))
             .where(r.c.target == settings.target, r.c.fecha >= desde, r.c.fecha <= hasta)
             .group_by(r.c.fecha, r.c.local))
    if local:
        query = query.where(r.c.local == local)
    return query.subquery()


def last_reconciliations(engine: Engine, settings: Settings, desde: dt.date, hasta: dt.date,
                         *, local: str | None = None, limit: int = MAX_ROWS) -> list[dict]:
    """Every audited local/day in [desde, hasta] with its last reconciliation against
    Oppen, newest day first; a day never reconciled has `conciliado_en` None. Read from
    what was stored: Oppen is not asked."""
    r, la = schema.oppen_reconciliations, schema.locales_auditados
    latest = _latest_reconciliations(settings, desde, hasta, local)
    audits = (sa.select(la.c.local, la.c.fecha)
              .where(la.c.fecha >= desde, la.c.fecha <= hasta))
    if local:
        audits = audits.where(la.c.local == local)
    with schema.reading(engine) as conn:
        done = conn.execute(sa.select(r).join(latest, r.c.id == latest.c.id)).all()
        audited = conn.execute(audits).all()
    rows: dict[tuple[str, dt.date], dict] = {}
    for x in done:
        detail = json.loads(x.detail_json) if x.detail_json else {}
        rows[(x.local, as_date(x.fecha))] = {
            "id": x.id, "run_id": x.run_id, "local": x.local, "fecha": as_date(x.fecha),
            "conciliado_en": x.reconciled_at, "desde": as_date(x.desde),
            "hasta": as_date(x.hasta), "excluido": bool(x.excluded),
            "cuadra": None if x.squares is None else bool(x.squares),
            "facturas": x.facturas, "monto": _money(x.monto),
            "oppen_facturas": x.oppen_facturas, "oppen_total": _money(x.oppen_total),
            "diferencia": _money(x.oppen_total) - _money(x.monto), "faltan": x.missing,
            "sobran": x.extra, "difieren": x.different, "anuladas": x.annulled,
            "corregidas": x.corrected, "detalle": detail}
    for a in audited:
        key = (a.local, as_date(a.fecha))
        rows.setdefault(key, {
            "id": None, "run_id": None, "local": a.local, "fecha": key[1],
            "conciliado_en": None, "desde": None, "hasta": None, "excluido": False,
            "cuadra": None, "facturas": None, "monto": None, "oppen_facturas": None,
            "oppen_total": None, "diferencia": None, "faltan": None, "sobran": None,
            "difieren": None, "anuladas": None, "corregidas": None, "detalle": {}})
    return sorted(rows.values(), key=lambda d: (-d["fecha"].toordinal(), d["local"]))[:limit]


def reconciliation_by_day(engine: Engine, settings: Settings, desde: dt.date, hasta: dt.date
                          ) -> list[dict]:
    """Per day, the last reconciliation of each of its locals: how many were compared,
    how many square and how many do not, and when the latest of them ran."""
    r = schema.oppen_reconciliations
    latest = _latest_reconciliations(settings, desde, hasta)
    compared = r.c.excluded == sa.false()
    query = (sa.select(r.c.fecha,
                       sa.func.sum(sa.case((compared, 1), else_=0)).label("locales"),
                       sa.func.sum(sa.case((sa.and_(compared, r.c.squares == sa.true()), 1),
                                           else_=0)).label("cuadran"),
                       sa.func.sum(sa.case((sa.and_(compared, r.c.squares == sa.false()), 1),
                                           else_=0)).label("no_cuadran"),
                       sa.func.sum(sa.case((r.c.excluded == sa.true(), 1),
                                           else_=0)).label("excluidos"),
                       sa.func.max(r.c.reconciled_at).label("conciliado_en"))
             .join(latest, r.c.id == latest.c.id)
             .group_by(r.c.fecha).order_by(r.c.fecha.desc()))
    with schema.reading(engine) as conn:
        return [{"fecha": as_date(x.fecha), "locales": int(x.locales or 0),
                 "cuadran": int(x.cuadran or 0), "no_cuadran": int(x.no_cuadran or 0),
                 "excluidos": int(x.excluidos or 0), "conciliado_en": x.conciliado_en}
                for x in conn.execute(query)]


# --- Monitoreo ---------------------------------------------------------------------------

def daily_stats(engine: Engine, settings: Settings, desde: dt.date, hasta: dt.date) -> list[dict]:
    """Per invoice day: sent, failed (incl. conflicts), invalid, pending, success rate."""
    t = schema.oppen_invoices
    with schema.reading(engine) as conn:
        by_day = _sync_counts(conn, settings, [t.c.fecha >= desde, t.c.fecha <= hasta],
                              [t.c.fecha])
    rows = []
    for (fecha,), states in sorted(by_day.items()):
        count = {s: states.get(s, (0, 0))[0] for s in schema.STATES}
        total = sum(count.values()) - count[EXCLUDED]   # the success rate's whole
        rows.append({"fecha": fecha, "enviadas": count[SENT],
                     "fallidas": count[FAILED] + count[CONFLICT], "invalidas": count[INVALID],
                     "pendientes": count[PENDING] + count[SENDING], "total": total,
                     "tasa_exito": round(100.0 * count[SENT] / total, 1) if total else None})
    return rows


def state_totals(engine: Engine, settings: Settings, desde: dt.date, hasta: dt.date) -> dict:
    """The invoices of a period by state, as Monitoreo's cards show them, and the success
    rate's whole: every invoice but the excluded ones (enviadas / (todas menos excluidas))."""
    t = schema.oppen_invoices
    with schema.reading(engine) as conn:
        states = _sync_counts(conn, settings, [t.c.fecha >= desde, t.c.fecha <= hasta], [])
    count = {s: states.get((), {}).get(s, (0, 0))[0] for s in schema.STATES}
    return {"enviadas": count[SENT], "pendientes": count[PENDING] + count[SENDING],
            "fallidas": count[FAILED], "invalidas": count[INVALID],
            "conflictos": count[CONFLICT], "excluidas": count[EXCLUDED],
            "base": sum(count.values()) - count[EXCLUDED]}


def errors_by_kind(engine: Engine, settings: Settings, desde: dt.date, hasta: dt.date
                   ) -> list[dict]:
    """How many unsent invoices carry each kind of error, most frequent first."""
    t = schema.oppen_invoices
    # error_kind is set exactly when last_error is, so this reads only the rows with an
    # error, through ix_oppen_invoices_error_kind (target, error_kind, fecha).
    query = (sa.select(t.c.error_kind, sa.func.count().label("n"))
             .where(t.c.target == settings.target, t.c.error_kind.is_not(None),
                    t.c.fecha >= desde, t.c.fecha <= hasta, t.c.state != SENT)
             .group_by(t.c.error_kind))
    totals: dict[str, int] = defaultdict(int)
    with schema.reading(engine) as conn:
        for r in conn.execute(query):
            totals[kind_label(r.error_kind)] += r.n
    return [{"tipo_error": k, "cantidad": n}
            for k, n in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]


def run_seconds(r: Mapping, end: dt.datetime | None) -> float | None:
    """How long a run took (or has taken, up to `end`): as the run measured itself once
    it finished (to the millisecond), else from its timestamps (whole seconds)."""
    if r["finished_at"] is not None and r.get("duration_ms") is not None:
        return r["duration_ms"] / 1000
    return (end - r["started_at"]).total_seconds() if end else None


def _run_dict(r: Mapping) -> dict:
    finished = r["finished_at"]
    duration = run_seconds(r, finished)
    return {"id": r["id"], "tipo": RUN_KIND_LABELS.get(r["kind"], r["kind"]), "kind": r["kind"],
            "usuario": r["username"], "inicio": r["started_at"], "fin": finished,
            "duracion_s": duration, "local": r["local"],
            "fecha": as_date(r["fecha"]) if r["fecha"] else None, "state": r["state"],
            "estado": RUN_STATE_LABELS.get(r["state"], r["state"]), "total": r["total"],
            "procesadas": r["processed"], "exitosas": r["exitosas"], "fallidas": r["fallidas"],
            "actual": r["current_ref"], "mensaje": r["message"], "motivo": r["reason"],
            "heartbeat_at": r["heartbeat_at"], "result_json": r["result_json"]}


def run_history(engine: Engine, settings: Settings, *, limit: int = 200,
                kind: str | None = None) -> list[dict]:
    """The latest runs (audits, resends, links) for this target, newest first."""
    r = schema.oppen_runs
    query = sa.select(r).where(r.c.target == settings.target)
    if kind:
        query = query.where(r.c.kind == kind)
    query = query.order_by(r.c.started_at.desc(), r.c.id.desc()).limit(limit)
    with schema.reading(engine) as conn:
        return [_run_dict(row._mapping) for row in conn.execute(query)]


# --- runs in progress -------------------------------------------------------------------

def run_row(engine: Engine, run_id: int) -> dict | None:
    r = schema.oppen_runs
    with schema.reading(engine) as conn:
        row = conn.execute(sa.select(r).where(r.c.id == run_id)).first()
    return _run_dict(row._mapping) if row else None


def live_runs(engine: Engine, settings: Settings, *, kind: str | None = None,
              local: str | None = None, fecha: dt.date | None = None,
              now: dt.datetime | None = None) -> list[dict]:
    """Runs still going for this target: state 'running' with a heartbeat within the
    lease (a run whose process died stops counting once its lease is over)."""
    r = schema.oppen_runs
    # The heartbeat is written on the database's clock: judge it on that clock too, so
    # a host whose clock runs ahead never calls a live run interrupted.
    now = now or _db_now(engine)
    since = now - dt.timedelta(seconds=settings.lease_seconds)
    query = (sa.select(r).where(r.c.target == settings.target, r.c.state == schema.RUNNING,
                                r.c.heartbeat_at >= since)
             .order_by(r.c.id))
    if kind:
        query = query.where(r.c.kind == kind)
    if local:
        query = query.where(r.c.local == local)
    if fecha:
        query = query.where(r.c.fecha == fecha)
    with schema.reading(engine) as conn:
        return [_run_dict(row._mapping) for row in conn.execute(query)]


def running_run(engine: Engine, settings: Settings, local: str, fecha: dt.date) -> dict | None:
    """The live run of this local/day, if there is one."""
    runs = live_runs(engine, settings, local=local, fecha=fecha)
    return runs[-1] if runs else None


def _db_now(engine: Engine) -> dt.datetime:
    with schema.reading(engine) as conn:
        return schema.db_now(conn)

