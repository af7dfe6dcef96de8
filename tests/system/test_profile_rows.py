"""What the profile sends, end to end over real HTTP: labels from the host's
labels_oppen table, locals excluded from the sync, types a profile leaves out."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from helpers import DAY, TODAY, add_factura, close_day
from sync import actions
from sync.mapping import REAL_PROFILE
from sync.settings import validate
from sync.state import schema


def _with_profile(settings, profile):
    return validate(dataclasses.replace(settings, mapping=profile))


def _rows(engine, local):
    t = schema.oppen_invoices
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(t.c.tipo, t.c.state, t.c.last_error, t.c.error_kind)
            .where(t.c.local == local).order_by(t.c.id))]


def test_labels_come_from_the_host_table_and_configuration_wins(engine, settings, sandbox,
                                                                 policy):
    schema.labels_oppen.create(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.labels_oppen), [
            {"local": "Tostado", "cod_oppen": "TSTTR01"},
            {"local": "Centro", "cod_oppen": "CNT-TABLA"}])
    profile = dataclasses.replace(REAL_PROFILE, labels_by_local={"Centro": "CNT-CONFIG"})
    real = _with_profile(settings, profile)
    for number, local in enumerate(("Tostado", "Centro"), start=1):
        close_day(engine, local)
        add_factura(engine, local, "B", str(number), "9439", 1000)
        result = actions.mark_audited(engine, real, local, DAY, "ana", policy=policy,
                                      today=TODAY)
        assert result["oppen_sync"]["exitosas"] == 1, result
    labels = sorted(inv["Labels"] for inv in sandbox.invoices())
    assert labels == ["CNT-CONFIG", "TSTTR01"]


def test_an_excluded_local_is_audited_and_never_sent(engine, settings, sandbox, policy):
    excluded = _with_profile(settings, dataclasses.replace(settings.mapping,
                                                           excluded_locals=("cg",)))
    close_day(engine, "CG")
    add_factura(engine, "CG", "A", "5", "1", 100)
    add_factura(engine, "CG", "B", "5", "2", 200)
    result = actions.mark_audited(engine, excluded, "CG", DAY, "ana", policy=policy,
                                  today=TODAY)
    assert result["success"] is True
    summary = result["oppen_sync"]
    assert (summary["total"], summary["fallidas"], summary["excluidas"]) == (0, 0, 2)
    assert "excluidas de la sincronización" in summary["message"]
    assert sandbox.invoices() == []
    assert {r[1:] for r in _rows(engine, "CG")} == {
        ("excluded", "Local excluido de la sincronización con Oppen (configuración)", None)}
    # Taken out of the exclusions, the same rows go out on the next resend.
    again = actions.resend(engine, settings, user="beto", local="CG", fecha=DAY,
                           policy=policy, today=TODAY)
    assert again["exitosas"] == 2
    assert len(sandbox.invoices()) == 2


def test_a_type_the_profile_does_not_send_is_excluded(engine, settings, sandbox, policy):
    profile = dataclasses.replace(REAL_PROFILE, labels_by_local={"Tostado": "TSTTR01"})
    real = _with_profile(settings, profile)
    close_day(engine, "Tostado")
    add_factura(engine, "Tostado", "A", "2", "1", 100)
    add_factura(engine, "Tostado", "CC", "3", "558080", 300)
    result = actions.mark_audited(engine, real, "Tostado", DAY, "ana", policy=policy,
                                  today=TODAY)
    assert (result["oppen_sync"]["exitosas"], result["oppen_sync"]["excluidas"]) == (1, 1)
    by_type = {r[0]: r[1] for r in _rows(engine, "Tostado")}
    assert by_type == {"A": "sent", "CC": "excluded"}
