"""The worker (issue 10) against the sandbox over real HTTP, on SQLite and MariaDB: the
stopped-instance day end to end, audits made in the host application, the automatic
retry schedule and its horizon, one probe per due time while Oppen is down, the queue
(claims, cancel, adoption of a dead process's run), SIGTERM, and many workers with one
SIGKILLed. Workers run as real processes (`python -m sync worker`) where signals or
several processes matter, otherwise in a thread of the test."""

from __future__ import annotations

import datetime as dt
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
import sqlalchemy as sa

from sync import actions, alerts, background
from sync.oppen.client import OppenClient
from sync.settings import User
from sync.state import queue, read_models, runs, schema, workers
from sync.worker import Worker, wait_until

from faults import (check_accounting, check_exactly_once, check_log, run_cli, seed_days,
                    start_cli)
from faults import cli_env as _cli_env
from helpers import DAY, add_factura, close_day, http_server

ANA = User("ana", "Ana Auditora", "auditor", "")
BETO = User("beto", "Beto Admin", "admin", "")
T = schema.oppen_invoices


def fast(settings, **changes):
    """Settings for a worker in a test: short polls, delays, leases."""
    # (The morning reconciliation, which the worker also runs, is off: its own tests.)
    values = dict(worker_poll=0.1, retry_delays=(1.0, 2.0), lease_seconds=3.0, timeout=2.0,
                  breaker_threshold=3, max_attempts=2, reconcile_at=None)
    values.update(changes)
    return settings.replace(**values)


def cli_env(settings, **extra):
    return _cli_env(settings, **{"OPPEN_RECONCILE_AT": "off", **extra})


def new_client(settings):
    return OppenClient(base_url=settings.base_url, api=settings.api, username=settings.username,
                       password=settings.password, timeout=settings.timeout)


def run_once(engine, settings):
    """`python -m sync worker --once`, in this process."""
    with new_client(settings) as client:
        return Worker(engine, settings, client, once=True).run()


class Background:
    """A worker in a thread of the test, stopped (as SIGTERM would) on exit."""

    def __init__(self, engine, settings):
        self.client = new_client(settings)
        self.worker = Worker(engine, settings, self.client)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.worker

    def __exit__(self, *exc):
        self.worker.stop()
        self.thread.join(timeout=20)
        self.client.close()
        assert not self.thread.is_alive(), "the worker did not stop"


def day_with(engine, local, n, *, fecha=DAY, pv="5", start=1691):
    close_day(engine, local, fecha)
    return [add_factura(engine, local, "A", pv, str(start + i), 100 + i, fecha=fecha)
            for i in range(n)]


def invoices(engine, local=None):
    query = sa.select(T.c.reference, T.c.state, T.c.next_attempt_at, T.c.retry_count,
                      T.c.first_attempt_at, T.c.attention_at, T.c.last_error).order_by(T.c.id)
    if local:
        query = query.where(T.c.local == local)
    with engine.connect() as conn:
        return [r._mapping for r in conn.execute(query)]


def run_rows(engine):
    r = schema.oppen_runs
    with engine.connect() as conn:
        return [r_._mapping for r_ in conn.execute(sa.select(r).order_by(r.c.id))]


def alert_rows(engine, kind=None):
    a = schema.oppen_alerts
    query = sa.select(a).order_by(a.c.id)
    if kind:
        query = query.where(a.c.kind == kind)
    with engine.connect() as conn:
        return [r._mapping for r in conn.execute(query)]


def api_requests(sandbox):
    return [e for e in sandbox.request_log() if e["path"] in ("authenticate", "Invoice")]


