"""The console's read models against a real database, after real syncs with the sandbox."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from sync.state import binder, read_models, run_details, runs, schema
from sync.actions import mark_audited
from sync.oppen.client import OppenClient

from helpers import DAY, TODAY, add_advance, add_factura, close_day

DAY2 = DAY + dt.timedelta(days=1)


@pytest.fixture
def synced(engine, settings, client, policy, sandbox):
    """DAY: MATRIZ all sent, PALERMO one duplicate, BELGRANO one invalid row, SUR with
    authentication refused, RECOLETA with an advance, CABALLITO not closed. DAY2: MATRIZ."""
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1691", "100.50")
    add_factura(engine, "MATRIZ", "A", "5", "1692", "50")
    add_factura(engine, "MATRIZ", "B", "5", "9", "1000", estado="anulada")
    close_day(engine, "PALERMO")
    add_factura(engine, "PALERMO", "A", "6", "1", "10")
    add_factura(engine, "PALERMO", "B", "6", "2", "20")
    sandbox.add_invoice({"OfficialSerNr": "0006-00000001", "TransDate": "2025-01-04",
                         "Items": [{"ArtCode": "1", "Qty": 1, "Price": 1.0}]})
    close_day(engine, "BELGRANO")
    add_factura(engine, "BELGRANO", "B", "7", "50X2", "18")
    add_factura(engine, "BELGRANO", "B", "7", "3", "30")
    close_day(engine, "RECOLETA")
    add_advance(engine, "RECOLETA")
    add_factura(engine, "RECOLETA", "A", "4", "1", "12")
    add_factura(engine, "CABALLITO", "B", "9", "1", "9.90")
    close_day(engine, "SUR")
    add_factura(engine, "SUR", "A", "8", "1", "5")
    close_day(engine, "MATRIZ", DAY2)
    add_factura(engine, "MATRIZ", "Z", "2", "150", "7", fecha=DAY2)

    for local, user in (("MATRIZ", "ana"), ("PALERMO", "ana"), ("BELGRANO", "beto")):
        mark_audited(engine, settings, local, DAY, user, client=client, policy=policy,
                     today=TODAY)
    mark_audited(engine, settings, "MATRIZ", DAY2, "beto", client=client, policy=policy,
                 today=TODAY)
    bad = OppenClient(base_url=settings.base_url, api=settings.api, username="API",
                      password="wrong-password", timeout=2)
    mark_audited(engine, settings, "SUR", DAY, "ana", client=bad, policy=policy, today=TODAY)
    return engine


def test_day_table(synced, settings):
    rows = {r["local"]: r for r in read_models.day_table(synced, settings, DAY)}
    assert list(rows) == ["BELGRANO", "CABALLITO", "MATRIZ", "PALERMO", "RECOLETA", "SUR"]
    m = rows["MATRIZ"]
    assert (m["cerrado"], m["auditado"], m["auditor"], m["anticipos_pendientes"]) == (
        True, True, "ana", 0)
    # The annulled invoice is not counted; amounts are exact decimals.
    assert (m["facturas"], m["monto"], m["enviadas"], m["pendientes"]) == (
        2, Decimal("150.50"), 2, 0)
    assert m["monto_enviado"] == Decimal("150.50")
    assert m["estado"] == "Auditado · enviado a Oppen"
    assert isinstance(m["auditado_en"], dt.datetime)
    p = rows["PALERMO"]
    assert (p["enviadas"], p["fallidas"], p["estado"]) == (1, 1, "Auditado · con errores de envío")
    b = rows["BELGRANO"]
    assert (b["enviadas"], b["invalidas"], b["auditor"]) == (1, 1, "beto")
    s = rows["SUR"]
    assert (s["enviadas"], s["pendientes"], s["estado"]) == (0, 1, "Auditado · pendiente de envío")
    r = rows["RECOLETA"]
    assert (r["auditado"], r["anticipos_pendientes"], r["pendientes"], r["estado"]) == (
        False, 1, 1, "Anticipos pendientes")
    c = rows["CABALLITO"]
    assert (c["cerrado"], c["facturas"], c["estado"]) == (False, 1, "No cerrado")
    assert read_models.day_table(synced, settings, DAY - dt.timedelta(days=30)) == []


def test_day_table_is_a_fixed_number_of_grouped_queries(synced, settings):
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(synced, "before_cursor_execute", count)
    try:
        read_models.day_table(synced, settings, DAY)
        few = len(statements)
        for n in range(25):
            close_day(synced, f"LOCAL{n:02d}")
            add_factura(synced, f"LOCAL{n:02d}", "A", "1", str(n + 1), "1")
        statements.clear()
        rows = read_models.day_table(synced, settings, DAY)
    finally:
        event.remove(synced, "before_cursor_execute", count)
    assert len(rows) == 31
    assert len(statements) == few <= 6
    assert all("GROUP BY" in s.upper() for s in statements if "count(" in s.lower())


def test_audited_days(synced, settings):
    rows = read_models.audited_days(synced, settings, DAY, DAY2)
    assert [(r["fecha"], r["local"]) for r in rows] == [
        (DAY2, "MATRIZ"), (DAY, "BELGRANO"), (DAY, "MATRIZ"), (DAY, "PALERMO"), (DAY, "SUR")]
    palermo = rows[3]
    assert (palermo["auditor"], palermo["facturas"], palermo["enviadas"], palermo["fallidas"],
            palermo["invalidas"], palermo["pendientes"], palermo["conflictos"]) == (
        "ana", 2, 1, 1, 0, 0, 0)
    assert (palermo["monto"], palermo["monto_enviado"]) == (Decimal("30.00"), Decimal("20.00"))
    only = read_models.audited_days(synced, settings, DAY, DAY2, local="MATRIZ")
    assert [(r["fecha"], r["auditor"], r["facturas"], r["enviadas"]) for r in only] == [
        (DAY2, "beto", 1, 1), (DAY, "ana", 2, 2)]
    assert read_models.audited_days(synced, settings, DAY2, DAY2, local="PALERMO") == []


def test_failed_invoices(synced, settings):
    rows = read_models.failed_invoices(synced, settings)
    by_local = {r["local"]: r for r in rows}
    assert sorted(by_local) == ["BELGRANO", "PALERMO", "SUR"]
    dup = by_local["PALERMO"]
    assert (dup["referencia"], dup["estado"], dup["http_status"], dup["intentos"]) == (
        "A 0006-00000001", "failed", 409, 1)
    assert dup["error"] == "Error HTTP 409: Duplicate invoice"
    assert dup["auditado"] is True
    assert isinstance(dup["ultimo_intento"], dt.datetime)
    assert dup["fecha"] == DAY and dup["monto"] == Decimal("10.00")
    invalid = by_local["BELGRANO"]
    assert (invalid["estado"], invalid["intentos"]) == ("invalid", 0)
    assert invalid["error"].startswith("Datos inválidos: ")
    pending = by_local["SUR"]
    assert pending["estado"] == "pending"

    assert [r["local"] for r in read_models.failed_invoices(synced, settings,
                                                        estados=["invalid"])] == ["BELGRANO"]
    assert [r["local"] for r in read_models.failed_invoices(synced, settings,
                                                        estados=["pending"])] == ["SUR"]
    assert [r["local"] for r in read_models.failed_invoices(synced, settings,
                                                        local="PALERMO")] == ["PALERMO"]
    assert read_models.failed_invoices(synced, settings, desde=DAY2) == []
    assert len(read_models.failed_invoices(synced, settings, desde=DAY, hasta=DAY)) == 3
    # Another target (e.g. production) has nothing failed: state is per target.
    assert read_models.failed_invoices(synced, settings.replace(api="Otra")) == []


def test_monitoring_aggregates(synced, settings):
    stats = read_models.daily_stats(synced, settings, DAY, DAY2)
    assert stats == [
        {"fecha": DAY, "enviadas": 4, "fallidas": 1, "invalidas": 1, "pendientes": 1,
         "total": 7, "tasa_exito": 57.1},
        {"fecha": DAY2, "enviadas": 1, "fallidas": 0, "invalidas": 0, "pendientes": 0,
         "total": 1, "tasa_exito": 100.0},
    ]


def test_error_kinds_after_real_syncs(synced, settings):
    """The kinds the console shows come from what the sync recorded (error_kind)."""
    kinds = read_models.errors_by_kind(synced, settings, DAY, DAY2)
    assert sorted((k["tipo_error"], k["cantidad"]) for k in kinds) == [
        ("Datos inválidos", 1), ("Duplicada en Oppen", 1), ("Error de autenticación", 1)]
    by_local = {r["local"]: r for r in read_models.failed_invoices(synced, settings)}
    assert [(by_local[local]["tipo_error"], by_local[local]["duplicada"])
            for local in ("PALERMO", "BELGRANO", "SUR")] == [
        ("Duplicada en Oppen", True), ("Datos inválidos", False),
        ("Error de autenticación", False)]


def _invoice(engine, settings, n: int, state: str, kind: str | None, *, fecha=DAY,
             target: str | None = None) -> None:
    error = None if kind is None else f"error {n}"
    now = schema.utcnow()
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.oppen_invoices).values(
            target=target or settings.target, factura_id=n, local="MATRIZ", fecha=fecha,
            reference=f"A 0001-{n:08d}", state=state, needs_lookup=False, attempts=1,
            last_error=error, error_kind=kind, created_at=now, updated_at=now))


def test_errors_by_kind_reads_the_recorded_kind(engine, settings):
    for n, (state, kind) in enumerate([
            ("failed", "duplicate"), ("failed", "duplicate"), ("failed", "rejected"),
            ("pending", "auth"), ("failed", "transport"), ("invalid", "invalid"),
            ("conflict", "conflict"), ("pending", "unknown"), ("sent", None),
            ("pending", None)], start=1):
        _invoice(engine, settings, n, state, kind)
    _invoice(engine, settings, 50, "failed", "duplicate", fecha=DAY2 + dt.timedelta(days=1))
    _invoice(engine, settings, 51, "failed", "duplicate", target="production|Otra")
    assert read_models.errors_by_kind(engine, settings, DAY, DAY2) == [
        {"tipo_error": "Duplicada en Oppen", "cantidad": 2},
        {"tipo_error": "Conflicto con Oppen", "cantidad": 1},
        {"tipo_error": "Datos inválidos", "cantidad": 1},
        {"tipo_error": "Error de autenticación", "cantidad": 1},
        {"tipo_error": "Error de conexión", "cantidad": 1},
        {"tipo_error": "Otro", "cantidad": 1},
        {"tipo_error": "Rechazada por Oppen", "cantidad": 1},
    ]
    rows = {r["referencia"]: r for r in read_models.failed_invoices(engine, settings)}
    assert (rows["A 0001-00000001"]["tipo_error"], rows["A 0001-00000001"]["duplicada"]) == (
        "Duplicada en Oppen", True)
    assert (rows["A 0001-00000003"]["tipo_error"], rows["A 0001-00000003"]["duplicada"]) == (
        "Rechazada por Oppen", False)
    assert rows["A 0001-00000007"]["tipo_error"] == "Conflicto con Oppen"
    # Left behind without an error by a run that died: no kind, read as "Otro".
    assert rows["A 0001-00000010"]["tipo_error"] == "Otro"


def test_failed_invoices_page_of_a_history(engine, settings):
    """The page is the first `limit` problem rows, newest day first then local and
    reference, each with its own last attempt; pending rows of a local/day whose run is
    alive are that run's (unless they carry an error), an abandoned claim is pending."""
    now = schema.utcnow()
    rows = [("MATRIZ", DAY, 1, "pending", None), ("MATRIZ", DAY, 2, "pending", "auth"),
            ("MATRIZ", DAY, 3, "sending", None), ("MATRIZ", DAY, 4, "sending", None),
            ("MATRIZ", DAY, 5, "failed", "rejected"), ("PALERMO", DAY, 6, "pending", None),
            ("BELGRANO", DAY2, 7, "invalid", "invalid"), ("BELGRANO", DAY2, 8, "sent", None),
            ("ALMAGRO", DAY, 9, "conflict", "conflict")]
    with engine.begin() as conn:
        for local, fecha, n, state, kind in rows:
            conn.execute(sa.insert(schema.oppen_invoices).values(
                id=n, target=settings.target, factura_id=n, local=local, fecha=fecha,
                reference=f"A 0001-{10 - n:08d}", state=state, needs_lookup=False,
                attempts=2, last_error=None if kind is None else f"error {n}", error_kind=kind,
                claim_until=now + dt.timedelta(hours=-1 if n == 3 else 1),
                created_at=now, updated_at=now))
        for n, minutes, kind in ((5, 1, "post"), (5, 9, "lookup"), (5, 4, "post"), (2, 3, "post")):
            conn.execute(sa.insert(schema.oppen_attempts).values(
                oppen_invoice_id=n, kind=kind, at=dt.datetime(2025, 1, 6, 10, minutes),
                outcome="rejected"))
        # MATRIZ's run is alive; PALERMO's died (its lease is over).
        for local, hours in (("MATRIZ", 1), ("PALERMO", -1)):
            conn.execute(sa.insert(schema.oppen_run_locks).values(
                target=settings.target, local=local, fecha=DAY, run_id=1, owner="x",
                lease_until=now + dt.timedelta(hours=hours)))
    page = read_models.failed_invoices(engine, settings)
    assert [(r["local"], r["id"], r["estado"]) for r in page] == [
        ("BELGRANO", 7, "invalid"), ("ALMAGRO", 9, "conflict"), ("MATRIZ", 5, "failed"),
        ("MATRIZ", 3, "pending"), ("MATRIZ", 2, "pending"), ("PALERMO", 6, "pending")]
    by_id = {r["id"]: r for r in page}
    assert by_id[5]["ultimo_intento"] == dt.datetime(2025, 1, 6, 10, 9)
    assert by_id[2]["ultimo_intento"] == dt.datetime(2025, 1, 6, 10, 3)
    assert by_id[7]["ultimo_intento"] is None
    assert by_id[3]["error"] == read_models.ABANDONED
    assert [r["id"] for r in read_models.failed_invoices(engine, settings, limit=3)] == [7, 9, 5]
    assert [r["id"] for r in read_models.failed_invoices(
        engine, settings, estados=["pending"], local="MATRIZ")] == [3, 2]
    assert [r["id"] for r in read_models.failed_invoices(
        engine, settings, estados=["failed", "conflict"], hasta=DAY)] == [9, 5]


