"""The exporter: takes a local/day (or a set of invoices) to Oppen, as the seed's flow says.

    Exporter.run():
        start the run (its row, and the lock of every local/day it touches)
        → register the invoices (one state row each, mapped once, validated)
        → authenticate
        → claim → send (C at a time) → record
        → summarise → finish the run (release the locks) → alert on failures

Worker threads only speak HTTP (one client each, one shared token); the thread that
called `run` does every database write, in small batches, and calls `progress`: that is
what lets the console's progress bar live in the script's own thread. An invoice whose
earlier attempt had an unknown outcome is looked up in Oppen by its OfficialSerNr
before it is ever posted again, so a retry, a crash or a double click never makes a copy.

Never here: SQL (the binder and runs modules), HTTP (the client), field mapping (mapping).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from queue import Empty, SimpleQueue
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from sqlalchemy.engine import Engine

from . import alerts, messages
from . import schedule as retry_schedule
from .errors import (LookupRefused, OppenAuthError, OppenDuplicate, OppenError,
                     OppenRejected, OppenTransportError, SendWithheld)
from .mapping import (Excluded, Mapped, differences, is_annulled, is_same_invoice, payload_total,
                      pick_ours, voucher_identity)
from .oppen.client import OppenClient, json_body
from .oppen.retry import Breaker, Policy, backoff_delay, is_retryable
from .settings import Settings, local_today
from .state import binder, queue, runs, schema
from .state.binder import Attempt, Outcome, Registered
from .state.schema import CONFLICT, EXCLUDED, FAILED, INVALID, PENDING, SENDING, SENT

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str | None], None]

FLUSH_EVERY = 64          # outcomes per write transaction (one statement), at most
# Invoices registered (read back, mapped) at a time, as sending needs them: a run of
# 100,000 holds no more of them at once than a run of a few thousand.
REGISTER_EVERY = 2000
FLUSH_SECONDS = 0.25      # and at least this often while outcomes wait
GATHER_SECONDS = 0.002    # the sending loop's nap once an outcome is back (see _finished)
LOST_DAY = "No se envió: otra sincronización tomó este local/día"
# Why a run was told to stop from outside (Exporter.stop), which decides what becomes
# of it: a worker shutting down puts it back in the queue; an admin's cancel ends it.
STOP_SHUTDOWN, STOP_CANCEL = "shutdown", "cancel"
SHUTDOWN = "Se detuvo: el worker que la ejecutaba se está apagando; la retoma otro worker"
CANCELLED = "Cancelada por {user}"
PERSON_KINDS = ("audit", "resend")   # a person asked for it: the schedule starts over
NOT_STORED = "Oppen respondió HTTP {status} pero no guardó la factura"
CENT = Decimal("0.01")


@dataclass
class RunRequest:
    """What a run is asked to do: which invoices, for whom, and why."""
    kind: str                                   # audit, resend
    groups: dict[tuple[str, dt.date], list[Mapping]]   # (local, fecha) -> facturas rows
    user: str | None = None
    reason: str | None = None
    only_ids: set[int] | None = None            # facturas_trns ids, for a resend of chosen ones
    local: str | None = None
    fecha: dt.date | None = None
    run_id: int | None = None                   # a queued run a worker claimed: runs in its row


@dataclass
class Parcel:
    """One invoice on its way to Oppen in this run: its state row and its payload."""
    reg: Registered
    payload: dict
    official_sernr: str
    needs_lookup: bool
    amount: Decimal
    day: tuple[str, dt.date]        # the run's (local, fecha) it belongs to: its lock


class Ownership:
    """Which local/days this run may still send, and until when, as the heartbeat last
    proved on the database's clock. Checked right before every POST: a run that lost a
    day (another run took it over) stops sending that day at once and keeps its others;
    a process that was paused past its lease never posts an invoice it may no longer own
    (the monotonic clock kept running while it was stopped), until a renewal proves it
    still holds the day."""

    MARGIN = 0.2    # of the lease: stop trusting a renewal a little before it lapses

    def __init__(self, engine: Engine, owner: str, lease: float,
                 days: Sequence[tuple[str, dt.date]], run_id: int):
        self.engine, self.owner, self.lease, self.run_id = engine, owner, lease, run_id
        self._lock = threading.Lock()
        self._held = frozenset(days)
        self._valid_until = time.monotonic() + lease * (1 - self.MARGIN)

    def renew(self) -> runs.Renewal:
        """Extend the leases now and remember what is still ours. Raises what the database
        raises."""
        started = time.monotonic()
        renewal = runs.renew(self.engine, self.owner, self.lease, self.run_id)
        with self._lock:
            self._held = renewal.held
            # Counted from before the renewal was asked: never later than the database's.
            self._valid_until = started + self.lease * (1 - self.MARGIN)
        return renewal

    @property
    def held(self) -> frozenset:
        with self._lock:
            return self._held

    def holds(self, day: tuple[str, dt.date]) -> bool:
        """The day is this run's as of a proof still fresh, from memory alone: the check
        at the last moment before a POST is written, where a database round trip would
        eat into the request's deadline (the write would then go out late)."""
        with self._lock:
            return day in self._held and time.monotonic() < self._valid_until

    def may_send(self, day: tuple[str, dt.date]) -> bool:
        with self._lock:
            if day not in self._held:
                return False
            if time.monotonic() < self._valid_until:
                return True
        # The last proof is too old (a slow database, or this process was paused):
        # prove it again before anything goes out.
        try:
            self.renew()
        except Exception:
            logger.warning("No se pudo confirmar que la sincronización sigue a cargo", exc_info=True)
            return False
        with self._lock:
            return day in self._held and time.monotonic() < self._valid_until


