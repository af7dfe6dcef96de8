"""Every page of the console in Streamlit's AppTest, against a real demo database and a
real Oppen sandbox: what each role sees and cannot reach, the audit end to end, the
refusals, resend of a failed invoice, the empty states. Nothing here mocks Streamlit,
HTTP or the database."""

from __future__ import annotations

import datetime as dt
import re

import pandas as pd
import pytest
import sqlalchemy as sa

from sync import background

from sync.state import schema
from sync.actions import mark_audited
from sync.auth import PermissionDenied
from sync.settings import load_settings

from ui_helpers import (ANA, BETO, PAGES, PASSWORDS, no_exception, run_until, shows, texts,
                        yesterday)

ADMIN_PAGES = ("facturas_fallidas.py", "monitoreo.py")


def find_table(at, column: str):
    """The page's table that has `column` (keys change as the page clears selections)."""
    for frame in at.dataframe:
        if column in frame.value.columns:
            return frame.value
    raise AssertionError(f"no table with a {column!r} column; page shows: {texts(at)}")


def runs(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(schema.oppen_runs)).scalar()


def audit_directly(console_env, local: str) -> dict:
    """Mark a local audited as the CLI would (for pages that need synced data)."""
    settings = load_settings()
    return mark_audited(console_env["engine"], settings, local, yesterday(), "ana")


# --- nobody logged in -------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES)
def test_every_page_alone_without_login_shows_the_login_and_no_data(console_env, app, page):
    at = app(f"pages/{page}").run()
    no_exception(at)
    assert len(at.dataframe) == 0 and len(at.metric) == 0
    assert [t.label for t in at.text_input] == ["Usuario", "Contraseña"]
    assert [b.label for b in at.button] == ["Ingresar"]
    assert "Iniciá sesión para continuar." in texts(at)


def test_the_console_without_login_shows_only_the_login(console_env, app):
    at = app("console.py").run()
    no_exception(at)
    assert [t.value for t in at.title] == ["Consola de facturas Oppen"]
    assert len(at.dataframe) == 0
    assert [b.label for b in at.button] == ["Ingresar"]
    assert len(at.sidebar.button) == 0


def test_login_with_the_configured_users(console_env, app):
    # (A page run alone shows the same login as the router; AppTest drops a form's
    # submit on the router's first runs, the browser test logs in through the router.)
    at = app("pages/auditoria.py").run()
    at.text_input[0].input("ana")
    at.text_input[1].input("no-es-la-clave")
    at.button[0].click().run()
    no_exception(at)
    assert shows(at, "error", "Usuario o contraseña incorrectos")
    assert "user" not in at.session_state

    at.text_input[0].input("ana")
    at.text_input[1].input(PASSWORDS["ana"])
    at.button[0].click().run()
    no_exception(at)
    assert [t.value for t in at.title] == ["Auditoría"]
    user = at.session_state["user"]
    assert (user.username, user.name, user.role) == ("ana", "Ana Auditora", "auditor")
    assert user.password_hash == ""   # the session never keeps the hash


def test_sidebar_shows_user_role_target_and_logs_out(console_env, app):
    # (A fresh AppTest per state: after its first run, AppTest executes the page files
    # themselves rather than the router, so the router's sidebar is checked on run 1.)
    at = app("console.py", BETO).run()
    no_exception(at)
    sidebar = [m.value for m in at.sidebar.markdown]
    assert any("SANDBOX" in m and "las facturas NO llegan a Oppen" in m for m in sidebar)
    assert any("Beto Admin" in m and "Administrador" in m for m in sidebar)
    assert [b.label for b in at.sidebar.button] == ["Cerrar sesión"]
    # Logging out runs in the router on the next run: see the browser test.


def test_demo_users_are_refused_outside_the_sandbox(console_env, app, monkeypatch, tmp_path):
    empty = tmp_path / "no-users.toml"
    empty.write_text("", encoding="utf-8")
    monkeypatch.setenv("OPPEN_SECRETS_FILE", str(empty))
    monkeypatch.setenv("OPPEN_ENV", "test")
    at = app("console.py").run()
    no_exception(at)
    assert shows(at, "error", "No hay usuarios configurados para el entorno PRUEBAS")
    assert shows(at, "error", "[users.<nombre>]")
    assert len(at.text_input) == 0
    assert any("PRUEBAS" in m.value for m in at.markdown)


