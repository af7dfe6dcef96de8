"""Fixtures for the console's tests: a demo database on a temp SQLite file, a real Oppen
sandbox, users in a temp secrets.toml, and the environment that points the console at
them. Pages run in Streamlit's AppTest (in-process) or in a real browser.

Both this file and tests/conftest.py are the module `conftest` (neither directory is a
package), and pytest keeps only the last one loaded in sys.modules. So that the suite's
`from conftest import DAY, add_factura, ...` keeps working whatever the order, names
this module does not define are looked up in the suite's conftest.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import bcrypt
import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("suite_conftest", ROOT / "tests" / "conftest.py")
suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite)

from sync import db, demo, queries  # noqa: E402
from sync.config import _SCALARS, User  # noqa: E402


PASSWORDS = {"ana": "ana-clave-123", "beto": "beto-clave-123"}
ANA = User("ana", "Ana Auditora", "auditor", "")
BETO = User("beto", "Beto Admin", "admin", "")
PAGES = sorted(p.name for p in (ROOT / "pages").glob("*.py"))
ENV_KEYS = list(_SCALARS) + ["OPPEN_SECRETS_FILE", "OPPEN_PROFILE", "OPPEN_DEMO_DATA"]


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(suite, name)


def yesterday():
    """The demo's main day, as the console computes it (Argentina's calendar)."""
    import datetime as dt
    return queries.local_today() - dt.timedelta(days=1)


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
    engine = db.make_engine(url)
    db.init_db(engine, source_tables=True)
    demo.load_demo(engine, today=queries.local_today())
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
              "OPPEN_BACKOFF_BASE": "0.001", "OPPEN_BACKOFF_CAP": "0.01"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    engine = db.make_engine(demo_url)
    yield {"url": demo_url, "engine": engine, "sandbox": sandbox}
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


def run_until(at, predicate, timeout: float = 20.0, what: str = "the condition"):
    """Rerun the script (as the progress fragment does) until `predicate(at)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        if predicate(at):
            return at
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s; page shows: "
                                 f"{texts(at)}")
        time.sleep(0.1)


def texts(at) -> list[str]:
    """Every message and heading on the page, for assertions and failure output."""
    out = []
    for kind in ("title", "subheader", "success", "warning", "info", "error", "caption",
                 "markdown"):
        out += [getattr(e, "value", "") for e in getattr(at, kind)]
    return out


# --- a real server and a real browser ----------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts"


def clean_environ(**values: str) -> dict:
    """This process's environment without any of the console's settings, plus `values`."""
    import os
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env.update(values)
    return env


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def login(page, base_url: str, username: str, password: str) -> None:
    page.goto(base_url)
    page.get_by_label("Usuario").fill(username)
    page.get_by_label("Contraseña").fill(password)
    page.get_by_role("button", name="Ingresar").click()
    page.get_by_role("heading", name="Auditoría").wait_for(timeout=30000)


def choose(page, label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()


def visible_tables(page):
    return page.locator('[data-testid="stDataFrame"]:visible')


def grid_records(page, index: int = 0) -> list[dict]:
    """The rows of the index-th visible table on the page as {column title: text}, read
    from the accessible grid Streamlit renders next to its canvas (visible columns only)."""
    grid = visible_tables(page).nth(index)
    titles = [h.inner_text().strip() for h in grid.locator('[role="columnheader"]').all()]
    records = []
    for row in grid.locator('[role="row"]').all():
        cells = [c.inner_text().strip() for c in row.locator('[role="gridcell"]').all()]
        if cells and len(titles) >= len(cells):
            records.append(dict(zip(titles[-len(cells):], cells)))
    return records


def wait_for_records(page, predicate, index: int = 0, timeout: float = 30.0) -> list[dict]:
    """grid_records once `predicate(records)` holds (the grid draws asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        records = grid_records(page, index)
        try:
            if predicate(records):
                return records
        except KeyError:   # the grid is still drawing its header
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the table never matched; it shows {records}")
        time.sleep(0.25)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