def test_run_history_and_live_runs(synced, settings):
    history = read_models.run_history(synced, settings)
    assert len(history) == 5
    assert history[0]["local"] == "SUR" and history[0]["estado"] == "con error"
    assert {r["tipo"] for r in history} == {"Auditoría"}
    assert {r["usuario"] for r in history} == {"ana", "beto"}
    done = [r for r in history if r["local"] == "PALERMO"][0]
    assert (done["estado"], done["total"], done["exitosas"], done["fallidas"]) == (
        "terminada", 2, 1, 1)
    assert done["duracion_s"] is not None and done["duracion_s"] >= 0
    # The run measured itself to the millisecond (its timestamps keep whole seconds).
    with synced.connect() as conn:
        measured = conn.execute(sa.select(schema.oppen_runs.c.duration_ms)
                                .where(schema.oppen_runs.c.id == done["id"])).scalar()
    assert measured is not None and done["duracion_s"] == measured / 1000
    assert read_models.live_runs(synced, settings) == []

    owner = schema.new_owner()
    run_id = runs.start_run(synced, target=settings.target, kind="resend",
                             days=[("PALERMO", DAY)], username="beto", reason="prueba",
                             lease=settings.lease_seconds, owner=owner, local="PALERMO",
                             fecha=DAY)
    try:
        [live] = read_models.live_runs(synced, settings, kind="resend")
        assert (live["id"], live["estado"], live["usuario"], live["motivo"]) == (
            run_id, "en curso", "beto", "prueba")
        assert read_models.running_run(synced, settings, "PALERMO", DAY)["id"] == run_id
        assert read_models.running_run(synced, settings, "MATRIZ", DAY) is None
        # A run whose heartbeat is older than the lease no longer counts as live.
        later = live["heartbeat_at"] + dt.timedelta(seconds=settings.lease_seconds + 1)
        assert read_models.live_runs(synced, settings, now=later) == []
    finally:
        runs.finish_run(synced, run_id, owner, state="done", summary={"total": 0},
                         message="", duration_ms=12_437)
    finished = read_models.run_row(synced, run_id)
    assert (finished["estado"], finished["duracion_s"]) == ("terminada", 12.437)
    assert run_details.detail(synced, settings, run_id)["duracion_s"] == 12.437


