"""Alert rows: open conditions, their resolution, one-off events, and the webhook's
outbox (`notify_due`), in `oppen_alerts`.

A condition is open while its row holds `open_key` (target + condition; unique), so two
processes that notice the same thing at once open it once; resolving it frees the key
for the next time. What the webhook has not been told yet is marked `notify_due`;
`claim_due` hands those rows to one deliverer at a time (a lease), so several workers
never post the same alert twice. Short transactions only; no HTTP here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from . import schema
from .schema import db_now, oppen_alerts
from .transactions import retry_deadlocks

MAX_NOTIFY_ATTEMPTS = 20   # a webhook down for hours: stop trying to tell it one alert


def open_key(target: str, key: str) -> str:
    return f"{target}|{key}"[:200]


def _details(details: Mapping | None) -> str | None:
    return None if details is None else json.dumps(details, ensure_ascii=False, default=str)


@retry_deadlocks
def open_condition(engine: Engine, *, target: str, kind: str, key: str, text: str,
                   details: Mapping | None = None) -> bool:
    """Open the condition unless it is open already; True when this call opened it."""
    a = oppen_alerts
    try:
        with engine.begin() as conn:
            if conn.execute(sa.select(a.c.id).where(a.c.open_key == open_key(target, key))
                            ).first() is not None:
                return False
            conn.execute(sa.insert(a).values(
                target=target, kind=kind, open_key=open_key(target, key),
                opened_at=db_now(conn), text=text, details_json=_details(details),
                notify_due=True, notify_attempts=0))
        return True
    except IntegrityError:   # opened by another process a moment ago
        return False


@retry_deadlocks
def resolve_condition(engine: Engine, *, target: str, key: str, text: str) -> bool:
    """Resolve the condition if it is open, saying so; True when this call resolved it."""
    a = oppen_alerts
    with engine.begin() as conn:
        return bool(conn.execute(sa.update(a).where(a.c.open_key == open_key(target, key))
                                 .values(open_key=None, resolved_at=db_now(conn),
                                         resolved_text=text, notify_due=True)).rowcount)


def is_open(engine: Engine, target: str, key: str) -> bool:
    a = oppen_alerts
    with schema.reading(engine) as conn:
        return conn.execute(sa.select(a.c.id).where(a.c.open_key == open_key(target, key))
                            ).first() is not None


@retry_deadlocks
def event(engine: Engine, *, target: str, kind: str, text: str,
          details: Mapping | None = None) -> int:
    """A one-off alert (a run that ended with failures): told once, never resolved."""
    a = oppen_alerts
    with engine.begin() as conn:
        return conn.execute(sa.insert(a).values(
            target=target, kind=kind, open_key=None, opened_at=db_now(conn), text=text,
            details_json=_details(details), notify_due=True, notify_attempts=0)
        ).inserted_primary_key[0]


# --- the outbox -------------------------------------------------------------------------------

@retry_deadlocks
def claim_due(engine: Engine, owner: str, *, hold: float, limit: int = 20) -> list[dict]:
    """Alerts the webhook has not been told yet, now this deliverer's for `hold` seconds."""
    a = oppen_alerts
    with engine.begin() as conn:
        now = db_now(conn)
        free = sa.and_(a.c.notify_due.is_(True),
                       sa.or_(a.c.notify_until.is_(None), a.c.notify_until < now))
        ids = [r.id for r in conn.execute(sa.select(a.c.id).where(free).order_by(a.c.id)
                                          .limit(limit))]
        if not ids:
            return []
        conn.execute(sa.update(a).where(a.c.id.in_(ids), free).values(
            notify_owner=owner, notify_until=now + dt.timedelta(seconds=hold)))
        return [dict(r._mapping) for r in conn.execute(
            sa.select(a).where(a.c.id.in_(ids), a.c.notify_owner == owner).order_by(a.c.id))]


@retry_deadlocks
def delivered(engine: Engine, alert_id: int, owner: str, *, opening: bool,
              resolution: bool) -> None:
    """The webhook was told (or there is no webhook to tell) the opening and/or the
    resolution. Whatever is still untold (a resolution that came while the opening was
    being posted) stays due."""
    a = oppen_alerts
    with engine.begin() as conn:
        now = db_now(conn)
        values = {"notify_owner": None, "notify_until": None}
        if opening:
            values["notified_at"] = now
        if resolution:
            values["resolved_notified_at"] = now
        if conn.execute(sa.update(a).where(a.c.id == alert_id, a.c.notify_owner == owner)
                        .values(**values)).rowcount:
            # A second statement: it must read the values just written.
            conn.execute(sa.update(a).where(a.c.id == alert_id).values(notify_due=sa.or_(
                a.c.notified_at.is_(None),
                sa.and_(a.c.resolved_at.is_not(None), a.c.resolved_notified_at.is_(None)))))


@retry_deadlocks
def delivery_failed(engine: Engine, alert_id: int, owner: str, *, retry_in: float) -> None:
    a = oppen_alerts
    with engine.begin() as conn:
        now = db_now(conn)
        conn.execute(sa.update(a).where(a.c.id == alert_id, a.c.notify_owner == owner).values(
            notify_attempts=a.c.notify_attempts + 1,
            notify_due=a.c.notify_attempts + 1 < MAX_NOTIFY_ATTEMPTS,
            notify_owner=None, notify_until=now + dt.timedelta(seconds=retry_in)))


def active(engine: Engine, target: str) -> list[dict]:
    """The open conditions of this target, oldest first."""
    a = oppen_alerts
    with schema.reading(engine) as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(a).where(a.c.target == target, a.c.open_key.is_not(None))
            .order_by(a.c.opened_at, a.c.id))]


def recent(engine: Engine, target: str, *, limit: int = 50) -> list[dict]:
    a = oppen_alerts
    with schema.reading(engine) as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(a).where(a.c.target == target).order_by(a.c.id.desc()).limit(limit))]
