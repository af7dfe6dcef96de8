"""What people do, as plain functions: mark audited, sync, resend, preview, status, link.

The console and the CLI call these; each takes an engine and the settings, does one
job and returns plain dicts and lists (the seed's keys and messages where the seed has
them). A flow walks down from here: action → exporter → binder, mapping, Oppen client.
No Streamlit, no printing.

Marking audited commits the audit row before anything talks to Oppen, and nothing that
happens with Oppen ever undoes it ("el local SIGUE auditado").
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from . import messages
from .errors import AuditRefused, NotFound, OppenError, RunInProgress, SyncError
from .exporter import Progress, RunRequest, run
from .oppen.retry import Policy
from .mapping import Mapped, differences, parse_day, pick_ours, voucher_identity
from .oppen.client import OppenClient
from .settings import Settings, local_today
from .state import binder, queue, schema
from .state.schema import CONFLICT, FAILED, INVALID, PENDING, SENDING, SENT, oppen_invoices
from .wiring import open_client

logger = logging.getLogger(__name__)

def local_exists(engine: Engine, local: str) -> bool:
    with engine.connect() as conn:
        for table in (schema.cierres_locales, schema.facturas_trns, schema.locales_auditados):
            if conn.execute(sa.select(sa.literal(1)).select_from(table)
                            .where(table.c.local == local).limit(1)).first():
                return True
    return False


def require_local(engine: Engine, local: str) -> None:
    if not local_exists(engine, local):
        raise NotFound(f"El local {local} no existe (no tiene cierres ni facturas cargadas)")


def is_audited(engine: Engine, local: str, fecha: dt.date) -> bool:
    t = schema.locales_auditados
    with engine.connect() as conn:
        return conn.execute(sa.select(t.c.id).where(t.c.local == local, t.c.fecha == fecha)
                            ).first() is not None


def check_auditable(engine: Engine, local: str, fecha: dt.date) -> None:
    """The seed's three validations, in its order; raises AuditRefused with the reason."""
    require_local(engine, local)
    day = fecha.isoformat()
    with engine.connect() as conn:
        closed = conn.execute(sa.select(schema.cierres_locales.c.local).where(
            schema.cierres_locales.c.local == local, schema.cierres_locales.c.fecha == fecha)).first()
        if closed is None:
            raise AuditRefused(f"El local {local} no está cerrado para {day}: "
                               "no se puede marcar como auditado")
        t = schema.locales_auditados
        if conn.execute(sa.select(t.c.id).where(t.c.local == local, t.c.fecha == fecha)).first():
            raise AuditRefused(f"El local {local} ya está auditado para {day}")
        a = schema.anticipos
        pending = conn.execute(sa.select(sa.func.count()).select_from(a).where(
            a.c.local == local, a.c.fecha == fecha, a.c.estado == "pendiente")).scalar()
        if pending:
            raise AuditRefused(f"El local {local} tiene {pending} anticipo(s) pendiente(s) para "
                               f"{day}: no se puede marcar como auditado")


def insert_audit(engine: Engine, local: str, fecha: dt.date, user: str) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(schema.locales_auditados).values(
                local=local, fecha=fecha, auditor=user, auditado_en=schema.utcnow()))
    except IntegrityError:
        # Someone else marked it between the check and the insert.
        raise AuditRefused(f"El local {local} ya está auditado para {fecha.isoformat()}") from None


