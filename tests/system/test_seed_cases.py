"""The seed's test cases and error cases, end to end over HTTP against the sandbox,
asserting the seed's exact response dicts and messages."""

from __future__ import annotations

import sys

import sqlalchemy as sa

from sync.state import schema
from sync.actions import mark_audited

from helpers import DAY, TODAY, add_advance, add_factura, close_day, states

HEAD = "Local {} marcado como auditado para 2025-01-05"


def audit(engine, settings, local, client, policy, **kw):
    return mark_audited(engine, settings, local, DAY, "auditora", client=client, policy=policy,
                        today=TODAY, **kw)


def test_case_1_all_sent(engine, settings, client, policy, sandbox):
    close_day(engine, "MATRIZ")
    for nro, monto in (("1691", 15000), ("1692", 200.5), ("1693", 99.99)):
        add_factura(engine, "MATRIZ", "A", "0005", nro, monto)
    for nro in ("150", "151"):
        add_factura(engine, "MATRIZ", "Z", "0002", nro, 50000)

    result = audit(engine, settings, "MATRIZ", client, policy)

    assert result == {
        "success": True,
        "msg": HEAD.format("MATRIZ") + "\n✅ 5 factura(s) enviada(s) a Oppen exitosamente",
        "oppen_sync": {"total": 5, "exitosas": 5, "fallidas": 0, "errores": [], "success": True},
    }
    stored = {inv["OfficialSerNr"]: inv for inv in sandbox.invoices()}
    assert set(stored) == {"0005-00001691", "0005-00001692", "0005-00001693",
                           "0002-00000150", "0002-00000151"}
    assert stored["0005-00001691"]["Labels"] == "Local|MATRIZ"
    # Every invoice is recorded as sent under the SerNr Oppen holds it under.
    for ref, state, sernr, attempts in states(engine, "MATRIZ"):
        assert state == "sent" and attempts == 1
        assert stored[ref.split()[1]]["SerNr"] == sernr


def test_case_2_no_invoices(engine, settings, client, policy, sandbox):
    close_day(engine, "SUCURSAL")
    result = audit(engine, settings, "SUCURSAL", client, policy)
    assert result == {
        "success": True,
        "msg": HEAD.format("SUCURSAL") + "\nℹ️ No había facturas para sincronizar con Oppen",
        "oppen_sync": {"total": 0, "exitosas": 0, "fallidas": 0, "errores": [], "success": True,
                       "message": "No hay facturas para sincronizar"},
    }
    assert [e for e in sandbox.request_log() if e["path"] == "Invoice"] == []


def test_case_3_partial_failure_duplicate(engine, settings, client, policy, sandbox):
    close_day(engine, "PALERMO")
    add_factura(engine, "PALERMO", "A", "5", "1691", 15000)
    add_factura(engine, "PALERMO", "B", "5", "1700", 300)
    add_factura(engine, "PALERMO", "B", "5", "1701", 400)
    # Oppen already holds an invoice with that number (sent by someone else).
    sandbox.add_invoice({"OfficialSerNr": "0005-00001691", "TransDate": "2025-01-04",
                         "CustCode": "C00001", "Items": [{"ArtCode": "1", "Qty": 1, "Price": 1.0}]})

    result = audit(engine, settings, "PALERMO", client, policy)

    assert result == {
        "success": True,
        "msg": HEAD.format("PALERMO") + "\n⚠️ Algunas facturas no pudieron enviarse a Oppen: 1/3"
               "\nPrimer error: Error HTTP 409: Duplicate invoice",
        "oppen_sync": {"total": 3, "exitosas": 2, "fallidas": 1, "success": False,
                       "errores": [{"factura": "A 0005-00001691",
                                    "error": "Error HTTP 409: Duplicate invoice"}]},
    }
    # A duplicate of an invoice never sent before is not "ours": no lookup, no link.
    rows = {ref: state for ref, state, _, _ in states(engine, "PALERMO")}
    assert rows["A 0005-00001691"] == "failed"


