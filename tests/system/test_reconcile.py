"""Reconciliation over real HTTP against the sandbox, on SQLite and MariaDB: days that
square and days that do not (missing, extra, different amount, annulled), the safe
correction of a failed invoice Oppen holds, an Oppen that ignores the date filter, the
CLI's JSON and exit codes, the morning run with its alerts, and a month of 50 locals
within a stated budget of queries."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import math
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from faults import seed_days
from helpers import DAY, TODAY, add_factura, close_day, http_server
from sync import alerts
from sync import reconcile as rec
from sync.actions import mark_audited
from sync.cli import main
from sync.errors import NotFound, OppenRejected, SyncError
from sync.mapping import Mapped, map_invoice
from sync.oppen.client import IGNORED_FILTER_CAP, RANGE_PAGE_SIZE
from sync.state import binder, schema

D = DAY.isoformat()


def audit(engine, settings, local, client, policy, fecha=DAY):
    return mark_audited(engine, settings, local, fecha, "ana", client=client, policy=policy,
                        today=TODAY)


def day_of(result, local, fecha=DAY):
    found = [d for d in result["dias"] if d["local"] == local and d["fecha"] == fecha.isoformat()]
    assert len(found) == 1, result["dias"]
    return found[0]


def names(items):
    return [i["factura"] for i in items]


def rewrite_oppen(sandbox, change):
    """What a person does in Oppen's own screens: `change(record)` returns the record as
    it should be from now on, or None to delete it. The sandbox keeps no delete, so its
    ledger is emptied and loaded again by hand."""
    kept = []
    for record in sandbox.invoices():
        new = change({k: v for k, v in record.items() if k not in ("internalId", "Saldo")})
        if new is not None:
            kept.append(new)
    sandbox.reset()
    sandbox.load_invoices(kept)


def row(engine, official):
    t = schema.oppen_invoices
    with engine.connect() as conn:
        return conn.execute(sa.select(t).where(t.c.official_sernr == official)).one()._mapping


def gets(sandbox):
    return [e for e in sandbox.request_log() if e["method"] == "GET" and e["path"] == "Invoice"]


def test_a_day_that_squares(engine, settings, client, policy, sandbox):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1691", "15000.50")
    add_factura(engine, "MATRIZ", "B", "5", "1700", "10")
    add_factura(engine, "MATRIZ", "Z", "2", "150", "99999.99")
    add_factura(engine, "MATRIZ", "A", "5", "1692", "1", estado="anulada")   # not ours to send
    assert audit(engine, settings, "MATRIZ", client, policy)["oppen_sync"]["exitosas"] == 3
    before = len(gets(sandbox))

    result = rec.reconcile(engine, settings, DAY, DAY, client=client, user="ana")

    day = day_of(result, "MATRIZ")
    assert day["cuadra"] is True
    assert (day["facturas"], day["monto"], day["oppen_facturas"], day["oppen_total"],
            day["diferencia"]) == (3, Decimal("115010.49"), 3, Decimal("115010.49"),
                                   Decimal("0.00"))
    assert day["faltan_en_oppen"] == day["sobran_en_oppen"] == day["difieren"] == []
    assert day["anuladas_en_oppen"] == day["estado_corregido"] == []
    assert result["resumen"] == {"dias": 1, "cuadran": 1, "no_cuadran": 0}
    assert len(gets(sandbox)) - before == 1     # one paginated read for the whole range


def test_missing_extra_different_and_annulled(engine, settings, client, policy, sandbox):
    close_day(engine, "PALERMO")
    for n, monto in ((1, "100.00"), (2, "200.00"), (3, "300.00"), (4, "400.00")):
        add_factura(engine, "PALERMO", "A", "7", str(n), monto)
    assert audit(engine, settings, "PALERMO", client, policy)["oppen_sync"]["exitosas"] == 4

    def by_hand(record):
        if record["OfficialSerNr"] == "0007-00000001":
            return None                                      # deleted in Oppen
        if record["OfficialSerNr"] == "0007-00000002":
            return {**record, "Total": 200.5}                # a different amount
        return record
    rewrite_oppen(sandbox, by_hand)   # (this empties the sandbox's request log too)
    sandbox.annul(official_sernr="0007-00000003")
    sandbox.load_invoices([{"OfficialSerNr": "0007-00000099", "TransDate": D,
                            "Labels": "Local|PALERMO", "CustCode": "C00001", "InvoiceType": 1,
                            "Items": [{"ArtCode": "271240051", "Qty": 1, "Price": 55.0}]}])

    result = rec.reconcile(engine, settings, DAY, DAY, client=client)

    day = day_of(result, "PALERMO")
    assert day["cuadra"] is False
    assert names(day["faltan_en_oppen"]) == ["A 0007-00000001"]
    assert day["faltan_en_oppen"][0]["estado"] == "sent"     # we say sent: reported only
    assert names(day["sobran_en_oppen"]) == ["0007-00000099"]
    assert [(d["factura"], d["campos"]) for d in day["difieren"]] == [("A 0007-00000002", ["monto"])]
    assert names(day["anuladas_en_oppen"]) == ["A 0007-00000003"]
    assert (day["facturas"], day["monto"]) == (4, Decimal("1000.00"))
    assert (day["oppen_facturas"], day["oppen_total"]) == (3, Decimal("655.50"))
    assert day["diferencia"] == Decimal("-344.50")
    assert result["resumen"] == {"dias": 1, "cuadran": 0, "no_cuadran": 1}
    # Never the other direction: what we recorded as sent stays sent, nothing was posted.
    assert row(engine, "0007-00000001")["state"] == "sent"
    assert row(engine, "0007-00000003")["state"] == "sent"
    assert [e for e in sandbox.request_log() if e["method"] == "POST"
            and e["path"] == "Invoice"] == []


def test_failed_but_held_by_oppen_is_corrected_with_its_sernr_and_total(
        engine, settings, client, policy, sandbox):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1691", "15000.50")
    add_factura(engine, "MATRIZ", "A", "5", "1692", "20.00")
    # The old integration had sent 1691 already: our audit gets a duplicate for it.
    with engine.connect() as conn:
        facturas = binder.read_facturas(conn, "MATRIZ", DAY)
    mapped = map_invoice(facturas[0], settings.mapping, today=TODAY, sernr=1)
    assert isinstance(mapped, Mapped)
    held = sandbox.load_invoices([{k: v for k, v in mapped.payload.items() if k != "SerNr"}])[0]
    summary = audit(engine, settings, "MATRIZ", client, policy)["oppen_sync"]
    assert (summary["exitosas"], summary["fallidas"]) == (1, 1)
    assert row(engine, "0005-00001691")["state"] == "failed"

    result = rec.reconcile(engine, settings, DAY, DAY, client=client, user="beto")

    day = day_of(result, "MATRIZ")
    assert day["cuadra"] is True
    assert day["estado_corregido"] == [{"factura": "A 0005-00001691",
                                        "factura_id": facturas[0]["id"],
                                        "estado_anterior": "failed", "sernr": held["SerNr"],
                                        "total": Decimal("15000.50")}]
    fixed = row(engine, "0005-00001691")
    assert (fixed["state"], fixed["sernr"], fixed["last_error"], fixed["error_kind"]) == (
        "sent", held["SerNr"], None, None)
    assert json.loads(fixed["response_body"])["Total"] == 15000.5
    if "total_oppen" in fixed:
        assert fixed["total_oppen"] == Decimal("15000.50")
    a, r = schema.oppen_attempts, schema.oppen_runs
    with engine.connect() as conn:
        attempt = conn.execute(sa.select(a).where(a.c.oppen_invoice_id == fixed["id"])
                               .order_by(a.c.id.desc())).first()
        run = conn.execute(sa.select(r).where(r.c.id == attempt.run_id)).one()
    assert (attempt.kind, attempt.outcome) == ("reconcile", "corrected")
    assert (run.kind, run.state, run.username, run.exitosas, run.fallidas) == (
        "reconcile", "done", "beto", 1, 0)
    # A second reconciliation finds nothing to correct.
    again = day_of(rec.reconcile(engine, settings, DAY, DAY, client=client), "MATRIZ")
    assert again["cuadra"] is True and again["estado_corregido"] == []


def test_an_oppen_that_ignores_the_date_filter_is_read_bounded(
        engine, settings, client, policy, sandbox, monkeypatch, capsys):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", "10")
    audit(engine, settings, "MATRIZ", client, policy)
    # A small Oppen is read whole and every record checked: the answer is still right.
    sandbox.load_invoices([{"OfficialSerNr": f"0009-{n:08d}", "TransDate": "2024-12-01",
                            "Labels": "Local|MATRIZ"} for n in range(1, 51)])
    sandbox.set_faults(ignore_filters=True)
    small = rec.reconcile(engine, settings, DAY, DAY, client=client)
    assert day_of(small, "MATRIZ")["cuadra"] is True
    # A big one is not read whole: the read stops past the cap with a clear message.
    sandbox.load_invoices([{"OfficialSerNr": f"0009-{n:08d}", "TransDate": "2024-12-01",
                            "Labels": "Local|MATRIZ"} for n in range(51, 5001)])
    before = len(gets(sandbox))
    with pytest.raises(OppenRejected) as refused:
        rec.reconcile(engine, settings, DAY, DAY, client=client)
    assert refused.value.message == (
        "No se pudo leer Oppen: no aplica el filtro de fechas (TransDate__gte/__lte) y devuelve "
        "facturas de otros días; se detuvo la lectura tras 2.000 facturas para no recorrer "
        "todo Oppen")
    assert len(gets(sandbox)) - before == math.ceil(IGNORED_FILTER_CAP / RANGE_PAGE_SIZE)
    r = schema.oppen_runs
    with engine.connect() as conn:
        failed = conn.execute(sa.select(r).where(r.c.kind == "reconcile")
                              .order_by(r.c.id.desc())).first()
    assert failed.state == "error" and failed.message.startswith("No se pudo conciliar: ")
    assert failed.duration_ms is not None
    # The CLI: one Spanish line, exit 3.
    for key, value in {"DATABASE_URL": settings.database_url, "OPPEN_ENV": "sandbox",
                       "OPPEN_BASE_URL": settings.base_url, "OPPEN_USERNAME": "API",
                       "OPPEN_PASSWORD": settings.password,
                       "OPPEN_SECRETS_FILE": "/nonexistent/secrets.toml"}.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    assert main(["reconcile", "--desde", D, "--hasta", D]) == 3
    out, err = capsys.readouterr()
    assert out == "" and err.strip().splitlines() == [
        "Error consultando Oppen: " + refused.value.message]


def test_cli_json_shape_and_exit_codes(engine, settings, client, policy, sandbox, monkeypatch,
                                       capsys):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", "10.50")
    close_day(engine, "PALERMO")
    add_factura(engine, "PALERMO", "B", "6", "1", "20")
    audit(engine, settings, "MATRIZ", client, policy)
    audit(engine, settings, "PALERMO", client, policy)
    for key, value in {"DATABASE_URL": settings.database_url, "OPPEN_ENV": "sandbox",
                       "OPPEN_BASE_URL": settings.base_url, "OPPEN_USERNAME": "API",
                       "OPPEN_PASSWORD": settings.password,
                       "OPPEN_SECRETS_FILE": "/nonexistent/secrets.toml",
                       "OPPEN_MAPPING_EXCLUDED_LOCALS": '["DEPÓSITO"]'}.items():
        monkeypatch.setenv(key, value)
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.locales_auditados).values(local="DEPÓSITO", fecha=DAY))

    def run(*args):
        capsys.readouterr()
        code = main(["reconcile", *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("--desde", D, "--hasta", D, "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert list(data) == ["desde", "hasta", "dias", "resumen", "excluidos"]
    assert (data["desde"], data["hasta"]) == (D, D)
    assert data["resumen"] == {"dias": 2, "cuadran": 2, "no_cuadran": 0}
    assert data["excluidos"] == [{"local": "DEPÓSITO", "fecha": D}]
    assert data["dias"][0] == {
        "local": "MATRIZ", "fecha": D, "faltan_en_oppen": [], "sobran_en_oppen": [],
        "difieren": [], "anuladas_en_oppen": [], "estado_corregido": [], "facturas": 1,
        "monto": "10.50", "oppen_facturas": 1, "oppen_total": "10.50", "diferencia": "0.00",
        "cuadra": True}

    sandbox.annul(official_sernr="0006-00000001")
    code, out, err = run("PALERMO", "--desde", D, "--hasta", D)
    assert (code, err) == (3, "")
    lines = out.splitlines()
    assert lines[0] == "Conciliación con Oppen (SANDBOX) del 05/01/2025"
    assert lines[2].startswith("PALERMO") and lines[2].endswith("✗ no cuadra: 1 anulada")
    assert "  PALERMO 05/01/2025 · anulada en Oppen: B 0006-00000001" in lines
    assert lines[-1] == "Resumen: 1 día(s), 0 cuadra(n), 1 no cuadra(n)"
    assert not any("MATRIZ" in line for line in lines)

    assert run("NADIE", "--desde", D, "--hasta", D)[::2] == (
        1, "Error: El local NADIE no existe (no tiene cierres ni facturas cargadas)\n")
    code, _, err = run("--desde", "2025-02-01", "--hasta", D)
    assert (code, err) == (2, "Error: El rango está invertido: desde 01/02/2025 es posterior "
                              "a hasta 05/01/2025\n")
    code, _, err = run("--desde", "2025-13-01", "--hasta", D)
    assert code == 2 and err.startswith("Error: argumento --desde: Fecha inválida")
    code, _, err = run("--hasta", D)
    assert (code, err) == (2, "Error: faltan argumentos: --desde. Ayuda: python -m sync "
                              "reconcile --help\n")
    code, out, _ = run("--desde", "2020-01-01", "--hasta", "2020-01-31")
    assert code == 0 and "No hay días auditados en ese rango." in out


def test_results_are_stored_per_local_and_day(engine, settings, client, policy, sandbox):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", "10")
    audit(engine, settings, "MATRIZ", client, policy)
    first = rec.reconcile(engine, settings, DAY - dt.timedelta(days=3), DAY, client=client)
    sandbox.annul(official_sernr="0005-00000001")
    second = rec.reconcile(engine, settings, DAY, DAY, client=client)
    t = schema.oppen_reconciliations
    with engine.connect() as conn:
        stored = conn.execute(sa.select(t).order_by(t.c.id)).all()
    assert [(s.local, s.fecha, s.desde, s.hasta, s.squares, s.annulled, s.run_id)
            for s in stored] == [
        ("MATRIZ", DAY, DAY - dt.timedelta(days=3), DAY, True, 0, first["run_id"]),
        ("MATRIZ", DAY, DAY, DAY, False, 1, second["run_id"])]
    assert json.loads(stored[1].detail_json)["anuladas_en_oppen"][0]["factura"] == "A 0005-00000001"
    assert stored[0].reconciled_at <= stored[1].reconciled_at


def test_bad_range_and_unknown_local(engine, settings, client):
    with pytest.raises(SyncError, match="El rango es demasiado largo"):
        rec.reconcile(engine, settings, dt.date(2024, 1, 1), dt.date(2025, 1, 2), client=client)
    with pytest.raises(NotFound):
        rec.reconcile(engine, settings, DAY, DAY, local="NADIE", client=client)


# --- every morning -------------------------------------------------------------------------

class Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def at_ar(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    """Argentina's wall clock (UTC-3) as the naive UTC time the worker passes."""
    return dt.datetime.combine(day, dt.time(hour, minute)) + dt.timedelta(hours=3)