def mark_audited(engine: Engine, settings: Settings, local: str, fecha: dt.date, user: str, *,
                 client=None, progress=None, policy=None, today=None, on_start=None) -> dict:
    """Validate, commit the audit, then sync; returns the seed's response dict.

    A refusal returns {"success": False, "msg": ...} and writes nothing.
    """
    try:
        check_auditable(engine, local, fecha)
        insert_audit(engine, local, fecha, user)
    except SyncError as exc:
        return {"success": False, "msg": exc.message}
    head = messages.audited(local, fecha)
    logger.info("%s por %s", head, user)
    try:
        # The seed's guard: an installation without the Oppen module still audits.
        importlib.import_module(".exporter", __package__)
    except ImportError:
        logger.exception("Módulo de sincronización con Oppen no disponible")
        return {"success": True, "msg": f"{head} (sincronización con Oppen no disponible)"}
    try:
        summary = sync_facturas_to_oppen(engine, settings, local, fecha, client=client, user=user,
                                         progress=progress, policy=policy, today=today,
                                         on_start=on_start)
    except RunInProgress as exc:
        return {"success": True, "msg": f"{head}\n⚠️ {exc.message}", "oppen_error": exc.message}
    except (OppenError, SyncError) as exc:
        logger.error("❌ Error sincronizando con Oppen: %s", exc.message)
        return {"success": True, "msg": f"{head}\n⚠️ Error sincronizando con Oppen: {exc.message}",
                "oppen_error": exc.message}
    except Exception:
        # The audit is committed whatever broke (the database, a bug): say so, and
        # say that what was not sent can be resent.
        logger.exception("❌ Error inesperado sincronizando %s %s", local, fecha)
        message = ("Error inesperado durante la sincronización (detalle en el log); las "
                   "facturas que no llegaron a Oppen se pueden reenviar")
        return {"success": True, "msg": f"{head}\n⚠️ Error sincronizando con Oppen: {message}",
                "oppen_error": message}
    response = {"success": True, "msg": messages.sync(head, summary),
                "oppen_sync": messages.public_summary(summary)}
    return response

def parse_fecha(value) -> dt.date:
    """A day typed by a person (AAAA-MM-DD), or a SyncError saying what is wrong."""
    day = parse_day(value)
    if day is None or (isinstance(value, str) and len(value.strip()) != 10):
        raise SyncError(f"Fecha inválida: {str(value)[:40]!r} (se espera AAAA-MM-DD, "
                        "p. ej. 2025-01-05)")
    if not 1990 <= day.year <= 2099:
        raise SyncError(f"Fecha fuera de rango: {day.isoformat()} (entre 1990 y 2099)")
    return day


def clean_local(value) -> str:
    local = str(value or "").strip()
    if not local:
        raise SyncError("Falta el nombre del local")
    if len(local) > 100:
        raise SyncError("El nombre del local es demasiado largo (máximo 100 caracteres)")
    return local


def _client_or_default(settings: Settings, client: OppenClient | None) -> tuple[OppenClient, bool]:
    if client is not None:
        return client, False
    return open_client(settings), True


def _run(engine: Engine, settings: Settings, request: RunRequest, *,
         client: OppenClient | None, **options) -> dict:
    """Run a request to its end, with the caller's client or one of its own (closed after)."""
    client, owned = _client_or_default(settings, client)
    try:
        return run(engine, settings, client, request, **options)
    finally:
        if owned:
            client.close()


def sync_facturas_to_oppen(engine: Engine, settings: Settings, local: str, fecha: dt.date, *,
                           client: OppenClient | None = None, user: str | None = None,
                           progress: Progress | None = None, policy: Policy | None = None,
                           today: dt.date | None = None, kind: str = "audit",
                           reason: str | None = None,
                           on_start: Callable[[int], None] | None = None) -> dict:
    """The seed's main function: every unsent invoice of a local/day to Oppen.

    Returns the seed's summary dict. Raises RunInProgress, or the OppenError of a
    failed authentication (every invoice then stays pending with that reason).
    """
    try:
        with schema.reading(engine) as conn:
            facturas = binder.read_facturas(conn, local, fecha)
    except sa.exc.SQLAlchemyError as exc:
        logger.error("❌ Error obteniendo facturas de BD: %s", type(exc).__name__)
        raise SyncError("Error obteniendo las facturas de la base de datos (detalle en el log)") from None
    request = RunRequest(kind=kind, groups={(local, fecha): facturas}, user=user, reason=reason,
                         local=local, fecha=fecha)
    return _run(engine, settings, request, client=client, progress=progress, policy=policy,
                today=today, on_start=on_start)


