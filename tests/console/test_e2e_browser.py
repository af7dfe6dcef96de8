"""End to end in a real headless Chromium: `streamlit run console.py` on demo data and a
sandbox; an auditor marks MATRIZ audited and sees the seed's message; an admin audits
PALERMO (a duplicate), then resends the failed invoice and sees the table change.
Screenshots go to test-artifacts/ (git-ignored)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from sync.sandbox import OppenSandbox

from ui_helpers import ROOT, choose, clean_environ, login, screenshot, visible_tables, wait_for_records, yesterday

pytestmark = pytest.mark.browser
TIMEOUT = 30000


def test_auditor_and_admin_in_a_real_browser(tmp_path, serve_console, browser):
    password = "pw-e2e-sandbox"
    with OppenSandbox(password=password) as sandbox:
        # The demo's main day is "yesterday" in Argentina, as the console computes it.
        env = clean_environ(DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}",
                            OPPEN_ENV="sandbox", OPPEN_BASE_URL=sandbox.url,
                            OPPEN_USERNAME="API", OPPEN_PASSWORD=password,
                            OPPEN_SECRETS_FILE=str(tmp_path / "no-secrets.toml"),
                            TZ="America/Argentina/Buenos_Aires")
        subprocess.run([sys.executable, "-m", "sync", "init-db", "--demo"], cwd=ROOT, env=env,
                       check=True, capture_output=True, timeout=60)
        base_url = serve_console(env)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")   # formats and calendars stay Argentine
        page.set_default_timeout(TIMEOUT)

        # --- a deep link as a stranger: the login first, then that page ---------------------
        page.goto(f"{base_url}/vista_previa")
        page.get_by_label("Usuario").fill("auditor")
        page.get_by_label("Contraseña").fill("auditor-demo")
        page.get_by_role("button", name="Ingresar").click()
        page.get_by_role("heading", name="Vista previa").wait_for()
        # The sidebar is drawn after the page's heading: wait for it, do not peek.
        page.get_by_text("Cerrar sesión").wait_for()
        # A reload keeps the login and the page (the signed session's cookie).
        page.reload()
        page.get_by_role("heading", name="Vista previa").wait_for()

        # --- the auditor marks MATRIZ audited ------------------------------------------------
        page.get_by_role("link", name="Auditoría").click()
        page.get_by_role("heading", name="Auditoría").wait_for()
        assert page.get_by_text("las facturas NO llegan a Oppen").first.is_visible()
        assert not page.get_by_role("link", name="Facturas fallidas").count()
        choose(page, "Local", "MATRIZ")
        page.get_by_role("button", name="Marcar auditado").click()
        page.get_by_text("Marcar auditado no se puede deshacer").wait_for()
        page.get_by_role("button", name="Sí, marcar auditado y enviar").click()
        result = page.locator('[data-testid="stAlertContentSuccess"]').filter(
            has_text="5 factura(s) enviada(s) a Oppen exitosamente")
        result.wait_for()
        assert f"Local MATRIZ marcado como auditado para {yesterday().isoformat()}" in \
            result.inner_text()
        rows = wait_for_records(page, lambda r: any(
            x.get("Local") == "MATRIZ" and x.get("Estado") == "Auditado · enviado a Oppen"
            for x in r))
        assert [x["Enviadas"] for x in rows if x["Local"] == "MATRIZ"] == ["5"]
        screenshot(page, "e2e-1-auditor-matriz-auditado.png")
        assert len(sandbox.invoices()) == 5

        page.get_by_role("button", name="Cerrar sesión").click()
        page.get_by_role("button", name="Ingresar").wait_for()

        # --- the admin audits PALERMO, whose duplicate fails ----------------------------------
        login(page, base_url, "admin", "admin-demo")
        choose(page, "Local", "PALERMO")
        assert "local=PALERMO" in page.url   # the view lives in the URL
        page.get_by_role("button", name="Marcar auditado").click()
        page.get_by_role("button", name="Sí, marcar auditado y enviar").click()
        page.get_by_text("Algunas facturas no pudieron enviarse a Oppen: 1/3").wait_for()
        assert page.get_by_text("Primer error: Error HTTP 409: Duplicate invoice").is_visible()
        screenshot(page, "e2e-2-admin-palermo-parcial.png")

        # --- and resends the failed invoice ----------------------------------------------------
        page.get_by_role("link", name="Facturas fallidas").click()
        page.get_by_role("heading", name="Facturas fallidas").wait_for()
        [before] = wait_for_records(page, lambda r: len(r) == 1 and r[0]["Intentos"])
        assert (before["Factura"], before["Local"], before["Estado"], before["Intentos"],
                before["Tipo de error"]) == ("A 0006-00001691", "PALERMO", "Fallida",
                                             "1 envío", "Duplicada en Oppen")
        screenshot(page, "e2e-3-admin-fallidas.png")

        # Select the row with the checkbox of the grid's first column.
        grid = visible_tables(page).first
        box = grid.bounding_box()
        page.mouse.click(box["x"] + 16, box["y"] + 35 + 17)
        page.get_by_text("1 factura(s) · 1 seleccionada(s)").wait_for()
        # The CSV opens in Excel as set up in Argentina: BOM, ";", decimal comma.
        with page.expect_download() as download:
            page.get_by_role("button", name="Descargar CSV").click()
        data = open(download.value.path(), "rb").read()
        assert data.startswith(b"\xef\xbb\xbf")
        text = data.decode("utf-8-sig")
        header, first = text.splitlines()[:2]
        assert header.startswith("Factura;Local;Día;Monto;Estado;")
        assert re.search(r";\d+,\d{2};Fallida;", first), first
        page.get_by_role("button", name="Comparar con Oppen").click()
        page.get_by_text("ya corresponde a otra fila nuestra").wait_for()
        screenshot(page, "e2e-4-admin-duplicada.png")

        # --- the admin's other pages render -----------------------------------------------------
        page.get_by_role("link", name="Corridas").click()
        page.get_by_role("heading", name="Corridas").wait_for()
        page.wait_for_timeout(1500)
        screenshot(page, "e2e-5a-corridas.png")
        page.get_by_role("link", name="Monitoreo").click()
        page.get_by_role("button", name="Probar conexión").click()
        page.get_by_text("Conexión correcta con Oppen (SANDBOX)").wait_for()
        charts = page.locator('[data-testid="stVegaLiteChart"] canvas, '
                              '[data-testid="stVegaLiteChart"] svg')
        charts.first.wait_for()
        page.wait_for_timeout(1000)   # let the three charts finish drawing
        screenshot(page, "e2e-5-admin-monitoreo.png")
        page.get_by_role("link", name="Locales auditados").click()
        page.get_by_role("heading", name="Locales auditados").wait_for()
        wait_for_records(page, lambda r: {x.get("Local") for x in r} == {"MATRIZ", "PALERMO"})
        screenshot(page, "e2e-6-locales-auditados.png")
        page.get_by_role("link", name="Vista previa").click()
        choose(page, "Local", "BELGRANO")
        page.get_by_text("2 factura(s) no se pueden enviar").wait_for()
        screenshot(page, "e2e-7-vista-previa.png")
        page.close()