class Heartbeat(threading.Thread):
    """Keeps the run's locks, claims and row alive every third of the lease, whatever the
    run is doing (a slow login, a long retry, a busy database). If every day was taken
    over, or the leases cannot be renewed for most of a lease, it stops the run's sending:
    a run that may no longer own its invoices must not post them."""

    def __init__(self, ownership: Ownership, breaker: Breaker,
                 on_cancel: Callable[[str], None] | None = None):
        super().__init__(name="oppen-heartbeat", daemon=True)
        self.ownership, self.breaker, self.on_cancel = ownership, breaker, on_cancel
        self._stop_event = threading.Event()

    def run(self) -> None:
        lease = self.ownership.lease
        last_ok = time.monotonic()
        while not self._stop_event.wait(lease / 3):
            try:
                renewal = self.ownership.renew()
                if renewal.held:
                    last_ok = time.monotonic()
                    if renewal.cancelled_by and self.on_cancel:
                        self.on_cancel(renewal.cancelled_by)   # an admin asked to stop it
                    continue
                self.breaker.trip("Se detuvo la sincronización: otra sincronización tomó este local/día")
                return
            except Exception:  # the database hiccups: retry until the lease is at risk
                logger.warning("No se pudo renovar la sincronización en curso", exc_info=True)
                if time.monotonic() - last_ok > lease * 0.6:
                    self.breaker.trip("Se detuvo la sincronización: no se pudo mantener su registro en la base de datos")
                    return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def run(engine: Engine, settings: Settings, client: OppenClient, request: RunRequest, *,
        progress: Progress | None = None, policy: Policy | None = None,
        today: dt.date | None = None, on_start: Callable[[int], None] | None = None) -> dict:
    """Run one sync or resend to its end and return the seed's summary dict (see Exporter)."""
    return Exporter(engine, settings, client, request, progress=progress, policy=policy,
                    today=today, on_start=on_start).run()


