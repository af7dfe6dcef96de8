"""The run queue and the work a worker finds on its own, in the database.

A run asked for by the console or the CLI is an `oppen_runs` row in state `queued`
with what it must do in `request_json`; a worker claims it (`claim_next`: `SELECT … FOR
UPDATE SKIP LOCKED` where the server supports it, otherwise a conditional update that
only one worker can win) and runs it in that same row, so whoever watches the run sees
it go. The worker's own work is queued the same way: runs whose process died (after the
lease, `adopt_stale`), invoices due for an automatic retry (`due_days`), and local/days
audited in the host application that this target has not registered (`pickup_days`).

Short transactions only; times on the database's clock. No HTTP here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import schema
from .schema import (CANCELLED, FAILED, INTERRUPTED, PENDING, QUEUED, RUNNING, SENDING,
                     db_now, locales_auditados, oppen_invoices, oppen_run_locks, oppen_runs)
from .transactions import retry_deadlocks

# Runs a person asked for go before the worker's own (retries, pick-ups).
PERSON_KINDS = ("audit", "resend")
RETRY, PICKUP = "retry", "pickup"
ADOPTED = "Retomada: el proceso que la ejecutaba dejó de responder"
WAITING_STATES = (PENDING, FAILED, SENDING)


@dataclass(frozen=True)
class Request:
    """What a queued run does: its local/days, and the chosen invoices (facturas_trns
    ids) when it is a resend of some of them."""
    days: tuple[tuple[str, dt.date], ...]
    invoice_ids: tuple[int, ...] | None = None


def dump(days: Iterable[tuple[str, dt.date]], invoice_ids: Iterable[int] | None = None) -> str:
    return json.dumps({"days": [[local, fecha.isoformat()] for local, fecha in sorted(set(days))],
                       "invoice_ids": None if invoice_ids is None
                       else sorted({int(i) for i in invoice_ids})}, ensure_ascii=False)


def parse(text: str | None) -> Request | None:
    """The request of a run row; None when it has none (a run from before the queue)."""
    if not text:
        return None
    data = json.loads(text)
    days = tuple((str(local), dt.date.fromisoformat(day)) for local, day in data.get("days") or [])
    ids = data.get("invoice_ids")
    return Request(days, None if ids is None else tuple(int(i) for i in ids))


# --- the queue ---------------------------------------------------------------------------

def enqueue(conn: Connection, *, target: str, kind: str, days: Sequence[tuple[str, dt.date]],
            username: str | None = None, reason: str | None = None,
            invoice_ids: Iterable[int] | None = None) -> int:
    """Queue a run in the caller's transaction (so an audit and its run commit together)."""
    now = db_now(conn)
    unique = sorted(set(days))
    local, fecha = unique[0] if len(unique) == 1 else (None, None)
    return conn.execute(sa.insert(oppen_runs).values(
        target=target, kind=kind, local=local, fecha=fecha, username=username, reason=reason,
        owner=schema.new_owner(), state=QUEUED, started_at=now, queued_at=now, total=0,
        processed=0, exitosas=0, fallidas=0, request_json=dump(unique, invoice_ids))
    ).inserted_primary_key[0]


def skip_locked(conn: Connection) -> bool:
    """Whether the server knows `FOR UPDATE SKIP LOCKED` (MariaDB 10.6+, MySQL 8.0.1+)."""
    dialect = conn.dialect
    if dialect.name not in ("mysql", "mariadb"):
        return False
    version = tuple(dialect.server_version_info or ())
    return version >= ((10, 6) if getattr(dialect, "is_mariadb", False) else (8, 0, 1))


@retry_deadlocks
def claim_next(engine: Engine, target: str, worker_id: str) -> dict | None:
    """Take the next queued run for this worker (a person's first, then the oldest), or
    None. A run whose only day another live run holds is left for later."""
    r, L = oppen_runs, oppen_run_locks
    with engine.begin() as conn:
        now = db_now(conn)
        busy = sa.exists().where(L.c.target == r.c.target, L.c.local == r.c.local,
                                 L.c.fecha == r.c.fecha, L.c.lease_until >= now)
        query = (sa.select(r.c.id)
                 .where(r.c.target == target, r.c.state == QUEUED, ~busy)
                 .order_by(sa.case((r.c.kind.in_(PERSON_KINDS), 0), else_=1), r.c.queued_at,
                           r.c.id)
                 .limit(1))
        if skip_locked(conn):
            # Several workers ask at once: each skips the rows another is taking.
            query = query.with_for_update(skip_locked=True)
        run_id = conn.execute(query).scalar()
        if run_id is None:
            return None
        won = conn.execute(sa.update(r).where(r.c.id == run_id, r.c.state == QUEUED).values(
            state=RUNNING, worker_id=worker_id, heartbeat_at=now,
            owner=schema.new_owner())).rowcount
        if not won:   # another worker took it between the select and here (no SKIP LOCKED)
            return None
        return dict(conn.execute(sa.select(r).where(r.c.id == run_id)).one()._mapping)


