"""Demo data for the embedded default: a few locals over the last days, each showing one
of the seed's cases (all sent, no invoices, a duplicate, bad data, not closed, a
pending advance). Only ever written to an empty database.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .state import schema
from .settings import DEFAULT_DATABASE_URL, Settings, local_today

# local -> (closed?, pending advances, invoices as (tipo, punto_venta, nro, monto))
YESTERDAY_CASES = {
    # Seed test case 1: 5 valid invoices (3 A, 2 Z).
    "MATRIZ": (True, 0, [("A", "5", "1691", "15000.00"), ("A", "5", "1692", "8200.50"),
                         ("A", "5", "1693", "1234.99"), ("Z", "2", "150", "98000.00"),
                         ("Z", "2", "151", "45210.10")]),
    # Seed test case 2: no invoices.
    "SUCURSAL": (True, 0, []),
    # Seed test case 3: one invoice number appears twice; Oppen rejects the second.
    "PALERMO": (True, 0, [("A", "6", "1691", "15000.00"), ("B", "6", "20001", "5300.00"),
                          ("A", "6", "1691", "15000.00")]),
    # A row that cannot be mapped: never sent, listed with the field at fault.
    "BELGRANO": (True, 0, [("B", "7", "501", "2500.00"), ("B", "7", "50X2", "1800.00"),
                           ("CC", "7", "503", "0"), ("Z", "7", "88", "61000.00")]),
    # Refusals: not closed, and a pending advance.
    "CABALLITO": (False, 0, [("B", "9", "1001", "990.00")]),
    "RECOLETA": (True, 1, [("A", "4", "3001", "12000.00")]),
}
LOCALS = list(YESTERDAY_CASES)


def wanted(settings: Settings) -> bool:
    """Demo data goes into an empty database only for the project's default file, or
    when OPPEN_DEMO_DATA=1 asks for it (the newcomer test uses it on a temp file)."""
    return (settings.database_url == DEFAULT_DATABASE_URL
            or os.environ.get("OPPEN_DEMO_DATA", "").strip() == "1")


def is_empty(engine: Engine) -> bool:
    with engine.connect() as conn:
        count = sa.select(sa.func.count()).select_from(schema.facturas_trns)
        return conn.execute(count).scalar() == 0


def load_demo(engine: Engine, *, today: dt.date | None = None, days: int = 5,
              seed: int = 20250105) -> dict:
    """Fill an empty database; returns what was written. Refuses a database with data."""
    if not is_empty(engine):
        return {"facturas": 0, "omitido": "la base ya tiene facturas; no se cargó la demo"}
    today = today or local_today()
    rng = random.Random(seed)
    facturas, cierres, anticipos = [], [], []
    yesterday = today - dt.timedelta(days=1)
    for local, (closed, advances, rows) in YESTERDAY_CASES.items():
        if closed:
            cierres.append({"local": local, "fecha": yesterday,
                            "cerrado_en": dt.datetime.combine(yesterday, dt.time(22, 30))})
        for i in range(advances):
            anticipos.append({"local": local, "fecha": yesterday, "monto": Decimal("5000.00"),
                              "estado": "pendiente"})
        for n, (tipo, pv, nro, monto) in enumerate(rows):
            facturas.append({"local": local, "fecha": dt.datetime.combine(
                yesterday, dt.time(9 + n, 15)), "tipo": tipo, "punto_venta": pv,
                "nro_factura": nro, "monto": Decimal(monto), "estado": "ok"})
    # Earlier days: every local closed, a dozen valid invoices each, waiting for audit.
    for back in range(2, days + 1):
        day = today - dt.timedelta(days=back)
        for k, local in enumerate(LOCALS):
            cierres.append({"local": local, "fecha": day,
                            "cerrado_en": dt.datetime.combine(day, dt.time(22, 0))})
            for n in range(12):
                tipo = rng.choice(("A", "B", "B", "Z", "CC"))
                facturas.append({
                    "local": local, "fecha": dt.datetime.combine(day, dt.time(9, n * 4)),
                    "tipo": tipo, "punto_venta": str(10 + k),
                    "nro_factura": str(back * 1000 + n + 1),
                    "monto": Decimal(rng.randrange(50000, 9000000)) / 100, "estado": "ok"})
            # An annulled invoice: never synced, whatever its data.
            facturas.append({"local": local, "fecha": dt.datetime.combine(day, dt.time(20, 0)),
                             "tipo": "B", "punto_venta": str(10 + k),
                             "nro_factura": str(back * 1000 + 99), "monto": Decimal("100.00"),
                             "estado": "anulada"})
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.facturas_trns), facturas)
        conn.execute(sa.insert(schema.cierres_locales), cierres)
        if anticipos:
            conn.execute(sa.insert(schema.anticipos), anticipos)
    return {"facturas": len(facturas), "cierres": len(cierres), "anticipos": len(anticipos),
            "dia_principal": yesterday.isoformat()}
