"""Wiring: an engine and an Oppen client from settings, the embedded sandbox, and the
database made ready for a console process.

With `OPPEN_ENV=sandbox` and no `OPPEN_BASE_URL`, the built-in sandbox is started
once per process on a free loopback port, with a random password that never leaves
the process; its invoices persist next to the SQLite demo database, so the console
and the CLI see the same "Oppen" across restarts.
"""

from __future__ import annotations

import logging
import secrets
import threading

from pathlib import Path

from sqlalchemy.engine import Engine, make_url

from . import demo
from .errors import ConfigError
from .state import migrate, schema
from .oppen.client import OppenClient
from .settings import PROJECT_DIR, Settings, local_today

logger = logging.getLogger(__name__)

_sandbox_lock = threading.Lock()
_sandbox = None
_sandbox_password: str | None = None


def open_engine(settings: Settings, **kwargs) -> Engine:
    return schema.make_engine(settings.database_url, **kwargs)


def prepare_database(engine: Engine, settings: Settings) -> str | None:
    """Make the database ready for a console process (called once per process); returns
    None, or the one line a person must read before it can be used (an upgrade to run).

    The embedded default (`demo.wanted`: the project's SQLite file, or OPPEN_DEMO_DATA=1)
    is the console's own: its tables are created and upgraded and an empty one gets the
    demo, so a console started by hand comes up with data. Any other database is only
    checked: its schema changes with `python -m sync init-db`, never with a page view.
    Raises ConfigError when the sales system's tables are missing (a wrong DATABASE_URL).
    """
    if demo.wanted(settings):
        schema.init_db(engine, source_tables=True)
        if demo.is_empty(engine):
            result = demo.load_demo(engine, today=local_today())
            logger.info("Datos de demostración cargados: %s", result)
    problem = migrate.check(engine)
    if problem:
        return problem
    missing = schema.check_schema(engine)
    if missing:
        raise ConfigError(f"Faltan tablas en la base ({', '.join(missing)}): revisá DATABASE_URL "
                          "o ejecutá python -m sync init-db")
    return None


def sandbox_store(settings: Settings) -> Path:
    """Where the embedded sandbox keeps its invoices: beside the SQLite database, so a
    fresh database starts with a fresh "Oppen" (else under data/)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        db_path = Path(url.database)
        return db_path.with_name(f"{db_path.stem}-sandbox-{settings.api}.jsonl")
    return PROJECT_DIR / "data" / f"sandbox-{settings.api}.jsonl"


def embedded_sandbox(settings: Settings):
    """The process's built-in sandbox, started on first use."""
    global _sandbox, _sandbox_password
    with _sandbox_lock:
        if _sandbox is None:
            from .sandbox import OppenSandbox
            _sandbox_password = settings.password or secrets.token_urlsafe(16)
            store = sandbox_store(settings)
            store.parent.mkdir(parents=True, exist_ok=True)
            _sandbox = OppenSandbox(api=settings.api, username=settings.username or "API",
                                    password=_sandbox_password, store_path=str(store)).start()
            logger.info("Sandbox de Oppen iniciado en %s", _sandbox.url)
        return _sandbox


def worker_environment(settings: Settings) -> dict[str, str]:
    """What a worker process started by this process must be told to reach the same Oppen:
    for the embedded sandbox, its address and this process's random password (the child
    runs on this machine, with this user; the password still never reaches a log, a
    page or the database). Nothing otherwise: the child reads the same settings."""
    if not settings.embedded_sandbox:
        return {}
    sandbox = embedded_sandbox(settings)
    return {"OPPEN_BASE_URL": sandbox.url, "OPPEN_USERNAME": settings.username or "API",
            "OPPEN_PASSWORD": _sandbox_password}


def open_client(settings: Settings) -> OppenClient:
    """A client for the configured target (starting the embedded sandbox if that is it)."""
    pool = max(2, settings.concurrency)
    if settings.embedded_sandbox:
        sandbox = embedded_sandbox(settings)
        return OppenClient(base_url=sandbox.url, api=settings.api,
                           username=settings.username or "API", password=_sandbox_password,
                           timeout=settings.timeout, pool_size=pool)
    return OppenClient(base_url=settings.base_url, api=settings.api, username=settings.username,
                       password=settings.password, timeout=settings.timeout, pool_size=pool)