def cancel(engine: Engine, run_id: int, username: str) -> str:
    """An admin cancels a run: a queued one at once ("cancelled"); a running one is
    asked to stop ("requested": its process stops sending, and what was not sent stays
    pending with the reason). "finished" when it had already ended; "missing"."""
    r = oppen_runs
    with engine.begin() as conn:
        now = db_now(conn)
        if conn.execute(sa.update(r).where(r.c.id == run_id, r.c.state == QUEUED).values(
                state=CANCELLED, finished_at=now, cancel_requested_at=now,
                cancel_requested_by=username,
                message=f"Cancelada por {username} antes de empezar")).rowcount:
            return "cancelled"
        if conn.execute(sa.update(r).where(r.c.id == run_id, r.c.state == RUNNING,
                                           r.c.cancel_requested_at.is_(None)).values(
                cancel_requested_at=now, cancel_requested_by=username)).rowcount:
            return "requested"
        state = conn.execute(sa.select(r.c.state).where(r.c.id == run_id)).scalar()
    if state is None:
        return "missing"
    return "requested" if state == RUNNING else "finished"


def cancel_request(engine: Engine, run_id: int) -> str | None:
    """Who asked to cancel this run, if someone did."""
    r = oppen_runs
    with schema.reading(engine) as conn:
        return conn.execute(sa.select(r.c.cancel_requested_by).where(
            r.c.id == run_id, r.c.cancel_requested_at.is_not(None))).scalar()


@retry_deadlocks
def adopt_stale(engine: Engine, target: str, lease: float) -> int:
    """Runs whose process stopped beating for a whole lease go back to the queue, to be
    run again by a worker from where the database says they are (what was sent stays
    sent; what may have been sent is looked up first). One asked to be cancelled ends
    cancelled; one from before the queue (no request) ends interrupted."""
    r = oppen_runs
    with engine.begin() as conn:
        now = db_now(conn)
        dead = sa.and_(r.c.target == target, r.c.state == RUNNING,
                       sa.func.coalesce(r.c.heartbeat_at, r.c.started_at)
                       < now - dt.timedelta(seconds=lease))
        conn.execute(sa.update(r).where(dead, r.c.cancel_requested_at.is_not(None)).values(
            state=CANCELLED, finished_at=now, current_ref=None,
            message="Cancelada (el proceso que la ejecutaba dejó de responder)"))
        conn.execute(sa.update(r).where(dead, r.c.request_json.is_(None)).values(
            state=INTERRUPTED, finished_at=now, current_ref=None,
            message="Interrumpida: el proceso dejó de responder"))
        return conn.execute(sa.update(r).where(dead).values(
            state=QUEUED, queued_at=now, worker_id=None, current_ref=None,
            message=ADOPTED)).rowcount


# --- work found on its own ---------------------------------------------------------------

def _busy_days(conn: Connection, target: str, now: dt.datetime) -> set[tuple[str, dt.date]]:
    """Local/days a queued or running run, or a live lock, already covers."""
    r, L = oppen_runs, oppen_run_locks
    busy = {(x.local, x.fecha) for x in conn.execute(
        sa.select(r.c.local, r.c.fecha).where(r.c.target == target,
                                               r.c.state.in_((QUEUED, RUNNING)),
                                               r.c.local.is_not(None)))}
    busy |= {(x.local, x.fecha) for x in conn.execute(
        sa.select(L.c.local, L.c.fecha).where(L.c.target == target, L.c.lease_until >= now))}
    return busy


def due_days(engine: Engine, target: str, *, limit: int = 200) -> list[tuple[str, dt.date]]:
    """Local/days with invoices due for an automatic retry now (oldest due first), that
    no run covers yet. Invoices that "requieren atención" are never due."""
    t = oppen_invoices
    with schema.reading(engine) as conn:
        now = db_now(conn)
        query = (sa.select(t.c.local, t.c.fecha, sa.func.min(t.c.next_attempt_at).label("due"))
                 .where(t.c.target == target, t.c.next_attempt_at <= now,
                        t.c.state.in_(WAITING_STATES), t.c.attention_at.is_(None))
                 .group_by(t.c.local, t.c.fecha).order_by(sa.text("due")).limit(limit * 2))
        days = [(x.local, x.fecha) for x in conn.execute(query)]
        busy = _busy_days(conn, target, now) if days else set()
    return [d for d in days if d not in busy][:limit]


def due_factura_ids(conn: Connection, target: str, local: str, fecha: dt.date) -> list[int]:
    """The facturas_trns ids of one local/day's invoices due for a retry now."""
    t = oppen_invoices
    now = db_now(conn)
    return [x.factura_id for x in conn.execute(
        sa.select(t.c.factura_id).where(t.c.target == target, t.c.local == local,
                                        t.c.fecha == fecha, t.c.next_attempt_at <= now,
                                        t.c.state.in_(WAITING_STATES),
                                        t.c.attention_at.is_(None)))]


