"""Runs asked for from the console: the console queues them in the database and a worker
(`python -m sync worker`, sync/worker.py) runs them, so a run survives a reload, a
closed tab and a restart of the console alike.

`start_audit` commits the audit and queues its sync in one transaction; `start_resend`
checks a resend and queues it; both return at once with the run's id (or the refusal).
From then on the run's row is the truth: `progress_of` (queued, n of N, the invoice
being sent) and `result_of` (the final answer, in the seed's words) read it, whoever
opens the page. An admin can `cancel_run` a queued or running run.

`ensure_worker` keeps the embedded default working with one command: when no worker
outside the console has a live heartbeat, the console runs one worker in a process of
its own (stopped with the console); with an external worker alive it only queues.

Roles are checked here, where the action runs, not only by the page that offers it.
No Streamlit here.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from . import actions, alerts, messages, wiring
from .auth import require_role
from .errors import OppenError, SyncError
from .oppen.client import OppenClient
from .settings import PROJECT_DIR, Settings, User
from .state import queue, read_models, schema, workers

logger = logging.getLogger(__name__)

MAX_REASON = 500
INTERRUPTED = ("La sincronización se interrumpió (el proceso dejó de responder). Las facturas "
               "que no llegaron a Oppen quedaron pendientes: se pueden reenviar desde "
               "Facturas fallidas.")
CANCELLED = ("Sincronización cancelada ({why}). Las facturas que no se enviaron quedaron "
             "pendientes: se pueden reenviar desde Facturas fallidas.")
CHECK_EVERY = 2.0          # seconds between two looks at the workers, per database
RESPAWN_AFTER = 30.0       # an embedded worker that ended on its own is started again after


@dataclass(frozen=True)
class Started:
    """What a start call knows when it returns."""
    run_id: int | None          # None: refused
    response: dict | None       # the final answer, when it already exists (a refusal)

    @property
    def finished(self) -> bool:
        return self.response is not None


# --- asking for runs ---------------------------------------------------------------------

def start_audit(engine: Engine, settings: Settings, *, user: User, local: str, fecha: dt.date,
                client: OppenClient | None = None, wait: float | None = None) -> Started:
    """Mark a local/day audited and queue its sync (the seed's endpoint). `client` and
    `wait` are accepted for callers of the threaded version; a worker sends now."""
    require_role(user, "auditor", "marcar locales como auditados")
    local = actions.clean_local(local)
    result = actions.request_audit(engine, settings, local, fecha, user.username)
    if not result["success"]:
        return Started(None, {"success": False, "msg": result["msg"]})
    return Started(result["run_id"], None)


def clean_reason(reason: str | None) -> str:
    text = " ".join((reason or "").split())
    if not text:
        raise SyncError("Indicá un motivo (queda registrado quién, cuándo y por qué)")
    if len(text) > MAX_REASON:
        raise SyncError(f"El motivo es demasiado largo (máximo {MAX_REASON} caracteres)")
    return text


def start_resend(engine: Engine, settings: Settings, *, user: User, reason: str,
                 local: str | None = None, fecha: dt.date | None = None,
                 invoice_ids: Iterable[int] | None = None, client: OppenClient | None = None,
                 wait: float | None = None) -> Started:
    """Queue a resend of chosen invoices, or of what is unsent of one local/day.

    Only an admin may; the reason is required and recorded with the run.
    """
    require_role(user, "admin", "reenviar facturas")
    reason = clean_reason(reason)
    ids = None if invoice_ids is None else sorted({int(i) for i in invoice_ids})
    if ids is None and not (local and fecha):
        raise SyncError("Elegí las facturas a reenviar, o un local y un día")
    if ids is not None and not ids:
        raise SyncError("No se eligió ninguna factura para reenviar")
    try:
        run_id = actions.request_resend(engine, settings, user=user.username, reason=reason,
                                        local=None if ids else local,
                                        fecha=None if ids else fecha, invoice_ids=ids)
    except OppenError as exc:
        return Started(None, {"success": False, "oppen_error": exc.message,
                              "msg": f"⚠️ Error sincronizando con Oppen: {exc.message}"})
    except SyncError as exc:   # refused: not audited, not found
        return Started(None, {"success": False, "msg": exc.message})
    if run_id is None:
        return Started(None, {"success": True, "msg": "ℹ️ No hay facturas para reenviar"})
    return Started(run_id, None)


def cancel_run(engine: Engine, settings: Settings, *, user: User, run_id: int) -> str:
    """An admin cancels a queued run, or asks a running one to stop; what was not sent
    stays pending with the reason. Returns the sentence to show."""
    require_role(user, "admin", "cancelar sincronizaciones")
    outcome = queue.cancel(engine, int(run_id), user.username)
    return {"cancelled": f"Sincronización {run_id} cancelada: no llegó a empezar.",
            "requested": (f"Se pidió detener la sincronización {run_id}: termina lo que está "
                          "enviando y lo demás queda pendiente."),
            "finished": f"La sincronización {run_id} ya había terminado.",
            "missing": f"No existe la sincronización {run_id}."}[outcome]


def resend_response(summary: Mapping) -> dict:
    """A resend's answer in the seed's style (its summary plus one message)."""
    summary = messages.public_summary(dict(summary))
    if summary.get("oppen_no_responde") and summary.get("fallidas"):
        return {"success": True, "oppen_sync": summary,
                "msg": f"⚠️ {summary['exitosas']}/{summary['total']} factura(s) reenviada(s). "
                       f"{alerts.AUDITOR_SENTENCE}."}
    return {"success": True, "msg": messages.result_lines(summary, resend=True),
            "oppen_sync": summary}


# --- reading a run's progress and answer --------------------------------------------------

def response_from_row(row: Mapping, *, lease_seconds: float | None = None,
                      now: dt.datetime | None = None) -> dict | None:
    """The final answer of a run rebuilt from its row; None while it is queued or going
    (a run whose process died is taken over by a worker, so it is still going)."""
    if row["state"] in (schema.QUEUED, schema.RUNNING):
        return None
    summary = json.loads(row["result_json"]) if row.get("result_json") else None
    message = row.get("mensaje") or ""
    down = bool(summary and summary.get("oppen_no_responde"))
    if row["state"] == schema.CANCELLED:
        text = CANCELLED.format(why=message or "cancelada")
        if row["kind"] == "audit" and row.get("local") and row.get("fecha"):
            return {"success": True, "msg": f"{messages.audited(row['local'], row['fecha'])}"
                                            f"\n⚠️ {text}", "oppen_error": text}
        return {"success": False, "msg": f"⚠️ {text}"}
    if row["kind"] in ("audit", "pickup") and row.get("local") and row.get("fecha"):
        head = messages.audited(row["local"], row["fecha"])
        if down and (row["state"] != schema.DONE or summary.get("fallidas")):
            pending = ""
            if row["state"] == schema.DONE:
                waiting = summary.get("pendientes") or summary["fallidas"]
                pending = (f"{waiting} de {summary['total']} factura(s) quedaron "
                           "pendientes. ")
            response = {"success": True, "oppen_error": alerts.AUDITOR_SENTENCE,
                        "msg": f"{head}\n⚠️ {pending}{alerts.AUDITOR_SENTENCE}."}
            if row["state"] == schema.DONE:
                response["oppen_sync"] = summary
            return response
        if row["state"] == schema.DONE and summary is not None:
            return {"success": True, "msg": messages.sync(head, summary),
                    "oppen_sync": summary}
        if row["state"] == schema.INTERRUPTED:
            return {"success": True, "msg": f"{head}\n⚠️ {INTERRUPTED}", "oppen_error": INTERRUPTED}
        return {"success": True, "msg": f"{head}\n⚠️ Error sincronizando con Oppen: {message}",
                "oppen_error": message}
    if row["state"] == schema.DONE and summary is not None:
        return resend_response(summary)
    if row["state"] == schema.INTERRUPTED:
        return {"success": False, "msg": INTERRUPTED}
    if row["state"] == schema.DONE:
        return {"success": True, "msg": message or "Listo"}
    if down:
        return {"success": True, "oppen_error": alerts.AUDITOR_SENTENCE,
                "msg": f"⚠️ {alerts.AUDITOR_SENTENCE}."}
    return {"success": False, "msg": f"⚠️ Error sincronizando con Oppen: {message}",
            "oppen_error": message}


def result_of(engine: Engine, settings: Settings, run_id: int) -> dict | None:
    """The final answer of a run, or None while it is queued or running."""
    row = read_models.run_row(engine, run_id)
    if row is None:
        return {"success": False, "msg": f"No existe la sincronización {run_id}"}
    return response_from_row(row)


def progress_of(engine: Engine, run_id: int) -> dict | None:
    """Where a run is, from its persisted row: queued, n of N, the invoice being sent."""
    row = read_models.run_row(engine, run_id)
    if row is None:
        return None
    total, done = row["total"] or 0, row["procesadas"] or 0
    return {"run_id": run_id, "state": row["state"], "total": total, "processed": min(done, total),
            "current_ref": row["actual"], "fraction": (min(done, total) / total) if total else 0.0,
            "local": row["local"], "fecha": row["fecha"], "kind": row["kind"],
            "queued": row["state"] == schema.QUEUED, "message": row["mensaje"]}


def message_level(response: Mapping) -> str:
    """How to show an answer: 'success', 'warning', 'info' or 'error'."""
    if not response.get("success"):
        return "error"
    if response.get("oppen_error"):
        return "warning"
    summary = response.get("oppen_sync")
    if summary is None:
        return "info"
    if summary.get("total", 0) == 0:
        return "info"
    return "success" if not summary.get("fallidas") else "warning"


# --- why an invoice waits ---------------------------------------------------------------------

def why_waiting(row: Mapping, health: Mapping, settings: Settings) -> str:
    """One sentence saying why an invoice has not reached Oppen and what happens next: who
    acts, and when (a row of `queue.waiting`, the target's `workers.health`)."""
    now = health["now"]
    if row.get("attention_at") is not None:
        return (f"Requiere atención: pasaron {alerts.duration(settings.retry_horizon)} sin "
                "llegar a Oppen y ya no se reintenta sola; reenviala desde Facturas fallidas")
    if row["state"] == schema.SENDING:
        if row.get("claim_until") and row["claim_until"] >= now:
            return "Se está enviando ahora"
        return "La sincronización que la enviaba dejó de responder; un worker la retoma solo"
    due = row.get("next_attempt_at")
    last = f" Último error: {row['last_error']}" if row.get("last_error") else ""
    if health.get("down_since") is not None:
        probe = health.get("next_probe_at")
        return (f"Oppen no responde desde {read_models.fmt_datetime(health['down_since'])}; se "
                "envía sola cuando vuelva" + (f" (próxima prueba de conexión "
                                             f"{read_models.fmt_datetime(probe)})" if probe else "")
                + "." + last)
    if due is not None and due <= now:
        return "Reintento automático ahora (espera su turno en la cola)." + last
    if due is not None:
        step = (row.get("retry_count") or 0) + 1
        return (f"Reintento automático {read_models.fmt_datetime(due)} (paso {step} de la "
                "espera entre intentos)." + last)
    return f"Necesita una persona.{last}"


# --- the embedded worker -------------------------------------------------------------------

_lock = threading.Lock()
_embedded: dict[str, subprocess.Popen] = {}     # by database and target
_checked: dict[str, float] = {}
_ended: dict[str, float] = {}                    # when an embedded worker ended on its own


def _key(settings: Settings) -> str:
    return f"{settings.database_url}|{settings.target}"


def ensure_worker(engine: Engine, settings: Settings) -> dict:
    """Make sure someone runs the queue (called on every page; looks at most every
    CHECK_EVERY seconds). Returns {"external": live external workers, "embedded": whether
    this console's worker runs, "started": whether it was started now}."""
    key = _key(settings)
    now = time.monotonic()
    with _lock:
        proc = _embedded.get(key)
        running = proc is not None and proc.poll() is None
        if now - _checked.get(key, 0.0) < CHECK_EVERY:
            return {"external": None, "embedded": running, "started": False}
        _checked[key] = now
    alive = workers.live(engine, settings.target, workers.alive_within(settings))
    external = [w for w in alive if not w["embedded"]]
    with _lock:
        proc = _embedded.get(key)
        running = proc is not None and proc.poll() is None
        if external:
            if running:
                logger.info("Hay un worker externo activo: se detiene el de la consola")
                _terminate(proc)
                _embedded.pop(key, None)
            return {"external": len(external), "embedded": False, "started": False}
        if running:
            return {"external": 0, "embedded": True, "started": False}
        if proc is not None:
            # It ended on its own (a crash, a database it could not use): not at once again.
            _ended.setdefault(key, now)
            _embedded.pop(key, None)
            logger.warning("El worker de la consola terminó (código %s)", proc.returncode)
        if now - _ended.get(key, -RESPAWN_AFTER) < RESPAWN_AFTER:
            started = False
        else:
            _ended.pop(key, None)
            _embedded[key] = _spawn(settings)
            started = True
    if not started and not alive:
        if alerts.check_workers(engine, settings) is False:
            threading.Thread(target=alerts.deliver, args=(engine, settings, "console"),
                             name="oppen-console-alerts", daemon=True).start()
    return {"external": 0, "embedded": started, "started": started}


def _spawn(settings: Settings) -> subprocess.Popen:
    """`python -m sync worker` in a process of its own, against this console's database
    and Oppen (for the embedded sandbox, the one this process serves); it stops when
    this process ends, and its log goes where the console's goes."""
    env = dict(os.environ)
    env.update(wiring.worker_environment(settings))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_DIR), env.get("PYTHONPATH"))
                                        if p)
    logger.info("Se inicia el worker de la consola (no hay otro activo)")
    return subprocess.Popen([sys.executable, "-m", "sync", "worker", "--embedded",
                             "--parent-pid", str(os.getpid())], cwd=PROJECT_DIR, env=env)