def resendable(engine: Engine, settings: Settings, *, local: str | None = None,
               fecha: dt.date | None = None) -> list[tuple[str, dt.date]]:
    """The audited local/days with something not in Oppen: unsent, or never registered
    (audited while Oppen was unreachable, or before this target was configured)."""
    t, a, f = oppen_invoices, schema.locales_auditados, schema.facturas_trns
    audited_filter = []
    if local:
        audited_filter.append(a.c.local == local)
    if fecha:
        audited_filter.append(a.c.fecha == fecha)
    unsent = (sa.select(a.c.local, a.c.fecha).distinct()
              .select_from(a.join(t, sa.and_(t.c.local == a.c.local, t.c.fecha == a.c.fecha)))
              .where(t.c.target == settings.target,
                     t.c.state.in_((PENDING, FAILED, INVALID, SENDING)), *audited_filter))
    # DATE(fecha) is not index-friendly, but this is an admin's occasional sweep.
    unregistered = (sa.select(a.c.local, a.c.fecha).distinct()
                    .select_from(a.join(f, sa.and_(f.c.local == a.c.local,
                                                   sa.func.date(f.c.fecha) == a.c.fecha,
                                                   f.c.estado == "ok"))
                                 .outerjoin(t, sa.and_(t.c.target == settings.target,
                                                       t.c.factura_id == f.c.id)))
                    .where(t.c.id.is_(None), *audited_filter))
    with schema.reading(engine) as conn:
        days = {(r.local, r.fecha) for r in conn.execute(unsent)}
        days |= {(r.local, r.fecha) for r in conn.execute(unregistered)}
    return sorted(days)


def resend(engine: Engine, settings: Settings, *, user: str, local: str | None = None,
           fecha: dt.date | None = None, invoice_ids: Iterable[int] | None = None,
           reason: str | None = None, client: OppenClient | None = None,
           progress: Progress | None = None, policy: Policy | None = None,
           today: dt.date | None = None, on_start: Callable[[int], None] | None = None) -> dict:
    """Send again what is not in Oppen: chosen invoices, a local/day, or everything.

    Only audited days are ever sent. Sent invoices are never resent; one whose last
    attempt had an unknown outcome is looked up first.
    """
    request = resend_request(engine, settings, user=user, local=local, fecha=fecha,
                             invoice_ids=invoice_ids, reason=reason)
    if request is None:
        return {"total": 0, "exitosas": 0, "fallidas": 0, "errores": [], "success": True,
                "message": "No hay facturas para reenviar"}
    return _run(engine, settings, request, client=client, progress=progress, policy=policy,
                today=today, on_start=on_start)


def resend_request(engine: Engine, settings: Settings, *, user: str, local: str | None = None,
                   fecha: dt.date | None = None, invoice_ids: Iterable[int] | None = None,
                   reason: str | None = None) -> RunRequest | None:
    """What a resend would send, checked (audited days only, rows that exist and are
    'ok'), or None when there is nothing to resend. Raises the refusal."""
    if invoice_ids is not None:
        ids = sorted({int(i) for i in invoice_ids})
        if any(not 0 < i < 2 ** 63 for i in ids):
            raise SyncError("Número de factura inválido: debe ser un id de facturas_trns")
        if not ids:
            raise SyncError("No se eligió ninguna factura para reenviar")
        with schema.reading(engine) as conn:
            rows = binder.read_facturas_by_id(conn, ids)
        missing = set(ids) - {r["id"] for r in rows}
        if missing:
            raise NotFound("No existe la factura " + ", ".join(str(i) for i in sorted(missing)))
        groups: dict[tuple[str, dt.date], list[Mapping]] = {}
        for row in rows:
            if row["estado"] != "ok":
                raise SyncError(f"La factura {row['id']} no está en estado 'ok' "
                                f"(estado {row['estado']!r}); no se envía")
            groups.setdefault((row["local"], row["fecha"].date()), []).append(row)
        for (day_local, day) in groups:
            if not is_audited(engine, day_local, day):
                raise AuditRefused(f"El local {day_local} no está auditado para "
                                   f"{day.isoformat()}; no se envían sus facturas")
        only = set(ids)
        days = list(groups)
    else:
        if local is not None and fecha is not None:
            require_local(engine, local)
            if not is_audited(engine, local, fecha):
                raise AuditRefused(f"El local {local} no está auditado para {fecha.isoformat()}; "
                                   "primero hay que marcarlo auditado")
            days = [(local, fecha)]
        else:
            days = resendable(engine, settings, local=local, fecha=fecha)
        only = None
        groups = {}
        with schema.reading(engine) as conn:
            for day_local, day in days:
                groups[(day_local, day)] = binder.read_facturas(conn, day_local, day)
    if not groups:
        return None
    first_local, first_day = days[0] if len(days) == 1 else (None, None)
    return RunRequest(kind="resend", groups=groups, user=user, reason=reason, only_ids=only,
                      local=first_local, fecha=first_day)