def test_known_locals(synced):
    assert read_models.known_locals(synced) == ["BELGRANO", "MATRIZ", "PALERMO", "RECOLETA", "SUR"]


def test_times_are_shown_in_argentina():
    assert read_models.fmt_datetime(dt.datetime(2026, 11, 24, 12, 15)) == "24/11/2026 09:15"
    assert read_models.fmt_datetime(None) == ""
    assert read_models.fmt_date(dt.date(2025, 1, 5)) == "05/01/2025"
    # 01:30 UTC is still the previous day in Buenos Aires (UTC-3).
    assert read_models.local_today(dt.datetime(2026, 11, 24, 1, 30, tzinfo=dt.timezone.utc)) == \
        dt.date(2026, 11, 23)
    assert read_models.local_today(dt.datetime(2026, 11, 24, 4, 0)) == dt.date(2026, 11, 24)


def test_kind_labels():
    assert [read_models.kind_label(k) for k in schema.ERROR_KINDS] == [
        "Duplicada en Oppen", "Rechazada por Oppen", "Error de autenticación",
        "Error de conexión", "Datos inválidos", "Conflicto con Oppen", "Otro",
        "SerNr ocupado en Oppen"]
    assert read_models.kind_label(None) == read_models.kind_label("nonsense") == "Otro"


def test_error_kind_of_each_exception():
    from sync import errors
    assert [schema.error_kind_for(e) for e in (
        errors.OppenDuplicate("x"), errors.OppenRejected("x"), errors.LookupRefused("x"),
        errors.OppenAuthError("x"), errors.OppenTransportError("x"),
        errors.OppenTransportError("x", maybe_applied=False), errors.OppenError("x"),
        ValueError("x"))] == [
        "duplicate", "rejected", "rejected", "auth", "transport", "transport", "unknown",
        "unknown"]


def test_empty_database(engine, settings):
    assert read_models.day_table(engine, settings, DAY) == []
    assert read_models.audited_days(engine, settings, DAY, DAY2) == []
    assert read_models.failed_invoices(engine, settings) == []
    assert read_models.daily_stats(engine, settings, DAY, DAY2) == []
    assert read_models.errors_by_kind(engine, settings, DAY, DAY2) == []
    assert read_models.run_history(engine, settings) == []
    assert read_models.known_locals(engine) == []
