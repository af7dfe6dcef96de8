"""Shared fixtures: a real database per test (SQLite, and MariaDB when TEST_MYSQL_URL is
set) and a real Oppen sandbox on a free loopback port. Nothing here mocks HTTP. Plain
helpers live in helpers.py."""

from __future__ import annotations

import secrets
import uuid

import pytest

from helpers import BACKENDS, MYSQL_URL, drop_mysql_database, mysql_database
from sync.oppen.retry import Policy
from sync.oppen.client import OppenClient
from sync.sandbox import Faults, OppenSandbox
from sync.settings import Settings, validate
from sync.state import schema


def pytest_report_header(config):
    if MYSQL_URL:
        return "database tests: sqlite + mysql (TEST_MYSQL_URL is set)"
    return "database tests: sqlite only (set TEST_MYSQL_URL to also run them on MariaDB/MySQL)"


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite3'}"
        return
    name = f"sync_test_{uuid.uuid4().hex[:12]}"
    url, base = mysql_database(name)
    yield url.render_as_string(hide_password=False)
    drop_mysql_database(base, name)


@pytest.fixture
def engine(db_url):
    engine = schema.make_engine(db_url)
    schema.init_db(engine, source_tables=True)
    yield engine
    engine.dispose()


@pytest.fixture
def password():
    return "pw-" + secrets.token_urlsafe(12)


@pytest.fixture
def sandbox(password):
    with OppenSandbox(password=password, faults=Faults(seed=1)) as box:
        yield box


@pytest.fixture
def settings(db_url, sandbox, password):
    return validate(Settings(database_url=db_url, oppen_env="sandbox", base_url=sandbox.url,
                             username="API", password=password, timeout=2.0,
                             backoff_base=0.001, backoff_cap=0.01, lease_seconds=30,
                             concurrency=4))


@pytest.fixture
def client(settings):
    with OppenClient(base_url=settings.base_url, api=settings.api, username=settings.username,
                     password=settings.password, timeout=settings.timeout) as c:
        yield c


@pytest.fixture
def policy():
    return Policy(max_attempts=3, backoff_base=0.001, backoff_cap=0.01, breaker_threshold=10,
                  sleep=lambda s: None)
