"""The console's queries on a chain's history: a generated database of `rows` invoices
(with their sync state, audits and closings), each query timed. Part of `sync bench`.

On SQLite the database is generated once under data/ and reused (it takes a while to
build; delete the file to build it again). On MySQL/MariaDB (`--database`) it is built
in a database of its own, `bench_queries_*`, dropped afterwards; or, run on its own with
`--keep` (`python -m benchmarks.bench_queries --database URL --rows N --keep`), kept as
`bench_queries_keep_<rows>_<preview>_v<DATA_VERSION>` and reused by the next run, which
only brings its schema up to date (Alembic): a new index is measured on the same rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from sync import actions, reconcile
from sync.errors import SyncError
from sync.state import binder, queue, read_models, run_details, schema
from sync.settings import PROJECT_DIR, Settings

LOCALS = 50
PER_DAY = 50
FIRST_DAY = dt.date(2024, 1, 1)
PREVIEW_LOCAL = "PREVIEW"
QUERY_TARGET = 0.3     # seconds: each of the console's queries on a chain's history
# Bumped whenever _build changes, so a kept database (or data/'s SQLite file) of the
# previous shape is never measured as if it were this one.
DATA_VERSION = 2
BUILT = "bench_queries_built"   # oppen_meta's mark of a complete build
RESEND_DAYS = 30       # the failed invoices of these last days went through one resend


def _build(engine, rows: int, preview_n: int, target: str) -> None:
    rng = random.Random(1)
    days = max(1, rows // (LOCALS * PER_DAY))
    now = schema.utcnow()
    fid = run_id = 0
    states = ["sent"] * 96 + ["failed", "failed", "invalid", "pending"]
    resent: list[int] = []   # the unsent invoices of the last RESEND_DAYS days
    with engine.begin() as conn:
        for d in range(days):
            fecha = FIRST_DAY + dt.timedelta(days=d)
            facturas, invoices, closes, audits, day_runs, attempts = [], [], [], [], [], []
            for k in range(LOCALS):
                local = f"LOCAL{k:02d}"
                closes.append({"local": local, "fecha": fecha, "cerrado_en": now})
                audits.append({"local": local, "fecha": fecha, "auditor": "bench",
                               "auditado_en": now})
                # Each local/day's audit run, and one POST per invoice in it: what the run
                # history and a run's detail read.
                run_id += 1
                day_runs.append({"id": run_id, "target": target, "kind": "audit", "local": local,
                                 "fecha": fecha, "username": "bench", "owner": "bench",
                                 "state": "done", "started_at": now, "heartbeat_at": now,
                                 "finished_at": now, "total": PER_DAY, "processed": PER_DAY,
                                 "exitosas": PER_DAY, "fallidas": 0, "message": "bench"})
                for n in range(PER_DAY):
                    fid += 1
                    monto = Decimal(rng.randrange(100, 900000)) / 100
                    facturas.append({"id": fid, "local": local,
                                     "fecha": dt.datetime.combine(fecha, dt.time(10)),
                                     "tipo": "AB"[n % 2], "punto_venta": str(k + 1),
                                     "nro_factura": str(d * 100 + n + 1), "monto": monto,
                                     "estado": "ok"})
                    state = rng.choice(states)
                    invoices.append({
                        "target": target, "factura_id": fid, "local": local, "fecha": fecha,
                        "tipo": "AB"[n % 2], "reference": f"{'AB'[n % 2]} {k + 1:04d}-{d * 100 + n + 1:08d}",
                        "official_sernr": f"{k + 1:04d}-{d * 100 + n + 1:08d}", "monto": monto,
                        "state": state, "needs_lookup": False, "attempts": 1,
                        "last_error": None if state == "sent" else "Error HTTP 400: Invalid Items",
                        "error_kind": None if state == "sent" else "rejected",
                        "last_http_status": None if state == "sent" else 400,
                        "sernr": 10 ** 12 + fid if state == "sent" else None,
                        "created_at": now, "updated_at": now, "id": fid})
                    attempts.append({
                        "oppen_invoice_id": fid, "run_id": run_id, "kind": "post", "at": now,
                        "duration_ms": 20, "http_status": 201 if state == "sent" else 400,
                        "outcome": "sent" if state == "sent" else "rejected",
                        "error": None if state == "sent" else "Error HTTP 400: Invalid Items",
                        "error_kind": None if state == "sent" else "rejected"})
                    if state != "sent" and d >= days - RESEND_DAYS:
                        resent.append(fid)
            conn.execute(sa.insert(schema.facturas_trns), facturas)
            conn.execute(sa.insert(schema.oppen_invoices), invoices)
            conn.execute(sa.insert(schema.oppen_runs), day_runs)
            conn.execute(sa.insert(schema.oppen_attempts), attempts)
            conn.execute(sa.insert(schema.cierres_locales), closes)
            conn.execute(sa.insert(schema.locales_auditados), audits)
            run_id = _reconciled(conn, target, fecha, run_id, rng)
        last = FIRST_DAY + dt.timedelta(days=days - 1)
        # One resend of every unsent invoice of the last days, a second POST each, refused
        # again: the detail of a big run, and invoices whose last attempt is not their first.
        run_id += 1
        later = now + dt.timedelta(minutes=5)
        conn.execute(sa.insert(schema.oppen_runs).values(
            id=run_id, target=target, kind="resend", username="bench", owner="bench",
            reason="bench", state="done", started_at=later, heartbeat_at=later,
            finished_at=later, total=len(resent), processed=len(resent), exitosas=0,
            fallidas=len(resent), message="bench"))
        for part in schema.chunks(resent, 5000):
            conn.execute(sa.insert(schema.oppen_attempts), [
                {"oppen_invoice_id": i, "run_id": run_id, "kind": "post", "at": later,
                 "duration_ms": 20, "http_status": 400, "outcome": "rejected",
                 "error": "Error HTTP 400: Invalid Items", "error_kind": "rejected"}
                for i in part])
            conn.execute(sa.update(schema.oppen_invoices)
                         .where(schema.oppen_invoices.c.id.in_(part))
                         .values(attempts=2, updated_at=later))
        conn.execute(sa.insert(schema.facturas_trns), [
            {"local": PREVIEW_LOCAL, "fecha": dt.datetime.combine(last, dt.time(11)),
             "tipo": "B", "punto_venta": "77", "nro_factura": str(n + 1),
             "monto": Decimal("123.45"), "estado": "ok"} for n in range(preview_n)])
        conn.execute(sa.insert(schema.cierres_locales).values(local=PREVIEW_LOCAL, fecha=last))


def _reconciled(conn, target: str, today: dt.date, run_id: int, rng: random.Random) -> int:
    """The morning reconciliation of `today`: the previous reconcile_days days of every
    local again, as the worker does, so each local/day has several rows and the console
    reads the last one of each. Returns the last run id used."""
    run_id += 1
    at = dt.datetime.combine(today, dt.time(9))
    conn.execute(sa.insert(schema.oppen_runs).values(
        id=run_id, target=target, kind="reconcile", username="bench", owner="bench",
        state="done", started_at=at, heartbeat_at=at, finished_at=at, message="bench"))
    days = Settings.reconcile_days
    rows = []
    for back in range(1, days + 1):
        fecha = today - dt.timedelta(days=back)
        if fecha < FIRST_DAY:
            break
        for k in range(LOCALS):
            squares = rng.random() > 0.02
            rows.append({
                "target": target, "run_id": run_id, "reconciled_at": at,
                "desde": today - dt.timedelta(days=days), "hasta": today - dt.timedelta(days=1),
                "local": f"LOCAL{k:02d}", "fecha": fecha, "excluded": False, "squares": squares,
                "facturas": PER_DAY, "monto": Decimal("12345.67"),
                "oppen_facturas": PER_DAY - (0 if squares else 1),
                "oppen_total": Decimal("12345.67") - (0 if squares else 100),
                "missing": 0 if squares else 1, "extra": 0, "different": 0, "annulled": 0,
                "corrected": 0, "detail_json": json.dumps({"faltan": [] if squares else [
                    {"referencia": f"A {k + 1:04d}-00000001", "monto": "100.00"}]})})
    if rows:
        conn.execute(sa.insert(schema.oppen_reconciliations), rows)
    return run_id


def _best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def bench_queries(rows: int, preview_n: int, *, server: sa.URL | None = None,
                  keep: bool = False, only: str | None = None) -> dict:
    """Time the console's queries on `rows` invoices; with `keep` (MySQL/MariaDB only),
    in a database kept for the next run instead of a temporary one; with `only`, just
    the queries whose name holds that text."""
    if server is None:
        path = sqlite_path(rows, preview_n)
        if path.exists() and not _complete(f"sqlite:///{path}"):
            path.unlink()   # a build that was interrupted: start again
        return _bench_queries(f"sqlite:///{path}", rows, preview_n, str(path), only)
    if keep:
        dbname = kept_name(rows, preview_n)
        admin = sa.create_engine(server.set(database=None))
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS `{dbname}` CHARACTER SET utf8mb4")
        url = server.set(database=dbname).render_as_string(hide_password=False)
        if not _complete(url):
            with admin.begin() as conn:   # an interrupted build: start again
                conn.exec_driver_sql(f"DROP DATABASE `{dbname}`")
                conn.exec_driver_sql(f"CREATE DATABASE `{dbname}` CHARACTER SET utf8mb4")
        admin.dispose()
        return _bench_queries(url, rows, preview_n, f"la base {dbname} (se conserva)", only)
    from benchmarks.bench import bench_database
    with tempfile.TemporaryDirectory() as tmp, \
            bench_database(server, Path(tmp), "queries") as url:
        return _bench_queries(url, rows, preview_n, "una base bench_queries_* temporal", only)


def sqlite_path(rows: int, preview_n: int) -> Path:
    """The SQLite file this benchmark builds under data/ and reuses."""
    return PROJECT_DIR / "data" / f"bench-runs-{rows}-{preview_n}-v{DATA_VERSION}.sqlite3"


def kept_name(rows: int, preview_n: int) -> str:
    """The MySQL/MariaDB database `--keep` keeps (and benchmarks.bench_pages renders)."""
    return f"bench_queries_keep_{rows}_{preview_n}_v{DATA_VERSION}"


def built_url(rows: int, preview_n: int, server: sa.URL | None) -> str | None:
    """The URL of a complete database of this shape kept from an earlier run (SQLite
    under data/, or `kept_name` on `server`), or None when there is none yet."""
    if server is None:
        path = sqlite_path(rows, preview_n)
        url = f"sqlite:///{path}" if path.exists() else None
    else:
        admin = sa.create_engine(server.set(database=None))
        try:
            with admin.connect() as conn:
                found = conn.exec_driver_sql("SHOW DATABASES LIKE %s",
                                             (kept_name(rows, preview_n),)).first()
        finally:
            admin.dispose()
        url = (server.set(database=kept_name(rows, preview_n)).render_as_string(
            hide_password=False) if found else None)
    if url is None:
        return None
    engine = schema.make_engine(url)
    try:
        with engine.connect() as conn:
            done = (sa.inspect(conn).has_table(schema.oppen_meta.name) and conn.execute(
                sa.select(schema.oppen_meta.c.value).where(schema.oppen_meta.c.name == BUILT)
            ).scalar() is not None)
    finally:
        engine.dispose()
    return url if done else None


def _complete(url: str) -> bool:
    """Whether the database at `url` is empty or holds a finished build (not half of one)."""
    engine = schema.make_engine(url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        if schema.oppen_meta.name not in tables:
            return not tables
        with engine.connect() as conn:
            built = conn.execute(sa.select(schema.oppen_meta.c.value)
                                 .where(schema.oppen_meta.c.name == BUILT)).scalar()
            has_rows = (schema.facturas_trns.name in tables and conn.execute(
                sa.select(schema.facturas_trns.c.id).limit(1)).first() is not None)
        return built is not None or not has_rows
    finally:
        engine.dispose()


def _bench_queries(url: str, rows: int, preview_n: int, where: str,
                   only: str | None = None) -> dict:
    settings = Settings(database_url=url)
    engine = schema.make_engine(url)
    schema.init_db(engine, source_tables=True)
    with engine.connect() as conn:
        have = conn.execute(sa.select(sa.func.count()).select_from(schema.facturas_trns)).scalar()
    if not have:
        print(f"\nGenerando {rows:,} facturas en {where}…", flush=True)
        started = time.perf_counter()
        _build(engine, rows, preview_n, settings.target)
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("ANALYZE")
            else:
                for table in (schema.facturas_trns, schema.oppen_invoices, schema.oppen_attempts,
                              schema.oppen_runs, schema.oppen_reconciliations,
                              schema.locales_auditados, schema.cierres_locales):
                    conn.exec_driver_sql(f"ANALYZE TABLE {table.name}")
            conn.execute(sa.insert(schema.oppen_meta).values(name=BUILT, value=str(rows)))
        print(f"  listo en {time.perf_counter() - started:.0f} s", flush=True)
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(schema.facturas_trns)).scalar()
        last = conn.execute(sa.select(sa.func.max(schema.locales_auditados.c.fecha))).scalar()
        r = schema.oppen_runs
        audit_run = conn.execute(sa.select(sa.func.max(r.c.id)).where(r.c.kind == "audit")).scalar()
        resend_run = conn.execute(sa.select(sa.func.max(r.c.id)).where(r.c.kind == "resend")).scalar()
        resend_n = conn.execute(sa.select(r.c.total).where(r.c.id == resend_run)).scalar() or 0
    last = last if isinstance(last, dt.date) else dt.date.fromisoformat(str(last))
    month = last - dt.timedelta(days=30)
    week = last - dt.timedelta(days=7)
    failed = read_models.failed_invoices(engine, settings, desde=month, hasta=last)
    one_failed = failed[0]["id"] if failed else 0
    profile = binder.run_profile(engine, settings.mapping)
    recon_days = reconcile.audited_days(engine, last, last)
    checks = {
        "Auditoría: tabla de locales del día": lambda: read_models.day_table(engine, settings, last),
        "Auditoría: ¿se puede auditar? (un local/día)": lambda: _refusal(
            actions.check_auditable, engine, "LOCAL07", last),
        "Locales auditados (7 días, lo que abre la página)": lambda: read_models.audited_days(
            engine, settings, week, last),
        "Locales auditados (30 días)": lambda: read_models.audited_days(engine, settings, month, last),
        "Locales auditados (un local, todo el historial)": lambda: read_models.audited_days(
            engine, settings, FIRST_DAY, last, local="LOCAL07"),
        "Locales auditados: facturas de un local/día": lambda: actions.status(
            engine, settings, "LOCAL07", last),
        "Facturas fallidas (30 días, lo que abre la página)": lambda: read_models.failed_invoices(
            engine, settings, desde=month, hasta=last),
        "Facturas fallidas (todas)": lambda: read_models.failed_invoices(engine, settings),
        "Facturas fallidas: un local, todo el historial": lambda: read_models.failed_invoices(
            engine, settings, local="LOCAL07"),
        f"Facturas fallidas: intentos de {len(failed):,} facturas": lambda: run_details.attempt_counts(
            engine, [x["id"] for x in failed]),
        "Facturas fallidas: corridas de una factura": lambda: run_details.runs_of_invoice(
            engine, one_failed),
        "Monitoreo: por día (30 días)": lambda: read_models.daily_stats(engine, settings, month, last),
        "Monitoreo: errores por tipo (30 días)": lambda: read_models.errors_by_kind(
            engine, settings, month, last),
        "Monitoreo: historial de corridas": lambda: read_models.run_history(engine, settings),
        "Locales conocidos": lambda: read_models.known_locals(engine),
        f"Vista previa de {preview_n:,} facturas (consultas y mapeo)": lambda: actions.preview(
            engine, settings, PREVIEW_LOCAL, last),
        f"Vista previa de {preview_n:,} facturas: sus consultas": lambda: _preview_reads(
            engine, settings, PREVIEW_LOCAL, last),
        "Monitoreo: totales por estado (30 días)": lambda: read_models.state_totals(
            engine, settings, month, last),
        "Monitoreo: corridas en curso": lambda: read_models.live_runs(engine, settings),
        # What "Facturas en espera" reads (due retries and those that require attention).
        "Monitoreo: facturas en espera": lambda: queue.waiting(engine, settings.target),
        "Corridas: historial (todas)": lambda: run_details.runs(engine, settings),
        "Corridas: historial de un local": lambda: run_details.runs(engine, settings,
                                                                    local="LOCAL07"),
        "Corridas: de un local/día": lambda: run_details.runs_of_day(
            engine, settings, "LOCAL07", last),
        f"Corridas: detalle de una auditoría ({PER_DAY} facturas)": lambda: run_details.detail(
            engine, settings, audit_run),
        f"Corridas: detalle de un reenvío ({resend_n:,} facturas)": lambda: run_details.detail(
            engine, settings, resend_run),
        "Corridas: usuarios": lambda: run_details.run_users(engine, settings),
        "Conciliación: últimas por local/día (30 días)": lambda: read_models.last_reconciliations(
            engine, settings, month, last),
        "Conciliación: un local, todo el historial": lambda: read_models.last_reconciliations(
            engine, settings, FIRST_DAY, last, local="LOCAL07"),
        "Monitoreo: conciliación por día (30 días)": lambda: read_models.reconciliation_by_day(
            engine, settings, month, last),
        "Conciliación: días auditados a conciliar (30 días)": lambda: reconcile.audited_days(
            engine, month, last),
        # What a reconciliation of one day reads on our side before asking Oppen (its
        # `_read_ours`: every local's invoices and their states, mapped as a run maps them).
        f"Conciliación: nuestro lado de un día ({len(recon_days)} locales)": lambda: reconcile._read_ours(
            engine, settings, profile, recon_days, last),
    }
    if only:
        checks = {name: fn for name, fn in checks.items() if only.lower() in name.lower()}
    print(f"\nConsultas de la consola sobre {count:,} facturas (mejor de 3):")
    results = {}
    for name, fn in checks.items():
        seconds = _best_of(fn)
        results[name] = seconds
        print(f"  {name:<56} {seconds * 1000:8.1f} ms "
              f"{'✓' if seconds < QUERY_TARGET else f'✗ (> {QUERY_TARGET * 1000:.0f} ms)'}",
              flush=True)
    engine.dispose()
    return {"rows": count, "seconds": results}


def _preview_reads(engine, settings: Settings, local: str, fecha: dt.date) -> int:
    """What actions.preview reads from the database, without its mapping of each invoice
    in Python: the day's invoices and their known states."""
    with schema.reading(engine) as conn:
        facturas = binder.read_facturas(conn, local, fecha)
        return len(actions._known_states(conn, settings.target, [f["id"] for f in facturas]))


def _refusal(check, *args) -> str | None:
    """A check that refuses by raising: its message, or None when it would allow."""
    try:
        check(*args)
    except SyncError as exc:
        return exc.message
    return None


def main(argv: list[str] | None = None) -> int:
    """Only the console's queries (`python -m sync bench --rows` runs every figure)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_queries",
        description="Medir solo las consultas de la consola sobre el historial de una cadena.")
    parser.add_argument("--database", metavar="URL",
                        help="servidor MySQL/MariaDB (sin ella, SQLite bajo data/)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="facturas (1000000)")
    parser.add_argument("--preview-n", type=int, default=10_000,
                        help="facturas del local/día de la vista previa (10000)")
    parser.add_argument("--keep", action="store_true",
                        help="con --database: conservar la base generada y reusarla la próxima vez")
    parser.add_argument("--only", metavar="TEXTO",
                        help="solo las consultas cuyo nombre contiene este texto")
    parser.add_argument("--json", metavar="ARCHIVO", help="guardar los resultados en este archivo")
    args = parser.parse_args(argv)
    from benchmarks.bench import server_of
    result = bench_queries(args.rows, args.preview_n, server=server_of(args.database),
                           keep=args.keep, only=args.only)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
