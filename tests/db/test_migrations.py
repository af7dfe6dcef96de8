"""Schema migrations on real databases: a database as the previous main made it (full of
rows) is adopted and upgraded without losing or changing one value; a new one is built
to the same schema; both match what schema.py declares, as Alembic's autogenerate sees
it; init_db twice changes nothing."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from fixtures import schema_before_migrations as before
from helpers import drop_mysql_database, mysql_database
from sync.errors import ConfigError
from sync.messages import ERROR_KIND_LABELS
from sync.state import migrate, schema

HOST = [t.name for t in schema.SOURCE_TABLES]
OURS = [t.name for t in schema.OWN_TABLES]
LEGACY = [t.name for t in before.OWN_TABLES]       # ours, as the previous main had them
# Their columns, under today's names (0002 renamed oppen_attempts.invoice_id).
OLD_COLUMNS = {t.name: {"oppen_invoice_id" if c.name == "invoice_id" else c.name
                        for c in t.columns} for t in before.OWN_TABLES}
# Every revision, oldest first (later revisions may add tables: these tests hold).
REVISIONS = [s.revision for s in reversed(list(
    ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()))]
BIG = 2**31 + 7              # past a 32-bit INT: must stay BIGINT through every ALTER
HUGE = 2**53 + 1             # past a double's exact integers
LONG = ("Ñandú ⚠️ 🧾 " * 2000)[:20000] + "…"   # clip()'s longest, non-ASCII, 4-byte chars
T0 = dt.datetime(2025, 1, 6, 3, 4, 5)
DAY = dt.date(2025, 1, 5)


@pytest.fixture
def new_url(request, tmp_path):
    """Makes more empty databases on the test's backend (SQLite files or MariaDB)."""
    made = []

    def make() -> str:
        if "sqlite" in request.node.callspec.params.get("db_url", "sqlite"):
            return f"sqlite:///{tmp_path / f'{uuid.uuid4().hex[:8]}.sqlite3'}"
        name = f"sync_test_{uuid.uuid4().hex[:12]}"
        url, base = mysql_database(name)
        made.append((base, name))
        return url.render_as_string(hide_password=False)

    yield make
    for base, name in made:
        drop_mysql_database(base, name)


@pytest.fixture
def engines():
    made = []

    def make(url: str) -> sa.engine.Engine:
        made.append(schema.make_engine(url))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


# --- the previous main's database, filled --------------------------------------------

# Each oppen_invoices row: (id, state, last_error, last_http_status) -> expected kind.
INVOICES = [
    (1, "sent", None, None, None),
    (2, "failed", "Error HTTP 409: Duplicate invoice", 409, "duplicate"),
    (3, "failed", "Error HTTP 400: DUPLICATE OfficialSerNr 0005-00001691", 400, "duplicate"),
    (4, "failed", "Error HTTP 400: El cliente C00001 no existe", 400, "rejected"),
    (5, "failed", "No se pudo verificar en Oppen: la consulta por OfficialSerNr no filtra y "
                  "hay demasiadas facturas", None, "rejected"),
    (6, "pending", "No se envió: Error de autenticación: HTTP 401 - Unauthorized", 401, "auth"),
    (7, "failed", "No se pudo verificar en Oppen: Error de autenticación: HTTP 403 - No",
     403, "auth"),
    (8, "failed", "Error de conexión: Connection timeout", None, "transport"),
    (9, "failed", "Error HTTP 502: Oppen respondió una página HTML (servicio detenido o no "
                  "disponible)", 502, "transport"),
    (10, "failed", "Error HTTP 429: Too many requests", 429, "transport"),
    (11, "failed", "Error HTTP 201: respuesta ilegible de Oppen", 201, "transport"),
    (12, "pending", "No se envió: Oppen no responde: se detuvo la sincronización tras 5 errores "
                    "de conexión seguidos (Error de conexión: Connection refused)", None,
     "transport"),
    (13, "invalid", "Datos inválidos: el número de factura '50X2' no es válido", None, "invalid"),
    (14, "conflict", "Conflicto: Oppen ya tiene una factura 0005-00001691 con otros datos "
                     "(Items: 1 ≠ 2)", None, "conflict"),
    (15, "conflict", "Conflicto: la factura cambió en el sistema de ventas después de un envío "
                     "que pudo llegar a Oppen como 0005-00001691; revisala en Oppen antes de "
                     "reenviar", 409, "conflict"),
    (16, "failed", "Error inesperado (detalle en el log del servidor)", None, "unknown"),
    (17, "pending", "No se envió: la sincronización se interrumpió; se verificará en Oppen "
                    "antes de reenviar", None, "unknown"),
    (18, "pending", "No se envió: Se detuvo la sincronización: otra sincronización tomó este "
                    "local/día", None, "unknown"),
    (19, "sending", None, None, None),
    (20, "pending", None, None, None),
    (BIG, "failed", "Error HTTP 400: Artículo «271240051» inexistente 🧾", 400, "rejected"),
]