def test_the_morning_reconciliation(engine, settings, client, policy, sandbox):
    Hook.received = []
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", "10")
    close_day(engine, "PALERMO")
    add_factura(engine, "PALERMO", "A", "6", "1", "20")
    audit(engine, settings, "MATRIZ", client, policy)
    audit(engine, settings, "PALERMO", client, policy)
    # A day audited long ago, after the last morning run: reconciled too.
    old = DAY - dt.timedelta(days=40)
    close_day(engine, "MATRIZ", old)
    add_factura(engine, "MATRIZ", "A", "5", "2", "30", fecha=old)
    audit(engine, settings, "MATRIZ", client, policy, fecha=old)
    sandbox.annul(official_sernr="0006-00000001")
    morning = settings.replace(reconcile_at=dt.time(6, 0), reconcile_days=3)

    with http_server(Hook) as base:
        hooked = morning.replace(webhook_url=f"{base}/hook/secreto")
        assert rec.reconcile_due(engine, hooked, at_ar(TODAY, 5, 59), client=client) is None
        first = rec.reconcile_due(engine, hooked, at_ar(TODAY, 6, 0), client=client)
        alerts.deliver(engine, hooked, "test")    # what the worker's alert thread does
        # Only the window's days (the first morning never reads the whole history).
        assert [(d["local"], d["fecha"]) for d in first["dias"]] == [("MATRIZ", D), ("PALERMO", D)]
        assert first["resumen"] == {"dias": 2, "cuadran": 1, "no_cuadran": 1}
        assert rec.reconcile_due(engine, hooked, at_ar(TODAY, 9, 0), client=client) is None
        # The next morning: the previous days again, and what was audited meanwhile.
        with engine.begin() as conn:
            conn.execute(sa.update(schema.locales_auditados)
                         .where(schema.locales_auditados.c.fecha == old)
                         .values(auditado_en=at_ar(TODAY, 12)))
        second = rec.reconcile_due(engine, hooked, at_ar(TODAY + dt.timedelta(days=1), 6, 30),
                                   client=client)
        alerts.deliver(engine, hooked, "test")
        assert [(d["local"], d["fecha"]) for d in second["dias"]] == [
            ("MATRIZ", old.isoformat()), ("MATRIZ", D), ("PALERMO", D)]
    assert len(Hook.received) == 2
    text = Hook.received[0]["text"]
    assert text.splitlines() == [
        "⚠️ Conciliación con Oppen del 05/01/2025: 1 día(s) no cuadran",
        "• PALERMO 05/01/2025: 1 anulada (diferencia -$ 20,00)"]
    r = schema.oppen_runs
    with engine.connect() as conn:
        runs = conn.execute(sa.select(r.c.username, r.c.state, r.c.reason, r.c.duration_ms)
                            .where(r.c.kind == "reconcile").order_by(r.c.id)).all()
    assert [tuple(x[:3]) for x in runs] == [("automática", "done",
                                             "conciliación de cada mañana")] * 2
    # Measured by the run itself, as a sync's: Corridas shows "0,4 s", not a rounded "0 s".
    assert all(x.duration_ms is not None and 0 <= x.duration_ms < 60_000 for x in runs)