class Hook:
    """A real webhook on a free port that records what it is told."""

    def __init__(self):
        self.received: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                hook.received.append(json.loads(self.rfile.read(
                    int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = http_server(Handler)

    def __enter__(self):
        self.url = self._server.__enter__() + "/services/T000/SECRET"
        return self

    def __exit__(self, *exc):
        self._server.__exit__(*exc)

    def texts(self):
        return [r.get("text", "") for r in self.received]


# --- the stopped-instance day, end to end ---------------------------------------------------

def test_the_stopped_instance_day_end_to_end(engine, settings, sandbox):
    """The test instance is stopped when the auditor audits: the audit stands, its invoices
    wait with the reason, the auditor reads one plain sentence, the admin is told once;
    a worker process probes Oppen on the schedule; once someone starts the instance,
    every invoice reaches Oppen exactly once with no other command."""
    day_with(engine, "MATRIZ", 6)
    sandbox.stop_instance()
    with Hook() as hook:
        worker_settings = fast(settings, webhook_url=hook.url)
        env = cli_env(worker_settings, OPPEN_WORKER_POLL="0.1", OPPEN_RETRY_DELAYS="1,1",
                      OPPEN_LEASE_SECONDS="3", OPPEN_TIMEOUT="2", OPPEN_WEBHOOK_URL=hook.url,
                      OPPEN_BREAKER_THRESHOLD="3", OPPEN_MAX_ATTEMPTS="2")
        proc = start_cli(["worker"], env)
        try:
            started = background.start_audit(engine, worker_settings, user=ANA,
                                              local="MATRIZ", fecha=DAY)
            assert started.run_id is not None and not started.finished
            assert wait_until(lambda: background.result_of(engine, worker_settings,
                                                           started.run_id), 20)
            answer = background.result_of(engine, worker_settings, started.run_id)
            assert answer["msg"] == ("Local MATRIZ marcado como auditado para 2025-01-05\n⚠️ "
                                     "Oppen no responde; se reintenta automáticamente y el "
                                     "administrador fue avisado.")
            assert background.message_level(answer) == "warning"
            assert actions.is_audited(engine, "MATRIZ", DAY)
            waiting = invoices(engine)
            assert {r["state"] for r in waiting} == {"pending"}
            assert all(r["next_attempt_at"] and "502" in r["last_error"] for r in waiting)
            assert wait_until(lambda: any("no responde" in t for t in hook.texts()), 10)
            posted_while_down = sum(1 for e in sandbox.request_log()
                                    if e["method"] == "POST" and e["path"] == "Invoice")

            time.sleep(2.5)          # the worker probes meanwhile, and keeps waiting
            sandbox.start_instance()
            assert wait_until(lambda: {r["state"] for r in invoices(engine)} == {"sent"}, 20)
            assert wait_until(lambda: any("volvió a responder" in t for t in hook.texts()), 10)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    assert posted_while_down == 0      # the stopped instance refused the login already
    check_exactly_once(engine, settings.target, sandbox, expected=6)
    assert sandbox.repeat_posts() == {}
    check_log(sandbox.request_log())
    # Told once that Oppen stopped answering, once that it is back.
    assert sum("no responde" in t for t in hook.texts()) == 1
    assert sum("volvió a responder" in t for t in hook.texts()) == 1
    kinds = [r["kind"] for r in run_rows(engine)]
    assert kinds[0] == "audit" and set(kinds[1:]) == {"retry"}


# --- audits made in the host application ----------------------------------------------------

def test_a_day_audited_in_the_host_application_is_sent(engine, settings, sandbox):
    day_with(engine, "MATRIZ", 3)
    old = DAY - dt.timedelta(days=30)
    day_with(engine, "PALERMO", 2, fecha=old)
    with engine.begin() as conn:   # as the host's /api/marcar_auditado does
        conn.execute(sa.insert(schema.locales_auditados), [
            {"local": "MATRIZ", "fecha": DAY, "auditor": "host"},
            {"local": "PALERMO", "fecha": old, "auditor": "host"}])
    worker_settings = fast(settings, pickup_since=DAY)
    assert run_once(engine, worker_settings) == 0
    assert [r["state"] for r in invoices(engine, "MATRIZ")] == ["sent"] * 3
    # History before OPPEN_PICKUP_SINCE is never picked up.
    assert invoices(engine, "PALERMO") == []
    assert len(sandbox.invoices()) == 3
    [run] = run_rows(engine)
    assert (run["kind"], run["local"], run["state"], run["exitosas"]) == (
        "pickup", "MATRIZ", "done", 3)
    # Picked up once: a second pass finds nothing to do.
    assert run_once(engine, worker_settings) == 0
    assert len(run_rows(engine)) == 1 and sandbox.repeat_posts() == {}


def test_pickup_starts_by_default_on_the_day_our_tables_were_created(engine, settings, sandbox):
    created = workers.tables_created_on(engine)
    assert created == read_models.local_today()   # recorded by migration 0004
    day_with(engine, "MATRIZ", 1)                 # audited long before: history
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.locales_auditados).values(local="MATRIZ", fecha=DAY,
                                                                 auditor="host"))
    assert run_once(engine, fast(settings)) == 0
    assert invoices(engine) == [] and sandbox.invoices() == []
    # A day audited that has no invoices is synced once (its run says so), not forever.
    today = read_models.local_today()
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.locales_auditados).values(local="SUCURSAL", fecha=today,
                                                                 auditor="host"))
    run_once(engine, fast(settings))
    run_once(engine, fast(settings))
    assert [(r["kind"], r["local"], r["total"]) for r in run_rows(engine)] == [
        ("pickup", "SUCURSAL", 0)]