def test_a_configuration_error_is_one_spanish_line(console_env, app, monkeypatch):
    monkeypatch.setenv("OPPEN_ENV", "produccion")
    at = app("console.py").run()
    no_exception(at)
    assert [e.value for e in at.error] == [
        "Error de configuración: OPPEN_ENV debe ser sandbox, test o production "
        "(se recibió 'produccion')"]


# --- roles -----------------------------------------------------------------------------------------

def test_an_auditor_never_sees_the_admin_pages(console_env, app):
    at = app("console.py", ANA).run()
    no_exception(at)
    assert [t.value for t in at.title] == ["Auditoría"]
    for page in ADMIN_PAGES:
        try:
            at.switch_page(f"pages/{page}").run()
        except ValueError:
            continue   # not even registered for this session
        no_exception(at)
        assert [t.value for t in at.title] != ["Facturas fallidas"]
        assert not any("Reenviar" in b.label for b in at.button)
        assert not any(b.label == "Probar conexión" for b in at.button)


@pytest.mark.parametrize("page", ADMIN_PAGES)
def test_admin_pages_run_alone_refuse_an_auditor(console_env, app, page):
    audit_directly(console_env, "PALERMO")
    at = app(f"pages/{page}", ANA).run()
    no_exception(at)
    assert [e.value for e in at.error] == ["Esta página es solo para administradores."]
    assert len(at.dataframe) == 0 and len(at.button) == 0


def test_an_admin_sees_every_page(console_env, app):
    at = app("console.py", BETO).run()
    for page, title in (("auditoria.py", "Auditoría"), ("locales_auditados.py", "Locales auditados"),
                        ("vista_previa.py", "Vista previa"),
                        ("facturas_fallidas.py", "Facturas fallidas"),
                        ("monitoreo.py", "Monitoreo")):
        at.switch_page(f"pages/{page}").run()
        no_exception(at)
        assert [t.value for t in at.title] == [title]


def test_the_resend_action_refuses_an_auditor(console_env):
    engine = console_env["engine"]
    audit_directly(console_env, "PALERMO")
    settings = load_settings()
    before = runs(engine)
    with pytest.raises(PermissionDenied):
        background.start_resend(engine, settings, user=ANA, reason="quiero",
                          local="PALERMO", fecha=yesterday())
    assert runs(engine) == before


def test_a_demoted_admin_cannot_resend_from_an_open_page(console_env, app, secrets_file):
    """Roles are re-read from the configuration on every run, before any action."""
    audit_directly(console_env, "PALERMO")
    at = app("pages/facturas_fallidas.py", BETO).run()
    at.selectbox(key="fallidas_dia_0").select_index(0).run()
    at.text_input(key="fallidas_motivo_0").input("intento")
    secrets_file.write_text(secrets_file.read_text(encoding="utf-8").replace(
        'role = "admin"', 'role = "auditor"'), encoding="utf-8")
    before = runs(console_env["engine"])
    at.button(key="reenviar_dia").click().run()
    no_exception(at)
    assert [e.value for e in at.error] == ["Esta página es solo para administradores."]
    assert runs(console_env["engine"]) == before


# --- Auditoría --------------------------------------------------------------------------------------

def test_mark_audited_end_to_end_with_the_seeds_message(console_env, app):
    at = app("pages/auditoria.py", ANA).run()
    no_exception(at)
    assert at.date_input(key="fecha").value == yesterday()
    table = at.dataframe[0].value.set_index("Local")
    assert list(table.index) == ["BELGRANO", "CABALLITO", "MATRIZ", "PALERMO", "RECOLETA",
                                 "SUCURSAL"]
    assert table.loc["MATRIZ", "Estado"] == "Listo para auditar"
    assert table.loc["MATRIZ", "Facturas"] == 5

    at.selectbox(key="local").select("MATRIZ").run()
    assert at.metric[0].value == "5"
    at.button(key="marcar_auditado").click().run()
    no_exception(at)
    # The confirmation says what will be sent where, before anything is.
    assert shows(at, "markdown", "**Facturas:** 5") and shows(at, "markdown", "SANDBOX")
    at.button(key="confirmar_auditado").click().run()
    run_until(at, lambda a: shows(a, "success", "5 factura(s) enviada(s) a Oppen exitosamente"),
              what="the seed's result message")
    [message] = [s.value for s in at.success]
    assert message.startswith(f"Local MATRIZ marcado como auditado para {yesterday().isoformat()}")
    table = at.dataframe[0].value.set_index("Local")
    assert table.loc["MATRIZ", "Estado"] == "Auditado · enviado a Oppen"
    assert table.loc["MATRIZ", "Enviadas"] == 5
    assert table.loc["MATRIZ", "Auditado por"].startswith("ana · ")
    assert len(console_env["sandbox"].invoices()) == 5


