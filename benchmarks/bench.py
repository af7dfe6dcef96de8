"""`python -m sync bench`: how fast the sync is, against the sandbox, on this machine.

Measures (a) a sequential reference that does what the seed does (one POST after
another over one session, one commit per invoice) against (b) the project at its
configured concurrency, both on the same invoices and the same sandbox latency, and (c)
the same invoices through the worker (a day audited in the host application, picked up
by `python -m sync worker --once` in a process of its own); the
per-invoice overhead with zero latency; optionally the console's queries on a
database of a million invoices, and the peak memory of a 100,000-invoice run.
Speed targets live here, never in timed tests. Everything runs on loopback and on
temporary databases: the configured database and Oppen are never touched.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from sync import actions

from sync.state import binder, runs, schema
from sync.oppen.client import OppenClient
from sync.settings import PROJECT_DIR, Settings, validate
from sync.mapping import Mapped, map_invoice
from sync.sandbox import Faults, OppenSandbox

BENCH_DAY = dt.date(2025, 1, 5)


def _seed(engine, n: int, *, local: str = "BENCH", fecha: dt.date = BENCH_DAY,
          audited: bool = True) -> None:
    rows = [{"local": local, "fecha": dt.datetime.combine(fecha, dt.time(12, 0)),
             "tipo": "AB"[i % 2], "punto_venta": "1", "nro_factura": str(i + 1),
             "monto": Decimal(1000 + i % 5000) / 4, "estado": "ok"} for i in range(n)]
    with engine.begin() as conn:
        for start in range(0, n, 20000):
            conn.execute(sa.insert(schema.facturas_trns), rows[start:start + 20000])
        conn.execute(sa.insert(schema.cierres_locales).values(local=local, fecha=fecha))
        if audited:
            conn.execute(sa.insert(schema.locales_auditados).values(local=local, fecha=fecha,
                                                                auditor="bench"))


class ExternalSandbox:
    """The sandbox in a process of its own, as Oppen is: in this process its handler
    threads would compete with the sync's workers for the GIL and inflate the figures.
    Its request log comes back in a file when it stops (time.monotonic is one clock for
    every process of the machine)."""

    def __init__(self, latency_ms: float, workdir: Path):
        self.password = secrets.token_urlsafe(12)
        self.latency_ms = latency_ms
        self._log_path = workdir / f"sandbox-{time.monotonic_ns()}.json"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, OPPEN_PASSWORD=self.password, OPPEN_ENV="sandbox",
                   OPPEN_SECRETS_FILE=str(workdir / "none.toml"))
        env.pop("OPPEN_BASE_URL", None)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sync", "sandbox", "--port", str(port),
             "--latency-ms", str(latency_ms), "--log-file", str(self._log_path)],
            cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("no arrancó el sandbox del benchmark: "
                                       + (self._proc.stderr.read() or b"").decode()[:300])
                time.sleep(0.05)

    def stop(self) -> list[dict]:
        self._proc.send_signal(signal.SIGTERM)
        self._proc.wait(timeout=30)
        return json.loads(self._log_path.read_text()) if self._log_path.exists() else []


def _window(log: list[dict], latency_ms: float) -> float:
    """From the first invoice request Oppen receives to its last answer, in seconds."""
    times = [e["t"] for e in log if e["path"] == "Invoice"]
    if not times:
        return 0.0
    return max(times) - min(times) + latency_ms / 1000


def sequential_reference(engine, sandbox, password: str, settings: Settings) -> float:
    """The seed's way: one POST after another over one session, one commit per invoice."""
    bench_log = sa.Table("bench_reference_sent", sa.MetaData(),
                         sa.Column("factura_id", sa.BigInteger, primary_key=True),
                         sa.Column("sernr", sa.BigInteger), sa.Column("sent_at", sa.DateTime))
    bench_log.create(engine, checkfirst=True)
    started = time.perf_counter()
    with engine.connect() as conn:
        facturas = binder.read_facturas(conn, "BENCH", BENCH_DAY)
    with OppenClient(base_url=sandbox.url, api=settings.api, username="API", password=password,
                     timeout=settings.timeout, pool_size=1) as client:
        client.authenticate()
        for n, factura in enumerate(facturas):
            mapped = map_invoice(factura, settings.mapping, today=BENCH_DAY,
                                 sernr=settings.mapping.sernr_base + 10_000_000 + n)
            assert isinstance(mapped, Mapped)
            record = client.create_invoice(mapped.payload)
            with engine.begin() as conn:
                conn.execute(sa.insert(bench_log).values(factura_id=factura["id"],
                                                         sernr=record.get("SerNr"),
                                                         sent_at=schema.utcnow()))
    return time.perf_counter() - started


