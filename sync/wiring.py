"""Wiring: an engine and an Oppen client from settings, and the embedded sandbox.

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

from .state import schema
from .oppen.client import OppenClient
from .settings import PROJECT_DIR, Settings

logger = logging.getLogger(__name__)

_sandbox_lock = threading.Lock()
_sandbox = None
_sandbox_password: str | None = None


def open_engine(settings: Settings, **kwargs) -> Engine:
    return schema.make_engine(settings.database_url, **kwargs)


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
            binder.parent.mkdir(parents=True, exist_ok=True)
            _sandbox = OppenSandbox(api=settings.api, username=settings.username or "API",
                                    password=_sandbox_password, store_path=str(store)).start()
            logger.info("Sandbox de Oppen iniciado en %s", _sandbox.url)
        return _sandbox


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