def test_the_progress_bar_follows_the_run_and_survives_a_reload(console_env, app,
                                                               monkeypatch):
    console_env["sandbox"].set_faults(latency_ms=250)
    monkeypatch.setenv("OPPEN_CONCURRENCY", "1")
    at = app("pages/auditoria.py", ANA).run()
    at.selectbox(key="local").select("MATRIZ").run()
    at.button(key="marcar_auditado").click().run()
    at.button(key="confirmar_auditado").click().run()
    # Another session (the same person after a reload) finds the run in the database.
    reopened = app("pages/auditoria.py", ANA).run()
    bars = []
    run_until(reopened, lambda a: bars.extend(p.proto.text for p in a.get("progress"))
              or shows(a, "success", "5 factura(s) enviada(s)"), what="the end of the run")
    assert any(text.startswith(f"Sincronización de MATRIZ {yesterday():%d/%m/%Y}: ")
               and "de 5 factura(s)" in text for text in bars), bars
    assert not reopened.get("progress")
    run_until(at, lambda a: shows(a, "success", "5 factura(s) enviada(s)"), what="the answer")
    # A page opened after the end shows neither progress nor someone else's old answer.
    later = app("pages/auditoria.py", ANA).run()
    assert not later.get("progress") and not later.success


@pytest.mark.parametrize("local, message", [
    ("CABALLITO", "El local CABALLITO no está cerrado para {day}: no se puede marcar como auditado"),
    ("RECOLETA", "El local RECOLETA tiene 1 anticipo(s) pendiente(s) para {day}: "
                 "no se puede marcar como auditado"),
])
def test_refusals_disable_the_button_with_the_seeds_messages(console_env, app, local, message):
    at = app("pages/auditoria.py", ANA).run()
    at.selectbox(key="local").select(local).run()
    no_exception(at)
    assert at.button(key="marcar_auditado").disabled
    assert shows(at, "caption", "No se puede marcar auditado: "
                 + message.format(day=yesterday().isoformat()))
    assert runs(console_env["engine"]) == 0


def test_already_audited_and_no_invoices(console_env, app):
    at = app("pages/auditoria.py", BETO).run()
    at.selectbox(key="local").select("SUCURSAL").run()
    at.button(key="marcar_auditado").click().run()
    at.button(key="confirmar_auditado").click().run()
    run_until(at, lambda a: shows(a, "info", "No había facturas para sincronizar con Oppen"),
              what="the no-invoices message")
    assert at.button(key="marcar_auditado").disabled
    assert at.button(key="marcar_auditado").help == (
        f"El local SUCURSAL ya está auditado para {yesterday().isoformat()}")
    assert shows(at, "caption", "Auditado por beto el ")


def test_partial_failure_shows_the_first_error_and_the_list(console_env, app):
    at = app("pages/auditoria.py", ANA).run()
    at.selectbox(key="local").select("PALERMO").run()
    at.button(key="marcar_auditado").click().run()
    at.button(key="confirmar_auditado").click().run()
    run_until(at, lambda a: shows(a, "warning", "Algunas facturas no pudieron enviarse a Oppen: 1/3"),
              what="the partial-failure message")
    assert shows(at, "warning", "Primer error: Error HTTP 409: Duplicate invoice")
    errors = at.expander[0].dataframe[0].value
    assert list(errors["Factura"]) == ["A 0006-00001691"]


def test_a_day_without_data(console_env, app):
    at = app("pages/auditoria.py", ANA).run()
    at.date_input(key="fecha").set_value(yesterday() - dt.timedelta(days=40)).run()
    no_exception(at)
    assert shows(at, "info", "No hay locales con cierres ni facturas")
    assert len(at.dataframe) == 0


# --- Locales auditados -------------------------------------------------------------------------