def _terminate(proc: subprocess.Popen, wait: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@atexit.register
def stop_embedded_workers() -> None:
    """Stop this process's workers (SIGTERM: they finish what is in flight and hand
    the rest back to the queue). Also for tests."""
    with _lock:
        procs = list(_embedded.values())
        _embedded.clear()
        _checked.clear()
        _ended.clear()
    for proc in procs:
        _terminate(proc)


# --- admin actions on a duplicate ---------------------------------------------------------

def compare_duplicate(engine: Engine, settings: Settings, *, user: User, state_id: int,
                      client: OppenClient | None = None) -> dict:
    require_role(user, "admin", "comparar facturas con Oppen")
    job_client = client.clone() if client is not None else None
    try:
        return actions.compare_with_oppen(engine, settings, state_id, client=job_client)
    finally:
        if job_client is not None:
            job_client.close()


def link_duplicate(engine: Engine, settings: Settings, *, user: User, state_id: int,
                   reason: str, client: OppenClient | None = None) -> dict:
    require_role(user, "admin", "vincular facturas")
    reason = clean_reason(reason)
    job_client = client.clone() if client is not None else None
    try:
        return actions.link_duplicate(engine, settings, state_id, user=user.username,
                                      reason=reason, client=job_client)
    finally:
        if job_client is not None:
            job_client.close()


def ping(client: OppenClient) -> dict:
    """The connectivity check: authenticate and read one invoice, on its own session."""
    probe = client.clone()
    try:
        return probe.ping()
    finally:
        probe.close()