# --- the schedule, the horizon, probing ------------------------------------------------------

def test_transient_failures_follow_the_schedule_and_rejections_wait_for_a_person(
        engine, settings, sandbox):
    day_with(engine, "MATRIZ", 2)
    add_factura(engine, "MATRIZ", "A", "5", "7777", -5)   # invalid: never sent
    sandbox.set_faults(error_rate=1.0, seed=3)
    # Due times are on the database's clock, kept to the whole second: a delay of 1 s
    # can fall due a moment after it is written, so the first step here is 2 s.
    s = fast(settings, retry_delays=(2.0, 3.0, 4.0))
    result = actions.mark_audited(engine, s, "MATRIZ", DAY, "ana")
    assert result["oppen_sync"]["oppen_no_responde"] is True
    first = {r["reference"]: r for r in invoices(engine)}
    pending = [r for r in first.values() if r["state"] != "invalid"]
    assert pending and all(r["next_attempt_at"] is not None and r["first_attempt_at"]
                           for r in pending)
    [invalid] = [r for r in first.values() if r["state"] == "invalid"]
    assert invalid["next_attempt_at"] is None
    # Not due yet: a worker pass sends nothing and asks Oppen nothing.
    before = len(sandbox.request_log())
    run_once(engine, s)
    assert len(sandbox.request_log()) == before
    # Due (Oppen down: one probe); still failing, each invoice takes the next step.
    time.sleep(2.2)
    sandbox.set_faults(error_rate=0.0)
    run_once(engine, s)
    assert {r["state"] for r in invoices(engine) if r["reference"] in
            {p["reference"] for p in pending}} == {"sent"}
    assert all(r["next_attempt_at"] is None and r["retry_count"] == 0
               for r in invoices(engine) if r["state"] == "sent")


def test_a_rejection_is_never_retried_on_its_own(engine, settings, sandbox):
    day_with(engine, "PALERMO", 1)
    sandbox.add_invoice({"OfficialSerNr": "0005-00001691", "TransDate": "2025-01-04",
                         "Items": [{"ArtCode": "1", "Qty": 1, "Price": 1.0}]})
    actions.mark_audited(engine, fast(settings), "PALERMO", DAY, "ana")
    [row] = invoices(engine)
    assert (row["state"], row["next_attempt_at"]) == ("failed", None)
    time.sleep(1.1)
    before = len(sandbox.request_log())
    run_once(engine, fast(settings))
    assert len(sandbox.request_log()) == before