def test_duplicate_in_the_real_services_words(engine, settings, client, policy, sandbox):
    sandbox.set_faults(duplicate_style="real")
    close_day(engine, "PALERMO")
    add_factura(engine, "PALERMO", "A", "5", "1691", 15000)
    sandbox.add_invoice({"OfficialSerNr": "0005-00001691", "TransDate": "2025-01-04",
                         "Items": [{"ArtCode": "1", "Qty": 1, "Price": 1.0}]})
    result = audit(engine, settings, "PALERMO", client, policy)
    assert result["oppen_sync"]["errores"] == [
        {"factura": "A 0005-00001691", "error": "Error HTTP 400: Duplicate Official Serial Nr!"}]
    assert result["oppen_sync"]["fallidas"] == 1


def test_auth_error_keeps_the_audit(engine, settings, client, policy, sandbox):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1691", 15000)
    bad = client.__class__(base_url=settings.base_url, api=settings.api, username="API",
                           password="wrong-password", timeout=2)

    result = audit(engine, settings, "MATRIZ", bad, policy)

    assert result == {
        "success": True,
        "msg": HEAD.format("MATRIZ")
               + "\n⚠️ Error sincronizando con Oppen: Error de autenticación: HTTP 401 - Unauthorized",
        "oppen_error": "Error de autenticación: HTTP 401 - Unauthorized",
    }
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.locales_auditados)).scalar() == 1
    # Nothing was sent; the invoice waits, pending, with the reason.
    assert sandbox.invoices() == []
    with engine.connect() as conn:
        row = conn.execute(sa.select(schema.oppen_invoices)).one()
    assert row.state == "pending"
    assert "Error de autenticación" in row.last_error


def test_connection_error_keeps_the_audit(engine, settings, client, policy, sandbox):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1691", 15000)
    sandbox.set_faults(latency_ms=600)
    slow = client.__class__(base_url=settings.base_url, api=settings.api, username="API",
                            password=settings.password, timeout=0.2)

    result = audit(engine, settings, "MATRIZ", slow, policy)

    assert result == {
        "success": True,
        "msg": HEAD.format("MATRIZ")
               + "\n⚠️ Error sincronizando con Oppen: Error de conexión: Connection timeout",
        "oppen_error": "Error de conexión: Connection timeout",
    }
    assert sandbox.invoices() == []


def test_oppen_unreachable(engine, settings, policy):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1691", 15000)
    from sync.oppen.client import OppenClient
    # A port nobody listens on: the connection is refused.
    dead = OppenClient(base_url="http://127.0.0.1:9", api="ApiNg", username="API",
                       password="x", timeout=1)
    result = audit(engine, settings, "MATRIZ", dead, policy)
    assert result["success"] is True
    assert result["oppen_error"] == "Error de conexión: Connection refused"


def test_module_unavailable(engine, settings, client, policy, monkeypatch):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1691", 15000)
    monkeypatch.setitem(sys.modules, "sync.exporter", None)  # import fails
    result = audit(engine, settings, "MATRIZ", client, policy)
    assert result == {"success": True,
                      "msg": HEAD.format("MATRIZ") + " (sincronización con Oppen no disponible)"}


def test_refusals_write_nothing(engine, settings, client, policy, sandbox):
    add_factura(engine, "ABIERTO", "A", "5", "1", 10)
    assert audit(engine, settings, "ABIERTO", client, policy) == {
        "success": False,
        "msg": "El local ABIERTO no está cerrado para 2025-01-05: no se puede marcar como auditado"}

    close_day(engine, "CONANTICIPO")
    add_advance(engine, "CONANTICIPO")
    add_advance(engine, "CONANTICIPO", estado="cancelado")
    assert audit(engine, settings, "CONANTICIPO", client, policy) == {
        "success": False,
        "msg": "El local CONANTICIPO tiene 1 anticipo(s) pendiente(s) para 2025-01-05: "
               "no se puede marcar como auditado"}

    assert audit(engine, settings, "NADIE", client, policy) == {
        "success": False, "msg": "El local NADIE no existe (no tiene cierres ni facturas cargadas)"}

    close_day(engine, "MATRIZ")
    assert audit(engine, settings, "MATRIZ", client, policy)["success"] is True
    assert audit(engine, settings, "MATRIZ", client, policy) == {
        "success": False, "msg": "El local MATRIZ ya está auditado para 2025-01-05"}

    with engine.connect() as conn:
        audited = conn.execute(sa.select(schema.locales_auditados.c.local)).scalars().all()
    assert audited == ["MATRIZ"]
    assert sandbox.invoices() == []