def test_locales_auditados_lists_and_opens_one(console_env, app):
    at = app("pages/locales_auditados.py", ANA).run()
    assert shows(at, "info", "No hay locales auditados")
    audit_directly(console_env, "MATRIZ")
    audit_directly(console_env, "PALERMO")
    at.run()
    no_exception(at)
    table = at.dataframe[0].value
    assert list(table["Local"]) == ["MATRIZ", "PALERMO"]
    assert list(table["Enviadas"]) == [5, 2] and list(table["Fallidas"]) == [0, 1]
    assert list(table["Auditado por"]) == ["ana", "ana"]

    at.session_state["auditados_tabla"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    no_exception(at)
    assert shows(at, "subheader", f"Facturas de PALERMO del {yesterday():%d/%m/%Y}")
    invoices = at.dataframe[1].value
    assert sorted(invoices["Estado"]) == ["Enviada", "Enviada", "Fallida"]
    assert "Error HTTP 409: Duplicate invoice" in list(invoices["Último error"])
    # Oppen's Total is kept for each invoice it holds (later documents balance with it).
    sent_totals = [total for state, total in zip(invoices["Estado"],
                                                  invoices["Total en Oppen ($)"])
                   if state == "Enviada"]
    assert len(sent_totals) == 2 and all(float(total) > 0 for total in sent_totals)

    at.selectbox(key="auditados_local").select("MATRIZ").run()
    assert list(at.dataframe[0].value["Local"]) == ["MATRIZ"]


def test_locales_auditados_opens_the_view_of_the_url(console_env, app):
    """Auditoría's link (?local=…&desde=…&hasta=…) opens that local/day with its invoices
    and links to its runs; choosing another local is written back into the URL."""
    audit_directly(console_env, "MATRIZ")
    audit_directly(console_env, "PALERMO")
    day = yesterday().isoformat()
    at = app("pages/locales_auditados.py", ANA)
    at.query_params.update({"local": "PALERMO", "desde": day, "hasta": day})
    at.run()
    no_exception(at)
    assert at.selectbox(key="auditados_local").value == "PALERMO"
    assert tuple(at.date_input(key="auditados_periodo").value) == (yesterday(), yesterday())
    assert list(at.dataframe[0].value["Local"]) == ["PALERMO"]
    assert shows(at, "subheader", f"Facturas de PALERMO del {yesterday():%d/%m/%Y}")
    # (Run alone, without the router, a page link shows its label.)
    assert any(c.value.startswith("Corrida ") and "Auditoría · parcial" in c.value
               for c in at.caption), [c.value for c in at.caption]
    at.selectbox(key="auditados_local").select("MATRIZ").run()
    no_exception(at)
    assert at.query_params["local"] in ("MATRIZ", ["MATRIZ"])
    assert at.query_params["desde"] in (day, [day])


# --- Vista previa ---------------------------------------------------------------------------------

def test_vista_previa_flags_invalid_rows_and_sends_nothing(console_env, app):
    at = app("pages/vista_previa.py", ANA).run()
    assert shows(at, "info", "Elegí un local")
    at.selectbox(key="preview_local").select("BELGRANO").run()
    no_exception(at)
    assert [m.value for m in at.metric][:3] == ["4", "2", "2"]
    assert shows(at, "warning", "2 factura(s) no se pueden enviar")
    table = at.dataframe[0].value
    assert list(table["Se puede enviar"]).count("No") == 2
    assert all(p for p, ok in zip(table["Problema"], table["Se puede enviar"]) if ok == "No")
    assert len(at.expander) == 4 and len(at.json) == 2
    assert at.get("download_button")
    assert console_env["sandbox"].invoices() == [] and runs(console_env["engine"]) == 0
    with console_env["engine"].connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.oppen_invoices)).scalar() == 0

    at.selectbox(key="preview_local").select("SUCURSAL").run()
    assert shows(at, "info", "SUCURSAL no tiene facturas para sincronizar")


# --- Facturas fallidas -----------------------------------------------------------------------------