class Exporter:
    """One run, top to bottom. Holds the run's context so its steps need no long
    argument lists; used once (`run`), then discarded."""

    def __init__(self, engine: Engine, settings: Settings, client: OppenClient,
                 request: RunRequest, *, progress: Progress | None = None,
                 policy: Policy | None = None, today: dt.date | None = None,
                 on_start: Callable[[int], None] | None = None, deliver_alerts: bool = True):
        self.engine, self.settings, self.client, self.request = engine, settings, client, request
        # A worker posts alerts from its own thread; a command posts them when it ends.
        self.deliver_alerts = deliver_alerts
        self.stop_kind: str | None = None      # STOP_*, when told to stop from outside
        self.schedule = retry_schedule.Schedule.from_settings(settings)
        self.fresh = request.kind in PERSON_KINDS
        self.profile = binder.run_profile(engine, settings.mapping)
        self.progress = progress
        self.policy = policy or Policy.from_settings(settings)
        self.today = today or local_today()
        self.on_start = on_start
        self.owner = schema.new_owner()
        self.breaker = Breaker(self.policy.breaker_threshold)
        self.run_id: int | None = None
        self.ownership: Ownership | None = None
        self.results: dict[int, Outcome] = {}   # state_id -> this run's outcome
        self.day_of: dict[int, tuple[str, dt.date]] = {}   # state_id -> its (local, fecha)
        # Read now: the rows are consumed as they are registered (`_Backlog`).
        self.invoices = sum(len(f) for f in request.groups.values())

    def stop(self, reason: str, kind: str) -> None:
        """Stop sending, from another thread (a worker shutting down, an admin's cancel):
        what is in flight finishes (bounded by OPPEN_TIMEOUT), the rest stays pending
        with `reason`."""
        if self.stop_kind is None:
            self.stop_kind = kind
        self.breaker.trip(reason, schema.ERROR_UNKNOWN)

    # -- the flow ---------------------------------------------------------------------

    def run(self) -> dict:
        """Raises RunInProgress before doing anything if another run holds a local/day,
        and OppenAuthError / OppenTransportError when authentication fails (after
        recording every invoice as pending with that reason)."""
        started = self._started = time.monotonic()
        self.run_id = runs.start_run(
            self.engine, target=self.settings.target, kind=self.request.kind,
            days=list(self.request.groups), username=self.request.user,
            reason=self.request.reason, lease=self.settings.lease_seconds, owner=self.owner,
            local=self.request.local, fecha=self.request.fecha, run_id=self.request.run_id,
            request_json=queue.dump(self.request.groups, self.request.only_ids))
        self.ownership = Ownership(self.engine, self.owner, self.settings.lease_seconds,
                                   list(self.request.groups), self.run_id)
        heartbeat = Heartbeat(self.ownership, self.breaker, on_cancel=lambda user: self.stop(
            CANCELLED.format(user=user), STOP_CANCEL))
        heartbeat.start()
        summary: dict = {}
        try:
            try:
                if self.on_start:
                    self.on_start(self.run_id)
                summary = self._sync()
            finally:
                heartbeat.stop()  # before finish_run releases what it renews
        except OppenError as exc:
            down = is_retryable(exc)
            summary = {"total": 0, "exitosas": 0, "fallidas": 0, "errores": [],
                       "success": False, "error": exc.message}
            if down:
                # Nothing reached Oppen because it did not answer: the worker retries.
                summary["oppen_no_responde"] = True
            self._finish(schema.ERROR, summary, exc.message)
            alerts.oppen_status(self.engine, self.settings, reachable=not down,
                                error=exc.message)
            if down:
                self._alert_pending(summary, exc.message)
            else:
                self._alert([{"factura": "todas las del día", "error": exc.message}])
            raise
        except BaseException:
            logger.exception("❌ Error inesperado en la sincronización")
            self._finish(schema.ERROR, summary, "Error inesperado (detalle en el log del servidor)")
            raise
        self._finish_done(summary)
        logger.info("✨ Sincronización completada: %d exitosas, %d fallidas de %d totales (%.1f s)",
                    summary["exitosas"], summary["fallidas"], summary["total"],
                    time.monotonic() - started)
        alerts.oppen_status(self.engine, self.settings, reachable=self._reachable(),
                            error=self.breaker.reason)
        if summary["fallidas"] and self.stop_kind is None:
            self._alert_failures(summary)
        summary["run_id"] = self.run_id
        return summary

    def _finish_done(self, summary: dict) -> None:
        """A finished run, or one stopped from outside: put back in the queue (a worker
        shutting down) or cancelled, its unsent invoices pending with the reason."""
        retrying = sum(1 for o in self.results.values()
                       if o.state != SENT and o.retry == retry_schedule.TRANSIENT)
        if retrying:
            summary["reintento_automatico"] = retrying
        if self.breaker.kind == schema.ERROR_TRANSPORT and self.stop_kind is None:
            summary["oppen_no_responde"] = True
        if self.stop_kind == STOP_SHUTDOWN and self.request.run_id is not None:
            runs.finish_run(self.engine, self.run_id, self.owner, state=schema.QUEUED,
                            summary=summary, message=SHUTDOWN, release=f"No se envió: {SHUTDOWN}")
        elif self.stop_kind == STOP_CANCEL:
            runs.finish_run(self.engine, self.run_id, self.owner, state=schema.CANCELLED,
                            summary=summary, message=self.breaker.reason or "Cancelada",
                            release=f"No se envió: {self.breaker.reason}", retry_in=None,
                            duration_ms=self._elapsed_ms())
        else:
            self._finish(schema.DONE, summary, summary.get("message") or "")

    def _reachable(self) -> bool | None:
        """What this run learned about Oppen: it answered (something was sent, or refused
        on purpose), it did not (the breaker opened on transport errors), or nothing."""
        for outcome in self.results.values():
            if outcome.state in (SENT, CONFLICT) or (
                    outcome.state == FAILED and outcome.retry != retry_schedule.TRANSIENT
                    and outcome.error_kind not in (schema.ERROR_UNKNOWN, None)):
                return True
        if self.breaker.kind == schema.ERROR_TRANSPORT and self.stop_kind is None:
            return False
        return None

    def _alert_failures(self, summary: Mapping) -> None:
        """A run that ended with failures tells a person once. What only waits for Oppen
        to answer again is retried on its own: a person's run says so once per outage
        (`alerts.oppen_pending`); the worker's own runs say nothing about it (the stale,
        down and horizon alerts do)."""
        waiting = {o.reference for o in self.results.values()
                   if o.state != SENT and o.retry in (retry_schedule.TRANSIENT,
                                                      retry_schedule.NOW)}
        errores = [e for e in summary["errores"] if e["factura"] not in waiting]
        if errores:
            self._alert(errores)
        if waiting and self.fresh and summary.get("oppen_no_responde"):
            self._alert_pending(summary, self.breaker.reason)

    def _alert_pending(self, summary: Mapping, error: str | None) -> None:
        if not self.fresh:
            return
        local, fecha = self._where()
        pending = summary.get("pendientes") or summary.get("fallidas") or self.invoices
        alerts.oppen_pending(self.engine, self.settings, local=local, fecha=fecha,
                             pending=pending, error=error)
        self._deliver_alerts()

    def _where(self) -> tuple[str, dt.date | str]:
        if self.request.local is not None:
            return self.request.local, self.request.fecha
        days = sorted(self.request.groups)
        if not days:
            return "facturas elegidas", ""
        local = ", ".join(sorted({d[0] for d in days}))[:200]
        fecha = days[0][1] if len(days) == 1 else f"{days[0][1]} a {days[-1][1]}"
        return local, fecha

    def _deliver_alerts(self) -> None:
        if self.deliver_alerts:
            alerts.deliver(self.engine, self.settings, self.owner)

    def pending_retry(self) -> str:
        """How an invoice this run did not attempt continues, by why the run stopped."""
        if self.stop_kind == STOP_CANCEL or self.breaker.kind == schema.ERROR_AUTH:
            return retry_schedule.NEVER     # a person decides (credentials, a cancel)
        if self.stop_kind is None and self.breaker.kind == schema.ERROR_TRANSPORT:
            return retry_schedule.TRANSIENT  # Oppen does not answer: the schedule
        return retry_schedule.NOW           # our own reason (a shutdown, a lost day)

    def pending_retry_in(self) -> float | None | object:
        """The same, for invoices never claimed: seconds from now, None or KEEP."""
        mode = self.pending_retry()
        if mode == retry_schedule.NEVER:
            return None
        if mode == retry_schedule.TRANSIENT:
            return self.schedule.delay(1)
        return 0.0 if self.stop_kind == STOP_SHUTDOWN else binder.KEEP

    def _sync(self) -> dict:
        backlog = _Backlog(self)
        stop_reason = None
        if backlog:
            if self.client.tokens.get() is None:
                self._authenticate(backlog)
            stop_reason = self._send(backlog)
        for _ in backlog.batches():
            pass    # nothing left to send: the rest is registered all the same
        return self._summary(backlog.considered, backlog.already, stop_reason,
                             excluded=backlog.excluded)

    # -- the steps ----------------------------------------------------------------------

    def _authenticate(self, backlog: _Backlog) -> None:
        """The seed's step 4a, retried on transport errors; on failure nothing is sent."""
        for attempt in range(1, self.policy.max_attempts + 1):
            if self.breaker.open:
                return   # stopped from outside: the sending loop settles every candidate
            try:
                self.client.authenticate()
                return
            except OppenError as exc:
                if is_retryable(exc) and attempt < self.policy.max_attempts:
                    _pause(self.policy, attempt, exc)
                    continue
                # Oppen down: the schedule retries them; credentials refused: a person.
                for batch in backlog.batches():
                    binder.mark_pending(self.engine, [r.state_id for r in batch],
                                        f"No se envió: {exc.message}", schema.error_kind_for(exc),
                                        retry_in=self.schedule.delay(1) if is_retryable(exc)
                                        else None)
                raise

    def _send(self, backlog: _Backlog) -> str | None:
        """Send the candidates C at a time; returns why the run stopped early, if it did."""
        return _Sender(self, backlog).send()

    def _summary(self, considered: Sequence[tuple[int, str, str, str | None]], already: int,
                 stop_reason: str | None, *, excluded: int = 0) -> dict:
        errores, exitosas, counts = [], 0, {PENDING: 0, INVALID: 0, CONFLICT: 0}
        for state_id, reference, state, last_error in considered:
            outcome = self.results.get(state_id)
            state = outcome.state if outcome else state
            if state == SENT:
                exitosas += 1
                continue
            error = (outcome.error if outcome else last_error) or "No se envió"
            key = PENDING if state == SENDING else state
            counts[key] = counts.get(key, 0) + 1
            errores.append({"factura": reference, "error": error})
        return messages.run_summary(total=len(considered), exitosas=exitosas, errores=errores,
                                    pendientes=counts[PENDING], invalidas=counts[INVALID],
                                    conflictos=counts[CONFLICT], ya_enviadas=already,
                                    excluidas=excluded, stop_reason=stop_reason)

    def _finish(self, state: str, summary: Mapping, message: str) -> None:
        runs.finish_run(self.engine, self.run_id, self.owner, state=state, summary=summary,
                        message=message, duration_ms=self._elapsed_ms())

    def _elapsed_ms(self) -> int:
        return round((time.monotonic() - self._started) * 1000)

    def _alert(self, errores: list) -> None:
        """The seed's failure message, through the alerts outbox (posted at once here, or
        by the worker's own thread)."""
        local, fecha = self._where()
        alerts.run_failed(self.engine, self.settings, run_id=self.run_id, local=local,
                          fecha=fecha, errores=errores)
        self._deliver_alerts()


