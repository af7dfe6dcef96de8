"""Logging in to the console: every attempt logged, guessing throttled, and the signed
session that survives a reload.

Throttling: after `MAX_FAILURES` failed attempts within `WINDOW` for one user name, or
separately from one client (its address), further attempts are refused, the right
password too, until a wait has passed; each failure after that doubles the wait (from
`FIRST_WAIT` up to `LONGEST_WAIT`). A success clears the count of its user name and its
client. Attempts refused while waiting are logged but do not lengthen the wait, so the
person who mistyped is never locked out for longer than the table says. The state is
the `oppen_logins` table, so it holds across server processes and restarts.

Sessions: a login opens a row in `oppen_console_sessions` (only a hash of its random id
is stored) and hands back a token, the id signed with itsdangerous and stamped with its
time; the console keeps it in a browser cookie. A token is good while its signature holds,
it is younger than OPPEN_SESSION_HOURS and its row is neither expired nor ended;
"Cerrar sesión" ends the row, so a copied token dies with it.

No Streamlit here, and never a password: not in a row, a log line or a message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import secrets as _random
from collections.abc import Mapping

import sqlalchemy as sa
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy.engine import Engine

from . import auth
from .errors import LoginFailed
from .settings import AR_TZ, Settings, User
from .state import schema

logger = logging.getLogger(__name__)

WINDOW = dt.timedelta(minutes=15)
MAX_FAILURES = 5
FIRST_WAIT = dt.timedelta(minutes=1)
LONGEST_WAIT = dt.timedelta(minutes=15)
UNKNOWN_CLIENT = "desconocido"
PASSWORD, SSO = "password", "sso"
OK, FAILED, LOCKED = "ok", "failed", "locked"
SESSION_KEY_NAME = "session"   # oppen_console_keys: the signing key, when not configured
_SALT = "oppen-consola-sesion"


class LoginThrottled(LoginFailed):
    """Too many failed attempts for this user name or from this client: wait (the
    message says how long). A LoginFailed, so callers that show one show this too."""

    def __init__(self, message: str, until: dt.datetime):
        super().__init__(message)
        self.until = until


@dataclasses.dataclass(frozen=True)
class Lock:
    by: str                  # "usuario" or "cliente"
    until: dt.datetime       # naive UTC
    failures: int


def _name(username: str | None) -> str:
    """The user name as throttling counts it: trimmed, case-folded, at most 100 chars."""
    return " ".join((username or "").split()).casefold()[:100]


def _client(client: str | None) -> str:
    return (client or UNKNOWN_CLIENT).strip()[:100] or UNKNOWN_CLIENT


def wait_for(failures: int) -> dt.timedelta:
    """How long the MAX_FAILURES-th failure and each one after it lock: 1, 2, 4, 8, 15 min."""
    steps = max(0, failures - MAX_FAILURES)
    return min(FIRST_WAIT * (2 ** min(steps, 10)), LONGEST_WAIT)


def _lock_for(conn, column, value: str, now: dt.datetime) -> Lock | None:
    t = schema.oppen_logins
    last_ok = conn.execute(sa.select(sa.func.max(t.c.at)).where(
        column == value, t.c.outcome == OK)).scalar()
    since = now - WINDOW
    if last_ok is not None and last_ok > since:
        since = last_ok
    failures = conn.execute(
        sa.select(sa.func.count(), sa.func.max(t.c.at))
        .where(column == value, t.c.outcome == FAILED, t.c.at > since)).one()
    count, last = failures
    if count < MAX_FAILURES or last is None:
        return None
    until = last + wait_for(count)
    if until <= now:
        return None
    return Lock("usuario" if column is t.c.username else "cliente", until, count)


def lockout(engine: Engine, username: str | None, client: str | None,
            now: dt.datetime | None = None) -> Lock | None:
    """The lock in force for this user name or this client (the longer one), or None.

    A client whose address is unknown (Streamlit gives none behind localhost or a proxy
    on the same host) is never locked as a client: every person would share that one
    "client", and five wrong passwords from anyone would lock everybody out. The lock by
    user name still holds for them."""
    now = now or schema.utcnow()
    t = schema.oppen_logins
    with schema.reading(engine) as conn:
        by_client = (None if _client(client) == UNKNOWN_CLIENT
                     else _lock_for(conn, t.c.client, _client(client), now))
        locks = [lock for lock in (_lock_for(conn, t.c.username, _name(username), now),
                                   by_client) if lock is not None]
    return max(locks, key=lambda lock: lock.until) if locks else None


def _wait_text(until: dt.datetime, now: dt.datetime) -> str:
    seconds = max(1, int((until - now).total_seconds() + 0.999))
    if seconds < 60:
        amount = f"{seconds} segundo{'s' if seconds != 1 else ''}"
    else:
        minutes = -(-seconds // 60)
        amount = f"{minutes} minuto{'s' if minutes != 1 else ''}"
    at = until.replace(tzinfo=dt.timezone.utc).astimezone(AR_TZ).strftime("%H:%M")
    return f"{amount} (hasta las {at})"


def throttled_message(lock: Lock, now: dt.datetime) -> str:
    who = "este usuario" if lock.by == "usuario" else "esta conexión"
    return (f"Demasiados intentos fallidos para {who}. Por seguridad, el ingreso queda "
            f"bloqueado {_wait_text(lock.until, now)}; después probá de nuevo. Si no recordás "
            "la contraseña, pedí una nueva al administrador de la consola.")


def record(engine: Engine, username: str | None, client: str | None, outcome: str, *,
           method: str = PASSWORD, detail: str | None = None,
           now: dt.datetime | None = None) -> None:
    """One row per attempt, and one line in the server's log (user, client, outcome)."""
    now = now or schema.utcnow()
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.oppen_logins).values(
            at=now, username=_name(username), client=_client(client), method=method,
            outcome=outcome, detail=(detail or None) and detail[:200]))
    level = logging.INFO if outcome == OK else logging.WARNING
    logger.log(level, "Ingreso a la consola: usuario=%r cliente=%s método=%s resultado=%s",
               _name(username), _client(client), method, outcome)


