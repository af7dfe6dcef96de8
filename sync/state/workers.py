"""Workers and targets, in the database: each worker's heartbeat row (what the console
shows, and what tells a console whether to start a worker of its own), whether Oppen
answers for a target (down since when, when a worker probes it next), the scan lease
(one worker at a time looks for due work), and facts about the installation
(`oppen_meta`: the day our tables were created).

Short transactions only, on the database's clock. No HTTP here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from . import schema
from .schema import db_now, oppen_meta, oppen_target_state, oppen_workers
from .transactions import retry_deadlocks

RUNNING, STOPPING, STOPPED, LOST = "running", "stopping", "stopped", "lost"
WORKER_STATE_LABELS = {RUNNING: "activo", STOPPING: "deteniéndose", STOPPED: "detenido",
                       LOST: "sin señal"}
FORGET_AFTER = dt.timedelta(days=7)   # rows of stopped or lost workers kept this long


def alive_within(settings) -> float:
    """Seconds since its last heartbeat within which a worker counts as alive: a lease,
    as for runs (it beats every third of that, or every poll if that is sooner)."""
    return float(settings.lease_seconds)


# --- worker rows ---------------------------------------------------------------------------

@retry_deadlocks
def register(engine: Engine, *, worker_id: str, target: str, host: str, pid: int,
             embedded: bool) -> None:
    with engine.begin() as conn:
        now = db_now(conn)
        conn.execute(sa.insert(oppen_workers).values(
            id=worker_id, target=target, host=host[:255], pid=pid, embedded=embedded,
            state=RUNNING, started_at=now, heartbeat_at=now))


@retry_deadlocks
def beat(engine: Engine, worker_id: str, *, run_id: int | None, state: str = RUNNING,
         runs_done: int | None = None) -> None:
    w = oppen_workers
    values = {"heartbeat_at": None, "run_id": run_id, "state": state}
    if runs_done is not None:
        values["runs_done"] = runs_done
    with engine.begin() as conn:
        values["heartbeat_at"] = db_now(conn)
        conn.execute(sa.update(w).where(w.c.id == worker_id).values(**values))


@retry_deadlocks
def stopped(engine: Engine, worker_id: str) -> None:
    w = oppen_workers
    with engine.begin() as conn:
        now = db_now(conn)
        conn.execute(sa.update(w).where(w.c.id == worker_id).values(
            state=STOPPED, stopped_at=now, heartbeat_at=now, run_id=None))


def live(engine: Engine, target: str, within: float) -> list[dict]:
    """Workers of this target whose last heartbeat is within `within` seconds."""
    w = oppen_workers
    with schema.reading(engine) as conn:
        now = db_now(conn)
        return [dict(r._mapping) for r in conn.execute(
            sa.select(w).where(w.c.target == target, w.c.state.in_((RUNNING, STOPPING)),
                               w.c.heartbeat_at >= now - dt.timedelta(seconds=within))
            .order_by(w.c.started_at))]


def listing(engine: Engine, target: str, within: float) -> list[dict]:
    """Every worker row of this target (newest first) with `alive` computed on the
    database's clock, for the console."""
    w = oppen_workers
    with schema.reading(engine) as conn:
        now = db_now(conn)
        rows = [dict(r._mapping) for r in conn.execute(
            sa.select(w).where(w.c.target == target).order_by(w.c.heartbeat_at.desc()))]
    for row in rows:
        row["alive"] = (row["state"] in (RUNNING, STOPPING)
                        and row["heartbeat_at"] >= now - dt.timedelta(seconds=within))
        row["now"] = now
    return rows


@retry_deadlocks
def mark_lost(engine: Engine, target: str, within: float) -> list[dict]:
    """Workers that stopped beating without saying goodbye (killed, their host down):
    marked lost and returned, once each; old stopped and lost rows are forgotten."""
    w = oppen_workers
    with engine.begin() as conn:
        now = db_now(conn)
        silent = sa.and_(w.c.target == target, w.c.state.in_((RUNNING, STOPPING)),
                         w.c.heartbeat_at < now - dt.timedelta(seconds=within))
        lost = [dict(r._mapping) for r in conn.execute(sa.select(w).where(silent))]
        if lost:
            conn.execute(sa.update(w).where(silent, w.c.id.in_([x["id"] for x in lost]))
                         .values(state=LOST, run_id=None))
        conn.execute(sa.delete(w).where(w.c.target == target, w.c.state.in_((STOPPED, LOST)),
                                        w.c.heartbeat_at < now - FORGET_AFTER))
    return lost


def last_heartbeat(engine: Engine, target: str) -> dt.datetime | None:
    w = oppen_workers
    with schema.reading(engine) as conn:
        return conn.execute(sa.select(sa.func.max(w.c.heartbeat_at))
                            .where(w.c.target == target)).scalar()


# --- the target's state: is Oppen answering; who scans ---------------------------------------

