"""In a real headless Chromium: at 1400×1000 the invoice tables of Facturas fallidas and
of a run's detail (Corridas), and Monitoreo's run history, show their error column
without scrolling sideways; on a 400×850 phone the Oppen target's badge is at the top of
every page and the sidebar closes once a page is chosen. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from sync.sandbox import OppenSandbox
from sync.state import schema

from ui_helpers import ROOT, demo_console, login, screenshot, visible_tables, yesterday

pytestmark = pytest.mark.browser
TIMEOUT = 30000
# The grid paints a canvas; what scrolls sideways is its scroller, and the column titles
# are in an accessible table the browser keeps hidden inside the canvas.
_GRID = """(el) => { const s = el.querySelector('.dvn-scroller');
  return {scroll: s ? s.scrollWidth : 0, visible: s ? s.clientWidth : 0,
          titles: Array.from(el.querySelectorAll('[role=columnheader]')).map(h => h.innerText.trim())}; }"""


def table_with(page, title: str, timeout: float = 30.0) -> dict:
    """The visible table whose columns include `title`: its width to scroll and shown."""
    deadline = time.monotonic() + timeout
    while True:
        for grid in visible_tables(page).all():
            info = page.evaluate(_GRID, grid.element_handle())
            if title in info["titles"]:
                return info
        if time.monotonic() > deadline:
            raise AssertionError(f"no table with a {title!r} column")
        time.sleep(0.25)


def error_column_fits(page, title: str) -> None:
    info = table_with(page, title)
    # Nothing to scroll sideways: every column, the error's too, is inside the table.
    assert info["scroll"] <= info["visible"] + 1, info


def badge_on_top(page, heading: str) -> None:
    page.get_by_role("heading", name=heading).first.wait_for()
    badge = page.get_by_test_id("oppen-target-phone")
    assert badge.is_visible() and "SANDBOX" in badge.inner_text()
    title = page.get_by_role("heading", name=heading).first.bounding_box()
    assert badge.bounding_box()["y"] + badge.bounding_box()["height"] <= title["y"]


def sidebar_closed(page) -> bool:
    return page.get_by_test_id("stSidebar").get_attribute("data-collapsed") == "true"


def choose_page(page, name: str) -> None:
    """On the phone: open the sidebar, pick a page, and see the sidebar close by itself."""
    page.get_by_test_id("stExpandSidebarButton").click()
    page.get_by_role("link", name=name).click()
    page.get_by_role("heading", name=name).first.wait_for()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=stSidebar]').dataset.collapsed === 'true'")


def test_error_columns_at_1400_and_the_phone(tmp_path, serve_console, browser):
    password = "pw-e2e-layout"
    with OppenSandbox(password=password) as sandbox:
        url, env = demo_console(tmp_path, sandbox, password, OPPEN_RECONCILE_AT="off")
        # PALERMO's duplicate fails, BELGRANO's two rows are invalid; a resend of both
        # locals makes a run whose detail needs the local and day columns too.
        for args in (["audit", "PALERMO", yesterday().isoformat()],
                     ["audit", "BELGRANO", yesterday().isoformat()],
                     ["resend", "--reason", "prueba de ancho"]):
            subprocess.run([sys.executable, "-m", "sync", *args, "--user", "admin"], cwd=ROOT,
                           env=env, capture_output=True, timeout=120)
        engine = schema.make_engine(url)
        with engine.connect() as conn:
            resend = conn.execute(sa.select(sa.func.max(schema.oppen_runs.c.id)).where(
                schema.oppen_runs.c.kind == "resend")).scalar()
        engine.dispose()
        base_url = serve_console(env)

        # --- 1400 px: the error column without scrolling sideways ---------------------------
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
        page.set_default_timeout(TIMEOUT)
        login(page, base_url, "admin", "admin-demo")
        page.get_by_role("link", name="Facturas fallidas").click()
        page.get_by_role("heading", name="Facturas fallidas").wait_for()
        error_column_fits(page, "Error")
        page.wait_for_timeout(500)
        screenshot(page, "e2e-layout-1-fallidas-1400.png")

        page.goto(f"{base_url}/corridas?corrida={resend}")
        page.get_by_role("heading", name=f"Corrida {resend}").first.wait_for()
        info = table_with(page, "Último error")
        assert {"Local", "Día"} <= set(info["titles"])   # a run of more than one local
        error_column_fits(page, "Último error")
        page.wait_for_timeout(500)
        screenshot(page, "e2e-layout-2-corrida-1400.png")

        page.get_by_role("link", name="Monitoreo").click()
        page.get_by_role("heading", name="Historial de sincronizaciones").wait_for()
        error_column_fits(page, "Mensaje")
        error_column_fits(page, "Corrida actual")   # the workers' table
        page.close()

        # --- a 400 px phone: the badge on top of every page, the sidebar closes -------------
        phone = browser.new_page(viewport={"width": 400, "height": 850}, locale="en-US",
                                 is_mobile=True, has_touch=True)
        phone.set_default_timeout(TIMEOUT)
        login(phone, base_url, "admin", "admin-demo")
        assert sidebar_closed(phone)
        badge_on_top(phone, "Auditoría")
        phone.wait_for_timeout(1000)   # the table draws after the heading
        screenshot(phone, "e2e-layout-3-telefono-auditoria.png")
        for name, shot in (("Corridas", "e2e-layout-4-telefono-corridas.png"),
                           ("Facturas fallidas", "e2e-layout-5-telefono-fallidas.png")):
            choose_page(phone, name)
            badge_on_top(phone, name)
            phone.wait_for_timeout(500)
            screenshot(phone, shot)
        phone.close()