# --- asking a worker (sync/worker.py) instead of sending here ------------------------------

def request_audit(engine: Engine, settings: Settings, local: str, fecha: dt.date,
                  user: str) -> dict:
    """Validate, then commit the audit and queue its sync for a worker in one
    transaction (so an audit is never left without its sync, and nothing else picks the
    day up meanwhile). Returns {"success", "msg", "run_id"}; a refusal writes nothing."""
    try:
        check_auditable(engine, local, fecha)
        with engine.begin() as conn:
            conn.execute(sa.insert(schema.locales_auditados).values(
                local=local, fecha=fecha, auditor=user, auditado_en=schema.utcnow()))
            run_id = queue.enqueue(conn, target=settings.target, kind="audit",
                                   days=[(local, fecha)], username=user)
    except IntegrityError:
        return {"success": False,
                "msg": f"El local {local} ya está auditado para {fecha.isoformat()}"}
    except SyncError as exc:
        return {"success": False, "msg": exc.message}
    head = messages.audited(local, fecha)
    logger.info("%s por %s (sincronización %s en cola)", head, user, run_id)
    return {"success": True, "msg": head, "run_id": run_id}


def request_resend(engine: Engine, settings: Settings, *, user: str, local: str | None = None,
                   fecha: dt.date | None = None, invoice_ids: Iterable[int] | None = None,
                   reason: str | None = None) -> int | None:
    """Check a resend as `resend` does and queue it for a worker; returns its run id, or
    None when there is nothing to resend. Raises the refusal."""
    request = resend_request(engine, settings, user=user, local=local, fecha=fecha,
                             invoice_ids=invoice_ids, reason=reason)
    if request is None:
        return None
    with engine.begin() as conn:
        return queue.enqueue(conn, target=settings.target, kind="resend",
                             days=list(request.groups), username=user, reason=reason,
                             invoice_ids=request.only_ids)


def preview(engine: Engine, settings: Settings, local: str, fecha: dt.date, *,
            today: dt.date | None = None) -> dict:
    """The exact payloads a sync would send now; nothing is written or sent."""
    today = today or local_today()
    profile = binder.run_profile(engine, settings.mapping)
    with schema.reading(engine) as conn:
        facturas = binder.read_facturas(conn, local, fecha)
        known = _known_states(conn, settings.target, [f["id"] for f in facturas])
    items, total_valid, count_valid = [], 0, 0
    for factura in facturas:
        state_row = known.get(factura["id"])
        mapped = binder.map_factura(factura, profile, today,
                                   state_row.id if state_row else None,
                                   state_row.client_sernr if state_row else None)
        entry = {"factura_id": factura["id"], "tipo": factura["tipo"],
                 "punto_venta": factura["punto_venta"], "nro_factura": factura["nro_factura"],
                 "monto": factura["monto"], "reference": mapped.reference,
                 "state": state_row.state if state_row else None}
        if isinstance(mapped, Mapped):
            payload = mapped.payload   # a dict of its own, made for this call
            if settings.mapping.sernr_mode == "client" and state_row is None:
                payload["SerNr"] = None  # allocated when the invoice is first registered
            # Already in Oppen, or waiting for an admin: a sync would not send it.
            to_send = state_row is None or state_row.state not in (SENT, CONFLICT)
            entry.update(valid=True, payload=payload, problems=[], to_send=to_send)
            if to_send:
                total_valid += mapped.amount
                count_valid += 1
        else:
            entry.update(valid=False, payload=None, to_send=False,
                         problems=[{"field": p.field, "reason": p.reason} for p in mapped.problems])
        items.append(entry)
    return {"local": local, "fecha": fecha.isoformat(), "target": settings.target,
            "items": items, "total": len(items), "validas": count_valid,
            "invalidas": sum(1 for i in items if not i["valid"]),
            "ya_enviadas": sum(1 for i in items if i["valid"] and not i["to_send"]),
            "monto_valido": total_valid}


# A day's ids spread over at most this many times their number (plus a margin) are
# read as one range: a local's invoices of a day are written as they are sold, close
# together, and one range of uq_oppen_invoices_target_factura was 7 ms on MariaDB where
# 10,000 ids in IN lists of CHUNK took 160 ms. Sparser ids would read too many others.
_DENSE = 4
_DENSE_MARGIN = 1000