# What a run remembers of each invoice it sent, once the outcome is written: that it
# was sent (the summary counts it), nothing else.
_WAS_SENT = Outcome(0, "", SENT, False)


class _Backlog:
    """The run's invoices still to send, registered REGISTER_EVERY at a time as the
    sending loop asks for them: a run of 100,000 never holds more than a few thousand
    mappings at once. The request's rows are consumed as they are registered (they are
    its largest part); what the whole run keeps per invoice is what its summary needs.

    Its `total` is the progress bar's: the invoices the run counts (not sent before, not
    excluded), known before any is registered and corrected as each batch is."""

    def __init__(self, exporter: Exporter):
        self.x = exporter
        self._days: deque[tuple[tuple[str, dt.date], list[Mapping]]] = deque()
        only = exporter.request.only_ids
        ids: list[int] = []
        for day, facturas in exporter.request.groups.items():
            if not facturas:
                logger.warning("⚠️ No se encontraron facturas para %s en %s", *day)
            ids.extend(f["id"] for f in facturas if only is None or f["id"] in only)
            self._days.append((day, facturas))
        self._ready: deque[Registered] = deque()
        # (state_id, reference, state, last_error) of every invoice the run counts.
        self.considered: list[tuple[int, str, str, str | None]] = []
        self.already = self.excluded = 0
        self.handled = 0    # counted, but not to be sent (invalid, conflict): done at once
        self.total = len(ids) - binder.count_settled(exporter.engine, exporter.settings.target,
                                                     ids)

    def __bool__(self) -> bool:
        """Whether an invoice is left to send (registering the next batches to know)."""
        while not self._ready and self._days:
            self._register_next()
        return bool(self._ready)

    def take(self, n: int) -> list[Registered]:
        taken: list[Registered] = []
        while len(taken) < n and self:
            taken.append(self._ready.popleft())
        return taken

    def batches(self) -> Iterator[list[Registered]]:
        """Everything left, a batch at a time (each registered as it comes)."""
        while self:
            batch = list(self._ready)
            self._ready.clear()
            yield batch

    def _register_next(self) -> None:
        x = self.x
        day, facturas = self._days[0]
        rows = facturas[:REGISTER_EVERY]
        del facturas[:REGISTER_EVERY]
        if not facturas:
            self._days.popleft()
        only = x.request.only_ids
        counted = [f["id"] for f in rows if only is None or f["id"] in only]
        settled_before = binder.count_settled(x.engine, x.settings.target, counted)
        registered = binder.register(x.engine, x.settings.target, rows, x.profile, x.today,
                                     retry_in=x.settings.lease_seconds)
        settled = 0
        for reg in registered:
            if only is not None and reg.factura["id"] not in only:
                continue
            if reg.state in (SENT, EXCLUDED):
                settled += 1
                if reg.state == SENT:
                    self.already += 1
                else:
                    self.excluded += 1
                continue
            self.considered.append((reg.state_id, reg.reference, reg.state, reg.last_error))
            if reg.state in (PENDING, FAILED, SENDING):
                x.day_of[reg.state_id] = day
                self._ready.append(reg)
            else:
                self.handled += 1
        # A row whose state changed since the count (fixed, excluded by a new setting).
        self.total += settled_before - settled