def test_the_horizon_marks_requiere_atencion_and_alerts_once(engine, settings, sandbox):
    day_with(engine, "MATRIZ", 2)
    sandbox.stop_instance()
    s = fast(settings, retry_delays=(1.0,), retry_horizon=2.0)
    actions.mark_audited(engine, s, "MATRIZ", DAY, "ana")
    assert all(r["attention_at"] is None for r in invoices(engine))
    time.sleep(2.2)
    run_once(engine, s)
    rows = invoices(engine)
    assert all(r["attention_at"] is not None and r["next_attempt_at"] is None for r in rows)
    [horizon] = alert_rows(engine, alerts.HORIZON)
    assert horizon["text"].startswith("🛑 2 factura(s) requieren atención: pasaron 2 s")
    run_once(engine, s)
    assert len(alert_rows(engine, alerts.HORIZON)) == 1      # once
    # They are no longer tried on their own, even once Oppen is back...
    sandbox.start_instance()
    time.sleep(1.1)
    run_once(engine, s)
    assert {r["state"] for r in invoices(engine)} == {"pending"}
    # ...but an admin's resend sends them, and the condition is resolved.
    actions.resend(engine, s, user="beto", local="MATRIZ", fecha=DAY, reason="volvió")
    assert {r["state"] for r in invoices(engine)} == {"sent"}
    run_once(engine, s)
    [horizon] = alert_rows(engine, alerts.HORIZON)
    assert horizon["resolved_at"] is not None
    assert horizon["resolved_text"].startswith("✅ Ya no hay facturas que requieran atención")


def test_while_down_oppen_is_probed_once_per_due_time(engine, settings, sandbox):
    """Ten invoices due while the instance is stopped: the worker asks Oppen once per due
    time (a login), not once per invoice and attempt; when it answers, all of them go."""
    day_with(engine, "MATRIZ", 10)
    sandbox.stop_instance()
    s = fast(settings, retry_delays=(1.0, 1.0))
    actions.mark_audited(engine, s, "MATRIZ", DAY, "ana")
    health = workers.health(engine, settings.target)
    assert health["down_since"] is not None and health["next_probe_at"] is not None
    base = len(api_requests(sandbox))
    with Background(engine, s):
        time.sleep(3.6)
        probes = api_requests(sandbox)[base:]
        # One login per due time (every second here), not 10 invoices × attempts.
        assert 2 <= len(probes) <= 5, probes
        assert {p["path"] for p in probes} == {"authenticate"}
        assert not any(p["method"] == "POST" and p["path"] == "Invoice" for p in probes)
        assert workers.health(engine, settings.target)["probe_failures"] >= 2
        sandbox.start_instance()
        assert wait_until(lambda: {r["state"] for r in invoices(engine)} == {"sent"}, 10)
    assert workers.health(engine, settings.target)["down_since"] is None
    check_exactly_once(engine, settings.target, sandbox, expected=10)
    assert sandbox.repeat_posts() == {}


# --- alerts ----------------------------------------------------------------------------------

def test_each_alert_once_and_when_it_is_resolved(engine, settings, sandbox):
    day_with(engine, "MATRIZ", 2)
    day_with(engine, "PALERMO", 1, pv="6")
    sandbox.stop_instance()
    with Hook() as hook:
        s = fast(settings, webhook_url=hook.url, alert_stale_after=1.0, retry_delays=(1.0,))
        for local in ("MATRIZ", "PALERMO"):       # two audits meet the stopped instance
            actions.mark_audited(engine, s, local, DAY, "ana")
        time.sleep(1.2)
        run_once(engine, s)
        run_once(engine, s)
        texts = hook.texts()
        assert sum("no responde: la sincronización de" in t for t in texts) == 1
        assert sum("esperan hace más de 1 s" in t for t in texts) == 1
        assert sum("no responde desde" in t for t in texts) == 1     # Oppen down too long
        assert all("SECRET" not in t for t in texts)
        sandbox.start_instance()
        time.sleep(1.1)
        run_once(engine, s)
        run_once(engine, s)
        texts = hook.texts()
        assert {r["state"] for r in invoices(engine)} == {"sent"}
        assert sum("volvió a responder" in t for t in texts) == 2   # both down conditions
        assert sum("Ya no hay facturas esperando" in t for t in texts) == 1
        assert len(texts) == 6
    assert all(r["notify_due"] is False for r in alert_rows(engine))


