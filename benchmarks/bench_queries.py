"""The console's queries on a chain's history: a generated database of `rows` invoices
(with their sync state, audits and closings), each query timed. Part of `sync bench`.

The database is generated once under data/ and reused (it takes a while to build);
delete the file to build it again.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from decimal import Decimal

import sqlalchemy as sa

from sync import actions

from sync.state import read_models, schema
from sync.settings import PROJECT_DIR, Settings

LOCALS = 50
PER_DAY = 50
FIRST_DAY = dt.date(2024, 1, 1)
PREVIEW_LOCAL = "PREVIEW"


def _build(engine, rows: int, preview_n: int, target: str) -> None:
    rng = random.Random(1)
    days = max(1, rows // (LOCALS * PER_DAY))
    now = schema.utcnow()
    fid = 0
    states = ["sent"] * 96 + ["failed", "failed", "invalid", "pending"]
    with engine.begin() as conn:
        for d in range(days):
            fecha = FIRST_DAY + dt.timedelta(days=d)
            facturas, invoices, closes, audits = [], [], [], []
            for k in range(LOCALS):
                local = f"LOCAL{k:02d}"
                closes.append({"local": local, "fecha": fecha, "cerrado_en": now})
                audits.append({"local": local, "fecha": fecha, "auditor": "bench",
                               "auditado_en": now})
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
                        "created_at": now, "updated_at": now})
            conn.execute(sa.insert(schema.facturas_trns), facturas)
            conn.execute(sa.insert(schema.oppen_invoices), invoices)
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


def bench_queries(rows: int, preview_n: int) -> dict:
    path = PROJECT_DIR / "data" / f"bench-{rows}-{preview_n}.sqlite3"
    url = f"sqlite:///{path}"
    settings = Settings(database_url=url)
    engine = schema.make_engine(url)
    schema.init_db(engine)
    with engine.connect() as conn:
        have = conn.execute(sa.select(sa.func.count()).select_from(schema.facturas_trns)).scalar()
    if not have:
        print(f"\nGenerando {rows:,} facturas en {path} (una sola vez)…", flush=True)
        started = time.perf_counter()
        _build(engine, rows, preview_n, settings.target)
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        print(f"  listo en {time.perf_counter() - started:.0f} s", flush=True)
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(schema.facturas_trns)).scalar()
        last = conn.execute(sa.select(sa.func.max(schema.locales_auditados.c.fecha))).scalar()
    last = last if isinstance(last, dt.date) else dt.date.fromisoformat(str(last))
    month = last - dt.timedelta(days=30)
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
    }
    print(f"\nConsultas de la consola sobre {count:,} facturas (mejor de 3):")
    results = {}
    for name, fn in checks.items():
        seconds = _best_of(fn)
        results[name] = seconds
        print(f"  {name:<52} {seconds * 1000:8.1f} ms {'✓' if seconds < 1 else '✗ (> 1 s)'}")
    engine.dispose()
    return {"rows": count, "seconds": results}
