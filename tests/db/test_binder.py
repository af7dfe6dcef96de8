"""The binder: which invoice is which Oppen record, in what state, and who holds it.
Real databases (SQLite, and MariaDB when TEST_MYSQL_URL is set); no HTTP here."""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from helpers import DAY, TODAY, add_factura
from sync.mapping import SEED_PROFILE, Mapped
from sync.state import binder, schema
from sync.state.binder import Attempt, Outcome

TARGET = "sandbox/ApiNg"


def _facturas(engine):
    with schema.reading(engine) as conn:
        return binder.read_facturas(conn, "MATRIZ", DAY)


def _row(engine, state_id):
    t = schema.oppen_invoices
    with engine.connect() as conn:
        return conn.execute(sa.select(t).where(t.c.id == state_id)).one()._mapping


def test_register_makes_one_row_per_invoice_and_target_and_maps_it_once(engine):
    add_factura(engine, "MATRIZ", "A", "5", "1691", 15000)
    add_factura(engine, "MATRIZ", "A", "", "1692", 10)          # no point of sale
    first = binder.register(engine, TARGET, _facturas(engine), SEED_PROFILE, TODAY)
    by_ref = {r.reference: r for r in first}
    good = by_ref["A 0005-00001691"]
    assert good.state == schema.PENDING and isinstance(good.mapped, Mapped)
    # A new row's mapping already carries the SerNr its id gives it.
    assert good.mapped.payload["SerNr"] == SEED_PROFILE.sernr_base + good.state_id
    bad = [r for r in first if r.state == schema.INVALID][0]
    assert bad.last_error.startswith("Datos inválidos") and "punto_venta" in bad.last_error
    assert _row(engine, bad.state_id)["error_kind"] == schema.ERROR_INVALID
    # Registering again adds nothing; another target gets rows of its own.
    again = binder.register(engine, TARGET, _facturas(engine), SEED_PROFILE, TODAY)
    assert sorted(r.state_id for r in again) == sorted(r.state_id for r in first)
    other = binder.register(engine, "production/ApiNg", _facturas(engine), SEED_PROFILE, TODAY)
    assert not {r.state_id for r in other} & {r.state_id for r in first}


def test_a_fixed_row_goes_back_to_pending_and_an_excluded_local_to_excluded(engine):
    fid = add_factura(engine, "MATRIZ", "A", "", "1", 10)
    [reg] = binder.register(engine, TARGET, _facturas(engine), SEED_PROFILE, TODAY)
    assert reg.state == schema.INVALID
    with engine.begin() as conn:
        conn.execute(sa.update(schema.facturas_trns).where(schema.facturas_trns.c.id == fid)
                     .values(punto_venta="5"))
    [reg] = binder.register(engine, TARGET, _facturas(engine), SEED_PROFILE, TODAY)
    assert (reg.state, reg.last_error) == (schema.PENDING, None)
    assert _row(engine, reg.state_id)["error_kind"] is None
    excluded = dataclasses.replace(SEED_PROFILE, excluded_locals=("matriz",))
    [reg] = binder.register(engine, TARGET, _facturas(engine), excluded, TODAY)
    assert reg.state == schema.EXCLUDED
    assert _row(engine, reg.state_id)["state"] == schema.EXCLUDED


def test_a_number_changed_after_a_possible_post_is_a_conflict(engine):
    fid = add_factura(engine, "MATRIZ", "A", "5", "1", 10)
    [reg] = binder.register(engine, TARGET, _facturas(engine), SEED_PROFILE, TODAY)
    owner = schema.new_owner()
    assert binder.claim(engine, [reg.state_id], owner, 30) == {reg.state_id: False}
    binder.record(engine, owner, None, [Outcome(reg.state_id, reg.reference, schema.FAILED,
                                                True, error="Error de conexión", posts=1,
                                                error_kind=schema.ERROR_TRANSPORT)])
    with engine.begin() as conn:
        conn.execute(sa.update(schema.facturas_trns).where(schema.facturas_trns.c.id == fid)
                     .values(nro_factura="2"))
    [reg] = binder.register(engine, TARGET, _facturas(engine), SEED_PROFILE, TODAY)
    assert reg.state == schema.CONFLICT
    assert "0005-00000001" in reg.last_error
    assert _row(engine, reg.state_id)["error_kind"] == schema.ERROR_CONFLICT