def test_no_worker_alive_while_work_waits_is_alerted_once_and_resolved(engine, settings):
    s = fast(settings)
    assert alerts.check_workers(engine, s) is False       # nothing waits: nothing to say
    assert alert_rows(engine, alerts.NO_WORKER) == []
    with engine.begin() as conn:
        queue.enqueue(conn, target=s.target, kind="resend", days=[("MATRIZ", DAY)])
    for _ in range(2):
        alerts.check_workers(engine, s)
    [alert] = alert_rows(engine, alerts.NO_WORKER)
    assert alert["text"].startswith("🛑 No hay ningún worker activo (SANDBOX): 1 "
                                    "sincronización(es) en cola; nunca hubo uno.")
    run_once(engine, s)       # a worker scans again
    [alert] = alert_rows(engine, alerts.NO_WORKER)
    assert alert["resolved_text"] == "✅ Hay un worker activo otra vez (SANDBOX)."


def test_json_webhook_format(engine, settings, sandbox):
    day_with(engine, "PALERMO", 1)
    add_factura(engine, "PALERMO", "A", "5", "9", -3)
    with Hook() as hook:
        s = fast(settings, webhook_url=hook.url, webhook_format="json")
        actions.mark_audited(engine, s, "PALERMO", DAY, "ana")
        [body] = hook.received
    assert body["alert"] == "run_failed" and body["state"] == "event"
    assert body["details"]["local"] == "PALERMO" and body["details"]["total_errores"] == 1
    assert body["text"].startswith("⚠️ Errores sincronizando PALERMO (2025-01-05):")


def test_the_webhook_never_holds_the_worker(engine, settings, sandbox):
    """A webhook that takes its whole 5 s to answer: the worker's runs do not wait for it."""
    class Slow(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(4)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    with http_server(Slow) as base:
        s = fast(settings, webhook_url=base + "/hook")
        for n, local in enumerate(("MATRIZ", "PALERMO", "BELGRANO")):
            day_with(engine, local, 1, pv=str(n + 1))
            add_factura(engine, local, "A", str(n + 1), "99", -1)   # fails: alerts
        with Background(engine, s):
            started = time.monotonic()
            for local in ("MATRIZ", "PALERMO", "BELGRANO"):
                background.start_audit(engine, s, user=ANA, local=local, fecha=DAY)
            assert wait_until(lambda: all(r["state"] == "done" for r in run_rows(engine))
                              and len(run_rows(engine)) == 3, 10)
            assert time.monotonic() - started < 3.5


# --- the queue ---------------------------------------------------------------------------------

def test_the_console_only_queues_and_a_worker_runs_it(engine, settings, sandbox):
    day_with(engine, "MATRIZ", 3)
    s = fast(settings)
    started = background.start_audit(engine, s, user=ANA, local="MATRIZ", fecha=DAY)
    progress = background.progress_of(engine, started.run_id)
    assert (progress["state"], progress["queued"]) == ("queued", True)
    assert background.result_of(engine, s, started.run_id) is None
    assert sandbox.invoices() == []
    run_once(engine, s)
    answer = background.result_of(engine, s, started.run_id)
    assert answer["msg"] == ("Local MATRIZ marcado como auditado para 2025-01-05\n"
                             "✅ 3 factura(s) enviada(s) a Oppen exitosamente")
    [run] = run_rows(engine)
    assert (run["id"], run["state"], run["username"], run["worker_id"] is not None) == (
        started.run_id, "done", "ana", True)


def test_a_person_s_run_goes_before_the_workers_own(engine, settings):
    with engine.begin() as conn:
        retry = queue.enqueue(conn, target=settings.target, kind="retry", days=[("A", DAY)])
        person = queue.enqueue(conn, target=settings.target, kind="resend", days=[("B", DAY)],
                               username="beto")
    assert queue.claim_next(engine, settings.target, "w1")["id"] == person
    assert queue.claim_next(engine, settings.target, "w2")["id"] == retry
    assert queue.claim_next(engine, settings.target, "w3") is None


def test_skip_locked_where_the_server_has_it(engine):
    with engine.connect() as conn:
        expected = engine.dialect.name == "mysql"   # MariaDB 10.6+ / MySQL 8
        assert queue.skip_locked(conn) is expected


def test_an_admin_cancels_a_queued_run(engine, settings, sandbox):
    day_with(engine, "MATRIZ", 2)
    s = fast(settings)
    started = background.start_audit(engine, s, user=ANA, local="MATRIZ", fecha=DAY)
    with pytest.raises(Exception, match="Administrador"):
        background.cancel_run(engine, s, user=ANA, run_id=started.run_id)
    assert background.cancel_run(engine, s, user=BETO, run_id=started.run_id) == (
        f"Sincronización {started.run_id} cancelada: no llegó a empezar.")
    run_once(engine, s)
    assert sandbox.invoices() == []
    answer = background.result_of(engine, s, started.run_id)
    assert "Sincronización cancelada (Cancelada por beto antes de empezar)" in answer["msg"]
    assert actions.is_audited(engine, "MATRIZ", DAY)
    # Cancelled is not forgotten: an admin resends when they want.
    actions.resend(engine, s, user="beto", local="MATRIZ", fecha=DAY, reason="ahora sí")
    assert len(sandbox.invoices()) == 2


def test_an_admin_cancels_a_running_run(engine, settings, sandbox):
    day_with(engine, "MATRIZ", 30)
    sandbox.set_faults(latency_ms=80)
    s = fast(settings, concurrency=1)
    with Background(engine, s):
        started = background.start_audit(engine, s, user=ANA, local="MATRIZ", fecha=DAY)
        assert wait_until(lambda: len(sandbox.invoices()) >= 3, 10)
        assert "Se pidió detener" in background.cancel_run(engine, s, user=BETO,
                                                           run_id=started.run_id)
        assert wait_until(lambda: background.result_of(engine, s, started.run_id), 10)
    answer = background.result_of(engine, s, started.run_id)
    assert "Sincronización cancelada (Cancelada por beto)" in answer["msg"]
    rows = invoices(engine)
    sent = [r for r in rows if r["state"] == "sent"]
    waiting = [r for r in rows if r["state"] != "sent"]
    assert 3 <= len(sent) < 30 and len(sent) == len(sandbox.invoices())
    # What was not sent stays pending with the reason, not retried on its own.
    assert {r["state"] for r in waiting} == {"pending"}
    assert all(r["last_error"] == "No se envió: Cancelada por beto" and
               r["next_attempt_at"] is None for r in waiting)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(
            schema.oppen_run_locks)).scalar() == 0