def project_run(engine, sandbox, password: str, settings: Settings) -> dict:
    started = time.perf_counter()
    with OppenClient(base_url=sandbox.url, api=settings.api, username="API", password=password,
                     timeout=settings.timeout, pool_size=settings.concurrency) as client:
        result = actions.resend(engine, settings, user="bench", local="BENCH", fecha=BENCH_DAY,
                                client=client, today=BENCH_DAY)
    return {"seconds": time.perf_counter() - started, "exitosas": result["exitosas"],
            "total": result["total"]}


def bench_sending(n: int, latency_ms: float, concurrency: int, *, sequential: bool = True) -> dict:
    out: dict = {"n": n, "latency_ms": latency_ms, "concurrency": concurrency}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        engine = schema.make_engine(url)
        schema.init_db(engine)
        _seed(engine, n)
        if sequential:
            sandbox = ExternalSandbox(latency_ms, Path(tmp))
            try:
                settings = _bench_settings(url, sandbox, concurrency)
                out["sequential_s"] = sequential_reference(engine, sandbox, sandbox.password,
                                                           settings)
            finally:
                log = sandbox.stop()
            out["sequential_window_s"] = _window(log, latency_ms)
        sandbox = ExternalSandbox(latency_ms, Path(tmp))
        try:
            settings = _bench_settings(url, sandbox, concurrency)
            run = project_run(engine, sandbox, sandbox.password, settings)
        finally:
            log = sandbox.stop()
        if run["exitosas"] != n:
            raise RuntimeError(f"el benchmark envió {run['exitosas']} de {n}")
        stored = sum(1 for e in log if e["path"] == "Invoice" and e["outcome"] == "stored")
        if stored != n:
            raise RuntimeError(f"el sandbox recibió {stored} facturas de {n}")
        out["project_s"] = run["seconds"]
        out["project_window_s"] = _window(log, latency_ms)
        engine.dispose()
    out["ideal_s"] = n * latency_ms / 1000 / concurrency
    return out


