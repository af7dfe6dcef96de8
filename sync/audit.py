"""Marking a local's day as audited, then syncing it: the seed's endpoint, without Flask.

The audit row is committed before anything talks to Oppen, and nothing that happens
with Oppen ever undoes it ("el local SIGUE auditado"). The answer is the seed's
response dict, with its exact keys and messages.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from . import db
from .config import Settings
from .errors import AuditRefused, NotFound, OppenError, RunInProgress, SyncError

logger = logging.getLogger(__name__)


def local_exists(engine: Engine, local: str) -> bool:
    with engine.connect() as conn:
        for table in (db.cierres_locales, db.facturas_trns, db.locales_auditados):
            if conn.execute(sa.select(sa.literal(1)).select_from(table)
                            .where(table.c.local == local).limit(1)).first():
                return True
    return False


def require_local(engine: Engine, local: str) -> None:
    if not local_exists(engine, local):
        raise NotFound(f"El local {local} no existe (no tiene cierres ni facturas cargadas)")


def is_audited(engine: Engine, local: str, fecha: dt.date) -> bool:
    t = db.locales_auditados
    with engine.connect() as conn:
        return conn.execute(sa.select(t.c.id).where(t.c.local == local, t.c.fecha == fecha)
                            ).first() is not None


def check_auditable(engine: Engine, local: str, fecha: dt.date) -> None:
    """The seed's three validations, in its order; raises AuditRefused with the reason."""
    require_local(engine, local)
    day = fecha.isoformat()
    with engine.connect() as conn:
        closed = conn.execute(sa.select(db.cierres_locales.c.local).where(
            db.cierres_locales.c.local == local, db.cierres_locales.c.fecha == fecha)).first()
        if closed is None:
            raise AuditRefused(f"El local {local} no está cerrado para {day}: "
                               "no se puede marcar como auditado")
        t = db.locales_auditados
        if conn.execute(sa.select(t.c.id).where(t.c.local == local, t.c.fecha == fecha)).first():
            raise AuditRefused(f"El local {local} ya está auditado para {day}")
        a = db.anticipos
        pending = conn.execute(sa.select(sa.func.count()).select_from(a).where(
            a.c.local == local, a.c.fecha == fecha, a.c.estado == "pendiente")).scalar()
        if pending:
            raise AuditRefused(f"El local {local} tiene {pending} anticipo(s) pendiente(s) para "
                               f"{day}: no se puede marcar como auditado")


def insert_audit(engine: Engine, local: str, fecha: dt.date, user: str) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(db.locales_auditados).values(
                local=local, fecha=fecha, auditor=user, auditado_en=db.utcnow()))
    except IntegrityError:
        # Someone else marked it between the check and the insert.
        raise AuditRefused(f"El local {local} ya está auditado para {fecha.isoformat()}") from None


def audited_message(local: str, fecha: dt.date) -> str:
    return f"Local {local} marcado como auditado para {fecha.isoformat()}"


def result_lines(summary: dict, *, resend: bool = False) -> str:
    """What a finished sync (or resend) says, in the seed's words."""
    if summary["total"] == 0:
        if resend or summary.get("ya_enviadas"):
            return f"ℹ️ {summary.get('message') or 'No hay facturas para reenviar'}"
        return "ℹ️ No había facturas para sincronizar con Oppen"
    if summary["fallidas"] == 0:
        verb = "reenviada(s)" if resend else "enviada(s)"
        return f"✅ {summary['exitosas']} factura(s) {verb} a Oppen exitosamente"
    errores = summary.get("errores") or [{"error": "sin detalle"}]
    text = (f"⚠️ Algunas facturas no pudieron enviarse a Oppen: "
            f"{summary['fallidas']}/{summary['total']}\nPrimer error: {errores[0]['error']}")
    if summary.get("message"):
        text += f"\n{summary['message']}"
    return text


def sync_message(head: str, summary: dict) -> str:
    """The seed's message for an audit: its first line, then the sync's result."""
    return f"{head}\n{result_lines(summary)}"


def public_summary(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "run_id"}


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
    head = audited_message(local, fecha)
    logger.info("%s por %s", head, user)
    try:
        from .service import sync_facturas_to_oppen
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
    response = {"success": True, "msg": sync_message(head, summary),
                "oppen_sync": public_summary(summary)}
    return response
