"""Believe only what Oppen proves: a 2xx that does not carry our invoice, lookups against
the real Oppen's ways (Labels with the company appended, one number for an A and a B,
annulled records), over real HTTP on SQLite and MariaDB."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
import sqlalchemy as sa

from helpers import DAY, TODAY, add_factura, close_day, states
from sync import actions
from sync.mapping import REAL_PROFILE
from sync.sandbox import Faults, OppenSandbox
from sync.settings import validate
from sync.state import schema


def audit(engine, settings, local, policy, **kw):
    return actions.mark_audited(engine, settings, local, DAY, "ana", policy=policy,
                                today=TODAY, **kw)


def stored(sandbox) -> list[str]:
    return sorted(inv["OfficialSerNr"] for inv in sandbox.invoices())


def test_an_empty_2xx_is_not_a_sent_invoice(engine, settings, sandbox, policy):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1691", 15000)
    sandbox.set_faults(empty_answer_rate=1.0)
    result = audit(engine, settings, "MATRIZ", policy)
    assert result["oppen_sync"]["exitosas"] == 0
    assert stored(sandbox) == []
    [(ref, state, sernr, attempts)] = states(engine, "MATRIZ")
    assert state != schema.SENT and sernr is None
    assert "no guardó la factura" in result["oppen_sync"]["errores"][0]["error"]
    # Oppen heals: the resend sends it, once.
    sandbox.set_faults(empty_answer_rate=0.0)
    again = actions.resend(engine, settings, user="beto", local="MATRIZ", fecha=DAY,
                           policy=policy, today=TODAY)
    assert again["exitosas"] == 1
    assert stored(sandbox) == ["0005-00001691"]
    assert states(engine, "MATRIZ")[0][1] == schema.SENT


def test_a_2xx_carrying_another_invoice_is_not_ours(engine, settings, sandbox, policy):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1", 100)
    assert audit(engine, settings, "MATRIZ", policy)["oppen_sync"]["exitosas"] == 1
    close_day(engine, "MATRIZ", dt.date(2025, 1, 6))
    add_factura(engine, "MATRIZ", "A", "5", "2", 200, fecha=dt.date(2025, 1, 6))
    sandbox.set_faults(foreign_answer_rate=1.0)
    result = actions.mark_audited(engine, settings, "MATRIZ", dt.date(2025, 1, 6), "ana",
                                  policy=policy, today=TODAY)
    assert result["oppen_sync"]["exitosas"] == 0, result
    assert stored(sandbox) == ["0005-00000001"]
    rows = states(engine, "MATRIZ", dt.date(2025, 1, 6))
    assert rows[0][1] != schema.SENT and rows[0][2] is None


def test_the_status_recorded_is_the_one_oppen_answered(engine, settings, sandbox, policy):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "7", 100)
    audit(engine, settings, "MATRIZ", policy)
    a = schema.oppen_attempts
    with engine.connect() as conn:
        post = conn.execute(sa.select(a.c.http_status, a.c.outcome)
                            .where(a.c.kind == "post")).one()
    assert post.outcome == "sent" and post.http_status in (200, 201)


@pytest.fixture
def real(db_url, password):
    """The sandbox as the real Oppen: Labels + ",PERSEO", voucher identity, 422s."""
    with OppenSandbox(password=password, faults=Faults(seed=3), profile="real",
                      today=TODAY) as box:
        yield box


@pytest.fixture
def real_settings(settings, real):
    profile = dataclasses.replace(REAL_PROFILE).with_labels({"Tostado": "TSTTR01"})
    return validate(dataclasses.replace(settings, base_url=real.url, mapping=profile))


def test_labels_with_the_company_appended_are_ours_after_a_timeout(
        engine, real_settings, real, policy):
    close_day(engine, "Tostado")
    add_factura(engine, "Tostado", "B", "2", "9439", "2029744.31")
    real.set_faults(timeout_rate=1.0, hang_seconds=3.0)   # stored, but no answer in time
    result = audit(engine, real_settings, "Tostado", policy)
    # The retry looks the invoice up first and finds it, Labels and all: sent, not a
    # false conflict, and never posted twice.
    assert result["oppen_sync"]["exitosas"] == 1, result
    assert [i["Labels"] for i in real.invoices()] == ["TSTTR01,PERSEO"]
    [(ref, state, sernr, attempts)] = states(engine, "Tostado")
    assert state == schema.SENT and sernr == real.invoices()[0]["SerNr"]
    a = schema.oppen_attempts
    with engine.connect() as conn:
        kinds = [tuple(r) for r in conn.execute(sa.select(a.c.kind, a.c.outcome).order_by(a.c.id))]
    assert kinds == [("post", "unknown"), ("lookup", "found")]
    assert sum(real.repeat_posts().values()) == 0


def test_an_a_and_a_b_with_one_number_are_two_invoices(engine, real_settings, real, policy):
    close_day(engine, "Tostado")
    add_factura(engine, "Tostado", "A", "2", "1691", 1000)
    add_factura(engine, "Tostado", "B", "2", "1691", 2000)
    result = audit(engine, real_settings, "Tostado", policy)
    assert result["oppen_sync"]["exitosas"] == 2, result
    assert sorted(i["VoucherCode"] for i in real.invoices()) == ["001", "006"]
    # After an unknown outcome, the lookup of B must not take A's record for it.
    real.annul(official_sernr="00002-00001691", voucher_code="006")
    t = schema.oppen_invoices
    with engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.tipo == "B").values(
            state=schema.PENDING, needs_lookup=True, sernr=None))
    again = actions.resend(engine, real_settings, user="beto", local="Tostado", fecha=DAY,
                           policy=policy, today=TODAY)
    # Oppen holds A (not ours) and an annulled B (not ours): B is not found, its POST is
    # refused as a duplicate (annulled numbers stay taken), and it is left for a person.
    assert again["exitosas"] == 0
    by_type = {r[0][0]: r[1] for r in states(engine, "Tostado")}
    assert by_type == {"A": schema.SENT, "B": schema.FAILED}


def test_an_annulled_record_is_never_taken_for_ours(engine, settings, sandbox, policy):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1691", 15000)
    audit(engine, settings, "MATRIZ", policy)
    sandbox.annul(official_sernr="0005-00001691")
    t = schema.oppen_invoices
    with engine.begin() as conn:
        conn.execute(sa.update(t).values(state=schema.PENDING, needs_lookup=True,
                                                sernr=None))
    again = actions.resend(engine, settings, user="beto", local="MATRIZ", fecha=DAY,
                           policy=policy, today=TODAY)
    assert again["exitosas"] == 0
    assert states(engine, "MATRIZ")[0][1] == schema.FAILED