def test_a_run_whose_process_died_is_taken_over_in_its_own_row(engine, settings, sandbox):
    """A CLI run registered a day and claimed some invoices, then its process died: after
    the lease a worker runs it again, in the same row, and the claimed ones are looked up
    before anything is posted again."""
    ids = day_with(engine, "MATRIZ", 4)
    s = fast(settings, lease_seconds=1.0)
    from sync.exporter import RunRequest
    from sync.state import binder
    owner = schema.new_owner()
    with engine.connect() as conn:
        facturas = binder.read_facturas(conn, "MATRIZ", DAY)
    run_id = runs.start_run(engine, target=s.target, kind="audit", days=[("MATRIZ", DAY)],
                            username="ana", reason=None, lease=1.0, owner=owner,
                            local="MATRIZ", fecha=DAY,
                            request_json=queue.dump([("MATRIZ", DAY)]))
    registered = binder.register(engine, s.target, facturas, s.mapping, DAY)
    binder.claim(engine, [r.state_id for r in registered[:2]], owner, 1.0)
    # Its first POST did reach Oppen before the process died.
    from sync.mapping import map_invoice
    payload = binder.map_factura(facturas[0], s.mapping, DAY, registered[0].state_id).payload
    with new_client(s) as client:
        client.create_invoice(payload)
    time.sleep(2.2)
    run_once(engine, s)
    [run] = run_rows(engine)
    assert (run["id"], run["state"], run["message"]) == (run_id, "done", "")
    assert {r["state"] for r in invoices(engine)} == {"sent"}
    check_exactly_once(engine, s.target, sandbox, expected=len(ids))
    assert sandbox.repeat_posts() == {}


# --- signals and many workers ------------------------------------------------------------------

