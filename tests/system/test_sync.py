"""The sync beyond the seed's cases: idempotence, invalid rows, resend, targets, status,
accounting, hostile text and secrets. Real database, real sandbox over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading

import pytest
import sqlalchemy as sa

from sync import actions

from sync.state import schema
from sync.actions import mark_audited
from sync.errors import AuditRefused, NotFound, RunInProgress
from sync.oppen.retry import Policy

from helpers import DAY, TODAY, add_factura, close_day, http_server, states


def audit(engine, settings, local, client, policy, fecha=DAY):
    return mark_audited(engine, settings, local, fecha, "auditora", client=client, policy=policy,
                        today=TODAY)


def posts(sandbox):
    return [e for e in sandbox.request_log() if e["method"] == "POST" and e["path"] == "Invoice"]


def test_second_sync_sends_nothing(engine, settings, client, policy, sandbox):
    close_day(engine, "MATRIZ")
    for n in range(3):
        add_factura(engine, "MATRIZ", "B", "1", str(100 + n), 10 + n)
    assert audit(engine, settings, "MATRIZ", client, policy)["oppen_sync"]["exitosas"] == 3
    before = len(sandbox.request_log())

    again = actions.sync_facturas_to_oppen(engine, settings, "MATRIZ", DAY, client=client,
                                           policy=policy, today=TODAY)
    resent = actions.resend(engine, settings, user="admin", local="MATRIZ", fecha=DAY,
                            client=client, policy=policy, today=TODAY)

    assert len(sandbox.request_log()) == before  # not one request
    assert again["total"] == 0 and again["ya_enviadas"] == 3 and again["success"]
    assert again["message"] == "Las 3 factura(s) ya estaban enviadas a Oppen"
    assert resent["total"] == 0 and resent["ya_enviadas"] == 3
    assert len(sandbox.invoices()) == 3


def test_only_ok_rows_of_that_calendar_day(engine, settings, client, policy, sandbox):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "1", "1", 10, hour=0)
    add_factura(engine, "MATRIZ", "A", "1", "2", 10, hour=23)
    add_factura(engine, "MATRIZ", "A", "1", "3", 10, estado="anulada")
    add_factura(engine, "MATRIZ", "A", "1", "4", 10, fecha=DAY + dt.timedelta(days=1), hour=0)
    add_factura(engine, "MATRIZ", "A", "1", "5", 10, fecha=DAY - dt.timedelta(days=1), hour=23)
    add_factura(engine, "OTRO", "A", "1", "6", 10)
    result = audit(engine, settings, "MATRIZ", client, policy)
    assert result["oppen_sync"]["total"] == 2
    assert sorted(i["OfficialSerNr"] for i in sandbox.invoices()) == ["0001-00000001",
                                                                      "0001-00000002"]


def test_invalid_rows_are_never_sent_and_name_the_field(engine, settings, client, policy, sandbox):
    close_day(engine, "BELGRANO")
    add_factura(engine, "BELGRANO", "B", "7", "501", 2500)
    bad = {
        "tipo": add_factura(engine, "BELGRANO", "X", "7", "502", 10),
        "nro_factura": add_factura(engine, "BELGRANO", "B", "7", "5O3", 10),
        "punto_venta": add_factura(engine, "BELGRANO", "B", "12345", "504", 10),
        "monto": add_factura(engine, "BELGRANO", "B", "7", "505", 0),
    }
    add_factura(engine, "BELGRANO", "B", "7", "506", None)

    result = audit(engine, settings, "BELGRANO", client, policy)["oppen_sync"]

    assert (result["total"], result["exitosas"], result["fallidas"]) == (6, 1, 5)
    assert result["invalidas"] == 5
    errors = [e["error"] for e in result["errores"]]
    for field in ("tipo", "nro_factura", "punto_venta", "monto"):
        assert any(err.startswith("Datos inválidos: " + field) for err in errors), field
    assert [i["OfficialSerNr"] for i in sandbox.invoices()] == ["0007-00000501"]
    assert all(e["official_sernr"] == "0007-00000501" for e in posts(sandbox))

    # The host application fixes a row: the resend picks it up and sends it.
    with engine.begin() as conn:
        conn.execute(sa.update(schema.facturas_trns).where(schema.facturas_trns.c.id == bad["monto"])
                     .values(monto=99))
    again = actions.resend(engine, settings, user="admin", local="BELGRANO", fecha=DAY,
                           client=client, policy=policy, today=TODAY)
    assert again["exitosas"] == 1 and again["invalidas"] == 4
    assert len(sandbox.invoices()) == 2


def test_client_sernr_is_allocated_once_and_reused(engine, settings, client, policy, sandbox):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", 10)
    sandbox.set_faults(down=True)
    first = audit(engine, settings, "MATRIZ", client, policy)
    assert "oppen_error" in first
    with engine.connect() as conn:
        row = conn.execute(sa.select(schema.oppen_invoices)).one()
    assert row.state == "pending" and row.sernr is None
    sernr = settings.mapping.sernr_base + row.id
    sandbox.set_faults(down=False)
    actions.resend(engine, settings, user="admin", client=client, policy=policy, today=TODAY)
    (stored,) = sandbox.invoices()
    assert stored["SerNr"] == sernr > 2 ** 31
    assert states(engine) == [("A 0005-00000001", "sent", sernr, 1)]


def test_server_assigned_sernr_is_stored(engine, settings, client, policy, sandbox):
    settings = settings.replace(mapping=settings.mapping.replace(sernr_mode="server"))
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", 10)
    audit(engine, settings, "MATRIZ", client, policy)
    (stored,) = sandbox.invoices()
    assert (stored.get("SerNr") or 0) > 2 ** 31
    assert states(engine)[0][2] == stored["SerNr"]
    assert "SerNr" not in json.loads(posts_body(engine))


def posts_body(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(schema.oppen_invoices.c.request_body)).scalar()


def test_state_is_per_target(engine, settings, client, policy, sandbox, password):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", 10)
    audit(engine, settings, "MATRIZ", client, policy)
    production = settings.replace(oppen_env="production")
    rows = actions.status(engine, production, "MATRIZ", DAY)
    assert [r["estado"] for r in rows] == ["pending"]
    assert rows[0]["ultimo_error"] == "Todavía no se sincronizó"
    assert [r["estado"] for r in actions.status(engine, settings, "MATRIZ", DAY)] == ["sent"]


def test_resend_refuses_unaudited_days_and_unknown_invoices(engine, settings, client, policy):
    close_day(engine, "MATRIZ")
    fid = add_factura(engine, "MATRIZ", "A", "5", "1", 10)
    with pytest.raises(AuditRefused, match="no está auditado"):
        actions.resend(engine, settings, user="admin", local="MATRIZ", fecha=DAY, client=client)
    with pytest.raises(AuditRefused, match="no está auditado"):
        actions.resend(engine, settings, user="admin", invoice_ids=[fid], client=client)
    with pytest.raises(NotFound, match="No existe la factura 999"):
        actions.resend(engine, settings, user="admin", invoice_ids=[999], client=client)
    with pytest.raises(NotFound, match="no existe"):
        actions.resend(engine, settings, user="admin", local="NADIE", fecha=DAY, client=client)


def test_resend_of_chosen_invoices_records_who_and_why(engine, settings, client, policy, sandbox):
    close_day(engine, "PALERMO")
    ids = [add_factura(engine, "PALERMO", "A", "5", str(n), 10) for n in (1, 2, 3)]
    sandbox.set_faults(error_rate=1.0)
    result = audit(engine, settings, "PALERMO", client, policy)["oppen_sync"]
    assert result["fallidas"] == 3
    sandbox.set_faults(error_rate=0.0)

    result = actions.resend(engine, settings, user="admin", invoice_ids=[ids[0]],
                            reason="Oppen volvió", client=client, policy=policy, today=TODAY)

    assert (result["total"], result["exitosas"]) == (1, 1)
    assert [s for _, s, _, _ in states(engine, "PALERMO")] == ["sent", "failed", "failed"]
    with engine.connect() as conn:
        run = conn.execute(sa.select(schema.oppen_runs).where(schema.oppen_runs.c.kind == "resend")).one()
    assert (run.username, run.reason, run.state, run.exitosas) == ("admin", "Oppen volvió", "done", 1)


def test_accounting_identity_and_status(engine, settings, client, policy, sandbox):
    close_day(engine, "MIX")
    add_factura(engine, "MIX", "A", "5", "1", 10)
    add_factura(engine, "MIX", "A", "5", "2", -1)
    add_factura(engine, "MIX", "A", "5", "3", 10)
    sandbox.add_invoice({"OfficialSerNr": "0005-00000003", "TransDate": "2025-01-05",
                         "Items": [{"ArtCode": "1", "Qty": 1, "Price": 1.0}]})
    audit(engine, settings, "MIX", client, policy)
    counts = actions.day_accounting(engine, settings, "MIX", DAY)
    assert counts == {"sent": 1, "failed": 1, "invalid": 1, "pending": 0, "conflict": 0,
                      "total": 3}
    rows = actions.status(engine, settings, "MIX", DAY)
    failed = [r for r in rows if r["estado"] == "failed"][0]
    assert failed["http_status"] == 409 and failed["intentos"] == 1
    assert failed["ultimo_error"] == "Error HTTP 409: Duplicate invoice"


def test_link_duplicate_after_comparing(engine, settings, client, policy, sandbox):
    close_day(engine, "MIX")
    add_factura(engine, "MIX", "A", "5", "3", 10)
    add_factura(engine, "MIX", "A", "5", "4", 10)
    same = sandbox.add_invoice({"OfficialSerNr": "0005-00000003", "TransDate": "2025-01-05",
                                "CustCode": "C00001", "Labels": "Local|MIX",
                                "Items": [{"ArtCode": "271240051", "Qty": 1, "Price": 10.0}]})
    sandbox.add_invoice({"OfficialSerNr": "0005-00000004", "TransDate": "2024-12-31",
                         "Items": [{"ArtCode": "1", "Qty": 1, "Price": 99.0}]})
    audit(engine, settings, "MIX", client, policy)
    ids = {r["referencia"]: r["id"] for r in actions.status(engine, settings, "MIX", DAY)}

    # Only Oppen's SerNr differs from ours (client-assigned): Oppen's is kept, link it.
    assert settings.mapping.sernr_mode == "client"
    linked = actions.link_duplicate(engine, settings, ids["A 0005-00000003"], user="admin",
                                    reason="ya estaba cargada a mano", client=client, today=TODAY)
    assert linked["linked"] is True
    refused = actions.link_duplicate(engine, settings, ids["A 0005-00000004"], user="admin",
                                     reason="probar", client=client, today=TODAY)
    assert refused["linked"] is False
    assert any(d.startswith("TransDate") for d in refused["differences"])
    rows = {r["referencia"]: r for r in actions.status(engine, settings, "MIX", DAY)}
    assert rows["A 0005-00000003"]["estado"] == "sent"
    assert rows["A 0005-00000003"]["sernr"] == same["SerNr"]
    assert rows["A 0005-00000004"]["estado"] == "failed"


@pytest.mark.parametrize("name", ["O'Brien; DROP TABLE facturas_trns;--", "Ñandú \"Sur\" <b>x</b>",
                                  "北京店", "tab\tnew\nline\x07"])
def test_hostile_local_names_are_just_text(engine, settings, client, policy, sandbox, name):
    close_day(engine, name)
    add_factura(engine, name, "A", "5", "1", 10)
    result = audit(engine, settings, name, client, policy)
    assert result["msg"].startswith(f"Local {name} marcado como auditado")
    assert result["oppen_sync"]["exitosas"] == 1
    assert sandbox.invoices()[0]["Labels"] == f"Local|{name}"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.facturas_trns)).scalar() == 1
    assert actions.status(engine, settings, name, DAY)[0]["local"] == name


def test_concurrent_runs_for_one_day_never_both_send(engine, settings, client, policy, sandbox):
    close_day(engine, "MATRIZ")
    for n in range(40):
        add_factura(engine, "MATRIZ", "B", "1", str(n + 1), 10)
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.locales_auditados).values(local="MATRIZ", fecha=DAY,
                                                            auditor="x"))
    sandbox.set_faults(latency_ms=5)
    outcomes, lock = [], threading.Lock()

    def one():
        worker = client.clone()
        try:
            r = actions.resend(engine, settings, user="admin", local="MATRIZ", fecha=DAY,
                               client=worker, policy=policy, today=TODAY)
            with lock:
                outcomes.append(("ran", r["exitosas"]))
        except RunInProgress as exc:
            with lock:
                outcomes.append(("busy", exc.message))

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = [o for o in outcomes if o[0] == "ran"]
    assert sum(n for _, n in sent) == 40
    assert all("Ya hay una sincronización en curso" in m for k, m in outcomes if k == "busy")
    numbers = [e["official_sernr"] for e in posts(sandbox)]
    assert len(numbers) == len(set(numbers)) == 40


def test_no_secret_in_logs_results_or_database(engine, settings, client, policy, sandbox, caplog,
                                               password):
    caplog.set_level(logging.DEBUG)
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", 10)
    add_factura(engine, "MATRIZ", "A", "5", "2", 0)
    for n in (3, 4, 5, 6):
        add_factura(engine, "MATRIZ", "A", "5", str(n), 10)
    sandbox.set_faults(token_max_uses=2)
    result = audit(engine, settings, "MATRIZ", client, policy)
    token = client.tokens.get()
    bad = client.__class__(base_url=settings.base_url, api="ApiNg", username="API",
                           password=password + "x", timeout=1)
    close_day(engine, "OTRO")
    add_factura(engine, "OTRO", "A", "6", "1", 10)
    refused = audit(engine, settings, "OTRO", bad, policy)
    produced = [caplog.text, json.dumps(result), json.dumps(refused), repr(settings)]
    with engine.connect() as conn:
        for table in (schema.oppen_invoices, schema.oppen_attempts, schema.oppen_runs):
            produced.extend(str(tuple(r)) for r in conn.execute(sa.select(table)))
    everything = "\n".join(produced)
    assert "📤 Enviando factura A 0005-00000001" in caplog.text
    assert password not in everything
    tokens = sandbox.issued_tokens()
    assert token in tokens and len(tokens) >= 2  # token_max_uses=2 made it renew
    for issued in tokens:
        assert issued not in everything


def test_a_run_with_failures_tells_the_webhook(engine, settings, client, policy, sandbox):
    import http.server
    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    with http_server(Hook) as base:
        hooked = settings.replace(webhook_url=f"{base}/hook/x")
        close_day(engine, "PALERMO")
        add_factura(engine, "PALERMO", "A", "5", "1", 10)
        add_factura(engine, "PALERMO", "A", "5", "2", -3)
        audit(engine, hooked, "PALERMO", client, policy)
        close_day(engine, "MATRIZ")
        add_factura(engine, "MATRIZ", "A", "6", "1", 10)
        audit(engine, hooked, "MATRIZ", client, policy)  # all sent: no notification
    assert len(received) == 1
    text = received[0]["text"]
    assert "PALERMO" in text and "2025-01-05" in text and "monto" in text


def test_init_db_creates_host_tables_only_on_sqlite(db_url):
    fresh = schema.make_engine(db_url)
    try:
        created = set(schema.init_db(fresh))
        own = {t.name for t in schema.OWN_TABLES}
        host = {t.name for t in schema.SOURCE_TABLES}
        if fresh.dialect.name == "sqlite":
            assert created == own | host
        else:
            # On the chain's MySQL the host tables exist already; never make empty copies.
            assert created == own
            assert set(schema.check_schema(fresh)) == host
        assert schema.init_db(fresh) == []  # a second time creates nothing
    finally:
        fresh.dispose()


def test_link_refuses_a_row_duplicated_in_the_sales_system(engine, settings, client, policy,
                                                            sandbox):
    from sync.errors import SyncError
    close_day(engine, "PALERMO")
    add_factura(engine, "PALERMO", "A", "6", "1691", 15000)
    add_factura(engine, "PALERMO", "A", "6", "1691", 15000)
    audit(engine, settings, "PALERMO", client, policy)
    failed = [r for r in actions.status(engine, settings, "PALERMO", DAY) if r["estado"] == "failed"]
    assert len(failed) == 1
    with pytest.raises(SyncError, match="ya corresponde a otra fila"):
        actions.link_duplicate(engine, settings, failed[0]["id"], user="admin", reason="x",
                               client=client, today=TODAY)
    assert [r["estado"] for r in actions.status(engine, settings, "PALERMO", DAY)].count("sent") == 1


def test_preview_does_not_count_what_is_already_in_oppen(engine, settings, client, policy):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", 10)
    add_factura(engine, "MATRIZ", "A", "5", "2", 20)
    before = actions.preview(engine, settings, "MATRIZ", DAY, today=TODAY)
    assert (before["validas"], before["ya_enviadas"], before["monto_valido"]) == (2, 0, 30)
    audit(engine, settings, "MATRIZ", client, policy)
    after = actions.preview(engine, settings, "MATRIZ", DAY, today=TODAY)
    assert (after["validas"], after["ya_enviadas"], after["monto_valido"]) == (0, 2, 0)
    assert all(i["payload"]["SerNr"] > 2 ** 31 for i in after["items"])


def test_a_2xx_without_sernr_is_completed_by_a_lookup(engine, settings, policy):
    """A real HTTP server that stores invoices but answers the POST without SerNr."""
    import http.server
    from urllib.parse import parse_qs, urlsplit

    from sync.oppen.client import OppenClient
    held = {}

    class Quiet(http.server.BaseHTTPRequestHandler):
        def _send(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path.endswith("/authenticate"):
                return self._send(200, {"ok": True, "token": "t0k3n-xyz", "expires": 3600})
            held[body["OfficialSerNr"]] = dict(body, SerNr=4_000_000_007)
            self._send(201, {"ok": True, "data": {"OfficialSerNr": body["OfficialSerNr"]}})

        def do_GET(self):
            number = parse_qs(urlsplit(self.path).query).get("OfficialSerNr", [""])[0]
            records = [held[number]] if number in held else []
            self._send(200, {"ok": True, "data": records, "has_more": False})

        def log_message(self, *args):
            pass

    with http_server(Quiet) as url:
        server_mode = settings.replace(base_url=url, mapping=settings.mapping.replace(
            sernr_mode="server"))
        quiet = OppenClient(base_url=url, api="ApiNg", username="API", password="x", timeout=2)
        close_day(engine, "MATRIZ")
        add_factura(engine, "MATRIZ", "A", "5", "1", 10)
        result = audit(engine, server_mode, "MATRIZ", quiet, policy)
    assert result["oppen_sync"]["exitosas"] == 1
    assert states(engine, "MATRIZ") == [("A 0005-00000001", "sent", 4_000_000_007, 1)]


def test_a_reader_never_makes_a_writer_wait(engine):
    """The console polls while a run writes: on SQLite a read is a snapshot, not a lock."""
    import time
    with schema.reading(engine) as reader:
        reader.execute(sa.select(sa.func.count()).select_from(schema.facturas_trns)).scalar()
        started = time.monotonic()
        add_factura(engine, "MATRIZ", "A", "5", "1", 10)  # a write while the read is open
        assert time.monotonic() - started < 1.0
        # The reader keeps its snapshot until it ends.
        assert reader.execute(sa.select(sa.func.count())
                              .select_from(schema.facturas_trns)).scalar() in (0, 1)


def test_progress_counts_every_invoice_up_to_the_total(engine, settings, client, policy):
    import datetime as _dt
    close_day(engine, "MATRIZ")
    for n in range(5):
        add_factura(engine, "MATRIZ", "B", "1", str(n + 1), 10)
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.locales_auditados).values(local="MATRIZ", fecha=DAY))
    actions.sync_facturas_to_oppen(engine, settings.replace(concurrency=1), "MATRIZ", DAY,
                                   client=client, policy=policy, today=TODAY, kind="resend")
    # Make two invoices unsent again, one of them held by someone else's live claim.
    t = schema.oppen_invoices
    with engine.begin() as conn:
        ids = conn.execute(sa.select(t.c.id).order_by(t.c.id).limit(2)).scalars().all()
        conn.execute(sa.update(t).where(t.c.id == ids[0]).values(state="failed", needs_lookup=True))
        conn.execute(sa.update(t).where(t.c.id == ids[1]).values(
            state="sending", claim_owner="someone-else",
            claim_until=schema.utcnow() + _dt.timedelta(hours=1)))
    seen = []
    result = actions.resend(engine, settings, user="admin", local="MATRIZ", fecha=DAY,
                            client=client, policy=policy, today=TODAY,
                            progress=lambda done, total, ref: seen.append((done, total)))
    assert result["total"] == 2 and result["exitosas"] == 1
    assert seen[-1] == (2, 2)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
