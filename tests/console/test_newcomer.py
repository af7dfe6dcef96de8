"""A newcomer's path: `streamlit run console.py` on a fresh database with no
configuration at all serves the console, and it shows the demo locals.

The project's default database lives under data/, which tests never touch: this test
points DATABASE_URL at a temp file and sets OPPEN_DEMO_DATA=1, which makes the console
do what it does for the default file (load the demo into an empty database). No
OPPEN_* setting and no secrets file: the sandbox target and the demo users.
"""

from __future__ import annotations

import urllib.request

import pytest
import sqlalchemy as sa

from sync.state import schema

from ui_helpers import clean_environ, login, screenshot, wait_for_records

pytestmark = pytest.mark.browser


def test_fresh_checkout_serves_the_console_with_demo_data(tmp_path, serve_console, browser):
    database = tmp_path / "fresh.sqlite3"
    env = clean_environ(DATABASE_URL=f"sqlite:///{database}", OPPEN_DEMO_DATA="1",
                        OPPEN_SECRETS_FILE=str(tmp_path / "no-secrets.toml"))
    base_url = serve_console(env)

    with urllib.request.urlopen(base_url + "/", timeout=10) as resp:
        assert resp.status == 200
        assert b"<html" in resp.read().lower()

    page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="es-AR")
    page.set_default_timeout(30000)
    page.goto(base_url)
    page.get_by_text("Modo demostración").wait_for()
    login(page, base_url, "auditor", "auditor-demo")
    page.get_by_text("las facturas NO llegan a Oppen").first.wait_for()
    demo_locals = {"MATRIZ", "SUCURSAL", "PALERMO", "BELGRANO", "CABALLITO", "RECOLETA"}
    rows = wait_for_records(page, lambda r: demo_locals <= {x.get("Local") for x in r})
    assert {x["Local"]: x["Estado"] for x in rows}["MATRIZ"] == "Listo para auditar"
    screenshot(page, "newcomer-auditoria.png")
    page.close()

    engine = schema.make_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.facturas_trns)).scalar() > 0
    engine.dispose()
