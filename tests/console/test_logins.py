"""Login throttling and console sessions (sync/logins.py) on a real database: five
failures per user name or per client within 15 minutes lock for a growing wait, the
right password is refused during it, every attempt is logged without the password; a
session token survives a new browser session, expires, and dies with "Cerrar sesión"."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from sync import logins
from sync.auth import LoginFailed
from sync.settings import load_settings
from sync.state import schema

from ui_helpers import PASSWORDS

T0 = dt.datetime(2026, 11, 24, 12, 0, 0)   # naive UTC: 09:00 in Buenos Aires


@pytest.fixture
def engine(tmp_path):
    engine = schema.make_engine(f"sqlite:///{tmp_path / 'logins.sqlite3'}")
    schema.init_db(engine, source_tables=True)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(secrets_file):
    return load_settings(environ={}, secrets_path=secrets_file)


def fail(engine, settings, n, *, user="ana", client="10.0.0.1", at=T0):
    for i in range(n):
        with pytest.raises(LoginFailed):
            logins.log_in(engine, settings, user, "mala", client, now=at + dt.timedelta(seconds=i))


def test_five_failures_lock_the_user_name_even_for_the_right_password(engine, settings):
    fail(engine, settings, 4)
    with pytest.raises(logins.LoginThrottled) as locked:
        logins.log_in(engine, settings, "ana", "mala", "10.0.0.1", now=T0 + dt.timedelta(seconds=5))
    assert "Usuario o contraseña incorrectos" in locked.value.message
    assert "1 minuto (hasta las 09:01)" in locked.value.message
    # During the wait the right password is refused, from any client, without a bcrypt check.
    with pytest.raises(logins.LoginThrottled) as again:
        logins.log_in(engine, settings, " ANA ", PASSWORDS["ana"], "10.9.9.9",
                      now=T0 + dt.timedelta(seconds=30))
    assert again.value.message.startswith("Demasiados intentos fallidos para este usuario.")
    assert "segundos (hasta las 09:01)" in again.value.message
    # Another user from another client is not affected.
    assert logins.log_in(engine, settings, "beto", PASSWORDS["beto"], "10.0.0.2",
                         now=T0 + dt.timedelta(seconds=31)).username == "beto"
    # After the wait: one more failure locks for twice as long.
    fail(engine, settings, 1, at=T0 + dt.timedelta(minutes=1, seconds=10))
    lock = logins.lockout(engine, "ana", "x", T0 + dt.timedelta(minutes=1, seconds=11))
    assert lock.until == T0 + dt.timedelta(minutes=3, seconds=10) and lock.failures == 6
    # Later, the right password gets in and clears the count.
    later = T0 + dt.timedelta(minutes=4)
    assert logins.log_in(engine, settings, "ana", PASSWORDS["ana"], "10.0.0.1", now=later).role == "auditor"
    assert logins.lockout(engine, "ana", "10.0.0.1", later) is None


def test_one_client_is_locked_across_user_names(engine, settings):
    for i, name in enumerate(["a", "b", "c", "d", "e"]):
        with pytest.raises(LoginFailed):
            logins.log_in(engine, settings, name, "x", "10.6.6.6", now=T0 + dt.timedelta(seconds=i))
    with pytest.raises(logins.LoginThrottled, match="para esta conexión"):
        logins.log_in(engine, settings, "ana", PASSWORDS["ana"], "10.6.6.6",
                      now=T0 + dt.timedelta(seconds=10))
    assert logins.log_in(engine, settings, "ana", PASSWORDS["ana"], "10.0.0.7",
                         now=T0 + dt.timedelta(seconds=11)).username == "ana"


def test_an_unknown_client_is_not_one_client_for_everybody(engine, settings):
    """Behind localhost or a proxy on the same host every login comes without an address:
    wrong passwords for five names lock those names, not every person of the chain."""
    for i, name in enumerate(["a", "b", "c", "d", "e"]):
        with pytest.raises(LoginFailed):
            logins.log_in(engine, settings, name, "x", None, now=T0 + dt.timedelta(seconds=i))
    assert logins.log_in(engine, settings, "ana", PASSWORDS["ana"], None,
                         now=T0 + dt.timedelta(seconds=10)).username == "ana"
    fail(engine, settings, 5, user="b", client=None, at=T0 + dt.timedelta(seconds=20))
    with pytest.raises(logins.LoginThrottled, match="para este usuario"):
        logins.log_in(engine, settings, "b", "x", None, now=T0 + dt.timedelta(seconds=30))


def test_failures_older_than_the_window_do_not_count(engine, settings):
    fail(engine, settings, 4)
    fail(engine, settings, 1, at=T0 + dt.timedelta(minutes=16))
    assert logins.lockout(engine, "ana", "10.0.0.1", T0 + dt.timedelta(minutes=16, seconds=1)) is None


def test_waits_grow_and_are_capped():
    assert [logins.wait_for(n).total_seconds() / 60 for n in range(5, 11)] == [1, 2, 4, 8, 15, 15]


def test_every_attempt_is_logged_never_the_password(engine, settings, caplog):
    caplog.set_level("INFO")
    fail(engine, settings, 5)
    with pytest.raises(logins.LoginThrottled):
        logins.log_in(engine, settings, "ana", PASSWORDS["ana"], "10.0.0.1", now=T0 + dt.timedelta(seconds=9))
    rows = logins.history(engine)
    assert [r["outcome"] for r in rows] == ["locked"] + ["failed"] * 5
    assert {(r["username"], r["client"]) for r in rows} == {("ana", "10.0.0.1")}
    with engine.connect() as conn:
        dump = " ".join(str(v) for r in conn.execute(sa.select(schema.oppen_logins)) for v in r)
    assert PASSWORDS["ana"] not in dump and "mala" not in dump
    assert PASSWORDS["ana"] not in caplog.text and "mala" not in caplog.text
    assert "usuario='ana' cliente=10.0.0.1" in caplog.text


def test_a_session_survives_expires_and_ends_for_good(engine, settings):
    user = logins.log_in(engine, settings, "beto", PASSWORDS["beto"], "10.0.0.1", now=T0)
    token = logins.open_session(engine, settings, user, "10.0.0.1")
    assert logins.resume(engine, settings, token) == (user, "password")
    assert logins.resume(engine, settings, token + "x") is None
    assert logins.resume(engine, settings, None) is None
    assert logins.resume(engine, settings, token,
                         now=schema.utcnow() + dt.timedelta(hours=12, seconds=1)) is None
    logins.end_session(engine, settings, token)
    assert logins.resume(engine, settings, token) is None
    with engine.connect() as conn:
        [row] = conn.execute(sa.select(schema.oppen_console_sessions)).all()
    assert row.ended_reason == "logout" and len(row.id) == 64 and row.id not in token


def test_a_token_signed_with_another_key_is_refused(engine, settings, tmp_path):
    import dataclasses
    user = logins.log_in(engine, settings, "beto", PASSWORDS["beto"], None)
    token = logins.open_session(engine, dataclasses.replace(settings, session_secret="k" * 32),
                                user, None)
    assert logins.resume(engine, settings, token) is None
