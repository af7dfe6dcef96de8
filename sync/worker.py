"""`python -m sync worker`: the long-running process that does all the sending.

One or many, on one or many hosts, against one database. Each poll (OPPEN_WORKER_POLL)
a worker looks for work, in this order:

    scan (one worker at a time, a lease in oppen_target_state):
        runs whose process died            → back to the queue (after the lease)
        workers that stopped beating       → marked lost, alerted once
        invoices past OPPEN_RETRY_HORIZON  → "requiere atención"
        local/days audited in the host app → a `pickup` run each
        Oppen down and its probe due       → one probe (authenticate + read one invoice)
        Oppen up and invoices due          → a `retry` run per local/day
        alerts that depend on time         → opened or resolved (sync/alerts.py)
    claim the next queued run (a person's first) and run it in its own row

Many workers share the work through the database: claims on the queue (`FOR UPDATE SKIP
LOCKED` where the server has it), one lock per local/day with a lease, and the
ownership check before every POST (sync/exporter.py), so no invoice is posted by two of
them. SIGTERM or SIGINT: stop taking work, let what is in flight finish (bounded by
OPPEN_TIMEOUT), hand the run back to the queue and its claims back, exit 0. `--once`
does everything that is due now and exits. Its heartbeat row (oppen_workers) is what the
console shows, and what tells a console whether to start a worker of its own.

Alerts are posted by a thread of their own, so the webhook never delays sending. The
worker never decides anything about an invoice itself: runs do (sync/exporter.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable

from sqlalchemy.engine import Engine

from . import alerts
from .errors import OppenError, RunInProgress
from .exporter import CANCELLED, SHUTDOWN, STOP_CANCEL, STOP_SHUTDOWN, Exporter, RunRequest
from .oppen.client import OppenClient
from .oppen.retry import Policy, is_retryable
from .settings import Settings, local_today
from .state import binder, queue, runs, schema, workers

logger = logging.getLogger(__name__)

NOTHING_DUE = "No había facturas para reintentar (ya se enviaron o las tomó otra sincronización)"
SCAN_LEASES = 3          # the scan lease lasts this many polls (and at least 10 s)


def new_worker_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    """One worker process's loop; `run()` until `stop()` (or, with `once`, until nothing
    is due). `client` is the worker's Oppen client: its token is reused across runs."""

    def __init__(self, engine: Engine, settings: Settings, client: OppenClient, *,
                 once: bool = False, embedded: bool = False, parent_pid: int | None = None,
                 worker_id: str | None = None, today: dt.date | None = None,
                 say: Callable[[str], None] | None = None):
        self.engine, self.settings, self.client = engine, settings, client
        self.once, self.embedded, self.parent_pid = once, embedded, parent_pid
        self.worker_id = worker_id or new_worker_id()
        self.target = settings.target
        self.today = today
        self.say = say or (lambda text: None)
        self.stopping = threading.Event()
        self._done = threading.Event()         # the loop ended: the helper threads end too
        self._lock = threading.Lock()
        self._current: Exporter | None = None
        self._current_run: int | None = None
        self.runs_done = 0
        # Backoff sleeps end at once when the worker is told to stop.
        self.policy = Policy.from_settings(settings)
        self.policy.sleep = self.stopping.wait

    # -- lifecycle ----------------------------------------------------------------------

    def stop(self, *_signal) -> None:
        """Stop taking work; the run in progress stops sending and goes back to the
        queue. Safe from a signal handler or any thread."""
        if not self.stopping.is_set():
            logger.info("🛑 Worker %s: deteniéndose", self.worker_id)
        self.stopping.set()
        with self._lock:
            current = self._current
        if current is not None:
            current.stop(SHUTDOWN, STOP_SHUTDOWN)

    def run(self) -> int:
        """The loop; returns the process's exit code (0)."""
        workers.register(self.engine, worker_id=self.worker_id, target=self.target,
                         host=socket.gethostname(), pid=os.getpid(), embedded=self.embedded)
        previous = self._install_signals()
        helpers = [threading.Thread(target=self._beat_loop, name="oppen-worker-beat",
                                    daemon=True)]
        if not self.once:
            helpers.append(threading.Thread(target=self._notify_loop,
                                            name="oppen-worker-alerts", daemon=True))
        for thread in helpers:
            thread.start()
        self.say(f"Worker {self.worker_id} iniciado · destino {self.settings.env_label} "
                 f"({self.target}) · busca trabajo cada {self.settings.worker_poll:g} s"
                 + ("" if self.once else " · Ctrl+C o SIGTERM para detenerlo"))
        seen: set[int] = set()
        try:
            while not self.stopping.is_set():
                worked = self.tick(seen if self.once else None)
                if self.once and not worked:
                    break
                if not worked:
                    self.stopping.wait(self.settings.worker_poll)
        finally:
            self._done.set()
            for thread in helpers:
                thread.join(timeout=2)
            if self.once:
                # A command ends here: what it has to tell goes out now (bounded).
                alerts.deliver(self.engine, self.settings, self.worker_id)
            workers.leave_scan(self.engine, self.target, self.worker_id)
            workers.stopped(self.engine, self.worker_id)
            self._restore_signals(previous)
        self.say(f"Worker {self.worker_id} detenido: {self.runs_done} sincronización(es) "
                 "ejecutada(s)")
        return 0

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    @staticmethod
    def _restore_signals(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    # -- one round ------------------------------------------------------------------------

    def tick(self, seen: set[int] | None = None) -> bool:
        """Scan for work, then run the next queued run. True when it ran one (or queued
        something to run), so the loop goes again at once."""
        queued = self.scan()
        if self.stopping.is_set():
            return False
        row = queue.claim_next(self.engine, self.target, self.worker_id)
        if row is None:
            return queued > 0
        if seen is not None:
            if row["id"] in seen:   # --once: a run that is waiting for a busy day
                self._requeue(row)
                return False
            seen.add(row["id"])
        return self.execute(row)

    def scan(self) -> int:
        """What the scanning worker does each poll (see the module's docstring); returns
        how many runs it queued. Other workers skip it while the scan lease is held."""
        settings, engine, target = self.settings, self.engine, self.target
        hold = max(SCAN_LEASES * settings.worker_poll, 10.0)
        try:
            if not workers.take_scan(engine, target, self.worker_id, hold):
                return 0
            queue.adopt_stale(engine, target, settings.lease_seconds)
            for lost in workers.mark_lost(engine, target, workers.alive_within(settings)):
                logger.warning("⚠️ El worker %s dejó de dar señales", lost["id"])
                alerts.worker_lost(engine, settings, lost)
            queue.expire_horizon(engine, target, settings.retry_horizon)
            queued = self._queue_pickups()
            health = workers.health(engine, target)
            if health["down_since"] is not None:
                self._probe_if_due()
                health = workers.health(engine, target)
            if health["down_since"] is None:
                queued += self._queue_retries()
                # (While Oppen is down the morning reconciliation waits: it stays due.)
                self._reconcile_if_due()
            alerts.evaluate(engine, settings)
            return queued
        except Exception:  # the database hiccups: the next poll tries again
            logger.exception("❌ Worker %s: no se pudo revisar el trabajo pendiente",
                             self.worker_id)
            return 0

    def _reconcile_if_due(self) -> None:
        """The morning reconciliation against Oppen (OPPEN_RECONCILE_AT), once a day for
        all workers; its alerts go to the outbox. A failure must not stop the scan."""
        from .reconcile import reconcile_due
        probe = self.client.clone()
        try:
            reconcile_due(self.engine, self.settings, client=probe)
        except Exception:  # noqa: BLE001 - the next poll tries again
            logger.exception("❌ Worker %s: no se pudo conciliar con Oppen", self.worker_id)
        finally:
            probe.close()

    def _queue_pickups(self) -> int:
        since = (self.settings.pickup_since or workers.tables_created_on(self.engine)
                 or local_today())
        days = queue.pickup_days(self.engine, self.target, since)
        for local, fecha in days:
            logger.info("📥 %s %s fue auditado en el sistema de ventas: se sincroniza",
                        local, fecha)
            self._enqueue(queue.PICKUP, [(local, fecha)])
        return len(days)

    def _queue_retries(self) -> int:
        days = queue.due_days(self.engine, self.target)
        for local, fecha in days:
            self._enqueue(queue.RETRY, [(local, fecha)])
        if days:
            logger.info("🔁 Reintento automático de %d local/día(s)", len(days))
        return len(days)

    def _enqueue(self, kind: str, days) -> int:
        with self.engine.begin() as conn:
            return queue.enqueue(conn, target=self.target, kind=kind, days=days)

    def _probe_if_due(self) -> None:
        """Oppen is down: ask it once when the probe is due (one worker for all), instead
        of spending every invoice's attempts on it."""
        hold = self.settings.timeout * 3 + 5
        if not workers.take_probe(self.engine, self.target, hold):
            return
        probe = self.client.clone()
        try:
            probe.ping()
        except OppenError as exc:
            if is_retryable(exc):
                logger.warning("🔴 Oppen sigue sin responder: %s", exc.message)
                workers.probe_failed(self.engine, self.target, exc.message,
                                     self.settings.retry_delays)
                return
            # It answered, if only to refuse: it is up (what it refuses a run will say).
        finally:
            probe.close()
        alerts.oppen_status(self.engine, self.settings, reachable=True)

    # -- running one queued run ----------------------------------------------------------

    def execute(self, row: dict) -> bool:
        """Run a claimed run to its end in its own row. False when it could not start
        (its day is busy: it went back to the queue)."""
        if self.stopping.is_set():
            self._requeue(row)
            return False
        request = self.build_request(row)
        if request is None:
            runs.finish_run(self.engine, row["id"], row["owner"], state=schema.DONE,
                            summary={"total": 0, "exitosas": 0, "fallidas": 0, "errores": [],
                                     "success": True, "message": NOTHING_DUE},
                            message=NOTHING_DUE)
            return True
        exporter = Exporter(self.engine, self.settings, self.client, request,
                            policy=self.policy, today=self.today or local_today(),
                            deliver_alerts=False)
        with self._lock:
            self._current, self._current_run = exporter, row["id"]
        if self.stopping.is_set():
            exporter.stop(SHUTDOWN, STOP_SHUTDOWN)
        logger.info("▶️ Worker %s: sincronización %s (%s%s)", self.worker_id, row["id"],
                    row["kind"], f" {row['local']} {row['fecha']}" if row["local"] else "")
        try:
            exporter.run()
            return True
        except RunInProgress:
            return False     # start_run put it back in the queue, to wait
        except OppenError as exc:
            logger.warning("⚠️ Sincronización %s: %s", row["id"], exc.message)
            return True
        except Exception:
            logger.exception("❌ Sincronización %s: error inesperado", row["id"])
            return True
        finally:
            with self._lock:
                self._current, self._current_run = None, None
            self.runs_done += 1

    def build_request(self, row: dict) -> RunRequest | None:
        """What a queued run does, read now: a retry takes the invoices of its day that
        are due now; a resend of chosen invoices, those; anything else its whole days."""
        spec = queue.parse(row["request_json"]) or queue.Request(
            ((row["local"], row["fecha"]),) if row["local"] else ())
        groups: dict = {}
        only: set[int] | None = None
        with schema.reading(self.engine) as conn:
            if row["kind"] == queue.RETRY:
                only = set()
                for local, fecha in spec.days:
                    ids = queue.due_factura_ids(conn, self.target, local, fecha)
                    facturas = binder.read_facturas_by_id(conn, ids) if ids else []
                    if facturas:
                        groups[(local, fecha)] = facturas
                        only.update(ids)
                if not groups:
                    return None
            elif spec.invoice_ids is not None:
                only = set(spec.invoice_ids)
                for factura in binder.read_facturas_by_id(conn, sorted(only)):
                    day = factura["fecha"].date() if isinstance(factura["fecha"], dt.datetime) \
                        else factura["fecha"]
                    groups.setdefault((factura["local"], day), []).append(factura)
            else:
                for local, fecha in spec.days:
                    groups[(local, fecha)] = binder.read_facturas(conn, local, fecha)
        return RunRequest(kind=row["kind"], groups=groups, user=row["username"],
                          reason=row["reason"], only_ids=only, local=row["local"],
                          fecha=row["fecha"], run_id=row["id"])

    def _requeue(self, row: dict) -> None:
        runs.finish_run(self.engine, row["id"], row["owner"], state=schema.QUEUED,
                        summary={}, message=row.get("message") or "En cola")

    # -- helper threads --------------------------------------------------------------------

    def _beat_loop(self) -> None:
        """The worker's heartbeat; an admin's cancel of the run in progress; and, for a
        worker a console started, stopping when that console is gone."""
        interval = max(0.2, min(self.settings.worker_poll, self.settings.lease_seconds / 3))
        while not self._done.wait(interval):
            with self._lock:
                current, run_id = self._current, self._current_run
            try:
                workers.beat(self.engine, self.worker_id, run_id=run_id,
                             state=workers.STOPPING if self.stopping.is_set() else workers.RUNNING,
                             runs_done=self.runs_done)
                if current is not None and run_id is not None:
                    by = queue.cancel_request(self.engine, run_id)
                    if by:
                        current.stop(CANCELLED.format(user=by), STOP_CANCEL)
            except Exception:  # the database hiccups: the next beat tries again
                logger.warning("No se pudo registrar el latido del worker", exc_info=True)
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                logger.info("La consola que inició este worker terminó: se detiene")
                self.stop()

    def _notify_loop(self) -> None:
        """Alerts go out from here, never from the thread that sends invoices."""
        interval = max(0.2, min(self.settings.worker_poll, 5.0))
        while not self._done.wait(interval):
            alerts.deliver(self.engine, self.settings, self.worker_id)


def run_worker(engine: Engine, settings: Settings, client: OppenClient, **kwargs) -> int:
    return Worker(engine, settings, client, **kwargs).run()


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout` passes (for callers and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
