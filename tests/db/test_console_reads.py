"""Reads the console makes on a chain's history in a cheaper way (benchmarks/bench_queries.py
times them): the preview's known states, read as one range of ids or in lists, and
reconciliation's read of a day, of the audited locals only. Real databases (SQLite, and
MariaDB when TEST_MYSQL_URL is set); no HTTP here."""

from __future__ import annotations

import datetime as dt

from helpers import DAY, TODAY, add_factura
from sync import actions, reconcile
from sync.mapping import SEED_PROFILE
from sync.state import binder, schema

TARGET = "sandbox/ApiNg"


def _register(engine, local: str) -> None:
    with schema.reading(engine) as conn:
        facturas = binder.read_facturas(conn, local, DAY)
    binder.register(engine, TARGET, facturas, SEED_PROFILE, TODAY)


def test_known_states_by_range_or_by_lists_give_the_same_rows(engine):
    # Interleaved as a chain sells: another local's registered rows lie inside the range.
    ids = {"MATRIZ": [], "PALERMO": []}
    for n in range(1, 7):
        for local in ids:
            ids[local].append(add_factura(engine, local, "A", "5", str(n), 10 * n))
    _register(engine, "MATRIZ")
    _register(engine, "PALERMO")
    with schema.reading(engine) as conn:
        dense = actions._known_states(conn, TARGET, ids["MATRIZ"][:4])
        # An id far away makes the range too sparse: read in lists instead.
        sparse = actions._known_states(conn, TARGET, ids["MATRIZ"][:4] + [10 ** 9])
        other_target = actions._known_states(conn, "otro/ApiNg", ids["MATRIZ"])
        nothing = actions._known_states(conn, TARGET, [])
    assert set(dense) == set(ids["MATRIZ"][:4])
    assert {k: tuple(v) for k, v in sparse.items()} == {k: tuple(v) for k, v in dense.items()}
    assert all(r.state == schema.PENDING for r in dense.values())
    assert other_target == {} and nothing == {}


def test_reconcile_reads_the_audited_locals_of_a_day_only(engine, settings):
    add_factura(engine, "MATRIZ", "A", "5", "1", 10)
    add_factura(engine, "Matriz ", "A", "5", "2", 20)   # as MariaDB's collation matches it
    add_factura(engine, "PALERMO", "A", "6", "1", 30)   # not audited: not ours to compare
    add_factura(engine, "MATRIZ", "A", "5", "3", 40, fecha=DAY + dt.timedelta(days=1))
    days = reconcile._read_ours(engine, settings, SEED_PROFILE, [("MATRIZ", DAY)], TODAY)
    assert [(d.local, d.fecha) for d in days] == [("MATRIZ", DAY)]
    assert sorted(r.reference for r in days[0].rows) == ["A 0005-00000001", "A 0005-00000002"]
    both = reconcile._read_ours(engine, settings, SEED_PROFILE,
                                [("MATRIZ", DAY), ("PALERMO", DAY)], TODAY)
    assert [len(d.rows) for d in both] == [2, 1]
