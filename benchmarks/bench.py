"""`python -m sync bench`: how fast the sync is, against the sandbox, on this machine.

Every figure runs on SQLite, or with `--database URL` on the MySQL/MariaDB server of
that URL (each figure in a database of its own, `bench_*`, dropped afterwards). With the
sandbox in a process of its own and a latency L per request, it measures:

- (a) a sequential reference that does what the seed does (one POST after another over
  one session, one commit per invoice) and (b) the project at concurrency C, on the
  same N invoices (1,000 by default);
- (b') the project on 10×N invoices at 4×C (10,000 at 32 by default);
- (c) the same two runs through the worker: a day audited in the host application,
  picked up and sent by `python -m sync worker --once` in a process of its own;
- the CPU time of the sync process per invoice at zero latency, on 10×N invoices;
- optionally the console's queries on a chain's history (`--rows`) and the peak memory
  of a resend of `--memory-n` invoices in a CLI process of its own.

For every run: the sending window Oppen saw (its first invoice request to its last
answer), as a share of the ideal N×L/C (100 % is the ideal), and the CPU time of the
process that synced (this one for (b), the worker's for (c)) per invoice. Speed targets
live here, never in timed tests. Everything runs on loopback and on temporary databases:
the configured database and Oppen are never touched.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from sync import actions
from sync.errors import SyncError
from sync.mapping import Mapped, map_invoice
from sync.oppen.client import OppenClient
from sync.settings import PROJECT_DIR, Settings, validate
from sync.state import binder, schema

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


# --- where a figure runs ---------------------------------------------------------------

def server_of(database: str | None) -> sa.URL | None:
    """The MySQL/MariaDB server `--database` names (None: SQLite). Raises SyncError."""
    if not database:
        return None
    try:
        url = sa.make_url(database)
    except sa.exc.ArgumentError:
        raise SyncError("--database no es una URL de base de datos") from None
    if url.get_backend_name() not in ("mysql", "mariadb"):
        raise SyncError("--database debe ser una URL de MySQL/MariaDB "
                        "(mysql+pymysql://usuario@host/base); sin ella se usa SQLite")
    return url


@contextlib.contextmanager
def bench_database(server: sa.URL | None, tmp: Path, name: str, n: int = 0, *,
                   audited: bool = True) -> Iterator[str]:
    """A fresh database for one figure, with `n` invoices of one local/day: a SQLite file
    under `tmp`, or `bench_<name>_<random>` on `server`, dropped afterwards."""
    if server is None:
        url = f"sqlite:///{tmp / (name + '.sqlite3')}"
        drop = None
    else:
        dbname = f"bench_{name}_{secrets.token_hex(4)}"
        admin = sa.create_engine(server.set(database=None))
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{dbname}` CHARACTER SET utf8mb4")
        url = server.set(database=dbname).render_as_string(hide_password=False)

        def drop() -> None:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{dbname}`")
            admin.dispose()
    try:
        engine = schema.make_engine(url)
        schema.init_db(engine, source_tables=True)
        if n:
            _seed(engine, n, audited=audited)
        engine.dispose()
        yield url
    finally:
        if drop is not None:
            drop()


def _database_label(server: sa.URL | None) -> str:
    if server is None:
        return "SQLite (archivos temporales)"
    return f"MySQL/MariaDB en {server.host}:{server.port or 3306} (bases bench_* temporales)"


# --- Oppen in a process of its own ---------------------------------------------------------

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


def _stored(log: list[dict]) -> int:
    return sum(1 for e in log if e["path"] == "Invoice" and e["outcome"] == "stored")


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_child(args: list[str], env: dict, workdir: Path) -> tuple[int, str, float, float, float]:
    """Run `python -m sync ARGS` to its end: exit code, stderr, seconds, and that one
    process's CPU seconds and peak RSS in MB (wait4: no other child is counted)."""
    err_path = workdir / f"stderr-{time.monotonic_ns()}.txt"
    started = time.perf_counter()
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sync", *args], cwd=PROJECT_DIR, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    return (proc.returncode, err_path.read_text(errors="replace"), seconds,
            usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def _env(url: str, sandbox: ExternalSandbox, concurrency: int, workdir: Path) -> dict:
    return dict(os.environ, DATABASE_URL=url, OPPEN_ENV="sandbox", OPPEN_BASE_URL=sandbox.url,
                OPPEN_USERNAME="API", OPPEN_PASSWORD=sandbox.password,
                OPPEN_CONCURRENCY=str(concurrency), OPPEN_TIMEOUT="30",
                OPPEN_SECRETS_FILE=str(workdir / "none.toml"))