def _known_states(conn, target: str, ids: Sequence[int]) -> dict[int, sa.Row]:
    """factura_id -> (id, state, sernr, client_sernr) of those invoices that have a state row."""
    t = oppen_invoices
    columns = (t.c.factura_id, t.c.id, t.c.state, t.c.sernr, t.c.client_sernr)
    if not ids:
        return {}
    low, high = min(ids), max(ids)
    if high - low < _DENSE * len(ids) + _DENSE_MARGIN:
        wanted = set(ids)
        rows = conn.execute(sa.select(*columns).where(t.c.target == target,
                                                      t.c.factura_id.between(low, high)))
        return {r.factura_id: r for r in rows if r.factura_id in wanted}
    known = {}
    for part in schema.chunks(list(ids)):
        for r in conn.execute(sa.select(*columns).where(t.c.target == target,
                                                        t.c.factura_id.in_(part))):
            known[r.factura_id] = r
    return known


def status(engine: Engine, settings: Settings, local: str | None = None,
           fecha: dt.date | None = None, *, states: Sequence[str] | None = None,
           limit: int | None = None) -> list[dict]:
    """Each invoice with its reference, state, attempts, last error and SerNr.

    For one local/day, invoices never registered (the day was not synced yet) are
    listed as pending too, so nothing is missing from the picture.
    """
    t = oppen_invoices
    query = sa.select(t).where(t.c.target == settings.target)
    if local:
        query = query.where(t.c.local == local)
    if fecha:
        query = query.where(t.c.fecha == fecha)
    if states:
        query = query.where(t.c.state.in_(states))
    query = query.order_by(t.c.fecha, t.c.local, t.c.reference, t.c.id)
    if limit:
        query = query.limit(limit)
    with schema.reading(engine) as conn:
        rows = [_status_row(r._mapping) for r in conn.execute(query)]
        if local and fecha and not states:
            seen = {r["factura_id"] for r in rows}
            for f in binder.read_facturas(conn, local, fecha):
                if f["id"] not in seen:
                    ref = binder.map_factura(f, settings.mapping, local_today(), None).reference
                    rows.append({"factura_id": f["id"], "local": f["local"],
                                 "fecha": fecha.isoformat(), "tipo": f["tipo"],
                                 "referencia": ref,
                                 "monto": f["monto"], "estado": PENDING, "intentos": 0,
                                 "ultimo_error": "Todavía no se sincronizó", "http_status": None,
                                 "sernr": None, "total_oppen": None, "actualizado": None,
                                 "id": None,
                                 "requiere_verificacion": False})
    return rows


def _status_row(r: Mapping) -> dict:
    return {"id": r["id"], "factura_id": r["factura_id"], "local": r["local"],
            "fecha": r["fecha"].isoformat(), "tipo": r["tipo"], "referencia": r["reference"],
            "monto": r["monto"], "estado": r["state"], "intentos": r["attempts"],
            "ultimo_error": r["last_error"], "http_status": r["last_http_status"],
            "sernr": r["sernr"], "total_oppen": r["total_oppen"], "actualizado": r["updated_at"],
            "requiere_verificacion": bool(r["needs_lookup"])}


def day_accounting(engine: Engine, settings: Settings, local: str, fecha: dt.date) -> dict:
    """sent + failed + invalid + pending + conflict = total, for one local/day."""
    t = oppen_invoices
    start, end = schema.day_bounds(fecha)
    f = schema.facturas_trns
    with schema.reading(engine) as conn:
        counts = {s: 0 for s in (SENT, FAILED, INVALID, PENDING, CONFLICT)}
        for r in conn.execute(sa.select(t.c.state, sa.func.count()).where(
                t.c.target == settings.target, t.c.local == local, t.c.fecha == fecha)
                .group_by(t.c.state)):
            key = PENDING if r[0] == SENDING else r[0]
            counts[key] = counts.get(key, 0) + r[1]
        total = conn.execute(sa.select(sa.func.count()).select_from(f).where(
            f.c.local == local, f.c.fecha >= start, f.c.fecha < end, f.c.estado == "ok")).scalar()
    counts[PENDING] += total - sum(counts.values())  # never registered: still to send
    counts["total"] = total
    return counts