def test_sigterm_mid_run_exits_0_in_time_and_leaves_nothing_claimed(engine, settings, sandbox):
    seed_days(engine, ["MATRIZ"], days=1, per_day=40)
    sandbox.set_faults(latency_ms=400)
    env = cli_env(settings, OPPEN_TIMEOUT="2", OPPEN_WORKER_POLL="0.1", OPPEN_CONCURRENCY="2",
                  OPPEN_LEASE_SECONDS="3")
    with engine.begin() as conn:
        run_id = queue.enqueue(conn, target=settings.target, kind="resend",
                               days=[("MATRIZ", dt.date(2025, 3, 1))], username="beto")
    proc = start_cli(["worker"], env)
    assert wait_until(lambda: len(sandbox.invoices()) >= 4, 20)
    stopped = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    took = time.monotonic() - stopped
    assert proc.returncode == 0, err
    assert took < 2 + 3, took            # OPPEN_TIMEOUT + a few seconds
    assert "detenido" in out and "Traceback" not in err
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(T).where(
            T.c.state == "sending")).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(
            schema.oppen_run_locks)).scalar() == 0
        worker = conn.execute(sa.select(schema.oppen_workers)).one()._mapping
    assert worker["state"] == "stopped"
    [run] = run_rows(engine)
    assert (run["id"], run["state"]) == (run_id, "queued")   # back in the queue
    # The next worker finishes the job, exactly once.
    sandbox.set_faults(latency_ms=0)
    result = run_cli(["worker", "--once"], env)
    assert result.returncode == 0, result.stderr
    check_exactly_once(engine, settings.target, sandbox, expected=40)
    assert sandbox.repeat_posts() == {}
    assert run_rows(engine)[0]["state"] == "done"


@pytest.mark.slow   # 6 to 20 s: three processes, a kill, a lease to wait out
def test_three_workers_one_killed_everything_exactly_once(db_url, engine, settings, sandbox):
    """Three worker processes share nine local/days audited in the host application (each
    picked up as a run); one is SIGKILLed mid-way through a run: its run is taken over
    after the lease, and every invoice reaches Oppen exactly once."""
    if engine.dialect.name != "mysql":
        pytest.skip("many workers on one database: the MariaDB case (SQLite is one host)")
    total = seed_days(engine, ["MATRIZ", "PALERMO", "BELGRANO"], days=3, per_day=40)
    sandbox.set_faults(latency_ms=30)
    env = cli_env(settings, OPPEN_WORKER_POLL="0.1", OPPEN_LEASE_SECONDS="2",
                  OPPEN_TIMEOUT="2", OPPEN_CONCURRENCY="2", OPPEN_PICKUP_SINCE="2025-03-01")
    procs = [start_cli(["worker"], env) for _ in range(3)]
    try:
        assert wait_until(lambda: len(sandbox.invoices()) >= total // 4, 30)
        # The worker of a run going on right now, mid-way through it.
        w, r = schema.oppen_workers, schema.oppen_runs
        with engine.connect() as conn:
            busy = dict(conn.execute(sa.select(w.c.pid, w.c.id).join(
                r, r.c.worker_id == w.c.id).where(r.c.state == "running")).all())
        victim = next(p for p in procs if p.pid in busy)
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        with engine.connect() as conn:   # what it left half-done
            taken = set(conn.execute(sa.select(r.c.id).where(
                r.c.state == "running", r.c.worker_id == busy[victim.pid])).scalars())
        assert wait_until(lambda: len(sandbox.invoices()) == total
                          and not actions_unsent(engine), 60)
        # The survivors notice the silent worker too (its heartbeat outlives its run's).
        assert wait_until(lambda: any(w["state"] == "lost" for w in workers.listing(
            engine, settings.target, 2)), 10)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=20) for proc in procs]
    assert sorted(codes) == [-signal.SIGKILL, 0, 0]
    check_exactly_once(engine, settings.target, sandbox, expected=total)
    assert sandbox.repeat_posts() == {}
    check_log(sandbox.request_log())
    check_accounting(engine, settings.target)
    rows = run_rows(engine)
    assert {r["state"] for r in rows} == {"done"}
    assert len({r["worker_id"] for r in rows}) >= 2       # the work was shared
    # The killed worker was noticed (once) and its run finished by another.
    lost = [w for w in workers.listing(engine, settings.target, 2) if w["state"] == "lost"]
    assert [w["pid"] for w in lost] == [victim.pid]
    assert len(alert_rows(engine, alerts.WORKER_LOST)) == 1
    assert taken and all(r["worker_id"] != lost[0]["id"] for r in rows if r["id"] in taken)
    print(f"killed at {killed_at:.1f}; runs={len(rows)}")