# --- the figures -----------------------------------------------------------------------------

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
    """A resend of the bench's local/day in this process, as `python -m sync resend` runs
    it: its seconds and this process's CPU seconds (the sandbox's are its own)."""
    started, cpu = time.perf_counter(), _cpu_self()
    with OppenClient(base_url=sandbox.url, api=settings.api, username="API", password=password,
                     timeout=settings.timeout, pool_size=settings.concurrency) as client:
        result = actions.resend(engine, settings, user="bench", local="BENCH", fecha=BENCH_DAY,
                                client=client, today=BENCH_DAY)
    return {"seconds": time.perf_counter() - started, "cpu_s": _cpu_self() - cpu,
            "exitosas": result["exitosas"], "total": result["total"]}


def bench_sending(n: int, latency_ms: float, concurrency: int, *, sequential: bool = True,
                  server: sa.URL | None = None) -> dict:
    out: dict = {"n": n, "latency_ms": latency_ms, "concurrency": concurrency}
    with tempfile.TemporaryDirectory() as tmp, \
            bench_database(server, Path(tmp), "send", n) as url:
        engine = schema.make_engine(url)
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
            engine.dispose()
        if run["exitosas"] != n:
            raise RuntimeError(f"el benchmark envió {run['exitosas']} de {n}")
        if _stored(log) != n:
            raise RuntimeError(f"el sandbox recibió {_stored(log)} facturas de {n}")
    out.update(project_s=run["seconds"], project_window_s=_window(log, latency_ms),
               cpu_ms_per_invoice=run["cpu_s"] / n * 1000,
               ideal_s=n * latency_ms / 1000 / concurrency)
    return out


def bench_worker(n: int, latency_ms: float, concurrency: int, *,
                 server: sa.URL | None = None) -> dict:
    """The worker's path: a day audited in the host application (a locales_auditados row
    only), picked up and sent by `python -m sync worker --once` in a process of its own;
    timed from the process's start to its exit (start-up, scan, pick-up, the run, its
    goodbye), Oppen's window as for (b), and the worker process's own CPU time."""
    with tempfile.TemporaryDirectory() as tmp, \
            bench_database(server, Path(tmp), "worker", n) as url:
        sandbox = ExternalSandbox(latency_ms, Path(tmp))
        try:
            env = dict(_env(url, sandbox, concurrency, Path(tmp)),
                       OPPEN_PICKUP_SINCE=BENCH_DAY.isoformat(), OPPEN_RECONCILE_AT="off")
            code, stderr, seconds, cpu_s, _ = _run_child(["worker", "--once"], env, Path(tmp))
        finally:
            log = sandbox.stop()
        if code != 0:
            raise RuntimeError(f"el worker del benchmark falló: {stderr.strip()[-300:]}")
        if _stored(log) != n:
            raise RuntimeError(f"el worker envió {_stored(log)} facturas de {n}")
    return {"n": n, "latency_ms": latency_ms, "concurrency": concurrency,
            "worker_s": seconds, "worker_window_s": _window(log, latency_ms),
            "cpu_ms_per_invoice": cpu_s / n * 1000,
            "ideal_s": n * latency_ms / 1000 / concurrency}


def _bench_settings(url: str, sandbox: "ExternalSandbox", concurrency: int) -> Settings:
    return validate(Settings(database_url=url, base_url=sandbox.url, username="API",
                             password=sandbox.password, concurrency=concurrency, timeout=30))