class _Sender:
    """The sending loop of one run: claims in batches, keeps at most 2×C invoices in
    flight, writes outcomes in batches and reports progress. Lives for one `_send`."""

    def __init__(self, exporter: Exporter, backlog: _Backlog):
        self.x = exporter
        self.backlog = backlog
        self.workers = max(1, exporter.settings.concurrency)
        self.claim_size = max(16, self.workers * 4)
        self.settled = 0
        self.exitosas = 0
        self.unflushed: list[Outcome] = []
        self.last_flush = time.monotonic()
        # Parcels go out to the sending threads and outcomes come back through two
        # queues: a Future and a wait() per invoice cost more CPU than its POST did.
        self._to_send: SimpleQueue[Parcel | None] = SimpleQueue()
        self._sent: SimpleQueue[tuple[Parcel, Outcome | BaseException]] = SimpleQueue()

    @property
    def total(self) -> int:
        return self.backlog.total

    @property
    def done(self) -> int:
        """Settled in this run, or counted but not to be sent: the bar counts both."""
        return self.backlog.handled + self.settled

    def send(self) -> str | None:
        x = self.x
        queue = self.backlog
        ready: deque[Parcel] = deque()
        in_flight = 0
        sending_ref: str | None = None
        if x.progress:
            x.progress(self.done, self.total, None)
        binder.prepare(x.engine)
        threads = [threading.Thread(target=self._work, name=f"oppen_{n}", daemon=True)
                   for n in range(min(self.workers, max(1, self.total)))]
        for thread in threads:
            thread.start()
        try:
            while queue or ready or in_flight:
                if x.breaker.open and (queue or ready):
                    self._stop_early(queue, ready)
                while not x.breaker.open and in_flight < self.workers * 2 and (ready or queue):
                    if not ready:
                        ready.extend(self._claim(queue))
                        continue
                    parcel = ready.popleft()
                    self._to_send.put(parcel)
                    in_flight += 1
                    sending_ref = parcel.reg.reference
                if not in_flight:
                    continue
                current = None
                for parcel, outcome in self._finished():
                    in_flight -= 1
                    if isinstance(outcome, BaseException):
                        raise outcome
                    self._settle(outcome)
                    current = parcel.reg.reference
                    if x.progress:
                        x.progress(self.done, self.total, current)
                # The run row shows the invoice being sent now, for the progress bar.
                if self.unflushed and (len(self.unflushed) >= FLUSH_EVERY
                                       or time.monotonic() - self.last_flush >= FLUSH_SECONDS):
                    self._flush(current=sending_ref if in_flight else current)
            self._flush(current=None)
        finally:
            # What is in flight ends within OPPEN_TIMEOUT; then each thread closes its client.
            for _ in threads:
                self._to_send.put(None)
            for thread in threads:
                thread.join()
        return x.breaker.reason

    def _finished(self) -> list[tuple[Parcel, Outcome | BaseException]]:
        """The outcomes that came back: at least one, unless FLUSH_SECONDS passed first.

        Having found one, it lets GATHER_SECONDS pass before taking the rest: woken per
        outcome, this thread cost every invoice a wake-up and a trip through the GIL,
        while the sending threads still hold C invoices queued ahead of them."""
        try:
            finished = [self._sent.get(timeout=FLUSH_SECONDS)]
        except Empty:
            return []
        time.sleep(GATHER_SECONDS)
        while True:
            try:
                finished.append(self._sent.get_nowait())
            except Empty:
                return finished

    def _work(self) -> None:
        """A sending thread: its own client (own connections, the run's one token)."""
        client = self.x.client.clone()
        try:
            while (parcel := self._to_send.get()) is not None:
                try:
                    outcome = self._deliver(client, parcel)
                except BaseException as exc:   # deliver never raises; a bug must not hang the run
                    outcome = exc
                self._sent.put((parcel, outcome))
        finally:
            client.close()

    def _claim(self, queue: _Backlog) -> list[Parcel]:
        """Claim the next batch; what another run holds is settled as not sent here."""
        x = self.x
        batch = queue.take(self.claim_size)
        claimed = binder.claim(x.engine, [r.state_id for r in batch], x.owner,
                               x.settings.lease_seconds)
        parcels = []
        for reg in batch:
            day = x.day_of.pop(reg.state_id)
            if reg.state_id not in claimed:
                self._settle(Outcome(reg.state_id, reg.reference, PENDING, False,
                                     error="No se envió: la tiene otra sincronización en curso",
                                     error_kind=schema.ERROR_UNKNOWN), write=False)
                continue
            # Registration mapped it; only a claim taken over from a dead run was not.
            mapped = reg.mapped or binder.map_factura(reg.factura, x.profile, x.today,
                                                      reg.state_id, reg.client_sernr)
            if isinstance(mapped, Excluded):
                self._settle(Outcome(reg.state_id, reg.reference, EXCLUDED, claimed[reg.state_id],
                                     error=mapped.reason))
                continue
            if not isinstance(mapped, Mapped):
                self._settle(Outcome(reg.state_id, reg.reference, INVALID, claimed[reg.state_id],
                                     error=f"Datos inválidos: {mapped.reason}",
                                     error_kind=schema.ERROR_INVALID))
                continue
            parcels.append(Parcel(reg, mapped.payload, mapped.official_sernr,
                                  claimed[reg.state_id], mapped.amount, day))
        return parcels

    def _deliver(self, client: OppenClient, parcel: Parcel) -> Outcome:
        return deliver(client, parcel, self.x.policy, self.x.breaker, self.x.ownership)

    def _settle(self, outcome: Outcome, *, write: bool = True) -> None:
        if outcome.state == PENDING and outcome.retry is None:
            outcome.retry = self.x.pending_retry()
        self.x.results[outcome.state_id] = outcome
        if write:
            self.unflushed.append(outcome)
        self.settled += 1       # settled for this run: the bar must count it
        if outcome.state == SENT:
            self.exitosas += 1

    def _stop_early(self, queue: _Backlog, ready: deque) -> None:
        """The breaker opened: what was not attempted stays pending with the reason."""
        x = self.x
        reason = f"No se envió: {x.breaker.reason}"
        for parcel in ready:
            out = Outcome(parcel.reg.state_id, parcel.reg.reference, PENDING,
                          parcel.needs_lookup, error=reason, error_kind=x.breaker.kind,
                          retry=x.pending_retry())
            x.results[out.state_id] = out
            self.unflushed.append(out)
        ready.clear()
        for rest in queue.batches():
            binder.mark_pending(x.engine, [r.state_id for r in rest], reason,
                                x.breaker.kind or schema.ERROR_UNKNOWN,
                                retry_in=x.pending_retry_in())
            for reg in rest:
                x.day_of.pop(reg.state_id, None)
                x.results[reg.state_id] = Outcome(reg.state_id, reg.reference,
                                                  FAILED if reg.state == FAILED else PENDING,
                                                  False, error=reason, error_kind=x.breaker.kind,
                                                  retry=x.pending_retry())

    def _flush(self, current: str | None) -> None:
        x = self.x
        binder.record(x.engine, x.owner, x.run_id, self.unflushed,
                      progress={"total": self.total, "processed": self.done,
                                "exitosas": self.exitosas, "fallidas": self.done - self.exitosas,
                                "current_ref": current},
                      schedule=x.schedule, fresh=x.fresh)
        for written in self.unflushed:
            # Only state and error are needed for the summary: a 100,000-invoice run
            # must not keep every request and response body in memory, nor a record per
            # invoice sent.
            if written.state == SENT:
                x.results[written.state_id] = _WAS_SENT
                continue
            written.request_body = written.response_body = None
            written.attempts = []
        self.unflushed.clear()
        self.last_flush = time.monotonic()


