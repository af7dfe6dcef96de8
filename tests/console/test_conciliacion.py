"""The Conciliación page in Streamlit's AppTest, against a real demo database and a real
Oppen sandbox: who may open it, a reconciliation from the page, a day that squares and
one that does not, a day opened into its lists, the exports (CSV and .xlsx read back),
"Reenviar faltantes" with its required reason, and Monitoreo showing the last
reconciliation of each day. Nothing here mocks Streamlit, HTTP or the database."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pytest
import sqlalchemy as sa

from sync.actions import mark_audited
from sync.settings import load_settings
from sync.state import read_models, schema
from ui import tables
from ui_helpers import ANA, BETO, no_exception, plain, run_until, shows, texts, yesterday

PAGE = "pages/conciliacion.py"


@pytest.fixture(autouse=True)
def no_morning_run(monkeypatch):
    """A worker the console starts on its own must not reconcile these databases before
    the test does (its morning run is due whenever a test runs past 06:00)."""
    monkeypatch.setenv("OPPEN_RECONCILE_AT", "off")


def audit(console_env, local: str) -> dict:
    return mark_audited(console_env["engine"], load_settings(), local, yesterday(), "ana")


def drain_queue(console_env) -> None:
    """What a worker does with a run the console queued: run it (where runs are queued
    for a worker rather than run in the console's own threads)."""
    try:
        from sync.worker import Worker
    except ImportError:
        return
    from sync.wiring import open_client
    settings = load_settings()
    with open_client(settings) as client:
        Worker(console_env["engine"], settings, client, once=True).run()


def main_table(at):
    return next(f.value for f in at.dataframe if "Resultado" in f.value.columns)


def select(at, row: int, version: int = 1):
    at.session_state[f"conciliacion_tabla_{version}"] = {
        "selection": {"rows": [row], "columns": [], "cells": []}}
    return at.run()


def test_only_admins(console_env, app):
    at = app(PAGE, ANA).run()
    no_exception(at)
    assert [e.value for e in at.error] == ["Esta página es solo para administradores."]
    assert len(at.dataframe) == 0 and len(at.button) == 0
    at = app("console.py", BETO).run()
    at.switch_page(PAGE).run()
    no_exception(at)
    assert [t.value for t in at.title] == ["Conciliación"]


def test_no_audited_days(console_env, app):
    at = app(PAGE, BETO).run()
    no_exception(at)
    assert shows(at, "info", "No hay días auditados en este período.")


def test_reconcile_from_the_page_and_open_a_day(console_env, app):
    audit(console_env, "MATRIZ")
    audit(console_env, "PALERMO")    # the sales system has one row twice: Oppen once
    at = app(PAGE, BETO).run()
    no_exception(at)
    table = main_table(at)
    assert list(table["Resultado"]) == ["Sin conciliar", "Sin conciliar"]
    assert [m.value for m in at.metric] == ["2", "0", "0", "2"]

    at.button(key="conciliar").click().run()
    no_exception(at)
    day = read_models.fmt_date(yesterday())
    today = read_models.local_today()
    assert shows(at, "warning", f"Conciliación del {read_models.fmt_date(today - dt.timedelta(days=30))}"
                                f" al {read_models.fmt_date(today)}: 2 día(s), 1 cuadra(n), "
                                "1 no cuadra(n)")
    table = main_table(at)
    assert list(table["Local"]) == ["MATRIZ", "PALERMO"]
    assert list(table["Resultado"]) == ["✅ Cuadra", "❌ No cuadra"]
    assert list(table["Facturas"]) == [5, 3] and list(table["En Oppen"]) == [5, 2]
    assert list(table["Monto ($)"]) == [167645.59, 35300.0]
    assert list(table["Diferencia ($)"]) == [0.0, -15000.0]
    assert list(table["Faltan"]) == [0, 1]
    assert [m.value for m in at.metric] == ["2", "1", "1", "0"]

    select(at, 1)
    no_exception(at)
    assert [s.value for s in at.subheader][:1] == [f"PALERMO · {day}"]
    assert shows(at, "warning", "No cuadra: falta 1 en Oppen. Nosotros $ 35.300,00, Oppen "
                                "$ 20.300,00, diferencia -$ 15.000,00")
    missing = next(f.value for f in at.dataframe if "Motivo" in f.value.columns)
    assert list(missing["Factura"]) == ["A 0006-00001691"]
    assert list(missing["Nuestro estado"]) == ["Fallida"]
    assert at.button(key="reenviar_faltantes").label == "Reenviar faltantes (1)"

    select(at, 0)
    assert shows(at, "success", "Cuadra: Oppen tiene las 5 factura(s), $ 167.645,59")
    assert len(at.get("download_button")) == 2


def test_exports_open_in_excel_as_set_up_in_argentina(console_env, app):
    from openpyxl import load_workbook
    audit(console_env, "MATRIZ")
    at = app(PAGE, BETO).run()
    at.button(key="conciliar").click().run()
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Descargar CSV", "Descargar Excel (.xlsx)"]
    settings = load_settings()
    rows = read_models.last_reconciliations(console_env["engine"], settings, yesterday(),
                                            yesterday())
    exported = [{**r, "resultado": "✅ Cuadra", "conciliado_en": tables.local_dt(r["conciliado_en"])}
                for r in rows]
    columns = {"local": "Local", "fecha": "Día", "resultado": "Resultado",
               "facturas": "Facturas", "monto": "Monto ($)", "diferencia": "Diferencia ($)"}
    csv = tables.csv_bytes(exported, columns)
    assert csv.startswith("\ufeff".encode())
    lines = csv.decode("utf-8-sig").splitlines()
    assert lines == ["Local;Día;Resultado;Facturas;Monto ($);Diferencia ($)",
                     f"MATRIZ;{read_models.fmt_date(yesterday())};✅ Cuadra;5;167645,59;0,00"]
    book = load_workbook(io.BytesIO(tables.xlsx_bytes(exported, columns, "Conciliación")))
    sheet = book["Conciliación"]
    values = [c.value for c in sheet[2]]
    assert values[0] == "MATRIZ" and values[2] == "✅ Cuadra" and values[3] == 5
    assert isinstance(values[1], dt.datetime) and values[1].date() == yesterday()
    assert values[4] == 167645.59 and sheet.cell(2, 5).number_format == "#,##0.00"
    assert sheet.cell(2, 2).number_format == "DD/MM/YYYY"


def test_reenviar_faltantes_needs_a_reason_and_sends_them_again(console_env, app):
    audit(console_env, "MATRIZ")
    sandbox = console_env["sandbox"]
    # Deleted by hand in Oppen after we recorded it sent.
    kept = [{k: v for k, v in r.items() if k not in ("internalId", "Saldo")}
            for r in sandbox.invoices() if r["OfficialSerNr"] != "0005-00001692"]
    sandbox.reset()
    sandbox.load_invoices(kept)
    at = app(PAGE, BETO).run()
    at.selectbox(key="conciliacion_local").select("MATRIZ").run()
    at.button(key="conciliar").click().run()
    assert list(main_table(at)["Resultado"]) == ["❌ No cuadra"]
    select(at, 0)
    missing = next(f.value for f in at.dataframe if "Motivo" in f.value.columns)
    assert list(missing["Factura"]) == ["A 0005-00001692"]
    assert list(missing["Nuestro estado"]) == ["Enviada"]
    assert shows(at, "caption", "1 figuran enviadas: vuelven a pendientes")

    at.button(key="reenviar_faltantes").click().run()
    assert [plain(e.value) for e in at.error] == [
        "Indicá un motivo (queda registrado quién, cuándo y por qué)"]
    assert len(sandbox.invoices()) == 4

    at.text_input(key="conciliacion_motivo_1").input("borrada por error en Oppen")
    at.button(key="reenviar_faltantes").click().run()
    no_exception(at)
    drain_queue(console_env)
    run_until(at, lambda a: shows(a, "success", "1 factura(s) reenviada(s) a Oppen"),
              what="the resend of the missing invoice")
    held = [r["OfficialSerNr"] for r in sandbox.invoices()]
    assert len(held) == 5 and held.count("0005-00001692") == 1
    engine = console_env["engine"]
    t, a, r = schema.oppen_invoices, schema.oppen_attempts, schema.oppen_runs
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.official_sernr == "0005-00001692")).one()
        kinds = [(x.kind, x.outcome) for x in conn.execute(
            sa.select(a).where(a.c.oppen_invoice_id == row.id).order_by(a.c.id))]
        resend = conn.execute(sa.select(r).where(r.c.kind == "resend")).one()
    assert row.state == "sent"
    # Reopened by the admin, looked up first (not found), then posted once.
    assert kinds[-3:] == [("reconcile", "reopened"), ("lookup", "not_found"), ("post", "sent")]
    assert (resend.username, resend.reason) == ("beto", "borrada por error en Oppen")

    at.button(key="conciliar").click().run()
    assert list(main_table(at)["Resultado"]) == ["✅ Cuadra"]


def test_monitoreo_shows_the_last_reconciliation_of_each_day(console_env, app):
    audit(console_env, "MATRIZ")
    audit(console_env, "PALERMO")
    at = app("pages/monitoreo.py", BETO).run()
    no_exception(at)
    assert shows(at, "info", "Todavía no se concilió ningún día")
    page = app(PAGE, BETO).run()
    page.button(key="conciliar").click().run()
    at.run()
    no_exception(at)
    table = next(f.value for f in at.dataframe if "No cuadran" in f.value.columns)
    assert list(table["Locales"]) == [2] and list(table["Cuadran"]) == [1]
    assert list(table["No cuadran"]) == [1]
    assert table["Día"][0] == yesterday()
    assert "Conciliación" in set(next(f.value for f in at.dataframe
                                      if "Resultado" in f.value.columns)["Tipo"])
    assert "MATRIZ" not in " ".join(texts(at))
