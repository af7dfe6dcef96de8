"""Plain helpers for the console's tests: the test users, AppTest polling, and the pieces
of a real browser session (log in, pick from a select box, read a table, screenshot).
Fixtures live in console/conftest.py."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from sync.settings import _SCALARS, User
from sync.state import read_models

ROOT = Path(__file__).resolve().parent.parent
PASSWORDS = {"ana": "ana-clave-123", "beto": "beto-clave-123"}
ANA = User("ana", "Ana Auditora", "auditor", "")
BETO = User("beto", "Beto Admin", "admin", "")
PAGES = sorted(p.name for p in (ROOT / "pages").glob("*.py"))
ENV_KEYS = list(_SCALARS) + ["OPPEN_SECRETS_FILE", "OPPEN_PROFILE", "OPPEN_DEMO_DATA"]


def yesterday():
    """The demo's main day, as the console computes it (Argentina's calendar)."""
    return read_models.local_today() - dt.timedelta(days=1)


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


# --- AppTest ----------------------------------------------------------------------------

def no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def plain(text: str) -> str:
    """What a person reads: without the escapes that keep Markdown from interpreting it."""
    return text.replace("\\", "")


def shows(at, kind: str, text: str) -> bool:
    """Whether an element of this kind (error, info, caption…) reads `text`."""
    return any(text in plain(e.value) for e in getattr(at, kind))


def demo_console(tmp_path, sandbox, password: str, **extra: str) -> tuple[str, dict]:
    """A SQLite file with the demo data (`init-db --demo` in a process of its own) and the
    environment that points a console or the CLI at it and at `sandbox`: (url, env)."""
    import subprocess
    import sys
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    env = clean_environ(DATABASE_URL=url, OPPEN_ENV="sandbox", OPPEN_BASE_URL=sandbox.url,
                        OPPEN_USERNAME="API", OPPEN_PASSWORD=password,
                        OPPEN_SECRETS_FILE=str(tmp_path / "no-secrets.toml"),
                        TZ="America/Argentina/Buenos_Aires", **extra)
    subprocess.run([sys.executable, "-m", "sync", "init-db", "--demo"], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=60)
    return url, env
