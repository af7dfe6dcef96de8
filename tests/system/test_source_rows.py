"""Rows of the host's tables as they really come: amounts stored as text, local names
that differ in case or surrounding spaces. Same behaviour on SQLite and MariaDB."""

from __future__ import annotations

import sqlalchemy as sa

from helpers import DAY, TODAY, add_factura, close_day, states
from sync import actions
from sync.state import schema


def _raw_factura(engine, local, nro, monto) -> None:
    """An amount as the host's SQLite may hold it: text the sales system wrote."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO facturas_trns (local, fecha, tipo, punto_venta, nro_factura, monto, estado)"
            " VALUES (:local, :fecha, 'A', '5', :nro, :monto, 'ok')"),
            {"local": local, "fecha": f"{DAY.isoformat()} 10:00:00", "nro": nro, "monto": monto})


def test_a_text_amount_is_one_invalid_row_not_a_broken_day(engine, settings, policy, sandbox):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", 100)
    if engine.dialect.name == "sqlite":
        _raw_factura(engine, "MATRIZ", "2", "abc")
        _raw_factura(engine, "MATRIZ", "3", "12,50")
        bad = 2
    else:   # a DECIMAL column cannot hold text on MariaDB: only the good row exists
        bad = 0
    result = actions.mark_audited(engine, settings, "MATRIZ", DAY, "ana", policy=policy,
                                  today=TODAY)
    summary = result["oppen_sync"]
    assert summary["exitosas"] == 1
    assert summary.get("invalidas", 0) == bad
    for error in summary["errores"]:
        assert error["error"].startswith("Datos inválidos") and "monto" in error["error"]
    assert len(sandbox.invoices()) == 1


def test_local_names_differing_in_case_or_spaces_are_the_same_local(engine, settings, policy,
                                                                     sandbox):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", 100)
    add_factura(engine, "Matriz ", "A", "5", "2", 200)
    add_factura(engine, " matriz", "A", "5", "3", 300)
    add_factura(engine, "MATRIZ2", "A", "5", "4", 400)     # another local
    result = actions.mark_audited(engine, settings, "MATRIZ", DAY, "ana", policy=policy,
                                  today=TODAY)
    # Included on both databases: MariaDB's collation ignores case and trailing spaces,
    # and SQLite is made to compare the same way. A leading space counts on both.
    assert result["oppen_sync"]["exitosas"] == 2, result
    assert len(states(engine)) == 2