# --- one invoice ---------------------------------------------------------------------------

def deliver(client: OppenClient, parcel: Parcel, policy: Policy, breaker: Breaker,
            ownership: Ownership | None = None) -> Outcome:
    """Everything one invoice needs from Oppen in this run; never raises.

    What happens after an error is decided by what the error says about Oppen:
    a rejection is final, a duplicate is final unless our own earlier attempt may be
    it (then it is looked up once), an authentication failure stops the run, and a
    transport error (`is_retryable`) is tried again with backoff, looking the invoice
    up first whenever the failed POST may have reached Oppen.
    """
    # Encoded once: the text is what we keep, the bytes what every attempt sends.
    request_body, body = json_body(parcel.payload)
    out = Outcome(parcel.reg.state_id, parcel.reg.reference, FAILED, parcel.needs_lookup,
                  request_body=request_body)
    # True once any attempt of ours may have reached Oppen: a later "duplicate" may
    # then be our own invoice, and must be checked rather than reported.
    ambiguous = parcel.needs_lookup
    error: OppenError | None = None
    withheld = False     # once: a request held back at its last check, the day still ours
    for attempt in range(1, policy.max_attempts + 1):
        if breaker.open:
            out.state, out.error = PENDING, f"No se envió: {breaker.reason}"
            out.error_kind = breaker.kind
            return out
        try:
            if out.needs_lookup and _lookup(client, parcel, out):
                breaker.success()
                return out
            if ownership is not None and not ownership.may_send(parcel.day):
                # Another run has this day now (or this one cannot prove it still does):
                # not even a login for it.
                out.state, out.error, out.error_kind = PENDING, LOST_DAY, schema.ERROR_UNKNOWN
                return out
            # Asked again at the last moment, with the request built, right before its
            # write (SendWithheld below): a thread frozen in between (a paused process, a
            # stalled VM) would otherwise post a day another run took over meanwhile.
            proceed = None if ownership is None else functools.partial(ownership.holds,
                                                                         parcel.day)
            if _post(client, parcel, out, body, proceed):
                breaker.success()
                return out
            # A 2xx that does not prove our invoice is stored: ask Oppen what it holds.
            ambiguous = True
            if _lookup(client, parcel, out):
                breaker.success()
                return out
            error = OppenTransportError(NOT_STORED.format(status=out.http_status),
                                        status=out.http_status, maybe_applied=False)
            out.needs_lookup = True   # a late write in Oppen stays possible: check first
            logger.warning("⚠️ %s: %s (intento %d/%d)", parcel.reg.reference, error.message,
                           attempt, policy.max_attempts)
            if attempt < policy.max_attempts:
                _pause(policy, attempt, error)
            continue
        except OppenDuplicate as exc:
            breaker.success()
            if not ambiguous:
                logger.error("❌ %s", exc.message)
                _failed(out, exc)
                _explain_duplicate(client, parcel, out)
                return out
            # Maybe our own earlier attempt: find out what Oppen holds.
            error, out.needs_lookup = exc, True
            try:
                if _lookup(client, parcel, out):
                    return out
            except OppenError as lookup_exc:
                if not is_retryable(lookup_exc):
                    return _failed(out, lookup_exc)
                error = lookup_exc
                breaker.failure(lookup_exc.message)
                _pause(policy, attempt, lookup_exc)
                continue
            logger.error("❌ %s", exc.message)
            return _failed(out, exc)
        except LookupRefused as exc:
            logger.error("❌ %s", exc.message)
            out.needs_lookup = True
            return _failed(out, exc)
        except SendWithheld:
            # Nothing reached Oppen. The proof went stale on the way (a slow login or
            # connection, a pause): proved again, a day still ours is tried once more.
            if not withheld and ownership is not None and ownership.may_send(parcel.day):
                withheld = True
                continue
            out.state, out.error, out.error_kind = PENDING, LOST_DAY, schema.ERROR_UNKNOWN
            return out
        except OppenAuthError as exc:
            # The credentials stopped working mid-run: nothing more can be sent.
            breaker.trip(exc.message, schema.ERROR_AUTH)
            logger.error("❌ %s", exc.message)
            out.state, out.error, out.http_status = PENDING, f"No se envió: {exc.message}", exc.status
            out.error_kind = schema.ERROR_AUTH
            return out
        except OppenError as exc:
            if not is_retryable(exc):
                breaker.success()
                logger.error("❌ %s", exc.message)
                return _failed(out, exc)
            error = exc
            if exc.maybe_applied:
                ambiguous = out.needs_lookup = True
            breaker.failure(exc.message)
            logger.warning("⚠️ %s: %s (intento %d/%d)", parcel.reg.reference, exc.message,
                           attempt, policy.max_attempts)
            if attempt < policy.max_attempts:
                _pause(policy, attempt, exc)
        except Exception:  # a bug must not lose the invoice: keep it for lookup
            logger.exception("❌ Error inesperado enviando %s", parcel.reg.reference)
            out.needs_lookup = True
            out.state, out.error = FAILED, "Error inesperado (detalle en el log del servidor)"
            out.error_kind = schema.ERROR_UNKNOWN
            return out
    if error is None:
        out.state, out.error, out.error_kind = PENDING, "No se envió", schema.ERROR_UNKNOWN
    else:
        _failed(out, error)
        if is_retryable(error):
            out.retry = retry_schedule.TRANSIENT   # Oppen did not answer: the schedule
    return out