# Each oppen_attempts row: (id, kind, outcome, http_status, error) -> expected kind.
ATTEMPTS = [
    (1, "post", "sent", 201, None, None),
    (2, "post", "duplicate", 409, "Error HTTP 409: Duplicate invoice", "duplicate"),
    (3, "post", "rejected", 400, "Error HTTP 400: El cliente C00001 no existe", "rejected"),
    (4, "post", "auth", 401, "Error de autenticación: HTTP 401 - Unauthorized", "auth"),
    (5, "post", "refused", None, "Error de conexión: Connection refused", "transport"),
    (6, "post", "refused", 429, "Error HTTP 429: Too many requests", "transport"),
    (7, "post", "unknown", 502, "Error HTTP 502: Bad gateway", "transport"),
    (8, "post", "unknown", None, "Error de conexión: Connection dropped", "transport"),
    (9, "post", "unknown", 200, "Error HTTP 200: respuesta ilegible de Oppen", "transport"),
    (10, "lookup", "unknown", 400, "Error HTTP 400: filtro inválido", "rejected"),
    (11, "lookup", "unknown", 401, "Error de autenticación: HTTP 401 - x", "auth"),
    (12, "lookup", "unknown", 504, "Error HTTP 504: Gateway timeout", "transport"),
    (13, "lookup", "found", 200, None, None),
    (14, "lookup", "not_found", 200, None, None),
    (15, "lookup", "conflict", 200, "Conflicto: Oppen ya tiene una factura 0005-00001691 con "
                                    "otros datos (Total: $ 1,00 ≠ $ 2,00)", "conflict"),
    (16, "link", "linked", 200, None, None),
    (BIG, "post", "something_new", None, "¿Qué pasó? 🧾", "unknown"),
]


