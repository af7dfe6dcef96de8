"""The console's queries on a chain's history: a generated database of `rows` invoices
(with their sync state, audits and closings), each query timed. Part of `sync bench`.

On SQLite the database is generated once under data/ and reused (it takes a while to
build; delete the file to build it again). On MySQL/MariaDB (`--database`) it is built
in a database of its own, `bench_queries_*`, dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import random
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from sync import actions

from sync.state import read_models, run_details, schema
from sync.settings import PROJECT_DIR, Settings

LOCALS = 50
PER_DAY = 50
FIRST_DAY = dt.date(2024, 1, 1)
PREVIEW_LOCAL = "PREVIEW"
QUERY_TARGET = 0.3     # seconds: each of the console's queries on a chain's history


def _build(engine, rows: int, preview_n: int, target: str) -> None:
    rng = random.Random(1)
    days = max(1, rows // (LOCALS * PER_DAY))
    now = schema.utcnow()
    fid = run_id = 0
    states = ["sent"] * 96 + ["failed", "failed", "invalid", "pending"]
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
                        "last_http_status": None if state == "sent" else 400,
                        "sernr": 10 ** 12 + fid if state == "sent" else None,
                        "created_at": now, "updated_at": now, "id": fid})
                    attempts.append({
                        "oppen_invoice_id": fid, "run_id": run_id, "kind": "post", "at": now,
                        "duration_ms": 20, "http_status": 201 if state == "sent" else 400,
                        "outcome": "sent" if state == "sent" else "rejected",
                        "error": None if state == "sent" else "Error HTTP 400: Invalid Items",
                        "error_kind": None if state == "sent" else "rejected"})
            conn.execute(sa.insert(schema.facturas_trns), facturas)
            conn.execute(sa.insert(schema.oppen_invoices), invoices)
            conn.execute(sa.insert(schema.oppen_runs), day_runs)
            conn.execute(sa.insert(schema.oppen_attempts), attempts)
            conn.execute(sa.insert(schema.cierres_locales), closes)
            conn.execute(sa.insert(schema.locales_auditados), audits)
        last = FIRST_DAY + dt.timedelta(days=days - 1)
        conn.execute(sa.insert(schema.facturas_trns), [
            {"local": PREVIEW_LOCAL, "fecha": dt.datetime.combine(last, dt.time(11)),
             "tipo": "B", "punto_venta": "77", "nro_factura": str(n + 1),
             "monto": Decimal("123.45"), "estado": "ok"} for n in range(preview_n)])
        conn.execute(sa.insert(schema.cierres_locales).values(local=PREVIEW_LOCAL, fecha=last))


def _best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def bench_queries(rows: int, preview_n: int, *, server: sa.URL | None = None) -> dict:
    if server is None:
        path = PROJECT_DIR / "data" / f"bench-runs-{rows}-{preview_n}.sqlite3"
        return _bench_queries(f"sqlite:///{path}", rows, preview_n, str(path))
    from benchmarks.bench import bench_database
    with tempfile.TemporaryDirectory() as tmp, \
            bench_database(server, Path(tmp), "queries") as url:
        return _bench_queries(url, rows, preview_n, "una base bench_queries_* temporal")


def _bench_queries(url: str, rows: int, preview_n: int, where: str) -> dict:
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
                for table in (schema.facturas_trns, schema.oppen_invoices,
                              schema.locales_auditados, schema.cierres_locales):
                    conn.exec_driver_sql(f"ANALYZE TABLE {table.name}")
        print(f"  listo en {time.perf_counter() - started:.0f} s", flush=True)
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(schema.facturas_trns)).scalar()
        last = conn.execute(sa.select(sa.func.max(schema.locales_auditados.c.fecha))).scalar()
    last = last if isinstance(last, dt.date) else dt.date.fromisoformat(str(last))
    month = last - dt.timedelta(days=30)
    with engine.connect() as conn:
        last_run = conn.execute(sa.select(sa.func.max(schema.oppen_runs.c.id))).scalar() or 0
    checks = {
        "Auditoría: tabla de locales del día": lambda: read_models.day_table(engine, settings, last),
        "Locales auditados (30 días)": lambda: read_models.audited_days(engine, settings, month, last),
        "Locales auditados (un local, todo el historial)": lambda: read_models.audited_days(
            engine, settings, FIRST_DAY, last, local="LOCAL07"),
        "Facturas fallidas (todas)": lambda: read_models.failed_invoices(engine, settings),
        "Monitoreo: por día (30 días)": lambda: read_models.daily_stats(engine, settings, month, last),
        "Monitoreo: errores por tipo (30 días)": lambda: read_models.errors_by_kind(
            engine, settings, month, last),
        "Monitoreo: historial de corridas": lambda: read_models.run_history(engine, settings),
        "Locales conocidos": lambda: read_models.known_locals(engine),
        f"Vista previa de {preview_n:,} facturas": lambda: actions.preview(
            engine, settings, PREVIEW_LOCAL, last),
        "Monitoreo: totales por estado (30 días)": lambda: read_models.state_totals(
            engine, settings, month, last),
        "Monitoreo: corridas en curso": lambda: read_models.live_runs(engine, settings),
        "Corridas: historial (todas)": lambda: run_details.runs(engine, settings),
        "Corridas: de un local/día": lambda: run_details.runs_of_day(
            engine, settings, "LOCAL07", last),
        "Corridas: detalle de una corrida": lambda: run_details.detail(
            engine, settings, last_run),
        "Corridas: usuarios": lambda: run_details.run_users(engine, settings),
        "Conciliación: últimas por local/día (30 días)": lambda: read_models.last_reconciliations(
            engine, settings, month, last),
        "Conciliación: por día (30 días)": lambda: read_models.reconciliation_by_day(
            engine, settings, month, last),
    }
    print(f"\nConsultas de la consola sobre {count:,} facturas (mejor de 3):")
    results = {}
    for name, fn in checks.items():
        seconds = _best_of(fn)
        results[name] = seconds
        print(f"  {name:<52} {seconds * 1000:8.1f} ms "
              f"{'✓' if seconds < QUERY_TARGET else f'✗ (> {QUERY_TARGET * 1000:.0f} ms)'}")
    engine.dispose()
    return {"rows": count, "seconds": results}