def bench_memory(n: int, concurrency: int, *, server: sa.URL | None = None) -> dict:
    """Peak resident memory of a CLI process resending `n` invoices of one local/day
    (`python -m sync resend`), with the sandbox in a process of its own."""
    with tempfile.TemporaryDirectory() as tmp, \
            bench_database(server, Path(tmp), "memory", n) as url:
        sandbox = ExternalSandbox(0.0, Path(tmp))
        try:
            code, stderr, seconds, cpu_s, peak_mb = _run_child(
                ["resend", "BENCH", BENCH_DAY.isoformat()],
                _env(url, sandbox, concurrency, Path(tmp)), Path(tmp))
        finally:
            log = sandbox.stop()
        if code != 0:
            raise RuntimeError(f"la corrida de memoria falló: {stderr.strip()[-300:]}")
    return {"n": n, "peak_rss_mb": peak_mb, "seconds": seconds,
            "cpu_ms_per_invoice": cpu_s / n * 1000, "stored": _stored(log)}


# --- the report ----------------------------------------------------------------------------

def _fmt(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _share(run: dict, window_key: str) -> str:
    """The window as a share of the ideal: 100 % is N×L/C exactly."""
    window, ideal = run[window_key], run["ideal_s"]
    if not ideal or not window:
        return ""
    return (f"ventana de envío {_fmt(window)}, ideal N×L/C {_fmt(ideal)}: "
            f"ventana/ideal = {window / ideal:.3f}×, ideal/ventana = {ideal / window:.1%}")


def _cpu(run: dict) -> str:
    return f"CPU del proceso {run['cpu_ms_per_invoice']:.3f} ms por factura"


def main(args) -> int:
    server = server_of(getattr(args, "database", None))
    n, latency, c = args.n, args.latency_ms, args.concurrency
    big_n, big_c = n * 10, c * 4
    report: dict = {"database": "sqlite" if server is None else "mysql"}
    print(f"Benchmark en {os.cpu_count()} núcleo(s); sandbox en un proceso propio, en loopback; "
          f"{_database_label(server)}.")

    send = bench_sending(n, latency, c, server=server)
    report["sending"] = send
    seq, proj = send["sequential_s"], send["project_s"]
    print(f"\n(a) secuencial (como el seed), N={n}, L={latency:g} ms: {_fmt(seq)}  "
          f"({n / seq:.0f} facturas/s)")
    print(f"(b) proyecto, C={c}: {_fmt(proj)} en total ({n / proj:.0f} facturas/s); "
          f"aceleración (a)/(b) {seq / proj:.2f}×")
    print(f"    {_share(send, 'project_window_s')}; {_cpu(send)}")

    big = bench_sending(big_n, latency, big_c, sequential=False, server=server)
    report["sending_high"] = big
    print(f"(b') proyecto, N={big_n}, C={big_c}: {_fmt(big['project_s'])} en total "
          f"({big_n / big['project_s']:.0f} facturas/s)")
    print(f"    {_share(big, 'project_window_s')}; {_cpu(big)}")

    for key, (wn, wc) in (("worker", (n, c)), ("worker_high", (big_n, big_c))):
        worker = bench_worker(wn, latency, wc, server=server)
        report[key] = worker
        print(f"(c) worker (python -m sync worker --once: un día auditado en el sistema de "
              f"ventas, levantado y enviado), N={wn}, C={wc}: {_fmt(worker['worker_s'])} de "
              f"punta a punta con el arranque del proceso")
        print(f"    {_share(worker, 'worker_window_s')}; {_cpu(worker)}")

    zero = bench_sending(big_n, 0.0, c, sequential=False, server=server)
    report["zero_latency"] = zero
    print(f"\nLatencia 0, N={big_n}, C={c}: {_fmt(zero['project_s'])} → "
          f"{big_n / zero['project_s']:.0f} facturas/s de punta a punta, con escrituras en la "
          f"base; {_cpu(zero)}")

    if args.rows:
        from benchmarks.bench_queries import bench_queries
        report["queries"] = bench_queries(args.rows, args.preview_n, server=server)
    if args.memory_n:
        mem = bench_memory(args.memory_n, c, server=server)
        report["memory"] = mem
        print(f"\nMemoria: reenvío de {mem['n']} facturas (python -m sync resend, en un proceso "
              f"aparte): pico {mem['peak_rss_mb']:.0f} MB de RSS, {_fmt(mem['seconds'])}, "
              f"{mem['stored']} recibidas por el sandbox; {_cpu(mem)}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"\nResultados en {args.json}")
    return 0