def fill(engine) -> None:
    """Rows in all eight tables as the previous main wrote them: NULLs wherever a column
    allows one, BIGINTs past 2^31 and 2^53, non-ASCII (4-byte too), the longest bodies."""
    b = before
    with engine.begin() as conn:
        conn.execute(sa.insert(b.facturas_trns), [
            {"id": 1, "local": "MATRIZ", "fecha": dt.datetime(2025, 1, 5, 10, 30, 15), "tipo": "A",
             "punto_venta": "5", "nro_factura": "1691", "monto": Decimal("15000.50"),
             "estado": "ok"},
            {"id": BIG, "local": "SAN MARTÍN — Ñuñoa 🧾", "fecha": dt.datetime(2025, 1, 5),
             "tipo": None, "punto_venta": None, "nro_factura": None, "monto": None,
             "estado": "anulada"},
            {"id": 2**62 + 3, "local": "MATRIZ", "fecha": dt.datetime(2025, 1, 5, 23, 59, 59),
             "tipo": "Z", "punto_venta": "0002", "nro_factura": "00000150",
             "monto": Decimal("9999999999999.99"), "estado": "ok"},
            {"id": 4, "local": "MATRIZ", "fecha": dt.datetime(2025, 1, 6), "tipo": "CC",
             "punto_venta": "5", "nro_factura": "7", "monto": Decimal("-0.01"), "estado": "ok"},
        ])
        conn.execute(sa.insert(b.locales_auditados), [
            {"id": 1, "local": "MATRIZ", "fecha": DAY, "auditor": "ana", "auditado_en": T0},
            {"id": BIG, "local": "SAN MARTÍN — Ñuñoa 🧾", "fecha": DAY, "auditor": None,
             "auditado_en": None},
        ])
        conn.execute(sa.insert(b.cierres_locales), [
            {"local": "MATRIZ", "fecha": DAY, "cerrado_en": T0},
            {"local": "SAN MARTÍN — Ñuñoa 🧾", "fecha": DAY, "cerrado_en": None},
        ])
        conn.execute(sa.insert(b.anticipos), [
            {"id": 1, "local": "MATRIZ", "fecha": DAY, "monto": Decimal("12.34"),
             "estado": "pendiente"},
            {"id": BIG, "local": "Ñ", "fecha": DAY, "monto": None, "estado": None},
        ])
        conn.execute(sa.insert(b.oppen_invoices), [{
            "id": id_, "target": "sandbox|ApiNg" if id_ % 2 else "production|ApiNg",
            "factura_id": BIG + n if n % 3 else n + 1, "local": "SAN MARTÍN — Ñuñoa 🧾"
            if n % 4 == 0 else "MATRIZ", "fecha": DAY + dt.timedelta(days=n % 2),
            "tipo": None if n == 19 else "A", "reference": f"A 0005-{n:08d}",
            "official_sernr": None if state == "invalid" else f"0005-{n:08d}",
            "monto": None if n == 19 else Decimal(n) + Decimal("0.05"), "state": state,
            "needs_lookup": n in (8, 12, 16, 17), "sernr": HUGE if state == "sent" else None,
            "attempts": n % 3, "last_error": error, "last_http_status": status,
            "request_body": LONG if n == 1 else None, "response_body": LONG if n in (1, 2) else None,
            "claim_owner": uuid.UUID(int=n).hex if state == "sending" else None,
            "claim_until": T0 if state == "sending" else None, "created_at": T0,
            "updated_at": T0 + dt.timedelta(seconds=n), "sent_at": T0 if state == "sent" else None,
        } for n, (id_, state, error, status, _) in enumerate(INVOICES, start=1)])
        conn.execute(sa.insert(b.oppen_attempts), [{
            "id": id_, "invoice_id": BIG if n % 2 else n, "run_id": None if n % 5 == 0 else BIG,
            "kind": kind, "at": T0 + dt.timedelta(microseconds=0, seconds=n),
            "duration_ms": None if n == 3 else n * 1000, "http_status": status, "outcome": outcome,
            "error": error, "response_body": LONG[:4000] + "…" if n % 2 else None,
        } for n, (id_, kind, outcome, status, error, _) in enumerate(ATTEMPTS, start=1)])
        conn.execute(sa.insert(b.oppen_runs), [
            {"id": 1, "target": "sandbox|ApiNg", "kind": "audit", "local": "MATRIZ", "fecha": DAY,
             "username": "ana", "reason": None, "owner": uuid.UUID(int=1).hex, "state": "done",
             "started_at": T0, "heartbeat_at": T0, "finished_at": T0 + dt.timedelta(minutes=1),
             "total": 2, "processed": 2, "exitosas": 1, "fallidas": 1, "current_ref": None,
             "message": "⚠️ Algunas facturas no pudieron enviarse", "result_json": LONG},
            {"id": BIG, "target": "production|ApiNg", "kind": "resend", "local": None,
             "fecha": None, "username": None, "reason": "pedido por José — «urgente»",
             "owner": uuid.UUID(int=2).hex, "state": "running", "started_at": T0,
             "heartbeat_at": None, "finished_at": None, "total": 0, "processed": 0,
             "exitosas": 0, "fallidas": 0, "current_ref": "A 0005-00001691", "message": None,
             "result_json": None},
        ])
        conn.execute(sa.insert(b.oppen_run_locks), [
            {"target": "sandbox|ApiNg", "local": "MATRIZ", "fecha": DAY, "run_id": BIG,
             "owner": uuid.UUID(int=2).hex, "lease_until": T0},
            {"target": "sandbox|ApiNg", "local": "SAN MARTÍN — Ñuñoa 🧾", "fecha": DAY,
             "run_id": 1, "owner": uuid.UUID(int=3).hex, "lease_until": T0},
        ])


