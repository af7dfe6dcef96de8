"""Ownership before every POST and liveness on the database's clock (a real sandbox,
a real second process, SQLite and MariaDB)."""

from __future__ import annotations

import datetime as dt
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from faults import check_accounting, check_no_repeat_posts, cli_env, seed_days, start_cli
from sync import actions
from sync.errors import RunInProgress
from sync.state import runs, schema

D1, D2 = dt.date(2025, 3, 1), dt.date(2025, 3, 2)


def posts(sandbox) -> list[dict]:
    return [e for e in sandbox.request_log()
            if e["method"] == "POST" and e["path"] == "Invoice" and e.get("official_sernr")]


def pause_while_waiting_on_oppen(proc, engine, sandbox, senders: int,
                                 limit: float = 30.0) -> float:
    """SIGSTOP `proc` at a moment when every one of its `senders` threads is waiting on
    Oppen (that many POSTs received by the sandbox and not yet answered) and it holds
    no database lock (a process paused inside a transaction blocks everyone, a
    different story from the one tested here). Returns when it was seen stopped.

    Why every sender must be waiting: a thread checks its ownership and then writes.
    Frozen between the two, it writes on resume what it was allowed to write a moment
    before, and no program can tell from inside (the product shrinks that gap to the
    write's system call, and Oppen's duplicate check still refuses the second copy).
    Paused anywhere else, the resumed run must not POST the day it lost."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if sandbox.in_flight("POST", "Invoice") < senders:
            time.sleep(0.002)
            continue
        proc.send_signal(signal.SIGSTOP)
        _wait_stopped(proc)
        paused_at = time.monotonic()
        if sandbox.in_flight("POST", "Invoice") >= senders and not _database_locked(engine):
            return paused_at
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.03)
    raise AssertionError("the run never had all its senders waiting on Oppen, its database free")


def _wait_stopped(proc, limit: float = 5.0) -> None:
    """Until the kernel shows every thread of `proc` stopped (a signal is delivered
    asynchronously)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be paused"
        states = []
        for stat in Path(f"/proc/{proc.pid}/task").glob("*/stat"):
            try:
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass    # a thread that just ended
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.001)
    raise AssertionError("SIGSTOP did not stop the process")


def _database_locked(engine) -> bool:
    t = schema.oppen_invoices
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "sqlite":
            cur.execute("PRAGMA busy_timeout=200")
            cur.execute("BEGIN IMMEDIATE")
        else:
            cur.execute("SET SESSION innodb_lock_wait_timeout=1")
            cur.execute(f"UPDATE {t.name} SET updated_at = updated_at")
        raw.rollback() if engine.dialect.name != "sqlite" else cur.execute("ROLLBACK")
        return False
    except Exception:  # locked (or busy): try another moment
        return True
    finally:
        raw.invalidate() if hasattr(raw, "invalidate") else raw.close()


def wait_for_posts(sandbox, count: int, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while len(posts(sandbox)) < count:
        assert time.monotonic() < deadline, "the run never started sending"
        time.sleep(0.01)


@pytest.mark.slow
def test_a_paused_run_stops_sending_the_day_it_lost_and_finishes_the_other(
        engine, settings, sandbox, policy):
    seed_days(engine, ["NORTE"], days=2, per_day=30)
    sandbox.set_faults(latency_ms=80)
    env = cli_env(settings, OPPEN_LEASE_SECONDS="2", OPPEN_TIMEOUT="5", OPPEN_CONCURRENCY="2",
                  OPPEN_BREAKER_THRESHOLD="50")
    first = start_cli(["resend", "--user", "primero"], env)   # both days, one run
    try:
        wait_for_posts(sandbox, 6)
        paused_at = pause_while_waiting_on_oppen(first, engine, sandbox, senders=2)
        time.sleep(3.0)                       # past its lease: its days are up for grabs
        stopped_at = len(posts(sandbox))
        # An admin resends the first day meanwhile: that run takes it over.
        second = actions.resend(engine, settings, user="segundo", local="NORTE", fecha=D1,
                                policy=policy)
        assert second["fallidas"] == 0, second
        first.send_signal(signal.SIGCONT)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode in (0, 3), first.stderr
    assert "Traceback" not in first.stderr

    # No invoice was POSTed again once Oppen held it (counted by the sandbox itself, not
    # by its duplicate refusal), apart from a POST already on the wire at the pause: the
    # resumed run posted nothing of the day it lost.
    check_no_repeat_posts(sandbox, [paused_at])
    assert stopped_at < len(posts(sandbox))   # the first run did go on (with its other day)

    # Both days end complete: the second day by the resumed run, after a renewal proved
    # it still held it.
    t = schema.oppen_invoices
    with engine.connect() as conn:
        by_day = dict(conn.execute(
            sa.select(t.c.fecha, sa.func.count()).where(
                t.c.target == settings.target, t.c.state == schema.SENT)
            .group_by(t.c.fecha)).all())
    assert by_day == {D1: 30, D2: 30}
    check_accounting(engine, settings.target)


def test_a_host_clock_ahead_cannot_take_a_live_lock(engine, settings, monkeypatch):
    """Leases are read on the database's clock (SQLite's own, MariaDB's UTC_TIMESTAMP):
    a process whose clock runs ten minutes ahead still sees the lock as alive."""
    owner = schema.new_owner()
    runs.start_run(engine, target=settings.target, kind="audit", days=[("SUR", D1)],
                   username="a", reason=None, lease=30, owner=owner)
    ahead = schema.utcnow() + dt.timedelta(minutes=10)
    monkeypatch.setattr(schema, "utcnow", lambda: ahead)
    with pytest.raises(RunInProgress):
        runs.start_run(engine, target=settings.target, kind="audit", days=[("SUR", D1)],
                       username="b", reason=None, lease=30, owner=schema.new_owner())


def test_the_heartbeat_writes_the_run_row_on_the_database_clock(engine, settings):
    owner = schema.new_owner()
    run_id = runs.start_run(engine, target=settings.target, kind="audit",
                            days=[("SUR", D1), ("SUR", D2)], username="a", reason=None,
                            lease=30, owner=owner)
    renewal = runs.renew(engine, owner, 30, run_id)
    assert renewal.held == {("SUR", D1), ("SUR", D2)}
    with engine.connect() as conn:
        beat = conn.execute(sa.select(schema.oppen_runs.c.heartbeat_at)
                            .where(schema.oppen_runs.c.id == run_id)).scalar()
        assert beat == renewal.at
        assert abs((schema.db_now(conn) - beat).total_seconds()) < 5