def _post(client: OppenClient, parcel: Parcel, out: Outcome, body: bytes | None = None,
          proceed: Callable[[], bool] | None = None) -> bool:
    """POST the invoice (`body`: its payload already encoded; `proceed`: asked right
    before it is written). True when Oppen's answer proves it stored our invoice (then
    it is recorded as sent); False when a 2xx carried no proof. Raises the OppenError,
    or SendWithheld when nothing was sent."""
    started = time.monotonic()
    logger.info("📤 Enviando factura %s ($%s)...", parcel.reg.reference,
                parcel.reg.factura.get("monto"))
    out.posts += 1
    try:
        status, record = client.post_invoice(parcel.payload, body=body, proceed=proceed)
    except SendWithheld:
        out.posts -= 1      # it never left
        raise
    except OppenError as exc:
        out.attempts.append(Attempt("post", _post_outcome(exc), schema.utcnow(), _ms(started),
                                    exc.status, exc.message, exc.body,
                                    schema.error_kind_for(exc)))
        raise
    out.http_status = status
    problem = _not_ours(parcel, record)
    if problem:
        out.attempts.append(Attempt("post", "unverified", schema.utcnow(), _ms(started), status,
                                    f"Oppen respondió HTTP {status} pero {problem}",
                                    _body(record), schema.ERROR_TRANSPORT))
        logger.warning("⚠️ %s: Oppen respondió HTTP %s pero %s; se verifica en Oppen",
                       parcel.reg.reference, status, problem)
        return False
    out.response_body = _body(record)
    out.attempts.append(Attempt("post", "sent", schema.utcnow(), _ms(started), status, None,
                                out.response_body))
    out.state, out.needs_lookup, out.error, out.http_status = SENT, False, None, None
    out.error_kind = None
    out.sernr = _sernr(record) or parcel.payload.get("SerNr")
    out.total_oppen = _total(record)
    if out.sernr is None:
        # Stored, but Oppen did not say under which SerNr: ask for it once.
        try:
            _lookup(client, parcel, out)
        except OppenError:
            out.state, out.error = SENT, None
    return True


def _not_ours(parcel: Parcel, record: Mapping) -> str | None:
    """Why the record a 2xx carried does not prove our invoice is stored, or None.

    Ours means: our OfficialSerNr, our voucher identity where the record carries it,
    our SerNr where we sent one, not annulled, and its amount within a cent of ours."""
    if not record:
        return "no devolvió ninguna factura"
    if str(record.get("OfficialSerNr")) != parcel.official_sernr:
        return f"devolvió otra factura ({str(record.get('OfficialSerNr'))[:40]})"
    ours = dict(voucher_identity(parcel.payload))
    theirs = dict(voucher_identity(record))
    if any(key in theirs and theirs[key] != value for key, value in ours.items()):
        return "devolvió la factura de otro tipo de comprobante con el mismo número"
    sent_sernr = parcel.payload.get("SerNr")
    if sent_sernr is not None and _sernr(record) not in (None, int(sent_sernr)):
        return f"devolvió otro SerNr ({_sernr(record)})"
    if is_annulled(record):
        return "devolvió una factura anulada"
    total = _total(record)
    if total is None and record.get("Items"):
        total = payload_total(record)
        ours_total = payload_total(parcel.payload)
    else:
        ours_total = parcel.amount
    if total is None:
        return "no devolvió el importe de la factura"
    if abs(total - ours_total) > CENT:
        return f"devolvió otro importe ({total}, se esperaba {ours_total})"
    return None


