"""The exporter on its own: one run's flow and each invoice's decisions, against the
real sandbox over HTTP (SQLite, and MariaDB when TEST_MYSQL_URL is set)."""

from __future__ import annotations

import sqlalchemy as sa

from helpers import DAY, TODAY, add_factura
from sync import exporter, mapping
from sync.exporter import Exporter, RunRequest
from sync.oppen.client import OppenClient
from sync.sandbox import OppenSandbox
from sync.state import binder, schema


def _request(engine, local="MATRIZ"):
    with schema.reading(engine) as conn:
        rows = binder.read_facturas(conn, local, DAY)
    return RunRequest(kind="audit", groups={(local, DAY): rows}, user="ana", local=local,
                      fecha=DAY)


def _attempts(engine):
    a = schema.oppen_attempts
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(a.c.kind, a.c.outcome, a.c.error_kind).order_by(a.c.id))]


def test_a_run_top_to_bottom_maps_each_invoice_once_and_reports_progress(
        engine, settings, client, policy, sandbox, monkeypatch):
    for n in range(1, 6):
        add_factura(engine, "MATRIZ", "A", "5", str(n), 100 * n)
    calls = []
    real = mapping.map_invoice

    def counting(row, *args, **kwargs):
        calls.append(row["id"])
        return real(row, *args, **kwargs)
    monkeypatch.setattr(binder, "map_invoice", counting)
    seen = []
    summary = Exporter(engine, settings, client, _request(engine), policy=policy, today=TODAY,
                       progress=lambda done, total, ref: seen.append((done, total))).run()
    assert (summary["total"], summary["exitosas"], summary["fallidas"]) == (5, 5, 0)
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 5   # once each
    assert seen[0] == (0, 5) and seen[-1] == (5, 5)
    r = schema.oppen_runs
    with engine.connect() as conn:
        run = conn.execute(sa.select(r).where(r.c.id == summary["run_id"])).one()
        locks = conn.execute(sa.select(sa.func.count()).select_from(
            schema.oppen_run_locks)).scalar()
    assert (run.state, run.processed, run.exitosas, run.heartbeat_at is not None) == (
        schema.DONE, 5, 5, True)
    assert locks == 0          # the run released its local/day


def test_a_rejection_is_final_and_never_retried(engine, settings, policy, password):
    add_factura(engine, "MATRIZ", "A", "5", "1", 100)
    # An Oppen that takes no client SerNr above 10: RANGEERR4, a rejection on purpose.
    with OppenSandbox(password=password, max_sernr=10, profile="real", company=None,
                      today=None) as strict:
        strict_settings = settings.replace(base_url=strict.url)
        with OppenClient(base_url=strict.url, api="ApiNg", username="API",
                         password=password, timeout=2.0) as c:
            summary = Exporter(engine, strict_settings, c, _request(engine), policy=policy,
                               today=TODAY).run()
        posts = [e for e in strict.request_log()
                 if e["method"] == "POST" and e["path"] == "Invoice"]
    assert (summary["exitosas"], summary["fallidas"]) == (0, 1)
    assert "RANGEERR4" in summary["errores"][0]["error"]
    assert len(posts) == 1                   # tried once: retrying would not help
    assert _attempts(engine) == [("post", "rejected", schema.ERROR_REJECTED)]


def test_an_ambiguous_failure_is_looked_up_before_any_new_post(
        engine, settings, client, policy, sandbox):
    add_factura(engine, "MATRIZ", "A", "5", "1", 100)
    sandbox.set_faults(timeout_rate=1.0, hang_seconds=3.0)   # stored, answer lost
    summary = Exporter(engine, settings, client, _request(engine), policy=policy,
                       today=TODAY).run()
    assert summary["exitosas"] == 1
    assert _attempts(engine) == [("post", "unknown", schema.ERROR_TRANSPORT),
                                 ("lookup", "found", None)]
    assert sandbox.repeat_posts() == {}


def test_the_breaker_stops_the_run_and_leaves_the_rest_pending_with_the_reason(
        engine, settings, client, policy, sandbox):
    for n in range(1, 31):
        add_factura(engine, "MATRIZ", "A", "5", str(n), 100)
    client.authenticate()           # logged in, then Oppen goes down mid-run
    sandbox.set_faults(down=True)
    policy.breaker_threshold = 3
    summary = Exporter(engine, settings.replace(concurrency=1), client, _request(engine),
                       policy=policy, today=TODAY).run()
    assert summary["exitosas"] == 0 and summary["pendientes"] + summary.get("fallidas", 0) >= 30
    assert "Oppen no responde" in summary["message"]
    t = schema.oppen_invoices
    with engine.connect() as conn:
        kinds = set(conn.execute(sa.select(t.c.error_kind).where(
            t.c.state == schema.PENDING)).scalars())
    assert kinds == {schema.ERROR_TRANSPORT}
    posts = [e for e in sandbox.request_log() if e["method"] == "POST" and e["path"] == "Invoice"]
    assert len(posts) < 30                   # it stopped instead of hammering


def test_a_day_lost_to_another_run_is_not_posted(engine, settings, client, policy, sandbox):
    add_factura(engine, "MATRIZ", "A", "5", "1", 100)
    run = Exporter(engine, settings, client, _request(engine), policy=policy, today=TODAY)
    run.ownership = exporter.Ownership(engine, "nobody", 30, [("OTRO", DAY)], run_id=0)
    [reg] = binder.register(engine, settings.target, _request(engine).groups[("MATRIZ", DAY)],
                            settings.mapping, TODAY)
    parcel = exporter.Parcel(reg, reg.mapped.payload, reg.mapped.official_sernr, False,
                             reg.mapped.amount, ("MATRIZ", DAY))
    out = exporter.deliver(client, parcel, policy, exporter.Breaker(5), run.ownership)
    assert (out.state, out.error) == (schema.PENDING, exporter.LOST_DAY)
    assert [e for e in sandbox.request_log() if e["method"] == "POST"] == []


def test_a_proof_gone_stale_before_the_write_is_renewed_and_the_invoice_sent(
        engine, settings, client, policy, sandbox):
    """The last check before the write reads memory only (a database round trip there
    would eat into the request's deadline). When the proof went stale on the way (here
    a slow login outlasts a 40 ms proof), nothing is written; the day is proved again
    and, still this run's, the invoice goes out once."""
    from sync.state import runs
    add_factura(engine, "MATRIZ", "A", "5", "1", 100)
    owner = schema.new_owner()
    run_id = runs.start_run(engine, target=settings.target, kind="audit",
                            days=[("MATRIZ", DAY)], username="a", reason=None, lease=30,
                            owner=owner)
    ownership = exporter.Ownership(engine, owner, 0.05, [("MATRIZ", DAY)], run_id=run_id)
    [reg] = binder.register(engine, settings.target, _request(engine).groups[("MATRIZ", DAY)],
                            settings.mapping, TODAY)
    parcel = exporter.Parcel(reg, reg.mapped.payload, reg.mapped.official_sernr, False,
                             reg.mapped.amount, ("MATRIZ", DAY))
    sandbox.set_faults(latency_ms=100)
    out = exporter.deliver(client, parcel, policy, exporter.Breaker(5), ownership)
    assert (out.state, out.error) == (schema.SENT, None)
    assert [e["outcome"] for e in sandbox.request_log()
            if e["method"] == "POST" and e["path"] == "Invoice"] == ["stored"]
    assert out.posts == 1