def log_in(engine: Engine, settings: Settings, username: str, password: str,
           client: str | None, *, now: dt.datetime | None = None) -> User:
    """The user (without its hash) if allowed to try now and the password matches.

    Raises LoginThrottled while a lock is in force (whatever the password), LoginFailed
    for a wrong user or password, ConfigError when no users exist for this target.
    """
    now = now or schema.utcnow()
    lock = lockout(engine, username, client, now)
    if lock is not None:
        record(engine, username, client, LOCKED, detail=f"bloqueado por {lock.by}", now=now)
        raise LoginThrottled(throttled_message(lock, now), lock.until)
    try:
        user = auth.authenticate(settings, username, password)
    except LoginFailed:
        record(engine, username, client, FAILED, now=now)
        lock = lockout(engine, username, client, now)
        if lock is not None:
            raise LoginThrottled("Usuario o contraseña incorrectos. "
                                 + throttled_message(lock, now), lock.until) from None
        raise
    record(engine, user.username, client, OK, now=now)
    return user


def history(engine: Engine, *, limit: int = 200) -> list[dict]:
    """The latest attempts, newest first (for an admin's eyes)."""
    t = schema.oppen_logins
    with schema.reading(engine) as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(t).order_by(t.c.at.desc(), t.c.id.desc()).limit(limit))]


# --- sessions ------------------------------------------------------------------------------

def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode("ascii")).hexdigest()


def _signing_key(engine: Engine, settings: Settings) -> str:
    """OPPEN_SESSION_SECRET, or a key made once per database and kept in
    oppen_console_keys, so every server process on that database signs and checks alike."""
    if settings.session_secret:
        return settings.session_secret
    keys = schema.oppen_console_keys
    query = sa.select(keys.c.value).where(keys.c.id == SESSION_KEY_NAME)
    with schema.reading(engine) as conn:
        key = conn.execute(query).scalar()
    if key:
        return key
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(keys).values(id=SESSION_KEY_NAME, value=_random.token_hex(32),
                                                created_at=schema.utcnow()))
    except sa.exc.IntegrityError:
        pass   # another process made it first: use theirs
    with schema.reading(engine) as conn:
        return conn.execute(query).scalar()


def _serializer(engine: Engine, settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_signing_key(engine, settings), salt=_SALT)


def lifetime(settings: Settings) -> dt.timedelta:
    return dt.timedelta(hours=settings.session_hours)


def open_session(engine: Engine, settings: Settings, user: User, client: str | None, *,
                 method: str = PASSWORD, now: dt.datetime | None = None) -> str:
    """A new session for `user`: its row, and the signed token to keep in the browser."""
    now = now or schema.utcnow()
    sid = _random.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.oppen_console_sessions).values(
            id=_digest(sid), username=user.username, method=method, client=_client(client),
            created_at=now, expires_at=now + lifetime(settings)))
    return _serializer(engine, settings).dumps(sid)


def _sid(engine: Engine, settings: Settings, token: str | None) -> str | None:
    if not token or len(token) > 500:
        return None
    try:
        sid = _serializer(engine, settings).loads(
            token, max_age=int(lifetime(settings).total_seconds()))
    except (SignatureExpired, BadSignature):
        return None
    return sid if isinstance(sid, str) else None


def resume(engine: Engine, settings: Settings, token: str | None,
           now: dt.datetime | None = None) -> tuple[User, str] | None:
    """The user of a live session (as the configuration says now) and how they logged
    in, or None: a forged, old, expired or ended token, or a user no longer configured."""
    sid = _sid(engine, settings, token)
    if sid is None:
        return None
    now = now or schema.utcnow()
    t = schema.oppen_console_sessions
    with schema.reading(engine) as conn:
        row = conn.execute(sa.select(t).where(t.c.id == _digest(sid))).first()
    if row is None or row.ended_at is not None or row.expires_at <= now:
        return None
    user = auth.refresh(settings, User(row.username, row.username, "", ""))
    return (user, row.method) if user is not None else None


def end_session(engine: Engine, settings: Settings, token: str | None, *,
                reason: str = "logout", now: dt.datetime | None = None) -> None:
    """End a session for good: its token is refused from now on, in every tab."""
    sid = _sid(engine, settings, token)
    if sid is None:
        return
    t = schema.oppen_console_sessions
    with engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.id == _digest(sid), t.c.ended_at.is_(None))
                     .values(ended_at=now or schema.utcnow(), ended_reason=reason[:20]))


def sso_user(settings: Settings, email: str | None) -> User | None:
    """The configured user whose `email` is this single-sign-on identity, or None."""
    wanted = (email or "").strip().casefold()
    if not wanted:
        return None
    users: Mapping[str, User] = settings.users
    for user in users.values():
        if user.email and user.email.casefold() == wanted:
            return auth.public(user)
    return None
