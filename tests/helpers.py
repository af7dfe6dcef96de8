"""Plain helpers shared by the tests: the two databases, the seed's example invoice,
rows of the host's tables, and a real HTTP server on a free port. No fixtures here
(they live in conftest.py); a test imports what it needs: `from helpers import DAY`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from sync.state import schema

ROOT = Path(__file__).resolve().parent.parent
MYSQL_URL = os.environ.get("TEST_MYSQL_URL")
NO_MYSQL = "TEST_MYSQL_URL is not set: this database test runs on SQLite only here"
BACKENDS = ["sqlite", pytest.param("mysql", marks=pytest.mark.skipif(not MYSQL_URL,
                                                                    reason=NO_MYSQL))]
DAY = dt.date(2025, 1, 5)
TODAY = dt.date(2025, 1, 6)


def mysql_database(name: str):
    """A fresh database on the MariaDB server, dropped afterwards."""
    base = make_url(MYSQL_URL)
    admin = sa.create_engine(base.set(drivername="mysql+pymysql"))
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    admin.dispose()
    return base.set(database=name), base


def drop_mysql_database(base, name: str) -> None:
    admin = sa.create_engine(base.set(drivername="mysql+pymysql"))
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
    admin.dispose()


@contextlib.contextmanager
def http_server(handler, *, wrap=None):
    """A real HTTP server for `handler` on a free loopback port, in a thread; yields its
    base URL. `wrap(socket)` may replace the listening socket (e.g. with TLS)."""
    from http.server import ThreadingHTTPServer
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if wrap is not None:
        server.socket = wrap(server.socket)
    scheme = "https" if wrap is not None else "http"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def seed_invoice(number: int = 1691, **overrides) -> dict:
    """The seed's example payload (without SerNr) for invoice 0005-<number>; an override
    set to Ellipsis removes that field."""
    payload = {
        "OfficialSerNr": f"0005-{number:08d}", "CustCode": "C00001", "TransDate": "2025-01-05",
        "DueDate": "2025-02-04", "Office": "100", "Labels": "Local|MATRIZ",
        "createUser": "API", "Status": 0, "InvoiceType": 1,
        "Items": [{"ArtCode": "271240051", "Qty": 1, "Price": 15000.0}],
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not ...}


def add_factura(engine, local, tipo, pv, nro, monto, *, fecha=DAY, hour=10, estado="ok") -> int:
    with engine.begin() as conn:
        return conn.execute(sa.insert(schema.facturas_trns).values(
            local=local, fecha=dt.datetime.combine(fecha, dt.time(hour, 0)), tipo=tipo,
            punto_venta=pv, nro_factura=nro,
            monto=None if monto is None else Decimal(str(monto)), estado=estado)
        ).inserted_primary_key[0]


def close_day(engine, local, fecha=DAY) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.cierres_locales).values(
            local=local, fecha=fecha, cerrado_en=dt.datetime.combine(fecha, dt.time(22, 0))))


def add_advance(engine, local, fecha=DAY, estado="pendiente") -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.anticipos).values(local=local, fecha=fecha,
                                                    monto=Decimal("100"), estado=estado))


def states(engine, local=None, fecha=DAY):
    t = schema.oppen_invoices
    query = sa.select(t.c.reference, t.c.state, t.c.sernr, t.c.attempts).order_by(t.c.id)
    if local:
        query = query.where(t.c.local == local, t.c.fecha == fecha)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def trickling_handler(status: int = 201, length: int = 400, every: float = 0.2,
                      token: bool = True):
    """A handler class that answers `authenticate` at once (when `token`) and every other
    POST with a body of `length` bytes sent one byte every `every` seconds: a server
    no per-read timeout can cut short, only a deadline on the whole exchange."""
    import json
    from http.server import BaseHTTPRequestHandler

    class Trickle(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if token and self.path.endswith("/authenticate"):
                body = json.dumps({"ok": True, "token": "t0k3n", "expires": 3600}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            try:
                for _ in range(length):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(every)
            except OSError:
                pass
    return Trickle