def test_the_morning_reconciliation_when_oppen_is_down(engine, settings, client, policy,
                                                       sandbox):
    Hook.received = []
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", "10")
    audit(engine, settings, "MATRIZ", client, policy)
    client.tokens.drop(client.tokens.current())
    sandbox.stop_instance()
    with http_server(Hook) as base:
        hooked = settings.replace(webhook_url=f"{base}/h", reconcile_at=dt.time(6, 0))
        failed = rec.reconcile_due(engine, hooked, at_ar(TODAY, 6, 5), client=client)
        assert failed["error"].startswith("Error HTTP 502")
        # Not again on every poll: an hour later.
        assert rec.reconcile_due(engine, hooked, at_ar(TODAY, 6, 30), client=client) is None
        alerts.deliver(engine, hooked, "test")
        # Still down an hour later: tried again, but told once, not twice.
        assert "error" in rec.reconcile_due(engine, hooked, at_ar(TODAY, 7, 10), client=client)
        sandbox.start_instance()
        done = rec.reconcile_due(engine, hooked, at_ar(TODAY, 8, 15), client=client)
        assert done["resumen"] == {"dias": 1, "cuadran": 1, "no_cuadran": 0}
        assert rec.reconcile_due(engine, hooked, at_ar(TODAY, 9, 0), client=client) is None
        alerts.deliver(engine, hooked, "test")
    assert [m["text"].split(":")[0] for m in Hook.received] == [
        "⚠️ No se pudo conciliar con Oppen los días del 05/01/2025",
        "✅ La conciliación con Oppen volvió a funcionar (del 05/01/2025)."]
    assert "Se reintenta en una hora." in Hook.received[0]["text"]
    assert "secreto" not in json.dumps(Hook.received)