def test_resend_of_a_failed_invoice(console_env, app):
    audit_directly(console_env, "PALERMO")
    at = app("pages/facturas_fallidas.py", BETO).run()
    no_exception(at)
    table = at.dataframe[0].value
    assert list(table["Factura"]) == ["A 0006-00001691"]
    assert list(table["Envíos"]) == [1] and list(table["Consultas"]) == [0]
    assert list(table["HTTP"]) == [409]
    assert list(table["Tipo de error"]) == ["Duplicada en Oppen"]
    assert at.button(key="reenviar_seleccion").disabled

    at.session_state["fallidas_tabla_0"] = {"selection": {"rows": [0], "columns": [],
                                                          "cells": []}}
    at.run()
    assert not at.button(key="reenviar_seleccion").disabled
    at.button(key="reenviar_seleccion").click().run()
    assert [e.value for e in at.error] == [
        "Indicá un motivo (queda registrado quién, cuándo y por qué)"]

    at.text_input(key="fallidas_motivo_0").input("Oppen estaba caído")
    at.button(key="reenviar_seleccion").click().run()
    no_exception(at)
    run_until(at, lambda a: shows(a, "warning", "Algunas facturas no pudieron enviarse a Oppen: 1/1"),
              what="the resend's result")
    assert list(find_table(at, "Envíos")["Envíos"]) == [2]
    # The selection and the reason were cleared with the action.
    assert at.button(key="reenviar_seleccion").disabled
    with console_env["engine"].connect() as conn:
        run = conn.execute(sa.select(schema.oppen_runs).where(schema.oppen_runs.c.kind == "resend")).one()
    assert (run.username, run.reason) == ("beto", "Oppen estaba caído")


def test_resend_everything_failed_of_a_day_and_compare_the_duplicate(console_env, app):
    audit_directly(console_env, "PALERMO")
    at = app("pages/facturas_fallidas.py", BETO).run()
    at.session_state["fallidas_tabla_0"] = {"selection": {"rows": [0], "columns": [],
                                                          "cells": []}}
    at.run()
    at.button(key="comparar").click().run()
    no_exception(at)
    # Oppen holds the other PALERMO row (same number, same data) under that number: the
    # comparison says so up front, naming that row, and offers neither link nor resend.
    assert shows(at, "error", "ya corresponde a otra fila nuestra: A A 0006\\-00001691 de PALERMO") \
        or shows(at, "error", "ya corresponde a otra fila nuestra")
    assert not shows(at, "success", "Los datos coinciden")
    assert len(at.json) == 2
    assert at.button(key="vincular").disabled
    at.run()
    assert at.button(key="reenviar_seleccion").disabled
    assert shows(at, "caption", "No se ofrece reenviar A 0006")
    at.session_state["fallidas_tabla_0"] = {"selection": {"rows": [], "columns": [], "cells": []}}
    at.run()

    at.selectbox(key="fallidas_dia_0").select_index(0).run()
    at.text_input(key="fallidas_motivo_0").input("reintento del día")
    at.button(key="reenviar_dia").click().run()
    run_until(at, lambda a: shows(a, "warning", "1/1"), what="the resend of the day")
    assert list(find_table(at, "Envíos")["Envíos"]) == [2]


def test_csv_export_and_filters(console_env, app):
    audit_directly(console_env, "PALERMO")
    audit_directly(console_env, "BELGRANO")
    at = app("pages/facturas_fallidas.py", BETO).run()
    assert sorted(at.dataframe[0].value["Local"]) == ["BELGRANO", "BELGRANO", "PALERMO"]
    assert at.get("download_button")
    csv = at.get("download_button")[0].proto
    assert csv.label == "Descargar CSV"
    at.session_state["fallidas_tabla_0"] = {"selection": {"rows": [2], "columns": [],
                                                          "cells": []}}
    at.run()
    assert shows(at, "caption", "3 factura(s) · 1 seleccionada(s)")
    at.multiselect(key="fallidas_estados").select("Inválida").run()
    assert sorted(at.dataframe[0].value["Estado"]) == ["Inválida", "Inválida"]
    # A selection made on the old table does not carry over to the filtered one.
    assert shows(at, "caption", "2 factura(s) · 0 seleccionada(s)")
    at.selectbox(key="fallidas_local").select("PALERMO").run()
    assert shows(at, "success", "No hay facturas con problemas para este filtro")


def test_nothing_failed(console_env, app):
    at = app("pages/facturas_fallidas.py", BETO).run()
    no_exception(at)
    assert shows(at, "success", "No hay facturas con problemas para este filtro")
    assert len(at.dataframe) == 0


# --- Monitoreo ---------------------------------------------------------------------------------------

