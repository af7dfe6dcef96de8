"""The README's run command, exactly as a newcomer types it, on a fresh clone: `make run`
creates the demo database under the clone's data/ and serves the console on the
built-in sandbox with no configuration at all.

To keep the suite fast the clone borrows this test run's virtualenv (`make -o` skips
the install step, which `make test` itself has just exercised); everything else is the
newcomer's path: a clean checkout, no DATABASE_URL, no OPPEN_* setting, no secrets file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.state import schema

from ui_helpers import clean_environ, free_port, login, screenshot, wait_for_records

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.browser


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None
                    or not (ROOT / ".git").exists(), reason="needs git, make and a git checkout")
def test_make_run_on_a_fresh_clone(tmp_path, browser):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    port = free_port()
    env = clean_environ(STREAMLIT_SERVER_PORT=str(port))
    env.pop("OPPEN_SECRETS_FILE", None)
    log = open(tmp_path / "make-run.log", "wb")
    proc = subprocess.Popen(["make", "-o", ".venv/.installed-requirements", "run"], cwd=clone,
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(base_url + "/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("make run did not serve the console:\n"
                                     + (tmp_path / "make-run.log").read_text()[-3000:])
            time.sleep(0.3)

        page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="es-AR")
        page.set_default_timeout(30000)
        login(page, base_url, "auditor", "auditor-demo")
        page.get_by_text("las facturas NO llegan a Oppen").first.wait_for()
        demo_locals = {"MATRIZ", "SUCURSAL", "PALERMO", "BELGRANO", "CABALLITO", "RECOLETA"}
        wait_for_records(page, lambda r: demo_locals <= {x.get("Local") for x in r})
        screenshot(page, "readme-make-run.png")
        page.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()

    database = clone / "data" / "console.sqlite3"
    assert database.exists(), "make run did not create the default database"
    engine = schema.make_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.facturas_trns)).scalar() > 0
    engine.dispose()
