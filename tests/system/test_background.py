"""Runs that outlive the page: background audits and resends against the sandbox, their
progress read from the database, their answers, refusals and role checks."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa

from sync import background

from sync.state import binder, read_models, runs, schema
from sync.actions import mark_audited
from sync.auth import PermissionDenied
from sync.settings import User
from sync.errors import SyncError

from helpers import DAY, TODAY, add_factura, close_day

ANA = User("ana", "Ana Auditora", "auditor", "")
BETO = User("beto", "Beto Admin", "admin", "")
HEAD = "Local {} marcado como auditado para 2025-01-05"


def wait_result(engine, settings, run_id, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = background.result_of(engine, settings, run_id)
        if result is not None:
            return result
        time.sleep(0.02)
    raise AssertionError(f"the run {run_id} did not end in {timeout} s")


def answer(engine, settings, started):
    return started.response or wait_result(engine, settings, started.run_id)


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


def test_audit_runs_in_the_background_and_ends_with_the_seeds_message(engine, settings,
                                                                      client, sandbox):
    matriz(engine)
    started = background.start_audit(engine, settings, user=ANA, local="MATRIZ", fecha=DAY,
                               client=client)
    assert started.run_id is not None
    result = answer(engine, settings, started)
    assert result["msg"] == HEAD.format("MATRIZ") + "\n✅ 5 factura(s) enviada(s) a Oppen exitosamente"
    assert result["oppen_sync"]["exitosas"] == 5
    assert background.message_level(result) == "success"
    row = read_models.run_row(engine, started.run_id)
    assert (row["state"], row["usuario"], row["kind"], row["procesadas"], row["total"]) == (
        "done", "ana", "audit", 5, 5)
    assert len(sandbox.invoices()) == 5
    # A fresh server process (nothing in memory) rebuilds the same answer from the row.
    background.forget_results()
    assert background.result_of(engine, settings, started.run_id)["msg"] == result["msg"]


def test_progress_is_read_from_the_run_row_while_it_goes(engine, settings, client, sandbox):
    matriz(engine, n=12)
    sandbox.set_faults(latency_ms=60)
    slow = settings.replace(concurrency=1)
    started = background.start_audit(engine, slow, user=ANA, local="MATRIZ", fecha=DAY,
                               client=client)
    assert not started.finished and started.run_id is not None
    seen = []
    while background.result_of(engine, slow, started.run_id) is None:
        p = background.progress_of(engine, started.run_id)
        seen.append((p["state"], p["processed"], p["total"], p["current_ref"]))
        # What a reopened page finds for this local/day: the same run.
        live = read_models.running_run(engine, slow, "MATRIZ", DAY)
        assert live is None or live["id"] == started.run_id
        time.sleep(0.02)
    middle = [s for s in seen if s[0] == "running" and 0 < s[1] < s[2]]
    assert middle, f"no intermediate progress seen: {seen}"
    assert all(s[2] == 12 and s[3] and s[3].startswith("A 0005-") for s in middle)
    processed = [s[1] for s in seen]
    assert processed == sorted(processed)
    final = background.progress_of(engine, started.run_id)
    assert (final["state"], final["processed"], final["total"], final["fraction"]) == (
        "done", 12, 12, 1.0)


def test_a_refusal_answers_at_once_and_starts_no_run(engine, settings, client, sandbox):
    add_factura(engine, "ABIERTO", "A", "5", "1", 10)
    started = background.start_audit(engine, settings, user=ANA, local="ABIERTO", fecha=DAY,
                               client=client)
    assert started.finished and started.run_id is None
    assert started.response == {
        "success": False,
        "msg": "El local ABIERTO no está cerrado para 2025-01-05: no se puede marcar como auditado"}
    assert background.message_level(started.response) == "error"
    assert runs_count(engine) == 0


def test_a_second_run_for_the_same_day_is_refused(engine, settings, client, policy, sandbox):
    palermo_with_duplicate(engine, settings, client, policy, sandbox)
    owner = schema.new_owner()
    holder = runs.start_run(engine, target=settings.target, kind="resend",
                             days=[("PALERMO", DAY)], username="otro", reason="x",
                             lease=settings.lease_seconds, owner=owner, local="PALERMO",
                             fecha=DAY)
    try:
        started = background.start_resend(engine, settings, user=BETO, reason="Oppen volvió",
                                    local="PALERMO", fecha=DAY, client=client)
    finally:
        runs.finish_run(engine, holder, owner, state="done", summary={"total": 0}, message="")
    assert started.finished and started.run_id is None
    assert started.response["success"] is False
    assert started.response["msg"].startswith("Ya hay una sincronización en curso para PALERMO "
                                              "2025-01-05")


def test_resend_of_a_failed_invoice(engine, settings, client, policy, sandbox):
    dup = palermo_with_duplicate(engine, settings, client, policy, sandbox)
    [failed] = read_models.failed_invoices(engine, settings)
    assert (failed["factura_id"], failed["intentos"]) == (dup, 1)

    started = background.start_resend(engine, settings, user=BETO, reason="  probar otra vez  ",
                                invoice_ids=[dup], client=client)
    result = answer(engine, settings, started)
    assert result["msg"] == ("⚠️ Algunas facturas no pudieron enviarse a Oppen: 1/1\n"
                             "Primer error: Error HTTP 409: Duplicate invoice")
    assert background.message_level(result) == "warning"
    [again] = read_models.failed_invoices(engine, settings)
    assert again["intentos"] == 2
    [run] = read_models.run_history(engine, settings, kind="resend")
    assert (run["usuario"], run["motivo"], run["tipo"]) == ("beto", "probar otra vez", "Reenvío")

    # Oppen forgets its copy: the next resend of the local/day gets it through.
    sandbox.reset()
    started = background.start_resend(engine, settings, user=BETO, reason="se borró en Oppen",
                                local="PALERMO", fecha=DAY, client=client)
    result = answer(engine, settings, started)
    assert result["msg"] == "✅ 1 factura(s) reenviada(s) a Oppen exitosamente"
    assert read_models.failed_invoices(engine, settings) == []


def test_only_an_admin_resends_and_a_reason_is_required(engine, settings, client, policy,
                                                       sandbox):
    dup = palermo_with_duplicate(engine, settings, client, policy, sandbox)
    before = runs_count(engine)
    with pytest.raises(PermissionDenied) as refused:
        background.start_resend(engine, settings, user=ANA, reason="quiero", invoice_ids=[dup],
                          client=client)
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
    assert runs_count(engine) == before
    assert [r["intentos"] for r in read_models.failed_invoices(engine, settings)] == [1]


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


def test_a_run_whose_process_died_reads_as_interrupted(engine, settings):
    owner = schema.new_owner()
    run_id = runs.start_run(engine, target=settings.target, kind="audit",
                             days=[("MATRIZ", DAY)], username="ana", reason=None,
                             lease=settings.lease_seconds, owner=owner, local="MATRIZ",
                             fecha=DAY)
    assert background.result_of(engine, settings, run_id) is None
    old = schema.utcnow() - dt.timedelta(seconds=settings.lease_seconds + 5)
    with engine.begin() as conn:
        conn.execute(sa.update(schema.oppen_runs).where(schema.oppen_runs.c.id == run_id)
                     .values(heartbeat_at=old))
    result = background.result_of(engine, settings, run_id)
    assert result["success"] is False and "se interrumpió" in result["msg"]


def test_an_unexpected_error_in_the_thread_still_answers(engine, settings, client,
                                                         monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("bug")
    monkeypatch.setattr(background.actions, "mark_audited", broken)
    started = background.start_audit(engine, settings, user=ANA, local="MATRIZ", fecha=DAY,
                               client=client)
    assert started.finished
    assert started.response == {"success": False, "msg": background.UNEXPECTED}
    assert "RuntimeError" in caplog.text


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