def _ensure(conn: Connection, target: str) -> None:
    s = oppen_target_state
    if conn.execute(sa.select(s.c.target).where(s.c.target == target)).first() is None:
        try:
            with conn.begin_nested():
                conn.execute(sa.insert(s).values(target=target, probe_failures=0))
        except IntegrityError:
            pass   # another process made it first


@retry_deadlocks
def take_scan(engine: Engine, target: str, owner: str, seconds: float) -> bool:
    """Become (or stay) the worker that scans for due work, for `seconds`. One at a time,
    so two workers never queue the same retry; if it dies, another takes over."""
    s = oppen_target_state
    with engine.begin() as conn:
        _ensure(conn, target)
        now = db_now(conn)
        return bool(conn.execute(sa.update(s).where(
            s.c.target == target,
            sa.or_(s.c.scan_owner.is_(None), s.c.scan_owner == owner, s.c.scan_until < now))
            .values(scan_owner=owner, scan_until=now + dt.timedelta(seconds=seconds))).rowcount)


@retry_deadlocks
def leave_scan(engine: Engine, target: str, owner: str) -> None:
    s = oppen_target_state
    with engine.begin() as conn:
        conn.execute(sa.update(s).where(s.c.target == target, s.c.scan_owner == owner)
                     .values(scan_owner=None, scan_until=None))


def health(engine: Engine, target: str) -> dict:
    """{down_since, down_error, probe_failures, next_probe_at, last_probe_at, now}."""
    s = oppen_target_state
    with schema.reading(engine) as conn:
        now = db_now(conn)
        row = conn.execute(sa.select(s).where(s.c.target == target)).first()
    out = dict(row._mapping) if row is not None else {
        "target": target, "down_since": None, "down_error": None, "probe_failures": 0,
        "next_probe_at": None, "last_probe_at": None}
    out["now"] = now
    return out


@retry_deadlocks
def mark_down(engine: Engine, target: str, error: str, first_probe_in: float
              ) -> dt.datetime | None:
    """Oppen did not answer. Returns when it went down if it just did (it was up), else
    None; while it stays down only probes move its schedule."""
    s = oppen_target_state
    with engine.begin() as conn:
        _ensure(conn, target)
        now = db_now(conn)
        changed = conn.execute(sa.update(s).where(s.c.target == target,
                                                  s.c.down_since.is_(None)).values(
            down_since=now, down_error=(error or "")[:2000], probe_failures=0,
            next_probe_at=now + dt.timedelta(seconds=first_probe_in))).rowcount
        if not changed:
            conn.execute(sa.update(s).where(s.c.target == target)
                         .values(down_error=(error or "")[:2000]))
    return now if changed else None


@retry_deadlocks
def mark_up(engine: Engine, target: str) -> Mapping | None:
    """Oppen answered. Returns {down_since, now} if it was down until now, else None."""
    s = oppen_target_state
    with engine.begin() as conn:
        row = conn.execute(sa.select(s.c.down_since).where(s.c.target == target,
                                                           s.c.down_since.is_not(None))).first()
        if row is None:
            return None
        now = db_now(conn)
        changed = conn.execute(sa.update(s).where(s.c.target == target,
                                                  s.c.down_since.is_not(None)).values(
            down_since=None, down_error=None, probe_failures=0, next_probe_at=None,
            last_probe_at=now)).rowcount
    return {"down_since": row.down_since, "now": now} if changed else None


@retry_deadlocks
def take_probe(engine: Engine, target: str, hold: float) -> bool:
    """While Oppen is down: True for the one worker whose turn it is to ask it (its
    probe is due); the others wait for the answer. `hold` keeps it for that worker."""
    s = oppen_target_state
    with engine.begin() as conn:
        now = db_now(conn)
        return bool(conn.execute(sa.update(s).where(
            s.c.target == target, s.c.down_since.is_not(None), s.c.next_probe_at <= now)
            .values(next_probe_at=now + dt.timedelta(seconds=hold), last_probe_at=now)
        ).rowcount)


@retry_deadlocks
def probe_failed(engine: Engine, target: str, error: str, delays: tuple[float, ...]) -> None:
    """The probe found Oppen still down: the next one follows the retry schedule."""
    s = oppen_target_state
    with engine.begin() as conn:
        now = db_now(conn)
        failures = (conn.execute(sa.select(s.c.probe_failures).where(s.c.target == target))
                    .scalar() or 0) + 1
        delay = delays[min(failures, len(delays) - 1)]
        conn.execute(sa.update(s).where(s.c.target == target).values(
            probe_failures=failures, down_error=(error or "")[:2000],
            next_probe_at=now + dt.timedelta(seconds=delay)))


# --- facts about the installation ------------------------------------------------------------

def tables_created_on(engine: Engine) -> dt.date | None:
    """The day our tables were created (migration 0004 records it), or None."""
    m = oppen_meta
    with schema.reading(engine) as conn:
        value = conn.execute(sa.select(m.c.value).where(
            m.c.name == schema.TABLES_CREATED_ON)).scalar()
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None