def previous_main(engine, *, late_indexes: bool = True) -> None:
    before.create(engine, late_indexes=late_indexes)
    fill(engine)


def snapshot(engine, tables=HOST + LEGACY) -> dict[str, list[dict]]:
    """Every row of every table, as the driver returns what is stored (no types)."""
    out = {}
    with engine.connect() as conn:
        for table in tables:
            order = {"oppen_run_locks": "target, local, fecha",
                     "cierres_locales": "local, fecha", "oppen_target_state": "target",
                     "oppen_workers": "id", "oppen_meta": "name"}.get(table, "id")
            result = conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {order}")
            out[table] = [dict(zip(result.keys(), row)) for row in result]
    return out


def as_upgraded(rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The previous main's rows as they must read after 0002 (without error_kind)."""
    out = dict(rows)
    out["oppen_attempts"] = [{("oppen_invoice_id" if k == "invoice_id" else k): v
                              for k, v in r.items()} for r in rows["oppen_attempts"]]
    return out


def without(rows: dict[str, list[dict]], column: str) -> dict[str, list[dict]]:
    """`rows` with only the columns the previous main had: `column` (whose values the
    test checks on its own) and every column a later revision added must be the only
    differences, and those later columns start empty (NULL) on every upgraded row."""
    before = set(OLD_COLUMNS)
    out = {}
    for table, rs in rows.items():
        added = {k for r in rs for k in r} - OLD_COLUMNS.get(table, set()) - {column}
        if table in before:
            assert {r[k] for r in rs for k in added} <= {None}, (table, added)
        out[table] = [{k: v for k, v in r.items() if k != column and
                       (table not in before or k not in added)} for r in rs]
    return out


def describe(engine, tables) -> dict:
    """The schema of `tables` as SQLAlchemy's inspector sees it (columns in order)."""
    inspector = sa.inspect(engine)
    out = {}
    for name in tables:
        columns = [(c["name"], c["type"].compile(dialect=engine.dialect), c["nullable"],
                    c.get("default"), c.get("autoincrement"))
                   for c in inspector.get_columns(name)]
        indexes = sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                         for i in inspector.get_indexes(name))
        uniques = sorted((u["name"], tuple(u["column_names"]))
                         for u in inspector.get_unique_constraints(name))
        options = {k: v for k, v in inspector.get_table_options(name).items()
                   if k != "mysql_auto_increment"}
        out[name] = {"columns": columns, "indexes": indexes, "uniques": uniques,
                     "pk": inspector.get_pk_constraint(name)["constrained_columns"],
                     "options": options}
    return out


def autogenerate_diff(engine) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={
            "version_table": migrate.VERSION_TABLE, "include_name": migrate.include_name,
            "include_object": migrate.include_object, "compare_type": True,
            "compare_server_default": True})
        return compare_metadata(ctx, schema.metadata)


def kinds(engine) -> tuple[dict, dict]:
    with engine.connect() as conn:
        inv = dict(conn.exec_driver_sql("SELECT id, error_kind FROM oppen_invoices").all())
        att = dict(conn.exec_driver_sql("SELECT id, error_kind FROM oppen_attempts").all())
    return inv, att


# --- the previous main's database is adopted -------------------------------------------