def actions_unsent(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(T.c.id).where(T.c.state != "sent")).all()


# --- the console's worker ------------------------------------------------------------------------

def test_the_console_starts_one_worker_when_none_is_alive(engine, settings, sandbox,
                                                          monkeypatch):
    day_with(engine, "MATRIZ", 2)
    s = fast(settings)
    for key, value in cli_env(s, OPPEN_WORKER_POLL="0.1", OPPEN_LEASE_SECONDS="3").items():
        monkeypatch.setenv(key, value)
    try:
        state = background.ensure_worker(engine, s)
        assert state["started"] is True
        assert wait_until(lambda: workers.live(engine, s.target, 3), 15)
        [alive] = workers.live(engine, s.target, 3)
        assert alive["embedded"] is True
        started = background.start_audit(engine, s, user=ANA, local="MATRIZ", fecha=DAY)
        assert wait_until(lambda: background.result_of(engine, s, started.run_id), 15)
        assert len(sandbox.invoices()) == 2
        # An external worker appears: the console stops its own and only queues.
        workers.register(engine, worker_id="servicio", target=s.target, host="otro",
                         pid=1, embedded=False)
        time.sleep(background.CHECK_EVERY + 0.1)
        state = background.ensure_worker(engine, s)
        assert (state["external"], state["embedded"]) == (1, False)
    finally:
        background.stop_embedded_workers()
    rows = {w["id"]: w for w in workers.listing(engine, s.target, 3)}
    assert rows[alive["id"]]["state"] == "stopped"


# --- running it for real ---------------------------------------------------------------------

def test_the_systemd_unit_runs_the_worker_and_lets_it_stop_in_time():
    import configparser

    from helpers import ROOT
    from sync.settings import Settings
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "deploy" / "oppen-sync-worker.service", encoding="utf-8")
    service = unit["Service"]
    assert service["ExecStart"].endswith("/python -m sync worker")
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "always"
    # Longer than the default OPPEN_TIMEOUT plus the worker's own goodbye.
    assert int(service["TimeoutStopSec"]) >= Settings.timeout + 10
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_a_worker_on_a_database_that_needs_an_upgrade_says_so_in_one_line(tmp_path, settings):
    env = cli_env(settings.replace(database_url=f"sqlite:///{tmp_path / 'old.sqlite3'}"))
    engine = schema.make_engine(env["DATABASE_URL"])
    schema.init_db(engine, source_tables=True)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE oppen_alembic_version SET version_num = '0003'")
    engine.dispose()
    result = run_cli(["worker", "--once"], env)
    assert result.returncode == 2
    assert result.stderr.strip() == ("Error de configuración: La base de datos necesita "
                                     "actualizarse: ejecutá `python -m sync init-db`")


def test_audit_and_resend_can_be_queued_from_the_cli(engine, settings, sandbox):
    day_with(engine, "MATRIZ", 2)
    env = cli_env(settings)
    queued = run_cli(["audit", "MATRIZ", "2025-01-05", "--queue", "--user", "ana"], env)
    assert queued.returncode == 0, queued.stderr
    [run] = run_rows(engine)
    assert queued.stdout.strip() == (f"Local MATRIZ marcado como auditado para 2025-01-05: "
                                     f"sincronización {run['id']} en cola; la envía un worker "
                                     "(python -m sync worker)")
    assert (run["state"], run["username"]) == ("queued", "ana") and sandbox.invoices() == []
    again = run_cli(["resend", "MATRIZ", "2025-01-05", "--queue", "--json"], env)
    assert again.returncode == 0 and json.loads(again.stdout)["en_cola"] is True
    done = run_cli(["worker", "--once"], env)
    assert done.returncode == 0, done.stderr
    assert [r["state"] for r in run_rows(engine)] == ["done", "done"]
    assert len(sandbox.invoices()) == 2
