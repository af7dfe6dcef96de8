"""Runs and their locks: one run per local/day and target, across processes and hosts.

A run row says who started what, when, and how far it got; a lock row per local/day
keeps a second run out while the first is alive, and a lease lets a dead owner's lock
be taken over. The heartbeat (`renew`) keeps both alive. Short transactions only.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from ..errors import RunInProgress
from . import schema
from .transactions import retry_deadlocks
from .binder import release_claims
from .schema import SENDING, db_now, oppen_invoices, oppen_run_locks, oppen_runs


@dataclass(frozen=True)
class Renewal:
    """What a heartbeat learned: the local/days the run still holds, and the database's
    time when their leases were extended (they last `lease` seconds from then)."""
    held: frozenset[tuple[str, dt.date]]
    at: dt.datetime
    cancelled_by: str | None = None   # an admin asked to cancel the run (sync/state/queue.py)


@retry_deadlocks
def renew(engine: Engine, owner: str, lease: float, run_id: int | None = None) -> Renewal:
    """The run's heartbeat, on the database's clock: extend its locks, the claims of the
    days it still holds, and the run row's heartbeat. A day missing from `held` was
    taken over by another run, and this one must stop sending it."""
    t, L = oppen_invoices, oppen_run_locks
    with engine.begin() as conn:
        now = db_now(conn)
        until = now + dt.timedelta(seconds=lease)
        conn.execute(sa.update(L).where(L.c.owner == owner).values(lease_until=until))
        held = frozenset((r.local, r.fecha) for r in conn.execute(
            sa.select(L.c.local, L.c.fecha).where(L.c.owner == owner)))
        if held:
            conn.execute(sa.update(t).where(t.c.claim_owner == owner, t.c.state == SENDING,
                                            sa.tuple_(t.c.local, t.c.fecha).in_(sorted(held)))
                         .values(claim_until=until))
        cancelled_by = None
        if run_id is not None:   # by its key: no scan that could wait on other runs' rows
            conn.execute(sa.update(oppen_runs).where(oppen_runs.c.id == run_id,
                                                     oppen_runs.c.owner == owner,
                                                     oppen_runs.c.state == schema.RUNNING)
                         .values(heartbeat_at=now))
            cancelled_by = conn.execute(sa.select(oppen_runs.c.cancel_requested_by).where(
                oppen_runs.c.id == run_id, oppen_runs.c.cancel_requested_at.is_not(None))
            ).scalar()
    return Renewal(held, now, cancelled_by)


def start_run(engine: Engine, *, target: str, kind: str, days: Sequence[tuple[str, dt.date]],
              username: str | None, reason: str | None, lease: float, owner: str,
              local: str | None = None, fecha: dt.date | None = None,
              run_id: int | None = None, request_json: str | None = None) -> int:
    """Create the run and take the lock of every local/day it touches, or refuse.

    `run_id`: a queued run a worker claimed (sync/state/queue.py) starts in its own row;
    refused, it goes back to the queue to wait. `request_json` says what the run does,
    so a worker can take it over if this process dies.
    Raises RunInProgress naming the local/day that another live run holds.
    """
    L = oppen_run_locks
    with engine.begin() as conn:
        now = db_now(conn)
        until = now + dt.timedelta(seconds=lease)
        if run_id is None:
            run_id = conn.execute(sa.insert(oppen_runs).values(
                target=target, kind=kind, local=local, fecha=fecha, username=username,
                reason=reason, owner=owner, state=schema.RUNNING, started_at=now,
                heartbeat_at=now, total=0, processed=0, exitosas=0, fallidas=0,
                request_json=request_json)).inserted_primary_key[0]
            queued = False
        else:
            conn.execute(sa.update(oppen_runs).where(oppen_runs.c.id == run_id).values(
                owner=owner, state=schema.RUNNING, started_at=now, heartbeat_at=now,
                request_json=sa.func.coalesce(oppen_runs.c.request_json, request_json)))
            queued = True
    taken: list[tuple[str, dt.date]] = []
    try:
        for day_local, day in sorted(set(days)):
            if not _take_lock(engine, target, day_local, day, run_id, owner, lease):
                raise RunInProgress(f"Ya hay una sincronización en curso para {day_local} "
                                    f"{day.isoformat()}; esperá a que termine.")
            taken.append((day_local, day))
    except BaseException as exc:
        with engine.begin() as conn:
            conn.execute(sa.delete(L).where(L.c.owner == owner))
            if queued and isinstance(exc, RunInProgress):
                # Asked for by a person or the schedule: it waits for the day to be free.
                conn.execute(sa.update(oppen_runs).where(oppen_runs.c.id == run_id).values(
                    state=schema.QUEUED, queued_at=db_now(conn), worker_id=None,
                    message=f"En espera: {exc.message}"))
            else:
                conn.execute(sa.update(oppen_runs).where(oppen_runs.c.id == run_id).values(
                    state=schema.ERROR, finished_at=schema.utcnow(),
                    message="No se inició: ya había otra sincronización en curso"))
        raise
    return run_id


@retry_deadlocks
def _take_lock(engine: Engine, target: str, local: str, fecha: dt.date, run_id: int,
               owner: str, lease: float) -> bool:
    L = oppen_run_locks
    try:
        with engine.begin() as conn:
            until = db_now(conn) + dt.timedelta(seconds=lease)
            conn.execute(sa.insert(L).values(target=target, local=local, fecha=fecha,
                                             run_id=run_id, owner=owner, lease_until=until))
        return True
    except IntegrityError:
        pass
    with engine.begin() as conn:
        now = db_now(conn)
        until = now + dt.timedelta(seconds=lease)
        row = conn.execute(sa.select(L.c.run_id, L.c.owner).where(
            L.c.target == target, L.c.local == local, L.c.fecha == fecha,
            L.c.lease_until < now)).first()
        if row is None:
            return False
        dead_owner = row.owner
        taken = conn.execute(sa.update(L).where(
            L.c.target == target, L.c.local == local, L.c.fecha == fecha,
            L.c.lease_until < now).values(run_id=run_id, owner=owner, lease_until=until)).rowcount
        if taken:
            # Its owner is gone: let its in-flight claims be taken over (and looked up).
            t = oppen_invoices
            conn.execute(sa.update(t).where(t.c.claim_owner == dead_owner, t.c.state == SENDING,
                                            t.c.local == local, t.c.fecha == fecha)
                         .values(claim_until=now - dt.timedelta(seconds=1)))
            # (Unless it is this very run, taken over by a worker: it goes on.)
            conn.execute(sa.update(oppen_runs).where(oppen_runs.c.id == row.run_id,
                                                     oppen_runs.c.id != run_id,
                                                     oppen_runs.c.owner == dead_owner,
                                                     oppen_runs.c.state == schema.RUNNING)
                         .values(state=schema.INTERRUPTED, finished_at=now,
                                 message="Interrumpida: el proceso dejó de responder"))
        return bool(taken)


@retry_deadlocks
def finish_run(engine: Engine, run_id: int, owner: str, *, state: str, summary: Mapping,
               message: str, release: str | None = None,
               retry_in: float | None = 0.0, duration_ms: int | None = None) -> None:
    """End the run: hand back its claims (with `release` as their reason, due for an
    automatic retry `retry_in` seconds from now, None: not automatically), write its
    state, answer and how long it took (`duration_ms`, by the run's own clock), free its
    days. State QUEUED puts it back in the queue (a worker that stops mid-run): another
    worker takes it up from the start."""
    L = oppen_run_locks
    with engine.begin() as conn:
        now = db_now(conn)
        release_claims(conn, owner, release or "No se envió: la sincronización se interrumpió; "
                       "se verificará en Oppen antes de reenviar", retry_in=retry_in)
        runs_ = oppen_runs
        mine = sa.update(runs_).where(runs_.c.id == run_id, runs_.c.owner == owner)
        if state == schema.QUEUED:
            conn.execute(mine.values(state=state, queued_at=now, worker_id=None,
                                     current_ref=None, message=message))
        else:
            conn.execute(mine.values(
                state=state, finished_at=now, duration_ms=duration_ms,
                total=summary.get("total", 0),
                processed=summary.get("total", 0), exitosas=summary.get("exitosas", 0),
                fallidas=summary.get("fallidas", 0), current_ref=None, message=message,
                result_json=json.dumps(_short_result(summary), ensure_ascii=False,
                                       default=str)))
        conn.execute(sa.delete(L).where(L.c.owner == owner))


def _short_result(summary: Mapping) -> dict:
    result = dict(summary)
    errors = list(result.get("errores") or [])
    if len(errors) > 200:
        result["errores"] = errors[:200]
        result["errores_omitidos"] = len(errors) - 200
    return result