@pytest.mark.parametrize("late_indexes", [True, False], ids=["6933c77", "before-90ad81e"])
def test_previous_main_is_upgraded_keeping_every_row(db_url, engines, late_indexes):
    engine = engines(db_url)
    previous_main(engine, late_indexes=late_indexes)
    old_rows = snapshot(engine)
    old_host = describe(engine, HOST)
    assert len(old_rows["oppen_invoices"]) == len(INVOICES)
    assert (migrate.current(engine), migrate.needs_upgrade(engine)) == (None, True)
    assert migrate.check(engine) == migrate.UPGRADE_NEEDED_MESSAGE

    # Only tables later revisions add were missing.
    assert schema.init_db(engine, source_tables=True) == [t for t in OURS if t not in LEGACY]
    assert (migrate.current(engine), migrate.needs_upgrade(engine)) == (migrate.head(), False)
    assert migrate.check(engine) is None

    rows = snapshot(engine)
    assert without(rows, "error_kind") == as_upgraded(old_rows)
    assert describe(engine, HOST) == old_host
    invoice_kinds, attempt_kinds = kinds(engine)
    assert invoice_kinds == {row[0]: row[-1] for row in INVOICES}
    assert attempt_kinds == {row[0]: row[-1] for row in ATTEMPTS}
    assert {r["error_kind"] is None for r in rows["oppen_invoices"] if r["last_error"]} == {False}
    assert {r["error_kind"] for r in rows["oppen_invoices"] if r["last_error"] is None} == {None}
    assert "ix_oppen_invoices_claim" in {i["name"] for i in sa.inspect(engine).get_indexes(
        "oppen_invoices")}
    assert autogenerate_diff(engine) == []

    # A second time: nothing to do, nothing changed.
    everything = snapshot(engine, HOST + OURS)
    assert schema.init_db(engine, source_tables=True) == []
    assert migrate.upgrade(engine) == []
    assert snapshot(engine, HOST + OURS) == everything


def test_upgrade_reports_the_revisions_it_applies(db_url, engines):
    engine = engines(db_url)
    previous_main(engine)
    assert REVISIONS[:2] == ["0001", "0002"] and REVISIONS[-1] == migrate.head()
    assert migrate.upgrade(engine) == REVISIONS
    assert migrate.upgrade(engine) == []
    with engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT version_num FROM {migrate.VERSION_TABLE}"
                                    ).scalars().all() == [migrate.head()]


def test_fresh_upgraded_and_declared_schemas_are_one(db_url, new_url, engines):
    """A new database (built by the migrations), the previous main's upgraded, and
    schema.py's metadata.create_all: the same tables, columns in the same order,
    types, indexes, constraints, and on MySQL the same engine and charset."""
    fresh = engines(db_url)
    assert schema.init_db(fresh, source_tables=True) == HOST + OURS
    upgraded = engines(new_url())
    previous_main(upgraded, late_indexes=False)
    schema.init_db(upgraded, source_tables=True)
    declared = engines(new_url())
    schema.metadata.create_all(declared)

    assert describe(fresh, OURS) == describe(upgraded, OURS) == describe(declared, OURS)
    assert describe(fresh, HOST) == describe(upgraded, HOST) == describe(declared, HOST)
    if fresh.dialect.name == "mysql":
        assert describe(fresh, OURS)["oppen_invoices"]["options"]["mysql_engine"] == "InnoDB"
        assert all(d["options"]["mysql_default charset"] == "utf8mb4"
                   for d in describe(fresh, OURS).values())


def test_autogenerate_sees_no_difference(db_url, engines):
    """Alembic's autogenerate finds nothing between schema.py and the migrated database
    (host tables ignored), so a later `--autogenerate` revision holds only its change."""
    engine = engines(db_url)
    schema.init_db(engine, source_tables=True)
    assert autogenerate_diff(engine) == []
    assert migrate.differences(engine) == []
    # ...and it would see one: the check is not blind.
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_oppen_invoices_error_kind ON oppen_invoices"
                             if engine.dialect.name == "mysql" else
                             "DROP INDEX ix_oppen_invoices_error_kind")
    assert [d[0] for d in autogenerate_diff(engine)] == ["add_index"]


def test_init_db_twice_changes_nothing(db_url, engines):
    engine = engines(db_url)
    first = schema.init_db(engine, source_tables=True)
    assert first == HOST + OURS
    shape = describe(engine, HOST + OURS)
    assert schema.init_db(engine, source_tables=True) == []
    assert describe(engine, HOST + OURS) == shape
    assert migrate.current(engine) == migrate.head()


