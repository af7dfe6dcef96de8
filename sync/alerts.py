"""Alerts a person can act on: which conditions exist, when each opens and resolves, what
it says, and delivering them through the webhook (sync/notify.py).

    run_failed      a run ended with invoices a person must look at (a one-off event);
                    a person's run that met a stopped Oppen opens `oppen_pending` instead,
                    once, so thirty audits of one morning are one alert, not thirty
    oppen_pending   a person's run left invoices pending because Oppen did not answer
    oppen_down      Oppen unreachable for longer than OPPEN_ALERT_STALE_AFTER
    stale           invoices waiting longer than OPPEN_ALERT_STALE_AFTER without reaching
                    Oppen: how many and since when
    horizon         invoices past OPPEN_RETRY_HORIZON: "requieren atención"
    no_worker       work is waiting and no worker has a live heartbeat
    worker_lost     a worker stopped beating without saying goodbye (a one-off event)

Each condition alerts once when it opens and once more when it resolves (the rows in
`oppen_alerts` make that hold across processes); nothing here ever raises into a run.
Alerts are written to the outbox first and posted by `deliver` (a worker's own thread,
or at the end of a command), so the webhook never delays sending an invoice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import notify
from .settings import ENVIRONMENTS, Settings
from .state import alerts as rows
from .state import queue, schema, workers
from .state.read_models import fmt_datetime
from .state.schema import FAILED, PENDING, SENDING, db_now, oppen_invoices, oppen_runs

logger = logging.getLogger(__name__)

RUN_FAILED, OPPEN_PENDING, OPPEN_DOWN, STALE, HORIZON, NO_WORKER, WORKER_LOST = (
    "run_failed", "oppen_pending", "oppen_down", "stale", "horizon", "no_worker",
    "worker_lost")
KIND_LABELS = {RUN_FAILED: "Sincronización con errores", OPPEN_PENDING: "Oppen no responde",
               OPPEN_DOWN: "Oppen caído", STALE: "Facturas demoradas",
               HORIZON: "Requieren atención", NO_WORKER: "Sin worker",
               WORKER_LOST: "Worker perdido"}
DELIVERY_RETRY = 60.0     # seconds before a failed webhook post is tried again
TEST_INSTANCE_HINT = ("La instancia de pruebas de Oppen se detiene sola cuando no se usa: "
                      "hay que iniciarla desde el panel de Oppen.")
# What an auditor reads when their audit met a stopped Oppen.
AUDITOR_SENTENCE = "Oppen no responde; se reintenta automáticamente y el administrador fue avisado"


def duration(seconds: float) -> str:
    """'45 s', '12 min', '4 h', '4 h 30 min', '2 días 3 h': a wait as a person says it."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} días" + (f" {hours} h" if hours else "")


def target_label(settings: Settings) -> str:
    url = settings.base_url or ENVIRONMENTS.get(settings.oppen_env) or "sandbox integrado"
    return f"{settings.env_label}, {url}"


def _safely(what: str, fn, *args, **kwargs):
    """An alert must never break what raised it: log and go on."""
    try:
        return fn(*args, **kwargs)
    except Exception:  # noqa: BLE001
        logger.warning("No se pudo registrar el aviso (%s)", what, exc_info=True)
        return None


# --- raised by runs -----------------------------------------------------------------------

def run_failed(engine: Engine, settings: Settings, *, run_id: int | None, local: str,
               fecha: dt.date | str, errores: Sequence[Mapping]) -> None:
    """A run ended with invoices a person must look at: the seed's message, once."""
    if not errores:
        return
    text = notify.failure_text(local, fecha, errores)
    day = fecha.isoformat() if isinstance(fecha, dt.date) else str(fecha)
    details = {"run_id": run_id, "local": local, "fecha": day,
               "errores": [dict(e) for e in list(errores)[:notify.MAX_ERRORS]],
               "total_errores": len(errores)}
    _safely(RUN_FAILED, rows.event, engine, target=settings.target, kind=RUN_FAILED,
            text=text, details=details)


def oppen_pending(engine: Engine, settings: Settings, *, local: str, fecha: dt.date | str,
                  pending: int, error: str | None) -> None:
    """A person's run left invoices pending because Oppen did not answer: told once per
    outage, resolved when Oppen answers again."""
    day = fecha.strftime("%d/%m/%Y") if isinstance(fecha, dt.date) else str(fecha)
    text = (f"⚠️ Oppen ({target_label(settings)}) no responde: la sincronización de {local} "
            f"({day}) dejó {pending} factura(s) pendiente(s). Se reintentan automáticamente "
            f"cuando Oppen vuelva a responder; no hace falta reenviarlas."
            + (f"\nÚltimo error: {error}" if error else "")
            + (f"\n{TEST_INSTANCE_HINT}" if settings.oppen_env == "test" else ""))
    _safely(OPPEN_PENDING, rows.open_condition, engine, target=settings.target,
            kind=OPPEN_PENDING, key=OPPEN_PENDING, text=text,
            details={"local": local, "fecha": str(fecha), "pendientes": pending,
                     "error": error})


