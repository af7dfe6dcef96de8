"""In a real headless Chromium (en-US): a local whose name carries Markdown (a link and an
image pointing at a local port) is shown as text on Auditoría, Locales auditados and
Corridas, and the browser never asks for what the name points at; the detail of a run
whose POSTs timed out after Oppen stored them shows each POST and then the lookup that
found it; six wrong passwords lock the user out with the Spanish wait, and the right
password is refused during the wait. Screenshots go to test-artifacts/."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa

from sync.sandbox import OppenSandbox
from sync.state import schema

from ui_helpers import ROOT, choose, demo_console, login, screenshot, yesterday

pytestmark = pytest.mark.browser
TIMEOUT = 30000
EVIL = "Z [Reingresá tu clave](http://evil.example/l) ![p](http://127.0.0.1:8643/pixel.png)"


def shown_as_text(page, text: str) -> None:
    """A heading reads exactly `text` (the word joiners that keep GFM from linking a bare
    address are invisible and left out). Waited for: right after a link is followed, the
    previous page's heading with the same name can still be the one on screen."""
    headings = page.get_by_role("heading").filter(has_text="Reingresá tu clave")
    seen: list[str] = []
    for _ in range(TIMEOUT // 100):
        seen = [h.replace("\u2060", "").strip() for h in headings.all_inner_texts()]
        if text in seen:
            return
        page.wait_for_timeout(100)
    assert text in seen, seen


def test_hostile_name_run_with_lookup_and_lockout(tmp_path, serve_console, browser):
    password = "pw-e2e-safety"
    with OppenSandbox(password=password) as sandbox:
        url, env = demo_console(tmp_path, sandbox, password)
        engine = schema.make_engine(url)
        with engine.begin() as conn:
            for table in (schema.facturas_trns, schema.cierres_locales):
                conn.execute(sa.update(table).where(table.c.local == "MATRIZ")
                             .values(local=EVIL))
        # Oppen stores each invoice and then does not answer: every POST times out and
        # the lookup that follows finds it.
        sandbox.set_faults(timeout_rate=1.0, hang_seconds=1.5)
        audit = subprocess.run(
            [sys.executable, "-m", "sync", "audit", EVIL, yesterday().isoformat(),
             "--user", "auditor"], cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**env, "OPPEN_TIMEOUT": "0.5", "OPPEN_BACKOFF_BASE": "0.001",
                 "OPPEN_BACKOFF_CAP": "0.01"})
        sandbox.set_faults(timeout_rate=0.0)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert len(sandbox.invoices()) == 5
        with engine.connect() as conn:
            run_id = conn.execute(sa.select(sa.func.max(schema.oppen_runs.c.id))).scalar()
        engine.dispose()

        base_url = serve_console(env)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
        page.set_default_timeout(TIMEOUT)
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.url))

        # --- the name is text on Auditoría ------------------------------------------------------
        login(page, base_url, "admin", "admin-demo")
        choose(page, "Local", EVIL)
        shown_as_text(page, f"{EVIL} · {yesterday():%d/%m/%Y}")
        page.wait_for_timeout(500)
        screenshot(page, "e2e-safety-1-auditoria.png")
        assert page.locator('a[href^="http://evil.example"]').count() == 0
        assert page.locator('img[src*="127.0.0.1:8643"]').count() == 0

        # --- and on Locales auditados, opened by Auditoría's link (the view in the URL) ----------
        page.get_by_role("link", name="Ver sus facturas y corridas").click()
        shown_as_text(page, f"Facturas de {EVIL} del {yesterday():%d/%m/%Y}")
        assert "desde=" in page.url and "hasta=" in page.url
        page.wait_for_timeout(500)
        screenshot(page, "e2e-safety-2-locales-auditados.png")
        assert page.locator('a[href^="http://evil.example"]').count() == 0
        assert page.locator('img[src*="127.0.0.1:8643"]').count() == 0

        # --- the run's detail: a POST without answer, then the lookup that found it ---------------
        page.get_by_role("link", name=f"Corrida {run_id} ").click()
        page.get_by_role("heading", name=f"Corrida {run_id}").first.wait_for()
        # The steps are Markdown; the grid above carries the same words in cells that the
        # browser keeps hidden (it paints a canvas), so the wait names the Markdown.
        page.locator('[data-testid="stMarkdownContainer"] p',
                     has_text="consulta · encontrada en Oppen").first.wait_for()
        steps = [t.strip() for t in page.locator('[data-testid="stMarkdownContainer"] p')
                 .all_inner_texts() if t.strip()[:3] in ("1. ", "2. ", "3. ")]
        assert steps[0].split(" · ")[1] == "POST", steps
        assert any(" · consulta · encontrada en Oppen" in s for s in steps[1:]), steps
        screenshot(page, "e2e-safety-3-corrida-con-consulta.png")

        # --- the lockout: six wrong passwords, then the right one refused --------------------------
        page.get_by_role("button", name="Cerrar sesión").click()
        for _ in range(6):
            page.get_by_label("Usuario").fill("auditor")
            page.get_by_label("Contraseña").fill("no-es-la-clave")
            page.get_by_role("button", name="Ingresar").click()
            page.locator('[data-testid="stAlertContentError"]').first.wait_for()
            page.wait_for_timeout(300)
        page.get_by_text("Demasiados intentos fallidos para este usuario").wait_for()
        page.get_by_label("Usuario").fill("auditor")
        page.get_by_label("Contraseña").fill("auditor-demo")
        page.get_by_role("button", name="Ingresar").click()
        page.wait_for_timeout(1500)
        assert page.get_by_text("Demasiados intentos fallidos").first.is_visible()
        assert not page.get_by_role("heading", name="Auditoría").count()
        screenshot(page, "e2e-safety-4-bloqueo.png")
        page.close()

    assert not [u for u in asked if u.startswith(("http://127.0.0.1:8643", "http://evil.example"))]