# --- the version table, and databases migrations cannot handle --------------------------

def test_the_hosts_own_alembic_is_left_alone(db_url, engines):
    engine = engines(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('host_rev_42')")
    assert migrate.current(engine) is None
    schema.init_db(engine, source_tables=True)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() \
            == ["host_rev_42"]
    assert migrate.current(engine) == migrate.head()
    assert autogenerate_diff(engine) == []   # neither version table is ours to compare


def test_a_database_newer_than_the_program_is_refused(db_url, engines):
    engine = engines(db_url)
    schema.init_db(engine, source_tables=True)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0999'")
    assert migrate.needs_upgrade(engine) is False
    assert "versión más nueva" in migrate.check(engine) and "0999" in migrate.check(engine)
    with pytest.raises(ConfigError, match="versión más nueva"):
        schema.init_db(engine)


def test_an_empty_database_needs_init_db(db_url, engines):
    engine = engines(db_url)
    assert migrate.needs_upgrade(engine) is True
    assert migrate.check(engine) == migrate.UPGRADE_NEEDED_MESSAGE
    assert "python -m sync init-db" in migrate.UPGRADE_NEEDED_MESSAGE


def test_two_upgrades_at_once_apply_each_revision_once(db_url, engines):
    engine = engines(db_url)
    previous_main(engine)
    old_rows = snapshot(engine)
    results, errors = [], []

    def run():
        try:
            results.append(migrate.upgrade(engine))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sorted(results) == [[], REVISIONS]
    assert without(snapshot(engine), "error_kind") == as_upgraded(old_rows)


def test_0002_downgrades_and_upgrades_again(db_url, engines):
    engine = engines(db_url)
    previous_main(engine)
    old_rows = snapshot(engine)
    schema.init_db(engine, source_tables=True)
    upgraded = snapshot(engine)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "0001")
    assert migrate.current(engine) == "0001"
    assert snapshot(engine) == old_rows
    assert migrate.upgrade(engine) == REVISIONS[1:]
    assert snapshot(engine) == upgraded


WORKER_INVOICE_COLUMNS = ("next_attempt_at", "retry_count", "first_attempt_at", "attention_at")
WORKER_RUN_COLUMNS = ("request_json", "queued_at", "worker_id", "cancel_requested_at",
                      "cancel_requested_by")


def test_0004_keeps_every_row_records_the_day_and_downgrades(db_url, engines):
    """0004 adds the worker's columns, empty on every upgraded row (no invoice starts being
    retried on its own, no old run looks queued), and its tables; it records the day our
    tables were created as the earliest day the rows show, in Argentina's calendar (a run
    started at 02:00 UTC on the 5th is the 4th there), so history is never picked up."""
    engine = engines(db_url)
    previous_main(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(before.oppen_runs).values(
            id=3, target="sandbox|ApiNg", kind="audit", owner=uuid.UUID(int=9).hex,
            state="done", started_at=dt.datetime(2025, 1, 5, 2, 0, 0), total=0, processed=0,
            exitosas=0, fallidas=0))
    schema.init_db(engine, source_tables=True)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT name, value FROM oppen_meta").all() == [
            ("tables_created_on", "2025-01-04")]
        for table, columns in (("oppen_invoices", WORKER_INVOICE_COLUMNS),
                               ("oppen_runs", WORKER_RUN_COLUMNS)):
            values = conn.exec_driver_sql(f"SELECT {', '.join(columns)} FROM {table}").all()
            assert values and {v for row in values for v in row} == {None}
        for table in ("oppen_workers", "oppen_target_state", "oppen_alerts"):
            assert conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar() == 0
    upgraded = snapshot(engine)
    at = REVISIONS.index("0004")
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), REVISIONS[at - 1])
    names = set(sa.inspect(engine).get_table_names())
    assert not names & {"oppen_workers", "oppen_target_state", "oppen_alerts", "oppen_meta"}
    assert not set(WORKER_INVOICE_COLUMNS) & {c["name"] for c in sa.inspect(engine).get_columns(
        "oppen_invoices")}
    # (Going back before 0004 also drops what later revisions add: 0008's run duration.)
    strip = {"oppen_invoices": set(WORKER_INVOICE_COLUMNS),
             "oppen_runs": {*WORKER_RUN_COLUMNS, "duration_ms"}}
    assert snapshot(engine) == {
        t: [{k: v for k, v in r.items() if k not in strip.get(t, ())} for r in rs]
        for t, rs in upgraded.items()}
    assert migrate.upgrade(engine) == REVISIONS[at:]
    assert snapshot(engine) == upgraded
    assert autogenerate_diff(engine) == []