def test_monitoreo_empty_then_with_runs(console_env, app):
    at = app("pages/monitoreo.py", BETO).run()
    no_exception(at)
    assert shows(at, "info", "Todavía no se sincronizó ninguna factura")
    assert shows(at, "info", "Todavía no hubo sincronizaciones")
    audit_directly(console_env, "MATRIZ")
    audit_directly(console_env, "PALERMO")
    at.run()
    no_exception(at)
    # (After the automatic sending's four: workers, queue, waiting, next retry.) A card per
    # state, then the success rate with its definition in words.
    cards = {m.label: m.value for m in at.metric}
    assert {k: cards[k] for k in ("Enviadas", "Pendientes", "Fallidas", "Inválidas",
                                  "Conflictos", "Excluidas", "Tasa de éxito")} == {
        "Enviadas": "7", "Pendientes": "0", "Fallidas": "1", "Inválidas": "0",
        "Conflictos": "0", "Excluidas": "0", "Tasa de éxito": "87,5 %"}
    assert any("enviadas / (todas menos excluidas) = 7 / 8" in c.value for c in at.caption)
    history = at.dataframe[-1].value
    assert list(history["Local"]) == ["PALERMO", "MATRIZ"]
    assert set(history["Tipo"]) == {"Auditoría"}
    # Each run's outcome in words, as Corridas says it (not "terminada" for a partial one).
    assert list(history["Resultado"]) == ["parcial", "completa"]
    assert list(history["Enviadas"]) == ["2 de 3", "5 de 5"]
    # Each run links to its detail (Corridas, ?corrida=N); its duration is the one it
    # measured, with a decimal under a minute ("45 ms", "0,8 s", "12,4 s").
    assert all(link.startswith("corridas?corrida=") for link in history["Corrida"])
    assert all(re.fullmatch(r"\d+ ms|\d+,\d s|\d+ s", d) for d in history["Duración"]), \
        list(history["Duración"])
    # Every table says a missing value with a blank, never Streamlit's "None".
    assert all(t.proto.HasField("placeholder") and t.proto.placeholder == ""
               for t in at.dataframe)


def test_monitoreo_idle_worker_has_a_blank_run(console_env, app):
    from sync.state import workers

    settings = load_settings()
    workers.register(console_env["engine"], worker_id="w-ocioso", target=settings.target,
                     host="servidor", pid=12345, embedded=False)
    at = app("pages/monitoreo.py", BETO).run()
    no_exception(at)
    table = find_table(at, "Corrida actual")
    row = table[table["Worker"] == "w-ocioso"].iloc[0]
    assert row["PID"] == 12345
    assert row["Corrida actual"] == "" or pd.isna(row["Corrida actual"])
    assert all(t.proto.placeholder == "" for t in at.dataframe)


def test_durations_in_argentine_format():
    from ui import formats

    assert [formats.duration(s) for s in (0.004, 0.8, 12.44, 185, 7440)] == [
        "4 ms", "0,8 s", "12,4 s", "3 min 05 s", "2 h 04 min"]
    # A run's start and end are stored to the second: no decimal is invented for them.
    assert [formats.run_duration(s) for s in (0.0, 1.0, 12.0, 12.4, 185.0, None)] == [
        "menos de 1 s", "1 s", "12 s", "12,4 s", "3 min 05 s", ""]


def test_probar_conexion(console_env, app, monkeypatch):
    at = app("pages/monitoreo.py", BETO).run()
    at.button(key="probar_conexion").click().run()
    no_exception(at)
    assert shows(at, "success", "Conexión correcta con Oppen (SANDBOX)")
    console_env["sandbox"].stop()
    at.button(key="probar_conexion").click().run()
    no_exception(at)
    assert [e.value for e in at.error] == ["Error de conexión: Connection refused"]


# --- never a traceback ------------------------------------------------------------------------------

def test_an_unreachable_database_is_one_spanish_message(console_env, app, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql+pymysql://nadie:clave@127.0.0.1:1/ventas")
    at = app("pages/auditoria.py", ANA).run()
    no_exception(at)
    assert [e.value for e in at.error] == [
        "No se pudo usar la base de datos. Revisá DATABASE_URL y que el servidor de base de "
        "datos esté disponible."]
    assert "clave" not in " ".join(texts(at))


def test_an_unexpected_error_is_a_generic_spanish_message(console_env, app, monkeypatch,
                                                          caplog):
    from sync.state import read_models

    def broken(*args, **kwargs):
        raise RuntimeError("un bug")
    monkeypatch.setattr(read_models, "day_table", broken)
    at = app("pages/auditoria.py", ANA).run()
    no_exception(at)
    assert [e.value for e in at.error] == [
        "Ocurrió un error inesperado. Quedó registrado en el log del servidor; si se repite, "
        "avisá al equipo de sistemas."]
    assert "un bug" in caplog.text   # logged for the operators, not shown
