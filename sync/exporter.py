"""The exporter: takes a local/day (or a set of invoices) to Oppen, as the seed's flow says.

    lock the local/day → read its invoices → register and validate them →
    authenticate → claim → map → send (C at a time) → record → summarise

Workers only speak HTTP (one client each, one shared token); this thread does every
database write, in small batches, and calls `progress` — which is what lets the
console's progress bar live in the script's own thread. An invoice whose earlier
attempt had an unknown outcome is looked up in Oppen by its OfficialSerNr before it
is ever posted again, so a retry, a crash or a double click never creates a copy.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.engine import Engine

from .state import binder, runs, schema
from .oppen.client import OppenClient
from .oppen.retry import Breaker, Policy, backoff_delay
from .settings import Settings, local_today
from .state.schema import CONFLICT, FAILED, INVALID, PENDING, SENDING, SENT
from .errors import (LookupRefused, OppenAuthError, OppenDuplicate, OppenError, OppenRejected,
                     OppenTransportError)
from .mapping import Mapped, differences
from .state.binder import Attempt, Outcome, Registered

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str | None], None]

FLUSH_EVERY = 64          # outcomes per write transaction, at most
FLUSH_SECONDS = 0.25      # and at least this often while outcomes wait


class Heartbeat(threading.Thread):
    """Keeps the run's locks and claims alive every third of the lease, whatever the
    run is doing (a slow login, a long retry, a busy database). If the locks were
    taken over, or cannot be renewed for most of a lease, it stops the run's sending:
    a run that may no longer own its invoices must not post them."""

    def __init__(self, engine: Engine, owner: str, lease: float, breaker: Breaker):
        super().__init__(name="oppen-heartbeat", daemon=True)
        self.engine, self.owner, self.lease, self.breaker = engine, owner, lease, breaker
        self._stop_event = threading.Event()

    def run(self) -> None:
        interval = self.lease / 3
        last_ok = time.monotonic()
        while not self._stop_event.wait(interval):
            try:
                if runs.renew(self.engine, self.owner, self.lease):
                    last_ok = time.monotonic()
                    continue
                self.breaker.trip("Se detuvo la sincronización: otra sincronización tomó este local/día")
                return
            except Exception:  # the database hiccups: retry until the lease is at risk
                logger.warning("No se pudo renovar la sincronización en curso", exc_info=True)
                if time.monotonic() - last_ok > self.lease * 0.6:
                    self.breaker.trip("Se detuvo la sincronización: no se pudo mantener su registro en la base de datos")
                    return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


@dataclass
class Job:
    reg: Registered
    payload: dict
    official_sernr: str
    needs_lookup: bool
    amount: Decimal


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _body(record: Mapping | None) -> str | None:
    return None if record is None else json.dumps(record, ensure_ascii=False, default=str)


def deliver(client: OppenClient, job: Job, policy: Policy, breaker: Breaker) -> Outcome:
    """Everything one invoice needs from Oppen in this run; never raises."""
    out = Outcome(job.reg.state_id, job.reg.reference, FAILED, job.needs_lookup,
                  request_body=json.dumps(job.payload, ensure_ascii=False))
    # True once any attempt of ours may have reached Oppen: a later "duplicate" may
    # then be our own invoice, and must be checked rather than reported.
    ambiguous = job.needs_lookup
    error: OppenError | None = None
    for attempt in range(1, policy.max_attempts + 1):
        if breaker.open:
            out.state, out.error = PENDING, f"No se envió: {breaker.reason}"
            return out
        try:
            if out.needs_lookup:
                if _lookup(client, job, out):
                    breaker.success()
                    return out
                breaker.success()
            started = time.monotonic()
            logger.info("📤 Enviando factura %s ($%s)...", job.reg.reference,
                        job.reg.factura.get("monto"))
            try:
                out.posts += 1
                record = client.create_invoice(job.payload)
            except OppenError as exc:
                out.attempts.append(Attempt("post", _post_outcome(exc), schema.utcnow(), _ms(started),
                                            exc.status, exc.message, exc.body))
                raise
            out.attempts.append(Attempt("post", "sent", schema.utcnow(), _ms(started), 201, None,
                                        _body(record)))
            breaker.success()
            out.state, out.needs_lookup, out.error, out.http_status = SENT, False, None, None
            out.sernr = _sernr(record) or job.payload.get("SerNr")
            out.response_body = _body(record)
            if out.sernr is None:
                # Stored, but Oppen did not say under which SerNr: ask for it once.
                try:
                    _lookup(client, job, out)
                except OppenError:
                    out.state, out.error = SENT, None
            return out
        except LookupRefused as exc:
            logger.error("❌ %s", exc.message)
            out.needs_lookup = True
            return _failed(out, exc)
        except OppenDuplicate as exc:
            breaker.success()
            error = exc
            if ambiguous:
                # Maybe our own earlier attempt: find out what Oppen holds.
                out.needs_lookup = True
                try:
                    if _lookup(client, job, out):
                        return out
                except LookupRefused as refused:
                    out.needs_lookup = True
                    return _failed(out, refused)
                except OppenTransportError as lookup_exc:
                    error = lookup_exc
                    breaker.failure(lookup_exc.message)
                    _pause(policy, attempt, lookup_exc)
                    continue
            logger.error("❌ %s", exc.message)
            return _failed(out, exc)
        except OppenAuthError as exc:
            # The credentials stopped working mid-run: nothing more can be sent.
            breaker.trip(exc.message)
            logger.error("❌ %s", exc.message)
            out.state, out.error, out.http_status = PENDING, f"No se envió: {exc.message}", exc.status
            return out
        except OppenRejected as exc:
            breaker.success()
            logger.error("❌ %s", exc.message)
            return _failed(out, exc)
        except OppenTransportError as exc:
            error = exc
            if exc.maybe_applied:
                ambiguous = out.needs_lookup = True
            breaker.failure(exc.message)
            logger.warning("⚠️ %s: %s (intento %d/%d)", job.reg.reference, exc.message,
                           attempt, policy.max_attempts)
            if attempt < policy.max_attempts:
                _pause(policy, attempt, exc)
        except Exception as exc:  # a bug must not lose the invoice: keep it for lookup
            logger.exception("❌ Error inesperado enviando %s", job.reg.reference)
            out.needs_lookup = True
            out.state, out.error = FAILED, "Error inesperado (detalle en el log del servidor)"
            return out
    if error is None:
        out.state, out.error = PENDING, "No se envió"
    else:
        _failed(out, error)
    return out


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
    out.response_body = exc.body or out.response_body
    return out


def _sernr(record: Mapping) -> int | None:
    try:
        return int(record.get("SerNr"))
    except (TypeError, ValueError):
        return None


def _lookup(client: OppenClient, job: Job, out: Outcome) -> bool:
    """Ask Oppen for the invoice. True when that settled it (sent or conflict)."""
    started = time.monotonic()
    try:
        found = client.find_invoices(job.official_sernr, trans_date=job.payload.get("TransDate"))
    except OppenError as exc:
        out.attempts.append(Attempt("lookup", "unknown", schema.utcnow(), _ms(started), exc.status,
                                    exc.message, exc.body))
        if isinstance(exc, OppenTransportError):
            raise
        # Oppen answered but the lookup cannot clear the doubt: leave it for a person
        # (and do not count it as Oppen being down).
        raise LookupRefused(exc.message if exc.message.startswith("No se pudo verificar")
                            else f"No se pudo verificar en Oppen: {exc.message}",
                            status=exc.status) from None
    if not found:
        out.attempts.append(Attempt("lookup", "not_found", schema.utcnow(), _ms(started), 200))
        out.needs_lookup = False
        return False
    remote = found[0]
    diffs = differences(job.payload, remote, gross=job.amount)
    out.response_body = _body(remote)
    out.needs_lookup = False
    out.http_status = None
    if diffs:
        out.state = CONFLICT
        out.error = ("Conflicto: Oppen ya tiene una factura " + job.official_sernr
                     + " con otros datos (" + "; ".join(diffs) + ")")
        out.attempts.append(Attempt("lookup", "conflict", schema.utcnow(), _ms(started), 200,
                                    out.error, out.response_body))
        logger.error("❌ %s", out.error)
    else:
        out.state, out.error, out.sernr = SENT, None, _sernr(remote)
        out.attempts.append(Attempt("lookup", "found", schema.utcnow(), _ms(started), 200, None,
                                    out.response_body))
        logger.info("✅ %s ya estaba en Oppen (SerNr %s)", job.reg.reference, out.sernr)
    return True


# --- a run -----------------------------------------------------------------------------

@dataclass
class RunRequest:
    kind: str                                   # audit, resend
    groups: dict[tuple[str, dt.date], list[Mapping]]   # (local, fecha) -> facturas rows
    user: str | None = None
    reason: str | None = None
    only_ids: set[int] | None = None            # resend of chosen invoices only
    local: str | None = None
    fecha: dt.date | None = None


def run(engine: Engine, settings: Settings, client: OppenClient, request: RunRequest, *,
        progress: Progress | None = None, policy: Policy | None = None,
        today: dt.date | None = None, on_start: Callable[[int], None] | None = None) -> dict:
    """Run one sync or resend to its end and return the seed's summary dict.

    Raises RunInProgress before doing anything if another run holds a local/day, and
    OppenAuthError / OppenTransportError when authentication fails (after recording
    every invoice as pending with that reason).
    """
    policy = policy or Policy.from_settings(settings)
    today = today or local_today()
    owner = schema.new_owner()
    run_id = runs.start_run(engine, target=settings.target, kind=request.kind,
                             days=list(request.groups), username=request.user,
                             reason=request.reason, lease=settings.lease_seconds, owner=owner,
                             local=request.local, fecha=request.fecha)
    breaker = Breaker(policy.breaker_threshold)
    heartbeat = Heartbeat(engine, owner, settings.lease_seconds, breaker)
    heartbeat.start()
    started = time.monotonic()
    summary: dict = {}
    try:
        try:
            if on_start:
                on_start(run_id)
            summary = _execute(engine, settings, client, request, run_id, owner, policy, today,
                               progress, breaker)
        finally:
            heartbeat.stop()  # before finish_run releases what it renews
    except OppenError as exc:
        summary = {"total": 0, "exitosas": 0, "fallidas": 0, "errores": [], "success": False,
                   "error": exc.message}
        runs.finish_run(engine, run_id, owner, state=schema.ERROR, summary=summary,
                         message=exc.message)
        _notify(settings, request, [{"factura": "todas las del día", "error": exc.message}])
        raise
    except BaseException:
        logger.exception("❌ Error inesperado en la sincronización")
        runs.finish_run(engine, run_id, owner, state=schema.ERROR, summary=summary,
                         message="Error inesperado (detalle en el log del servidor)")
        raise
    summary_message = summary.get("message") or ""
    runs.finish_run(engine, run_id, owner, state=schema.DONE, summary=summary,
                     message=summary_message)
    logger.info("✨ Sincronización completada: %d exitosas, %d fallidas de %d totales (%.1f s)",
                summary["exitosas"], summary["fallidas"], summary["total"],
                time.monotonic() - started)
    if summary["fallidas"]:
        _notify(settings, request, summary["errores"])
    summary["run_id"] = run_id
    return summary


def _notify(settings: Settings, request: RunRequest, errores: list) -> None:
    if not settings.webhook_url:
        return
    from .notify import notify_failures
    if request.local is not None:
        local, fecha = request.local, request.fecha
    else:
        days = sorted(request.groups)
        local = ", ".join(sorted({d[0] for d in days}))[:200]
        fecha = days[0][1] if len(days) == 1 else f"{days[0][1]} a {days[-1][1]}"
    notify_failures(settings, local=local, fecha=fecha, errores=errores)


def _execute(engine, settings, client, request, run_id, owner, policy, today, progress,
             breaker) -> dict:
    target, profile = settings.target, settings.mapping
    registered: list[Registered] = []
    for (local, fecha), facturas in request.groups.items():
        if not facturas:
            logger.warning("⚠️ No se encontraron facturas para %s en %s", local, fecha)
        registered.extend(binder.register(engine, target, facturas, profile, today))
    if request.only_ids is not None:
        registered = [r for r in registered if r.factura["id"] in request.only_ids]

    already = [r for r in registered if r.state == SENT]
    considered = [r for r in registered if r.state != SENT]
    candidates = [r for r in considered if r.state in (PENDING, FAILED, SENDING)]
    total = len(considered)
    results: dict[int, Outcome] = {}
    stop_reason = None
    if candidates:
        if client.tokens.get() is None:
            _authenticate(client, policy, engine, candidates)
        stop_reason = _send(engine, settings, client, candidates, run_id, owner, policy, today,
                            progress, total, results, breaker)

    errores, exitosas, counts = [], 0, {PENDING: 0, INVALID: 0, CONFLICT: 0}
    for reg in considered:
        outcome = results.get(reg.state_id)
        state = outcome.state if outcome else reg.state
        if state == SENT:
            exitosas += 1
            continue
        error = (outcome.error if outcome else reg.last_error) or "No se envió"
        if state in counts:
            counts[state] += 1
        elif state == SENDING:
            counts[PENDING] += 1
        errores.append({"factura": reg.reference, "error": error})
    summary = {"total": total, "exitosas": exitosas, "fallidas": total - exitosas,
               "errores": errores, "success": total == exitosas}
    for key, state in (("pendientes", PENDING), ("invalidas", INVALID), ("conflictos", CONFLICT)):
        if counts[state]:
            summary[key] = counts[state]
    if already:
        summary["ya_enviadas"] = len(already)
    if total == 0:
        summary["message"] = ("No hay facturas para sincronizar" if not already else
                              f"Las {len(already)} factura(s) ya estaban enviadas a Oppen")
    if stop_reason:
        summary["message"] = f"{stop_reason}. {counts[PENDING]} factura(s) quedaron pendientes para reenviar."
    return summary


def _authenticate(client: OppenClient, policy: Policy, engine: Engine,
                  candidates: Sequence[Registered]) -> None:
    """The seed's step 4a, retried on transport errors; on failure nothing is sent."""
    for attempt in range(1, policy.max_attempts + 1):
        try:
            client.authenticate()
            return
        except OppenTransportError as exc:
            if attempt == policy.max_attempts:
                binder.mark_pending(engine, [r.state_id for r in candidates],
                                   f"No se envió: {exc.message}")
                raise
            _pause(policy, attempt, exc)
        except OppenAuthError as exc:
            binder.mark_pending(engine, [r.state_id for r in candidates],
                               f"No se envió: {exc.message}")
            raise