def _explain_duplicate(client: OppenClient, parcel: Parcel, out: Outcome) -> None:
    """A duplicate on an invoice we never posted before: when we chose its SerNr and
    Oppen holds nothing under its number, the SerNr is what clashes (a restored backup,
    two databases with one base). Resending would only meet the same refusal, so it
    becomes a conflict that says so, for an admin to give it a new SerNr."""
    sernr = parcel.payload.get("SerNr")
    if sernr is None:
        return
    started = time.monotonic()
    try:
        if pick_ours(parcel.payload, client.find_invoices(parcel.official_sernr))[0] is not None:
            return          # Oppen holds this very invoice: compare and link it
        holders = [r for r in client.find_by_sernr(int(sernr))
                   if str(r.get("OfficialSerNr")) != parcel.official_sernr]
    except OppenError:
        return              # cannot tell: it stays a duplicate, as Oppen said
    if not holders:
        return
    other = str(holders[0].get("OfficialSerNr"))[:40]
    out.state, out.error_kind = CONFLICT, schema.ERROR_SERNR_TAKEN
    out.error = (f"Conflicto: Oppen ya tiene el SerNr {sernr} con otro número ({other}); "
                 "hay que asignarle un SerNr nuevo a esta factura")
    out.attempts.append(Attempt("lookup", "conflict", schema.utcnow(), _ms(started), 200,
                                out.error, _body(holders[0]), schema.ERROR_SERNR_TAKEN))


def _lookup(client: OppenClient, parcel: Parcel, out: Outcome) -> bool:
    """Ask Oppen for the invoice. True when that settled it (sent or conflict)."""
    started = time.monotonic()
    try:
        found = client.find_invoices(parcel.official_sernr,
                                     trans_date=parcel.payload.get("TransDate"))
    except OppenError as exc:
        out.attempts.append(Attempt("lookup", "unknown", schema.utcnow(), _ms(started), exc.status,
                                    exc.message, exc.body, schema.error_kind_for(exc)))
        if is_retryable(exc):
            raise
        # Oppen answered but the lookup cannot clear the doubt: leave it for a person
        # (and do not count it as Oppen being down).
        raise LookupRefused(exc.message if exc.message.startswith("No se pudo verificar")
                            else f"No se pudo verificar en Oppen: {exc.message}",
                            status=exc.status) from None
    remote, others = pick_ours(parcel.payload, found)
    if remote is None:
        # Nothing of ours: another voucher type's invoice with this number, or one
        # annulled in Oppen, is not our invoice.
        note = f"{len(others)} factura(s) con ese número que no son esta" if others else None
        out.attempts.append(Attempt("lookup", "not_found", schema.utcnow(), _ms(started), 200,
                                    note, _body(others[0]) if others else None))
        out.needs_lookup = False
        return False
    twins = [r for r in others if is_same_invoice(parcel.payload, r)]
    diffs = differences(parcel.payload, remote, gross=parcel.amount)
    out.response_body = _body(remote)
    out.needs_lookup = False
    out.http_status = None
    if twins:
        out.state = CONFLICT
        sernrs = ", ".join(str(r.get("SerNr")) for r in [remote, *twins])
        out.error = (f"Conflicto: Oppen tiene la factura {parcel.official_sernr} más de una vez "
                     f"(SerNr {sernrs}); revisala en Oppen")
        out.error_kind = schema.ERROR_CONFLICT
        out.attempts.append(Attempt("lookup", "conflict", schema.utcnow(), _ms(started), 200,
                                    out.error, _body([remote, *twins]), schema.ERROR_CONFLICT))
        logger.error("❌ %s", out.error)
    elif diffs:
        out.state = CONFLICT
        out.error = ("Conflicto: Oppen ya tiene una factura " + parcel.official_sernr
                     + " con otros datos (" + "; ".join(diffs) + ")")
        out.error_kind = schema.ERROR_CONFLICT
        out.attempts.append(Attempt("lookup", "conflict", schema.utcnow(), _ms(started), 200,
                                    out.error, out.response_body, schema.ERROR_CONFLICT))
        logger.error("❌ %s", out.error)
    else:
        out.state, out.error, out.error_kind, out.sernr = SENT, None, None, _sernr(remote)
        out.total_oppen = _total(remote)
        out.attempts.append(Attempt("lookup", "found", schema.utcnow(), _ms(started), 200, None,
                                    out.response_body))
        logger.info("✅ %s ya estaba en Oppen (SerNr %s)", parcel.reg.reference, out.sernr)
    return True


def _pause(policy: Policy, attempt: int, exc: OppenError) -> None:
    policy.sleep(backoff_delay(attempt, base=policy.backoff_base, cap=policy.backoff_cap,
                               retry_after=exc.retry_after, rng=policy.rng))


def _post_outcome(exc: OppenError) -> str:
    if isinstance(exc, OppenDuplicate):
        return "duplicate"
    if isinstance(exc, OppenRejected):
        return "rejected"
    if isinstance(exc, OppenAuthError):
        return "auth"
    if isinstance(exc, OppenTransportError) and not exc.maybe_applied:
        return "refused"
    return "unknown"


def _failed(out: Outcome, exc: OppenError) -> Outcome:
    out.state, out.error, out.http_status = FAILED, exc.message, exc.status
    out.error_kind = schema.error_kind_for(exc)
    out.response_body = exc.body or out.response_body
    return out


def _sernr(record: Mapping) -> int | None:
    try:
        return int(record.get("SerNr"))
    except (TypeError, ValueError):
        return None


def _total(record: Mapping) -> Decimal | None:
    """Oppen's Total for the record (VAT included), when it carries a readable one."""
    try:
        total = Decimal(str(record.get("Total")))
    except (InvalidOperation, ValueError, TypeError):
        return None
    return total if total.is_finite() else None


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _body(record: Mapping | None) -> str | None:
    return None if record is None else json.dumps(record, ensure_ascii=False, default=str)