def oppen_status(engine: Engine, settings: Settings, *, reachable: bool | None,
                 error: str | None = None) -> None:
    """What a run or a probe learned about Oppen: it answered (what was down is
    resolved) or it did not (it is down from now, and probed on the retry schedule)."""
    if reachable is None:
        return
    _safely("oppen_status", _oppen_status, engine, settings, reachable, error)


def _oppen_status(engine: Engine, settings: Settings, reachable: bool, error: str | None):
    target = settings.target
    if not reachable:
        since = workers.mark_down(engine, target, error or "", settings.retry_delays[0])
        if since is not None:
            logger.warning("🔴 Oppen no responde (%s): %s", target, error)
        return
    was = workers.mark_up(engine, target)
    if was is None:
        return
    took = duration((was["now"] - was["down_since"]).total_seconds())
    logger.info("✅ Oppen volvió a responder (%s) tras %s", target, took)
    rows.resolve_condition(engine, target=target, key=OPPEN_PENDING,
                           text=f"✅ Oppen ({target_label(settings)}) volvió a responder: las "
                                "facturas pendientes se están enviando solas.")
    rows.resolve_condition(engine, target=target, key=OPPEN_DOWN,
                           text=f"✅ Oppen ({target_label(settings)}) volvió a responder "
                                f"después de {took} sin responder; lo pendiente se envía solo.")


# --- evaluated by the scanning worker -------------------------------------------------------

def waiting_filter(t=oppen_invoices):
    """Invoices expected to reach Oppen on their own and not there yet."""
    return sa.and_(t.c.attention_at.is_(None),
                   sa.or_(t.c.state.in_((PENDING, SENDING)),
                          sa.and_(t.c.state == FAILED, t.c.next_attempt_at.is_not(None))))


def evaluate(engine: Engine, settings: Settings) -> None:
    """Open or resolve the conditions that depend on time passing (a worker's scan)."""
    _safely("evaluate", _evaluate, engine, settings)


def _evaluate(engine: Engine, settings: Settings) -> None:
    target, t = settings.target, oppen_invoices
    stale = dt.timedelta(seconds=settings.alert_stale_after)
    label = duration(settings.alert_stale_after)
    with schema.reading(engine) as conn:
        now = db_now(conn)
        waiting, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(t.c.created_at))
                                       .where(t.c.target == target, waiting_filter(),
                                              t.c.created_at <= now - stale)).one()
        attention = conn.execute(sa.select(sa.func.count()).where(
            t.c.target == target, t.c.attention_at.is_not(None),
            t.c.state.in_((PENDING, FAILED)))).scalar()
    if waiting:
        rows.open_condition(
            engine, target=target, kind=STALE, key=STALE,
            text=(f"⏳ {waiting} factura(s) esperan hace más de {label} sin llegar a Oppen "
                  f"({settings.env_label}); la más antigua desde {fmt_datetime(oldest)}. "
                  "Ver Monitoreo → Facturas en espera."),
            details={"facturas": waiting, "desde": oldest})
    else:
        rows.resolve_condition(engine, target=target, key=STALE,
                               text=f"✅ Ya no hay facturas esperando más de {label} para "
                                    f"llegar a Oppen ({settings.env_label}).")
    horizon = duration(settings.retry_horizon)
    if attention:
        rows.open_condition(
            engine, target=target, kind=HORIZON, key=HORIZON,
            text=(f"🛑 {attention} factura(s) requieren atención: pasaron {horizon} sin llegar "
                  f"a Oppen ({settings.env_label}) y ya no se reintentan solas. Revisalas en "
                  "Facturas fallidas y reenvialas."),
            details={"facturas": attention})
    else:
        rows.resolve_condition(engine, target=target, key=HORIZON,
                               text="✅ Ya no hay facturas que requieran atención "
                                    f"({settings.env_label}).")
    health = workers.health(engine, target)
    down_since = health["down_since"]
    if down_since is not None and health["now"] - down_since >= stale:
        rows.open_condition(
            engine, target=target, kind=OPPEN_DOWN, key=OPPEN_DOWN,
            text=(f"🔴 Oppen ({target_label(settings)}) no responde desde "
                  f"{fmt_datetime(down_since)} (hace "
                  f"{duration((health['now'] - down_since).total_seconds())}). "
                  f"Último error: {health['down_error'] or 'sin detalle'}. "
                  + (TEST_INSTANCE_HINT if settings.oppen_env == "test" else
                     "Revisá la conexión y el estado de Oppen.")
                  + " Las facturas siguen pendientes y salen solas cuando vuelva."),
            details={"desde": down_since, "error": health["down_error"]})
    # A worker is scanning: whoever said there was none can say there is one again.
    rows.resolve_condition(engine, target=target, key=NO_WORKER,
                           text=f"✅ Hay un worker activo otra vez ({settings.env_label}).")