def _send(engine, settings, client, candidates, run_id, owner, policy, today, progress,
          total, results, breaker) -> str | None:
    """Send the candidates C at a time; returns why the run stopped early, if it did."""
    profile = settings.mapping
    workers = max(1, settings.concurrency)
    local_clients = threading.local()
    made: list[OppenClient] = []
    made_lock = threading.Lock()

    def work(job: Job) -> Outcome:
        worker_client = getattr(local_clients, "client", None)
        if worker_client is None:
            worker_client = local_clients.client = client.clone()
            with made_lock:
                made.append(worker_client)
        return deliver(worker_client, job, policy, breaker)

    queue = deque(candidates)
    ready: deque[Job] = deque()
    in_flight: dict[Future, Job] = {}
    unflushed: list[Outcome] = []
    done_count = total - len(candidates)   # invalid/conflict rows count as handled
    exitosas = 0
    last_flush = time.monotonic()
    sending_ref: str | None = None
    claim_size = max(16, workers * 4)

    def flush(current: str | None = None) -> None:
        nonlocal last_flush
        binder.record(engine, owner, run_id, unflushed,
                     progress={"total": total, "processed": done_count, "exitosas": exitosas,
                               "fallidas": done_count - exitosas, "current_ref": current})
        for written in unflushed:
            # Only state and error are needed for the summary: a 100,000-invoice run
            # must not keep every request and response body in memory.
            written.request_body = written.response_body = None
            written.attempts = []
        unflushed.clear()
        last_flush = time.monotonic()

    if progress:
        progress(done_count, total, None)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="oppen") as pool:
        while queue or ready or in_flight:
            if breaker.open and (queue or ready):
                # Stop early: what was not attempted stays pending with the reason.
                reason = f"No se envió: {breaker.reason}"
                for job in ready:
                    results[job.reg.state_id] = Outcome(job.reg.state_id, job.reg.reference,
                                                        PENDING, job.needs_lookup, error=reason)
                    unflushed.append(results[job.reg.state_id])
                ready.clear()
                rest = list(queue)
                queue.clear()
                binder.mark_pending(engine, [r.state_id for r in rest], reason)
                for reg in rest:
                    results[reg.state_id] = Outcome(reg.state_id, reg.reference,
                                                    FAILED if reg.state == FAILED else PENDING,
                                                    False, error=reason)
            while not breaker.open and len(in_flight) < workers * 2 and (ready or queue):
                if not ready:
                    batch = [queue.popleft() for _ in range(min(claim_size, len(queue)))]
                    claimed = binder.claim(engine, [r.state_id for r in batch], owner,
                                          settings.lease_seconds)
                    for reg in batch:
                        if reg.state_id not in claimed:
                            results[reg.state_id] = Outcome(
                                reg.state_id, reg.reference, PENDING, False,
                                error="No se envió: la tiene otra sincronización en curso")
                            done_count += 1  # settled for this run: the bar must count it
                            continue
                        mapped = binder.map_factura(reg.factura, profile, today, reg.state_id)
                        if not isinstance(mapped, Mapped):  # registered valid a moment ago
                            out = Outcome(reg.state_id, reg.reference, INVALID, claimed[reg.state_id],
                                          error=f"Datos inválidos: {mapped.reason}")
                            results[reg.state_id] = out
                            unflushed.append(out)
                            done_count += 1
                            continue
                        ready.append(Job(reg, mapped.payload, mapped.official_sernr,
                                         claimed[reg.state_id], mapped.amount))
                    continue
                job = ready.popleft()
                in_flight[pool.submit(work, job)] = job
                sending_ref = job.reg.reference
            if not in_flight:
                continue
            finished, _ = wait(list(in_flight), timeout=FLUSH_SECONDS, return_when=FIRST_COMPLETED)
            current = None
            for fut in finished:
                job = in_flight.pop(fut)
                outcome = fut.result()
                results[job.reg.state_id] = outcome
                unflushed.append(outcome)
                done_count += 1
                if outcome.state == SENT:
                    exitosas += 1
                current = job.reg.reference
                if progress:
                    progress(done_count, total, current)
            # The run row shows the invoice being sent now, for the progress bar.
            if unflushed and (len(unflushed) >= FLUSH_EVERY
                              or time.monotonic() - last_flush >= FLUSH_SECONDS):
                flush(current=sending_ref if in_flight else current)
        flush(current=None)
    for made_client in made:
        made_client.close()
    return breaker.reason