def pickup_days(engine: Engine, target: str, since: dt.date, *, limit: int = 200
                ) -> list[tuple[str, dt.date]]:
    """Local/days audited in the host application (a `locales_auditados` row) from
    `since` on, that this target never registered an invoice of and no run ever
    covered: audits made outside the console and the CLI. (A day that was synced with
    no invoices has its run, so it is not picked up again.)"""
    la, t, r = locales_auditados, oppen_invoices, oppen_runs
    registered = sa.exists().where(t.c.target == target, t.c.local == la.c.local,
                                   t.c.fecha == la.c.fecha)
    covered = sa.exists().where(r.c.target == target, r.c.local == la.c.local,
                                r.c.fecha == la.c.fecha)
    query = (sa.select(la.c.local, la.c.fecha).where(la.c.fecha >= since, ~registered, ~covered)
             .order_by(la.c.fecha, la.c.local).limit(limit))
    with schema.reading(engine) as conn:
        now = db_now(conn)
        days = [(x.local, x.fecha) for x in conn.execute(query)]
        busy = _busy_days(conn, target, now) if days else set()
    return [d for d in days if d not in busy]


@retry_deadlocks
def expire_horizon(engine: Engine, target: str, horizon: float) -> int:
    """Invoices still waiting for an automatic retry whose first failure is older than
    the horizon: no more automatic tries, they "requieren atención". Returns how many."""
    t = oppen_invoices
    with engine.begin() as conn:
        now = db_now(conn)
        return conn.execute(sa.update(t).where(
            t.c.target == target, t.c.next_attempt_at.is_not(None), t.c.attention_at.is_(None),
            t.c.state.in_((PENDING, FAILED)),
            t.c.first_attempt_at <= now - dt.timedelta(seconds=horizon))
            .values(attention_at=now, next_attempt_at=None)).rowcount


def next_due(engine: Engine, target: str) -> dt.datetime | None:
    """When the next automatic retry of this target is due (None: nothing scheduled)."""
    t = oppen_invoices
    with schema.reading(engine) as conn:
        return conn.execute(sa.select(sa.func.min(t.c.next_attempt_at)).where(
            t.c.target == target, t.c.next_attempt_at.is_not(None),
            t.c.state.in_(WAITING_STATES), t.c.attention_at.is_(None))).scalar()


def queued_or_running(engine: Engine, target: str) -> list[Mapping]:
    """The queue as it is now: queued and running runs, oldest first."""
    r = oppen_runs
    with schema.reading(engine) as conn:
        return [dict(x._mapping) for x in conn.execute(
            sa.select(r).where(r.c.target == target, r.c.state.in_((QUEUED, RUNNING)))
            .order_by(r.c.id))]


def waiting(engine: Engine, target: str, *, limit: int = 500) -> list[dict]:
    """Invoices that have not reached Oppen and are expected to on their own, or ran out
    of automatic tries ("requieren atención"): those first, the longest waiting for a
    person first, then the others, oldest due first. For the console."""
    t = oppen_invoices
    columns = sa.select(t.c.id, t.c.factura_id, t.c.reference, t.c.local, t.c.fecha, t.c.state,
                        t.c.attempts, t.c.retry_count, t.c.next_attempt_at, t.c.first_attempt_at,
                        t.c.attention_at, t.c.last_error, t.c.claim_until, t.c.needs_lookup)
    mine = (t.c.target == target, t.c.state.in_(WAITING_STATES))
    # Two reads, each an index range in its own order (one query with an OR and a sort
    # on a flag read every unsent invoice of the history). First those that need a
    # person, by when they ran out of tries (they have no due time any more), in
    # ix_oppen_invoices_attention's own order: sorted by due time, SQLite walked the due
    # index through every invoice of the target instead (195 ms on a million). Then the
    # others by due time (ix_oppen_invoices_due). That read does not filter on
    # attention_at: SQLite would then pick the attention index for "IS NULL" (nearly
    # every row) and sort them all; the few it shares with the first are dropped here,
    # and it reads as many more as there are of those.
    attention = (columns.where(*mine, t.c.attention_at.is_not(None))
                 .order_by(t.c.attention_at, t.c.id).limit(limit))
    with schema.reading(engine) as conn:
        rows = [dict(r._mapping) for r in conn.execute(attention)]
        if len(rows) < limit:
            due = (columns.where(*mine, t.c.next_attempt_at.is_not(None))
                   .order_by(t.c.next_attempt_at, t.c.id).limit(limit))
            first = {r["id"] for r in rows}
            rows += [dict(r._mapping) for r in conn.execute(due)
                     if r.id not in first][:limit - len(rows)]
    return rows
