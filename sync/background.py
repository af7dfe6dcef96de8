"""Runs that outlive the page: an audit or a resend started from the console keeps going
in a daemon thread of the server process if the person reloads or closes the tab.

`start_audit` / `start_resend` return as soon as the run has started (its row exists in
`oppen_runs`) or has finished or been refused before starting. From then on the run's
row is the truth: its `total`, `processed`, `current_ref` and `state` feed the progress
bar of whoever opens the page, and `result_of` gives the final answer, from this
process's memory when it ran here or rebuilt from the row otherwise.

Roles are checked here, where the action runs, not only by the page that offers it.
No Streamlit here.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from . import actions, messages

from .state import read_models, schema
from .auth import require_role
from .oppen.client import OppenClient
from .settings import Settings, User
from .errors import OppenError, SyncError

logger = logging.getLogger(__name__)

START_WAIT = 30.0          # seconds to wait for a run to start before answering anyway
KEEP_RESULTS = 500         # final answers kept in memory, newest last
MAX_REASON = 500
UNEXPECTED = ("Ocurrió un error inesperado durante la sincronización. Quedó registrado en el "
              "log; las facturas que no se enviaron siguen pendientes para reenviar.")
INTERRUPTED = ("La sincronización se interrumpió (el proceso dejó de responder). Las facturas "
               "que no llegaron a Oppen quedaron pendientes: se pueden reenviar desde "
               "Facturas fallidas.")

# Keyed by (database, run id): run ids are only unique within one database.
_lock = threading.Lock()
_results: OrderedDict[tuple[str, int], dict] = OrderedDict()
_finishing: set[tuple[str, int]] = set()   # started here, final answer not stored yet


def _key(engine: Engine, run_id: int) -> tuple[str, int]:
    return engine.url.render_as_string(hide_password=True), int(run_id)


@dataclass(frozen=True)
class Started:
    """What a start call knows when it returns."""
    run_id: int | None          # None: refused (or still preparing after START_WAIT)
    response: dict | None       # the final answer, when it already exists

    @property
    def finished(self) -> bool:
        return self.response is not None


def _remember(key: tuple[str, int], response: dict) -> None:
    with _lock:
        _results[key] = response
        _results.move_to_end(key)
        while len(_results) > KEEP_RESULTS:
            _results.popitem(last=False)
        _finishing.discard(key)


def forget_results() -> None:
    """Drop the in-memory answers (what a fresh server process has); for tests."""
    with _lock:
        _results.clear()


def _start(engine: Engine, kind: str,
           work: Callable[[OppenClient | None, Callable[[int], None]], dict],
           client: OppenClient | None, wait: float) -> Started:
    ready = threading.Event()
    box: dict = {"run_id": None, "response": None}

    def on_start(run_id: int) -> None:
        with _lock:
            _finishing.add(_key(engine, run_id))
        box["run_id"] = run_id
        ready.set()

    def target() -> None:
        # Own HTTP session for this thread, sharing the cached client's token.
        job_client = client.clone() if client is not None else None
        try:
            response = work(job_client, on_start)
        except Exception:  # noqa: BLE001 - the thread must always leave an answer
            logger.exception("Error inesperado en la sincronización (%s)", kind)
            response = {"success": False, "msg": UNEXPECTED}
        finally:
            if job_client is not None:
                job_client.close()
        if box["run_id"] is not None:
            _remember(_key(engine, box["run_id"]), response)
        box["response"] = response
        ready.set()

    thread = threading.Thread(target=target, name=f"oppen-{kind}", daemon=True)
    thread.start()
    ready.wait(wait)
    return Started(box["run_id"], box["response"])


def start_audit(engine: Engine, settings: Settings, *, user: User, local: str, fecha: dt.date,
                client: OppenClient | None = None, wait: float = START_WAIT) -> Started:
    """Mark a local/day audited and sync it in the background (the seed's endpoint)."""
    require_role(user, "auditor", "marcar locales como auditados")
    local = actions.clean_local(local)

    def work(job_client, on_start) -> dict:
        return actions.mark_audited(engine, settings, local, fecha, user.username,
                                  client=job_client, on_start=on_start)
    return _start(engine, "audit", work, client, wait)


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
                 wait: float = START_WAIT) -> Started:
    """Resend chosen invoices, or what is unsent of one local/day, in the background.

    Only an admin may; the reason is required and recorded with the run.
    """
    require_role(user, "admin", "reenviar facturas")
    reason = clean_reason(reason)
    ids = None if invoice_ids is None else sorted({int(i) for i in invoice_ids})
    if ids is None and not (local and fecha):
        raise SyncError("Elegí las facturas a reenviar, o un local y un día")
    if ids is not None and not ids:
        raise SyncError("No se eligió ninguna factura para reenviar")

    def work(job_client, on_start) -> dict:
        try:
            summary = actions.resend(engine, settings, user=user.username, reason=reason,
                                     local=None if ids else local, fecha=None if ids else fecha,
                                     invoice_ids=ids, client=job_client, on_start=on_start)
        except OppenError as exc:
            return {"success": False, "msg": f"⚠️ Error sincronizando con Oppen: {exc.message}",
                    "oppen_error": exc.message}
        except SyncError as exc:   # refused: not audited, not found, run in progress
            return {"success": False, "msg": exc.message}
        return resend_response(summary)
    return _start(engine, "resend", work, client, wait)


def resend_response(summary: Mapping) -> dict:
    """A resend's answer in the seed's style (its summary plus one message)."""
    summary = messages.public_summary(dict(summary))
    return {"success": True, "msg": messages.result_lines(summary, resend=True),
            "oppen_sync": summary}


def response_from_row(row: Mapping, *, lease_seconds: float, now: dt.datetime | None = None
                      ) -> dict | None:
    """The final answer of a run rebuilt from its row; None while it is still going."""
    now = now or schema.utcnow()
    if row["state"] == schema.RUNNING:
        beat = row.get("heartbeat_at") or row.get("inicio")
        if beat is not None and now - beat > dt.timedelta(seconds=lease_seconds):
            return {"success": False, "msg": INTERRUPTED}
        return None
    summary = json.loads(row["result_json"]) if row.get("result_json") else None
    message = row.get("mensaje") or ""
    if row["kind"] == "audit" and row.get("local") and row.get("fecha"):
        head = messages.audited(row["local"], row["fecha"])
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
    return {"success": False, "msg": f"⚠️ Error sincronizando con Oppen: {message}",
            "oppen_error": message}


def result_of(engine: Engine, settings: Settings, run_id: int) -> dict | None:
    """The final answer of a run, or None while it is running."""
    key = _key(engine, run_id)
    with _lock:
        if key in _results:
            return _results[key]
        if key in _finishing:
            return None   # its thread is storing the exact answer right now
    row = read_models.run_row(engine, run_id)
    if row is None:
        return {"success": False, "msg": f"No existe la sincronización {run_id}"}
    return response_from_row(row, lease_seconds=settings.lease_seconds)


def progress_of(engine: Engine, run_id: int) -> dict | None:
    """Where a run is, from its persisted row: n of N, the invoice being sent."""
    row = read_models.run_row(engine, run_id)
    if row is None:
        return None
    total, done = row["total"] or 0, row["procesadas"] or 0
    return {"run_id": run_id, "state": row["state"], "total": total, "processed": min(done, total),
            "current_ref": row["actual"], "fraction": (min(done, total) / total) if total else 0.0,
            "local": row["local"], "fecha": row["fecha"], "kind": row["kind"]}


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