def compare_with_oppen(engine: Engine, settings: Settings, state_id: int, *,
                       client: OppenClient | None = None, today: dt.date | None = None) -> dict:
    """For a duplicate: what Oppen holds under this number, next to what we would send.

    `remote` is the record that is ours by voucher identity (not annulled), or None;
    `others` are the other records under the number (another voucher type, annulled);
    `linked_to` names our own row already sent as that record, if any."""
    row, factura = _state_and_factura(engine, state_id)
    profile = binder.run_profile(engine, settings.mapping)
    mapped = binder.map_factura(factura, profile, today or local_today(), row["id"],
                                row["client_sernr"])
    if not isinstance(mapped, Mapped):
        raise SyncError(f"La factura {row['reference']} tiene datos inválidos: "
                        f"{getattr(mapped, 'reason', '')}")
    client, owned = _client_or_default(settings, client)
    try:
        found = client.find_invoices(mapped.official_sernr)
    finally:
        if owned:
            client.close()
    remote, others = pick_ours(mapped.payload, found)
    return {"reference": row["reference"], "payload": mapped.payload, "remote": remote,
            "others": others, "linked_to": _linked_row(engine, settings, state_id, mapped),
            "differences": (differences(mapped.payload, remote, gross=mapped.amount,
                                        ignore=("SerNr",)) if remote else None)}


def _linked_row(engine: Engine, settings: Settings, state_id: int, mapped: Mapped) -> dict | None:
    """Another of our rows already sent as this invoice (same number and voucher type):
    Oppen's record is that row's, so this one cannot be linked to it."""
    t, f = oppen_invoices, schema.facturas_trns
    with schema.reading(engine) as conn:
        rows = conn.execute(
            sa.select(t.c.factura_id, t.c.tipo, t.c.reference, t.c.local, t.c.fecha,
                      t.c.request_body)
            .where(t.c.target == settings.target, t.c.official_sernr == mapped.official_sernr,
                   t.c.state == SENT, t.c.id != state_id)).all()
    for r in rows:
        try:
            theirs = json.loads(r.request_body) if r.request_body else {}
        except ValueError:
            theirs = {}
        if voucher_identity(theirs) == voucher_identity(mapped.payload) or not theirs:
            return {"factura_id": r.factura_id, "tipo": r.tipo, "referencia": r.reference,
                    "local": r.local, "fecha": r.fecha.isoformat()}
    return None


def link_duplicate(engine: Engine, settings: Settings, state_id: int, *, user: str,
                   reason: str, client: OppenClient | None = None,
                   today: dt.date | None = None) -> dict:
    """Mark a failed duplicate as sent, as the invoice Oppen already holds.

    Only when Oppen's record matches ours field by field; otherwise nothing changes
    and the differences are returned.
    """
    if not reason or not reason.strip():
        raise SyncError("Indicá un motivo para vincular la factura")
    comparison = compare_with_oppen(engine, settings, state_id, client=client, today=today)
    number = comparison["payload"]["OfficialSerNr"]
    twin = comparison["linked_to"]
    if twin is not None:
        # Two rows of the sales system with one number: Oppen's invoice is already the
        # other row's. Linking this one too would count one invoice twice.
        raise SyncError(f"No se puede vincular: la factura {number} de Oppen ya corresponde a "
                        f"otra fila del sistema de ventas (id {twin['factura_id']}, "
                        f"{twin['referencia']}, {twin['local']}, {twin['fecha']}); esta fila "
                        "está duplicada allí y hay que corregirla en el origen")
    remote = comparison["remote"]
    if remote is None:
        raise SyncError(f"Oppen no tiene ninguna factura {comparison['payload']['OfficialSerNr']}: "
                        "no hay nada que vincular; reenviala")
    if comparison["differences"]:
        return {"linked": False, **comparison}
    t = oppen_invoices
    now = schema.utcnow()
    with engine.begin() as conn:
        changed = conn.execute(sa.update(t).where(
            t.c.id == state_id, t.c.state.in_((FAILED, CONFLICT, PENDING))).values(
            state=SENT, sernr=int(remote.get("SerNr")) if remote.get("SerNr") else None,
            needs_lookup=False, last_error=None, error_kind=None, last_http_status=None,
            response_body=json.dumps(remote, ensure_ascii=False, default=str),
            updated_at=now, sent_at=now)).rowcount
        if not changed:
            raise SyncError("La factura ya no está fallida (otra persona la resolvió)")
        run_id = conn.execute(sa.insert(schema.oppen_runs).values(
            target=settings.target, kind="link", username=user, reason=reason.strip(),
            owner=schema.new_owner(), state=schema.DONE, started_at=now, finished_at=now, total=1,
            processed=1, exitosas=1, fallidas=0,
            message=f"{comparison['reference']} vinculada a SerNr {remote.get('SerNr')}")
        ).inserted_primary_key[0]
        conn.execute(sa.insert(schema.oppen_attempts).values(
            oppen_invoice_id=state_id, run_id=run_id, kind="link", at=now, duration_ms=0,
            http_status=200, outcome="linked", error=None,
            response_body=json.dumps(remote, ensure_ascii=False, default=str)[:4000]))
    return {"linked": True, **comparison}


