"""Runs asked for from the console: the console queues audits and resends in the
database and a worker runs them against the sandbox; their progress and answers are
read from the run's row; refusals come at once; roles are checked where the action
runs."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from sync import background
from sync.actions import mark_audited
from sync.auth import PermissionDenied
from sync.errors import SyncError
from sync.oppen.client import OppenClient
from sync.settings import User
from sync.state import read_models, runs, schema
from sync.worker import Worker, wait_until

from helpers import DAY, TODAY, add_factura, close_day

ANA = User("ana", "Ana Auditora", "auditor", "")
BETO = User("beto", "Beto Admin", "admin", "")
HEAD = "Local {} marcado como auditado para 2025-01-05"


def worker_settings(settings, **changes):
    return settings.replace(**{"worker_poll": 0.05, "lease_seconds": 3.0,
                               "reconcile_at": None, **changes})


def run_worker_once(engine, settings):
    with OppenClient(base_url=settings.base_url, api=settings.api,
                     username=settings.username, password=settings.password,
                     timeout=settings.timeout) as client:
        Worker(engine, settings, client, once=True).run()


def answer(engine, settings, started):
    """The answer of a run the console started, once a worker has run it."""
    if started.response is not None:
        return started.response
    run_worker_once(engine, settings)
    return background.result_of(engine, settings, started.run_id)


def matriz(engine, n=5):
    close_day(engine, "MATRIZ")
    for i in range(n):
        add_factura(engine, "MATRIZ", "A", "5", str(1691 + i), 100 + i)


def palermo_with_duplicate(engine, settings, client, policy, sandbox):
    close_day(engine, "PALERMO")
    dup = add_factura(engine, "PALERMO", "A", "5", "1691", 15000)
    add_factura(engine, "PALERMO", "B", "5", "1700", 300)
    sandbox.add_invoice({"OfficialSerNr": "0005-00001691", "TransDate": "2025-01-04",
                         "Items": [{"ArtCode": "1", "Qty": 1, "Price": 1.0}]})
    mark_audited(engine, settings, "PALERMO", DAY, "ana", client=client, policy=policy,
                 today=TODAY)
    return dup


def runs_count(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(schema.oppen_runs)).scalar()


def test_an_audit_is_queued_and_ends_with_the_seeds_message(engine, settings, sandbox):
    s = worker_settings(settings)
    matriz(engine)
    started = background.start_audit(engine, s, user=ANA, local="MATRIZ", fecha=DAY)
    assert started.run_id is not None and not started.finished
    # Committed with its run: audited now, sent when a worker runs it.
    assert read_models.run_row(engine, started.run_id)["state"] == "queued"
    assert sandbox.invoices() == []
    result = answer(engine, s, started)
    assert result["msg"] == HEAD.format("MATRIZ") + "\n✅ 5 factura(s) enviada(s) a Oppen exitosamente"
    assert result["oppen_sync"]["exitosas"] == 5
    assert background.message_level(result) == "success"
    row = read_models.run_row(engine, started.run_id)
    assert (row["state"], row["usuario"], row["kind"], row["procesadas"], row["total"]) == (
        "done", "ana", "audit", 5, 5)
    assert len(sandbox.invoices()) == 5


def test_progress_is_read_from_the_run_row_while_it_goes(engine, settings, client, sandbox):
    matriz(engine, n=12)
    sandbox.set_faults(latency_ms=60)
    slow = worker_settings(settings, concurrency=1)
    started = background.start_audit(engine, slow, user=ANA, local="MATRIZ", fecha=DAY)
    queued = background.progress_of(engine, started.run_id)
    assert (queued["state"], queued["queued"], queued["processed"]) == ("queued", True, 0)
    worker = Worker(engine, slow, client)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    seen = []
    try:
        deadline = time.monotonic() + 20
        while background.result_of(engine, slow, started.run_id) is None:
            assert time.monotonic() < deadline
            p = background.progress_of(engine, started.run_id)
            seen.append((p["state"], p["processed"], p["total"], p["current_ref"]))
            # What a reopened page finds for this local/day: the same run.
            live = read_models.running_run(engine, slow, "MATRIZ", DAY)
            assert live is None or live["id"] == started.run_id
            time.sleep(0.02)
    finally:
        worker.stop()
        thread.join(timeout=10)
    middle = [s for s in seen if s[0] == "running" and 0 < s[1] < s[2]]
    assert middle, f"no intermediate progress seen: {seen}"
    assert all(s[2] == 12 and s[3] and s[3].startswith("A 0005-") for s in middle)
    processed = [s[1] for s in seen]
    assert processed == sorted(processed)
    final = background.progress_of(engine, started.run_id)
    assert (final["state"], final["processed"], final["total"], final["fraction"]) == (
        "done", 12, 12, 1.0)


def test_a_refusal_answers_at_once_and_queues_nothing(engine, settings, sandbox):
    add_factura(engine, "ABIERTO", "A", "5", "1", 10)
    started = background.start_audit(engine, settings, user=ANA, local="ABIERTO", fecha=DAY)
    assert started.finished and started.run_id is None
    assert started.response == {
        "success": False,
        "msg": "El local ABIERTO no está cerrado para 2025-01-05: no se puede marcar como auditado"}
    assert background.message_level(started.response) == "error"
    assert runs_count(engine) == 0


def test_a_resend_waits_in_the_queue_while_another_run_holds_the_day(engine, settings, client,
                                                                     policy, sandbox):
    s = worker_settings(settings)
    palermo_with_duplicate(engine, s, client, policy, sandbox)
    owner = schema.new_owner()
    holder = runs.start_run(engine, target=s.target, kind="resend", days=[("PALERMO", DAY)],
                            username="otro", reason="x", lease=s.lease_seconds, owner=owner,
                            local="PALERMO", fecha=DAY)
    started = background.start_resend(engine, s, user=BETO, reason="Oppen volvió",
                                      local="PALERMO", fecha=DAY)
    assert started.run_id is not None
    run_worker_once(engine, s)
    assert read_models.run_row(engine, started.run_id)["state"] == "queued"
    runs.finish_run(engine, holder, owner, state="done", summary={"total": 0}, message="")
    result = answer(engine, s, started)
    assert result["msg"].startswith("⚠️ Algunas facturas no pudieron enviarse a Oppen: 1/1")


def test_resend_of_a_failed_invoice(engine, settings, client, policy, sandbox):
    s = worker_settings(settings)
    dup = palermo_with_duplicate(engine, s, client, policy, sandbox)
    [failed] = read_models.failed_invoices(engine, s)
    assert (failed["factura_id"], failed["intentos"]) == (dup, 1)

    started = background.start_resend(engine, s, user=BETO, reason="  probar otra vez  ",
                                      invoice_ids=[dup])
    result = answer(engine, s, started)
    assert result["msg"] == ("⚠️ Algunas facturas no pudieron enviarse a Oppen: 1/1\n"
                             "Primer error: Error HTTP 409: Duplicate invoice")
    assert background.message_level(result) == "warning"
    [again] = read_models.failed_invoices(engine, s)
    assert again["intentos"] == 2
    [run] = read_models.run_history(engine, s, kind="resend")
    assert (run["usuario"], run["motivo"], run["tipo"]) == ("beto", "probar otra vez", "Reenvío")

    # Oppen forgets its copy: the next resend of the local/day gets it through.
    sandbox.reset()
    started = background.start_resend(engine, s, user=BETO, reason="se borró en Oppen",
                                      local="PALERMO", fecha=DAY)
    result = answer(engine, s, started)
    assert result["msg"] == "✅ 1 factura(s) reenviada(s) a Oppen exitosamente"
    assert read_models.failed_invoices(engine, s) == []


def test_only_an_admin_resends_and_a_reason_is_required(engine, settings, client, policy,
                                                       sandbox):
    dup = palermo_with_duplicate(engine, settings, client, policy, sandbox)
    before = runs_count(engine)
    with pytest.raises(PermissionDenied) as refused:
        background.start_resend(engine, settings, user=ANA, reason="quiero", invoice_ids=[dup])
    assert "hace falta el rol Administrador" in refused.value.message
    with pytest.raises(PermissionDenied):
        background.start_resend(engine, settings, user=None, reason="x", invoice_ids=[dup])
    with pytest.raises(SyncError, match="Indicá un motivo"):
        background.start_resend(engine, settings, user=BETO, reason="   ", invoice_ids=[dup])
    with pytest.raises(SyncError, match="Elegí"):
        background.start_resend(engine, settings, user=BETO, reason="x")
    with pytest.raises(PermissionDenied):
        background.compare_duplicate(engine, settings, user=ANA, state_id=1, client=client)
    with pytest.raises(PermissionDenied):
        background.link_duplicate(engine, settings, user=ANA, state_id=1, reason="x", client=client)
    with pytest.raises(PermissionDenied):
        background.cancel_run(engine, settings, user=ANA, run_id=1)
    assert runs_count(engine) == before
    assert [r["intentos"] for r in read_models.failed_invoices(engine, settings)] == [1]


def test_a_resend_of_a_day_not_audited_is_refused_at_once(engine, settings, sandbox):
    matriz(engine)
    started = background.start_resend(engine, settings, user=BETO, reason="x",
                                      local="MATRIZ", fecha=DAY)
    assert started.finished and started.run_id is None
    assert started.response["msg"] == ("El local MATRIZ no está auditado para 2025-01-05; "
                                       "primero hay que marcarlo auditado")


def test_compare_and_link_a_duplicate(engine, settings, client, policy, sandbox):
    palermo_with_duplicate(engine, settings, client, policy, sandbox)
    [failed] = read_models.failed_invoices(engine, settings)
    comparison = background.compare_duplicate(engine, settings, user=BETO, state_id=failed["id"],
                                              client=client)
    assert comparison["remote"]["OfficialSerNr"] == "0005-00001691"
    assert comparison["differences"]   # Oppen's copy has other data
    result = background.link_duplicate(engine, settings, user=BETO, state_id=failed["id"],
                                       reason="es la misma", client=client)
    assert result["linked"] is False
    assert read_models.failed_invoices(engine, settings)[0]["estado"] == "failed"


def test_a_run_whose_process_died_is_still_going_until_a_worker_takes_it(engine, settings,
                                                                         sandbox):
    s = worker_settings(settings, lease_seconds=1.0)
    matriz(engine, n=2)
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.locales_auditados).values(local="MATRIZ", fecha=DAY,
                                                                 auditor="ana"))
    from sync.state import queue
    owner = schema.new_owner()
    run_id = runs.start_run(engine, target=s.target, kind="audit", days=[("MATRIZ", DAY)],
                            username="ana", reason=None, lease=1.0, owner=owner,
                            local="MATRIZ", fecha=DAY, request_json=queue.dump([("MATRIZ", DAY)]))
    # Its process is gone (no heartbeat): the page keeps showing it as going...
    assert background.result_of(engine, s, run_id) is None
    time.sleep(2.2)   # a whole lease (on the database's clock, whole seconds) goes by
    # ...and the next worker finishes it, in the same row.
    run_worker_once(engine, s)
    result = background.result_of(engine, s, run_id)
    assert result["msg"] == HEAD.format("MATRIZ") + "\n✅ 2 factura(s) enviada(s) a Oppen exitosamente"


def test_answers_rebuilt_from_rows():
    row = {"kind": "audit", "local": "MATRIZ", "fecha": DAY, "state": "error",
           "mensaje": "Error de autenticación: HTTP 401 - Unauthorized", "result_json": None}
    assert background.response_from_row(row, lease_seconds=30) == {
        "success": True,
        "msg": HEAD.format("MATRIZ")
               + "\n⚠️ Error sincronizando con Oppen: Error de autenticación: HTTP 401 - Unauthorized",
        "oppen_error": "Error de autenticación: HTTP 401 - Unauthorized"}
    row = {"kind": "audit", "local": "SUCURSAL", "fecha": DAY, "state": "done", "mensaje": "",
           "result_json": '{"total": 0, "exitosas": 0, "fallidas": 0, "errores": [], '
                          '"success": true, "message": "No hay facturas para sincronizar"}'}
    result = background.response_from_row(row, lease_seconds=30)
    assert result["msg"] == HEAD.format("SUCURSAL") + "\nℹ️ No había facturas para sincronizar con Oppen"
    assert background.message_level(result) == "info"
    # Oppen did not answer: the auditor's one plain sentence.
    row = {"kind": "audit", "local": "MATRIZ", "fecha": DAY, "state": "done", "mensaje": "",
           "result_json": '{"total": 5, "exitosas": 2, "fallidas": 3, "errores": [], '
                          '"success": false, "oppen_no_responde": true}'}
    result = background.response_from_row(row)
    assert result["msg"] == (HEAD.format("MATRIZ") + "\n⚠️ 3 de 5 factura(s) quedaron "
                             "pendientes. Oppen no responde; se reintenta automáticamente y "
                             "el administrador fue avisado.")
    assert background.message_level(result) == "warning"
    for state in ("queued", "running"):
        assert background.response_from_row({"state": state, "kind": "audit"}) is None
