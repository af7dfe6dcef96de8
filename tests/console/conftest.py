"""Fixtures for the console's tests: a demo database on a temp SQLite file, a real Oppen
sandbox, users in a temp secrets.toml, and the environment that points the console at
them; a served console and a real Chromium. Pages run in Streamlit's AppTest
(in-process) or in a real browser. Plain helpers live in ui_helpers.py."""

from __future__ import annotations

import time
from pathlib import Path

import bcrypt
import pytest

from sync import background, demo
from sync.settings import User
from sync.state import read_models, schema
from ui_helpers import CHROMIUM, CHROMIUM_ARGS, ENV_KEYS, PASSWORDS, ROOT, free_port


@pytest.fixture
def secrets_file(tmp_path):
    path = tmp_path / "secrets.toml"
    lines = []
    for user, name, role in (("ana", "Ana Auditora", "auditor"), ("beto", "Beto Admin", "admin")):
        digest = bcrypt.hashpw(PASSWORDS[user].encode(), bcrypt.gensalt(4)).decode()
        lines += [f"[users.{user}]", f'name = "{name}"', f'role = "{role}"',
                  f'password_hash = "{digest}"', ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def demo_url(tmp_path):
    """A SQLite file with the demo data, its main day being yesterday in Argentina."""
    url = f"sqlite:///{tmp_path / 'console.sqlite3'}"
    engine = schema.make_engine(url)
    schema.init_db(engine, source_tables=True)
    demo.load_demo(engine, today=read_models.local_today())
    engine.dispose()
    return url


@pytest.fixture
def console_env(monkeypatch, demo_url, sandbox, password, secrets_file):
    """The console pointed at the demo database, the test's sandbox and the test users."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    values = {"DATABASE_URL": demo_url, "OPPEN_ENV": "sandbox", "OPPEN_BASE_URL": sandbox.url,
              "OPPEN_USERNAME": "API", "OPPEN_PASSWORD": password,
              "OPPEN_SECRETS_FILE": str(secrets_file), "OPPEN_TIMEOUT": "5",
              "OPPEN_BACKOFF_BASE": "0.001", "OPPEN_BACKOFF_CAP": "0.01",
              # The console's own worker (a process it starts) looks for work often;
              # the morning reconciliation, which it would also run, has its own tests.
              "OPPEN_WORKER_POLL": "0.2", "OPPEN_RECONCILE_AT": "off"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    engine = schema.make_engine(demo_url)
    yield {"url": demo_url, "engine": engine, "sandbox": sandbox}
    background.stop_embedded_workers()   # the worker the pages started for this database
    engine.dispose()


@pytest.fixture
def app():
    """app("pages/auditoria.py", user=ANA): an AppTest of one script, logged in or not."""
    from streamlit.testing.v1 import AppTest

    def make(script: str, user: User | None = None):
        at = AppTest.from_file(str(ROOT / script), default_timeout=30)
        if user is not None:
            at.session_state["user"] = user
        return at
    return make


@pytest.fixture
def serve_console(tmp_path):
    """serve_console(env) -> base URL: `streamlit run console.py` as a subprocess on a free
    port, stopped (by its own pid) at the end of the test. Its output is in tmp_path."""
    import subprocess
    import sys
    import urllib.request

    started: list[subprocess.Popen] = []

    def start(env: dict) -> str:
        port = free_port()
        log = open(tmp_path / f"streamlit-{port}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "console.py", "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        return url
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("streamlit did not start: "
                                     + (tmp_path / f"streamlit-{port}.log").read_text(errors="replace"))
            time.sleep(0.2)

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def browser():
    """Debian's Chromium driven by Playwright; skipped when it is missing (failed on CI)."""
    import os
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium (.ci/run)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); the browser "
                    "tests run in CI")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