def test_0004_on_a_new_database_records_today():
    import tempfile

    from sync.settings import local_today
    with tempfile.TemporaryDirectory() as folder:
        engine = schema.make_engine(f"sqlite:///{folder}/new.sqlite3")
        try:
            schema.init_db(engine, source_tables=True)
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT value FROM oppen_meta").scalar() == \
                    local_today().isoformat()
        finally:
            engine.dispose()


def test_0005_adds_the_reconciliation_table_and_downgrades(db_url, engines):
    """0005 only adds oppen_reconciliations: its values survive as written (BIGINT run
    ids, Numeric(18, 2) totals, 4-byte text), and going back one revision drops it and
    nothing else."""
    engine = engines(db_url)
    schema.init_db(engine, source_tables=True)
    r = schema.oppen_reconciliations
    stored = {"target": "production/ApiNg", "run_id": BIG, "reconciled_at": T0, "desde": DAY,
              "hasta": DAY + dt.timedelta(days=30), "local": "SAN MARTÍN — Ñuñoa 🧾",
              "fecha": DAY, "excluded": False, "squares": False, "facturas": 2**31 - 1,
              "monto": Decimal("9999999999999.99"), "oppen_facturas": 0,
              "oppen_total": Decimal("-0.01"), "missing": 1, "extra": 2, "different": 3,
              "annulled": 4, "corrected": 5, "detail_json": LONG}
    with engine.begin() as conn:
        conn.execute(sa.insert(r), [stored, {**stored, "run_id": None, "excluded": True,
                                             "squares": None, "detail_json": None}])
    with engine.connect() as conn:
        rows = [dict(x._mapping) for x in conn.execute(sa.select(r).order_by(r.c.id))]
    assert [{k: v for k, v in x.items() if k != "id"} for x in rows][0] == stored
    assert (rows[1]["excluded"], rows[1]["squares"], rows[1]["run_id"]) == (True, None, None)
    before_rows = snapshot(engine)
    at = REVISIONS.index("0005")
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), REVISIONS[at - 1])
    assert r.name not in sa.inspect(engine).get_table_names()
    assert snapshot(engine) == before_rows
    # (Going back to 0004 also drops what later revisions add: 0006's login tables.)
    later = {t.name for t in schema.LOGIN_TABLES}
    assert set(sa.inspect(engine).get_table_names()) >= set(HOST + OURS) - {r.name} - later
    assert migrate.upgrade(engine) == REVISIONS[at:]
    assert autogenerate_diff(engine) == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(r)).scalar() == 0


# --- the vocabulary --------------------------------------------------------------------

def test_error_kinds_have_labels_and_the_backfill_uses_only_them():
    assert set(ERROR_KIND_LABELS) == set(schema.ERROR_KINDS)
    assert len(set(ERROR_KIND_LABELS.values())) == len(schema.ERROR_KINDS)
    expected = {row[-1] for row in INVOICES + ATTEMPTS} - {None}
    # Every kind the backfill can give is exercised above; a kind added after 0002
    # (sernr_taken) is only ever written by the exporter.
    assert expected == set(schema.ERROR_KINDS) - {schema.ERROR_SERNR_TAKEN}
    width = schema.oppen_invoices.c.error_kind.type.length
    assert max(map(len, schema.ERROR_KINDS)) <= width == schema.oppen_attempts.c.error_kind.type.length