def test_two_workers_reconcile_a_morning_once(engine, settings, client, policy, sandbox):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", "10")
    audit(engine, settings, "MATRIZ", client, policy)
    morning = settings.replace(reconcile_at=dt.time(6, 0))
    now = at_ar(TODAY, 6, 1)
    slot = at_ar(TODAY, 6, 0)
    # Two processes found it due at once; the second to write its row stands down.
    first = rec._start_run(engine, morning, user=rec.AUTO_USER, origin="auto", local=None,
                           started_at=now, exclusive_since=slot)
    second = rec._start_run(engine, morning, user=rec.AUTO_USER, origin="auto", local=None,
                            started_at=now, exclusive_since=slot)
    assert first is not None and second is None
    assert rec.reconcile_due(engine, morning, now, client=client) is None   # first is running


# --- a month of a chain -----------------------------------------------------------------------

@pytest.mark.slow
def test_fifty_locals_for_thirty_days_within_the_query_budget(engine, settings, client,
                                                               sandbox):
    """50 locals × 30 days × 4 invoices (6,000), held by Oppen as our mapping writes them.

    Budget (stated here, checked below): against Oppen, one login and ceil(6000 / 1000)
    pages of one date-range read, plus the page that says there is no more at most;
    against the database, a fixed number of statements whatever the number of days,
    locals or invoices (no query per local, per day or per invoice)."""
    locals_ = [f"LOCAL {n:02d}" for n in range(1, 51)]
    start = dt.date(2025, 3, 1)
    total = seed_days(engine, locals_, 30, 4, start=start)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*binder.FACTURA_COLUMNS)).all()
    payloads = []
    for r in rows:
        mapped = map_invoice(r._mapping, settings.mapping, today=TODAY, sernr=1)
        payloads.append({k: v for k, v in mapped.payload.items() if k != "SerNr"})
    sandbox.load_invoices(payloads)
    client.tokens.drop(client.tokens.current() or "")
    statements = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda *args: statements.append(args[2]))
    before = len(sandbox.request_log())
    started = time.monotonic()

    result = rec.reconcile(engine, settings, start, start + dt.timedelta(days=29),
                           client=client)

    elapsed = time.monotonic() - started
    requests_ = sandbox.request_log()[before:]
    assert result["resumen"] == {"dias": 1500, "cuadran": 1500, "no_cuadran": 0}
    assert sum(d["facturas"] for d in result["dias"]) == total == 6000
    budget_http = 1 + math.ceil(total / RANGE_PAGE_SIZE) + 1
    assert len(requests_) <= budget_http, [(e["method"], e["path"]) for e in requests_]
    assert [e["path"] for e in requests_].count("authenticate") == 1
    # Statements, not counting BEGIN (SQLite's driver sends it as one): the audited days,
    # the run's row (clock, insert), whether the host has a labels_oppen table (SQLite
    # asks in two PRAGMAs), our rows and our states (one span of days), the results (one
    # executemany), the run's end (clock, update).
    statements = [s for s in statements if not s.startswith("BEGIN")]
    budget_db = 10
    assert len(statements) <= budget_db, statements
    print(f"\n50 locales × 30 días, {total} facturas: {len(requests_)} pedidos HTTP "
          f"(presupuesto {budget_http}), {len(statements)} sentencias SQL (presupuesto "
          f"{budget_db}), {elapsed:.2f} s")