def test_claims_are_exclusive_and_an_expired_one_is_taken_over_for_a_lookup(engine):
    add_factura(engine, "MATRIZ", "A", "5", "1", 10)
    [reg] = binder.register(engine, TARGET, _facturas(engine), SEED_PROFILE, TODAY)
    a, b = schema.new_owner(), schema.new_owner()
    assert binder.claim(engine, [reg.state_id], a, 30) == {reg.state_id: False}
    assert binder.claim(engine, [reg.state_id], b, 30) == {}        # held by a
    with engine.begin() as conn:                                       # a's lease lapses
        conn.execute(sa.update(schema.oppen_invoices).values(
            claim_until=dt.datetime(2000, 1, 1)))
    # b takes it over and must look it up first: a's POST may have reached Oppen.
    assert binder.claim(engine, [reg.state_id], b, 30) == {reg.state_id: True}
    # a's late outcome is ignored: the invoice is b's now.
    binder.record(engine, a, None, [Outcome(reg.state_id, reg.reference, schema.SENT, False,
                                            sernr=5)])
    assert _row(engine, reg.state_id)["state"] == schema.SENDING
    binder.record(engine, b, None, [Outcome(
        reg.state_id, reg.reference, schema.SENT, False, sernr=77, posts=1,
        total_oppen=10, attempts=[Attempt("post", "sent", schema.utcnow(), 3, 201)])])
    row = _row(engine, reg.state_id)
    assert (row["state"], row["sernr"], row["attempts"], row["claim_owner"]) == (
        schema.SENT, 77, 1, None)
    assert row["total_oppen"] == 10 and row["sent_at"] is not None


def test_a_batch_past_one_statement_writes_each_outcome_to_its_own_row_only(engine):
    """300 outcomes (one full statement of 256 and one padded one), each different, and one
    invoice another run holds: every row gets exactly its own outcome."""
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.facturas_trns), [
            {"local": "MATRIZ", "fecha": dt.datetime.combine(DAY, dt.time(10)), "tipo": "A",
             "punto_venta": "5", "nro_factura": str(n), "monto": n, "estado": "ok"}
            for n in range(1, 302)])
    regs = binder.register(engine, TARGET, _facturas(engine), SEED_PROFILE, TODAY)
    ours, theirs = schema.new_owner(), schema.new_owner()
    *mine, other = [r.state_id for r in regs]
    assert len(binder.claim(engine, mine, ours, 60)) == 300
    binder.claim(engine, [other], theirs, 60)
    states = (schema.SENT, schema.FAILED, schema.PENDING, schema.CONFLICT)
    outcomes = [Outcome(sid, f"ref {sid}", states[n % 4], n % 3 == 0,
                        sernr=10_000 + n if n % 4 == 0 else None,
                        error=None if n % 4 == 0 else f"error {n} ñ",
                        error_kind=None if n % 4 == 0 else schema.ERROR_REJECTED,
                        http_status=200 + n, posts=n % 2, total_oppen=n + 0.5 if n % 4 == 0 else None,
                        request_body=f"req {n}", response_body=f"resp {n}")
                for n, sid in enumerate(mine)]
    binder.record(engine, ours, None, outcomes + [Outcome(other, "x", schema.SENT, False, sernr=1)])
    t = schema.oppen_invoices
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(t))}
    for n, sid in enumerate(mine):
        row = rows[sid]
        assert (row.state, bool(row.needs_lookup), row.last_http_status, row.attempts,
                row.request_body, row.response_body, row.claim_owner) == (
            states[n % 4], n % 3 == 0, 200 + n, n % 2, f"req {n}", f"resp {n}", None), n
        if n % 4 == 0:
            assert (row.sernr, float(row.total_oppen), row.last_error) == (10_000 + n, n + 0.5,
                                                                          None)
            assert row.sent_at is not None and row.next_attempt_at is None
        else:
            assert (row.sernr, row.last_error, row.error_kind) == (
                None, f"error {n} ñ", schema.ERROR_REJECTED)
            assert row.sent_at is None
    assert (rows[other].state, rows[other].claim_owner) == (schema.SENDING, theirs)


