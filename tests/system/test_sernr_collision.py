"""A client SerNr that Oppen already holds under another number (a restored backup, two
databases with one base): shown as a conflict that says so, with one recorded way out."""

from __future__ import annotations

import sqlalchemy as sa

from helpers import DAY, TODAY, add_factura, close_day
from sync import actions
from sync.cli import main
from sync.state import binder, schema


def test_a_sernr_held_under_another_number_gets_a_new_one(engine, settings, sandbox, policy,
                                                          capsys, monkeypatch):
    close_day(engine, "MATRIZ")
    fid = add_factura(engine, "MATRIZ", "A", "5", "1691", 15000)
    # Our first row will be sent with SerNr base + 1: Oppen already holds that SerNr.
    taken = settings.mapping.sernr_base + 1
    sandbox.load_invoices([{"SerNr": taken, "OfficialSerNr": "0009-00000001",
                            "CustCode": "C00001", "TransDate": "2024-12-01",
                            "Labels": "Local|OTRO", "Total": 10}])
    result = actions.mark_audited(engine, settings, "MATRIZ", DAY, "ana", policy=policy,
                                  today=TODAY)
    assert result["oppen_sync"]["conflictos"] == 1, result
    error = result["oppen_sync"]["errores"][0]["error"]
    assert f"Oppen ya tiene el SerNr {taken} con otro número (0009-00000001)" in error
    t = schema.oppen_invoices
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.factura_id == fid)).one()
    assert (row.state, row.error_kind) == (schema.CONFLICT, schema.ERROR_SERNR_TAKEN)

    # Resending alone cannot help: it stays a conflict, nothing is posted.
    posts_before = len([e for e in sandbox.request_log() if e["method"] == "POST"])
    again = actions.resend(engine, settings, user="beto", local="MATRIZ", fecha=DAY,
                           policy=policy, today=TODAY)
    assert again["exitosas"] == 0
    assert len([e for e in sandbox.request_log() if e["method"] == "POST"]) == posts_before

    # The way out, from the CLI: one recorded action, then the resend sends it once.
    for key, value in {"DATABASE_URL": settings.database_url, "OPPEN_ENV": "sandbox",
                       "OPPEN_BASE_URL": settings.base_url, "OPPEN_USERNAME": "API",
                       "OPPEN_PASSWORD": settings.password,
                       "OPPEN_SECRETS_FILE": "/nonexistent/secrets.toml"}.items():
        monkeypatch.setenv(key, value)
    assert main(["new-sernr", str(row.id), "--reason", "respaldo restaurado",
                 "--user", "beto"]) == 0
    new = taken + binder.REASSIGN_STEP
    assert f"SerNr {taken} → {new}" in capsys.readouterr().out
    sent = actions.resend(engine, settings, user="beto", local="MATRIZ", fecha=DAY,
                          policy=policy, today=TODAY)
    assert sent["exitosas"] == 1, sent
    ours = [i for i in sandbox.invoices() if i["OfficialSerNr"] == "0005-00001691"]
    assert [i["SerNr"] for i in ours] == [new]
    a, r = schema.oppen_attempts, schema.oppen_runs
    with engine.connect() as conn:
        assert conn.execute(sa.select(r.c.kind, r.c.username, r.c.reason)
                            .where(r.c.kind == "sernr")).one() == ("sernr", "beto",
                                                                   "respaldo restaurado")
        assert conn.execute(sa.select(a.c.outcome).where(a.c.kind == "sernr")).scalar() == \
            "reassigned"
        assert conn.execute(sa.select(t.c.state, t.c.sernr, t.c.client_sernr)
                            .where(t.c.id == row.id)).one() == (schema.SENT, new, new)


def test_only_a_sernr_conflict_can_get_a_new_sernr(engine, settings, sandbox, policy):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", 100)
    actions.mark_audited(engine, settings, "MATRIZ", DAY, "ana", policy=policy, today=TODAY)
    t = schema.oppen_invoices
    with engine.connect() as conn:
        state_id = conn.execute(sa.select(t.c.id)).scalar()
    import pytest
    from sync.errors import SyncError
    with pytest.raises(SyncError, match="no tiene el SerNr ocupado"):
        actions.reassign_sernr(engine, settings, state_id, user="beto", reason="x")
    with pytest.raises(SyncError, match="motivo"):
        actions.reassign_sernr(engine, settings, state_id, user="beto", reason="  ")