# --- the sandbox's admin from the command line -----------------------------------------------

def test_sandbox_annul_and_load_from_the_cli(sandbox, password, tmp_path, monkeypatch, capsys):
    for key, value in {"OPPEN_ENV": "sandbox", "OPPEN_BASE_URL": sandbox.url,
                       "OPPEN_USERNAME": "API", "OPPEN_PASSWORD": password,
                       "OPPEN_SECRETS_FILE": "/nonexistent/secrets.toml"}.items():
        monkeypatch.setenv(key, value)

    def run(*args):
        capsys.readouterr()
        code = main(["sandbox", *args])
        out, err = capsys.readouterr()
        return code, out, err

    path = tmp_path / "facturas.json"
    path.write_text(json.dumps([
        {"OfficialSerNr": "0005-00000001", "TransDate": D, "Labels": "Local|MATRIZ",
         "Items": [{"ArtCode": "1", "Qty": 1, "Price": 10.0}]},
        {"OfficialSerNr": "0005-00000002", "TransDate": D, "Labels": "Local|MATRIZ",
         "Total": 20.0}]), encoding="utf-8")
    code, out, err = run("load", str(path))
    held = sandbox.invoices()
    assert (code, err) == (0, "")
    assert out.splitlines() == ["2 factura(s) cargada(s) a mano en el sandbox"] + [
        f"  {r['OfficialSerNr']}  SerNr {r['SerNr']}" for r in held]
    assert sandbox.stats()["loaded_by_hand"] == 2

    code, out, err = run("annul", "--official-sernr", "0005-00000002")
    assert (code, out, err) == (0, f"Anulada en el sandbox: 0005-00000002 (SerNr "
                                   f"{held[1]['SerNr']})\n", "")
    assert [r["Invalid"] for r in sandbox.invoices()] == [0, 1]

    # Refusals: one Spanish line each.
    assert run("annul", "--sernr", "9") == (
        1, "", "Error: El sandbox respondió 404: No hay ninguna factura con SerNr 9\n")
    code, _, err = run("load", str(path))
    assert code == 1 and err.startswith("Error: El sandbox respondió 409: Registro 1: la "
                                        "factura 0005-00000001 ya existe en el sandbox")
    (tmp_path / "roto.json").write_text("{no es json", encoding="utf-8")
    assert run("load", str(tmp_path / "roto.json"))[::2] == (
        2, f"Error: {tmp_path / 'roto.json'} no es JSON (una lista de facturas, o una por "
           "línea)\n")
    assert run("annul")[0] == 2
    monkeypatch.setenv("OPPEN_BASE_URL", "http://127.0.0.1:1")
    code, _, err = run("annul", "--sernr", "1")
    assert code == 2 and err.startswith("Error: No se pudo conectar con el sandbox en "
                                        "http://127.0.0.1:1")


def test_the_worker_reconciles_in_its_scan_once_a_day(engine, settings, client, policy, sandbox):
    worker = pytest.importorskip("sync.worker")
    from sync.settings import local_today
    yesterday = local_today() - dt.timedelta(days=1)
    close_day(engine, "MATRIZ", yesterday)
    add_factura(engine, "MATRIZ", "A", "5", "1", "10", fecha=yesterday)
    audit(engine, settings, "MATRIZ", client, policy, fecha=yesterday)
    morning = settings.replace(reconcile_at=dt.time(0, 0))   # due whenever it is
    scanner = worker.Worker(engine, morning, client, once=True)
    scanner.scan()
    scanner.scan()
    t, r = schema.oppen_reconciliations, schema.oppen_runs
    with engine.connect() as conn:
        runs = conn.execute(sa.select(r.c.username, r.c.state).where(r.c.kind == "reconcile")).all()
        days = conn.execute(sa.select(t.c.local, t.c.fecha, t.c.squares)).all()
    assert [tuple(x) for x in runs] == [("automática", "done")]
    assert [tuple(x) for x in days] == [("MATRIZ", yesterday, True)]