def bench_worker(n: int, latency_ms: float, concurrency: int) -> dict:
    """The worker's path: a day audited in the host application (a locales_auditados row
    only), picked up and sent by `python -m sync worker --once` in a process of its own;
    timed from the process's start to its exit (start-up, scan, pick-up, the run, its
    goodbye), and Oppen's window as for (b)."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'worker.sqlite3'}"
        engine = schema.make_engine(url)
        schema.init_db(engine)
        _seed(engine, n)
        engine.dispose()
        sandbox = ExternalSandbox(latency_ms, Path(tmp))
        try:
            env = dict(os.environ, DATABASE_URL=url, OPPEN_ENV="sandbox",
                       OPPEN_BASE_URL=sandbox.url, OPPEN_USERNAME="API",
                       OPPEN_PASSWORD=sandbox.password, OPPEN_CONCURRENCY=str(concurrency),
                       OPPEN_TIMEOUT="30", OPPEN_PICKUP_SINCE=BENCH_DAY.isoformat(),
                       OPPEN_RECONCILE_AT="off", OPPEN_SECRETS_FILE=str(Path(tmp) / "none.toml"))
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "sync", "worker", "--once"],
                                  cwd=PROJECT_DIR, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - started
        finally:
            log = sandbox.stop()
        if proc.returncode != 0:
            raise RuntimeError(f"el worker del benchmark falló: {proc.stderr.strip()[-300:]}")
        stored = sum(1 for e in log if e["path"] == "Invoice" and e["outcome"] == "stored")
        if stored != n:
            raise RuntimeError(f"el worker envió {stored} facturas de {n}")
    return {"n": n, "latency_ms": latency_ms, "concurrency": concurrency,
            "worker_s": seconds, "worker_window_s": _window(log, latency_ms),
            "ideal_s": n * latency_ms / 1000 / concurrency}


def _bench_settings(url: str, sandbox: "ExternalSandbox", concurrency: int) -> Settings:
    return validate(Settings(database_url=url, base_url=sandbox.url, username="API",
                             password=sandbox.password, concurrency=concurrency, timeout=30))


def bench_memory(n: int, concurrency: int) -> dict:
    """Peak resident memory of a CLI process syncing `n` invoices (sandbox in this process)."""
    password = secrets.token_urlsafe(12)
    with tempfile.TemporaryDirectory() as tmp, OppenSandbox(password=password) as sandbox:
        url = f"sqlite:///{Path(tmp) / 'mem.sqlite3'}"
        engine = schema.make_engine(url)
        schema.init_db(engine)
        _seed(engine, n)
        engine.dispose()
        env = dict(os.environ, DATABASE_URL=url, OPPEN_ENV="sandbox", OPPEN_BASE_URL=sandbox.url,
                   OPPEN_USERNAME="API", OPPEN_PASSWORD=password,
                   OPPEN_CONCURRENCY=str(concurrency),
                   OPPEN_SECRETS_FILE=str(Path(tmp) / "none.toml"))
        started = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        proc = subprocess.run([sys.executable, "-m", "sync", "resend", "BENCH",
                               BENCH_DAY.isoformat()], cwd=PROJECT_DIR, env=env,
                              capture_output=True, text=True)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"la corrida de memoria falló: {proc.stderr.strip()[:300]}")
        stored = len(sandbox.invoices())
    return {"n": n, "peak_rss_mb": max(peak_kb, before) / 1024, "seconds": seconds,
            "stored": stored}


def _fmt(seconds: float) -> str:
    return f"{seconds:.2f} s"


def main(args) -> int:
    report: dict = {}
    print(f"Benchmark en {os.cpu_count()} núcleo(s); sandbox en loopback; SQLite temporal.")
    send = bench_sending(args.n, args.latency_ms, args.concurrency)
    report["sending"] = send
    seq, proj, ideal = send["sequential_s"], send["project_s"], send["ideal_s"]
    print(f"\n(a) secuencial (como el seed), N={send['n']}, L={send['latency_ms']:g} ms: "
          f"{_fmt(seq)}  ({send['n'] / seq:.0f} facturas/s)")
    print(f"(b) proyecto, C={send['concurrency']}: {_fmt(proj)} en total  "
          f"({send['n'] / proj:.0f} facturas/s); ventana de envío {_fmt(send['project_window_s'])}")
    print(f"    aceleración (a)/(b): {seq / proj:.2f}×")
    if ideal:
        print(f"    ideal N×L/C = {_fmt(ideal)}; ventana/ideal = "
              f"{send['project_window_s'] / ideal:.3f}×; total/ideal = {proj / ideal:.3f}×")

    worker = bench_worker(args.n, args.latency_ms, args.concurrency)
    report["worker"] = worker
    print(f"(c) worker (python -m sync worker --once: un día auditado en el sistema de ventas, "
          f"levantado y enviado), C={worker['concurrency']}: {_fmt(worker['worker_s'])} de "
          f"punta a punta con el arranque del proceso ({worker['n'] / worker['worker_s']:.0f} "
          f"facturas/s); ventana de envío {_fmt(worker['worker_window_s'])}"
          + (f" = {worker['worker_window_s'] / ideal:.3f}× la ideal" if ideal else ""))

    zero = bench_sending(args.n, 0.0, args.concurrency, sequential=False)
    report["zero_latency"] = zero
    print(f"\nLatencia 0, N={zero['n']}, C={zero['concurrency']}: {_fmt(zero['project_s'])} → "
          f"{zero['n'] / zero['project_s']:.0f} facturas/s de punta a punta "
          f"({zero['project_s'] / zero['n'] * 1000:.2f} ms por factura, con escrituras en la base)")

    if args.rows:
        from benchmarks.bench_queries import bench_queries
        report["queries"] = bench_queries(args.rows, args.preview_n)
    if args.memory_n:
        mem = bench_memory(args.memory_n, args.concurrency)
        report["memory"] = mem
        print(f"\nMemoria: corrida de {mem['n']} facturas en un proceso aparte: pico "
              f"{mem['peak_rss_mb']:.0f} MB de RSS, {_fmt(mem['seconds'])}, "
              f"{mem['stored']} recibidas por el sandbox")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"\nResultados en {args.json}")
    return 0