def worker_lost(engine: Engine, settings: Settings, worker: Mapping) -> None:
    text = (f"⚠️ El worker {worker['id']} ({worker['host']}, pid {worker['pid']}) dejó de dar "
            f"señales desde {fmt_datetime(worker['heartbeat_at'])}; otro worker retoma su "
            "trabajo. Si era el único, iniciá el servicio otra vez.")
    _safely(WORKER_LOST, rows.event, engine, target=settings.target, kind=WORKER_LOST,
            text=text, details={"worker": worker["id"], "host": worker["host"],
                                "pid": worker["pid"], "heartbeat_at": worker["heartbeat_at"]})


def check_workers(engine: Engine, settings: Settings) -> bool:
    """Whether a worker is alive; if none is and work waits (a queued run, an invoice due),
    the no-worker condition opens. For whoever is not a worker (the console)."""
    alive = workers.live(engine, settings.target, workers.alive_within(settings))
    if alive:
        return True
    _safely(NO_WORKER, _no_worker, engine, settings)
    return False


def _no_worker(engine: Engine, settings: Settings) -> None:
    target, r = settings.target, oppen_runs
    with schema.reading(engine) as conn:
        queued = conn.execute(sa.select(sa.func.count()).where(
            r.c.target == target, r.c.state == schema.QUEUED)).scalar()
    due = queue.next_due(engine, target)
    last = workers.last_heartbeat(engine, target)
    if not queued and due is None:
        return
    rows.open_condition(
        engine, target=target, kind=NO_WORKER, key=NO_WORKER,
        text=(f"🛑 No hay ningún worker activo ({settings.env_label}): {queued} "
              f"sincronización(es) en cola"
              + (f", próximo reintento {fmt_datetime(due)}" if due else "")
              + (f"; último latido {fmt_datetime(last)}" if last else "; nunca hubo uno")
              + ". Iniciá el servicio (systemctl start oppen-sync-worker) o abrí la consola."),
        details={"en_cola": queued, "ultimo_latido": last})


# --- delivery ---------------------------------------------------------------------------------

def _fields(alert: Mapping, state: str) -> dict:
    details = json.loads(alert["details_json"]) if alert.get("details_json") else {}
    return {"alert": alert["kind"], "state": state, "target": alert["target"],
            "opened_at": alert["opened_at"].isoformat() if alert["opened_at"] else None,
            "resolved_at": (alert["resolved_at"].isoformat() if alert.get("resolved_at")
                            else None),
            "details": details}


def deliver(engine: Engine, settings: Settings, owner: str, *, limit: int = 20,
            timeout: float = notify.TIMEOUT) -> int:
    """Post what the webhook has not been told yet (openings, then resolutions); returns
    how many posts went out. Without a webhook the outbox is just emptied. Never raises."""
    return _safely("deliver", _deliver, engine, settings, owner, limit, timeout) or 0


def _deliver(engine: Engine, settings: Settings, owner: str, limit: int, timeout: float) -> int:
    posted = 0
    for alert in rows.claim_due(engine, owner, hold=timeout * 3 + 5, limit=limit):
        told_opening = told_resolution = False
        if alert["notified_at"] is None:
            state = "event" if alert["open_key"] is None and alert["resolved_at"] is None \
                else "open"
            told_opening = _post(settings, alert["text"], _fields(alert, state), timeout)
        if (alert["resolved_at"] is not None and alert["resolved_notified_at"] is None
                and (told_opening or alert["notified_at"] is not None)):
            # (Resolved before it was told: the resolution goes right after the opening.)
            told_resolution = _post(settings, alert["resolved_text"] or "✅ Resuelto",
                                    _fields(alert, "resolved"), timeout)
        if told_opening or told_resolution:
            posted += int(told_opening) + int(told_resolution) if settings.webhook_url else 0
            rows.delivered(engine, alert["id"], owner, opening=told_opening,
                           resolution=told_resolution)
        else:
            rows.delivery_failed(engine, alert["id"], owner, retry_in=DELIVERY_RETRY)
    return posted


def _post(settings: Settings, text: str, fields: Mapping, timeout: float) -> bool:
    """True when told (or when there is no webhook to tell: nothing to wait for)."""
    return not settings.webhook_url or notify.post(settings, text, fields, timeout=timeout)