def reassign_sernr(engine: Engine, settings: Settings, state_id: int, *, user: str,
                   reason: str) -> dict:
    """Give an invoice a new client SerNr, because Oppen holds its SerNr under another
    number (the conflict `exporter._explain_duplicate` records). One recorded action:
    a run of kind "sernr" and an attempt with the old and new SerNr; the invoice goes
    back to pending, to be sent (by a resend or the worker) under the new SerNr."""
    if not reason or not reason.strip():
        raise SyncError("Indicá un motivo para asignar un SerNr nuevo")
    if settings.mapping.sernr_mode != "client":
        raise SyncError("Con esta configuración Oppen asigna el SerNr: no hay nada que reasignar")
    row, _ = _state_and_factura(engine, state_id)
    if row["state"] != CONFLICT or row["error_kind"] != schema.ERROR_SERNR_TAKEN:
        raise SyncError(f"La factura {row['reference']} no tiene el SerNr ocupado en Oppen; "
                        "no hace falta asignarle uno nuevo")
    old = binder.sernr_for(settings.mapping, row["id"], row["client_sernr"])
    new = old + binder.REASSIGN_STEP
    if new >= 2 ** 63:
        raise SyncError("No quedan SerNr libres para esta factura: revisá OPPEN_MAPPING_SERNR_BASE")
    t = oppen_invoices
    now = schema.utcnow()
    detail = json.dumps({"sernr_anterior": old, "sernr_nuevo": new}, ensure_ascii=False)
    with engine.begin() as conn:
        changed = conn.execute(sa.update(t).where(
            t.c.id == state_id, t.c.state == CONFLICT,
            t.c.error_kind == schema.ERROR_SERNR_TAKEN).values(
            client_sernr=new, state=PENDING, needs_lookup=False, last_error=None,
            error_kind=None, last_http_status=None, updated_at=now)).rowcount
        if not changed:
            raise SyncError("La factura ya no está en conflicto (otra persona la resolvió)")
        run_id = conn.execute(sa.insert(schema.oppen_runs).values(
            target=settings.target, kind="sernr", username=user, reason=reason.strip(),
            owner=schema.new_owner(), state=schema.DONE, started_at=now, finished_at=now,
            total=1, processed=1, exitosas=1, fallidas=0,
            message=f"{row['reference']}: SerNr {old} → {new}")).inserted_primary_key[0]
        conn.execute(sa.insert(schema.oppen_attempts).values(
            oppen_invoice_id=state_id, run_id=run_id, kind="sernr", at=now, duration_ms=0,
            http_status=None, outcome="reassigned", error=None, response_body=detail))
    return {"reference": row["reference"], "sernr_anterior": old, "sernr_nuevo": new}


def _state_and_factura(engine: Engine, state_id: int) -> tuple[Mapping, Mapping]:
    with schema.reading(engine) as conn:
        row = conn.execute(sa.select(oppen_invoices).where(oppen_invoices.c.id == state_id)).first()
        if row is None:
            raise NotFound(f"No existe la factura {state_id} en el registro de envíos")
        facturas = binder.read_facturas_by_id(conn, [row.factura_id])
    if not facturas:
        raise NotFound(f"La factura {row.factura_id} ya no existe en facturas_trns")
    return row._mapping, facturas[0]