def test_mark_pending_says_why_and_release_hands_claims_back_for_a_lookup(engine):
    add_factura(engine, "MATRIZ", "A", "5", "1", 10)
    add_factura(engine, "MATRIZ", "A", "5", "2", 20)
    regs = binder.register(engine, TARGET, _facturas(engine), SEED_PROFILE, TODAY)
    binder.mark_pending(engine, [regs[0].state_id], "No se envió: Oppen no responde",
                        schema.ERROR_TRANSPORT)
    first = _row(engine, regs[0].state_id)
    assert (first["last_error"], first["error_kind"]) == ("No se envió: Oppen no responde",
                                                          schema.ERROR_TRANSPORT)
    owner = schema.new_owner()
    binder.claim(engine, [regs[1].state_id], owner, 30)
    with engine.begin() as conn:
        assert binder.release_claims(conn, owner, "interrumpida") == 1
    second = _row(engine, regs[1].state_id)
    assert (second["state"], second["needs_lookup"], second["claim_owner"]) == (
        schema.PENDING, True, None)


def test_a_reassigned_sernr_replaces_base_plus_id():
    assert binder.sernr_for(SEED_PROFILE, 7) == SEED_PROFILE.sernr_base + 7
    assert binder.sernr_for(SEED_PROFILE, 7, 123) == 123
    server = dataclasses.replace(SEED_PROFILE, sernr_mode="server")
    assert binder.sernr_for(server, 7) is None


def test_run_profile_reads_labels_only_when_the_host_has_the_table(engine):
    assert binder.run_profile(engine, SEED_PROFILE) is SEED_PROFILE
    schema.labels_oppen.create(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.labels_oppen), [{"local": "MATRIZ", "cod_oppen": "MTZ"}])
    profile = binder.run_profile(engine, SEED_PROFILE)
    assert profile.labels_for("matriz ") == ("MTZ",)


def test_the_waiting_list_puts_what_needs_a_person_first_then_by_due_time(engine):
    """Monitoreo's list of invoices expected to reach Oppen on their own: those that ran
    out of automatic tries first (the longest waiting first), then the rest by when they
    are due; sent invoices and failures that wait for a person (no due time) are not in
    it; `limit` holds."""
    from sync.state import queue
    for n in range(1, 8):
        add_factura(engine, "MATRIZ", "A", "5", str(n), 10)
    regs = binder.register(engine, TARGET, _facturas(engine), SEED_PROFILE, TODAY)
    ids = [r.state_id for r in sorted(regs, key=lambda r: r.reference)]
    t0 = dt.datetime(2026, 11, 25, 12, 0)
    rows = {   # id: (state, next_attempt_at, attention_at)
        ids[0]: (schema.PENDING, t0 + dt.timedelta(minutes=30), None),
        ids[1]: (schema.FAILED, None, t0),                       # requires attention
        ids[2]: (schema.PENDING, t0 + dt.timedelta(minutes=5), None),
        ids[3]: (schema.SENT, None, None),
        ids[4]: (schema.FAILED, None, None),                     # waits for a person
        ids[5]: (schema.PENDING, t0 + dt.timedelta(minutes=5), None),
        ids[6]: (schema.PENDING, None, t0 - dt.timedelta(hours=1)),  # attention, earlier
    }
    t = schema.oppen_invoices
    with engine.begin() as conn:
        for sid, (state, due, attention) in rows.items():
            conn.execute(sa.update(t).where(t.c.id == sid).values(
                state=state, next_attempt_at=due, attention_at=attention))
    assert [r["id"] for r in queue.waiting(engine, TARGET)] == [ids[6], ids[1], ids[2], ids[5],
                                                               ids[0]]
    assert [r["id"] for r in queue.waiting(engine, TARGET, limit=2)] == [ids[6], ids[1]]
    assert [r["id"] for r in queue.waiting(engine, TARGET, limit=3)] == [ids[6], ids[1], ids[2]]
    assert queue.waiting(engine, "otro/destino") == []
