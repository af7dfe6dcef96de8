"""Every console page rendered in full (Streamlit's AppTest, in this process, as an admin)
on a chain's history: the database `benchmarks.bench_queries` builds and keeps (the
SQLite file under data/, or with `--database` its `bench_queries_keep_*` database on that
MySQL/MariaDB server). Each page is timed as it opens the morning after the history's
last day, and again with what a person picks next (a local with 10,000 invoices in the
preview, a 3,090-invoice resend's detail); the median of `--repeat` renders is printed.

Nothing is written: the console's own worker is not started (the render would not wait
for it, and it would write to the kept database), and no button is pressed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import bcrypt
import sqlalchemy as sa

from benchmarks.bench_queries import PREVIEW_LOCAL, built_url
from sync.settings import PROJECT_DIR, User
from sync.state import schema

PAGE_TARGET = 1.0     # seconds: a page's full render on a chain's history
ADMIN = User("bench", "Bench Admin", "admin", "")


def _history(url: str) -> dict:
    """What the scenarios pick: the history's last audited day and its biggest resend.
    The schema is brought up to date first (as bench_queries does when it reuses the
    database): a page on a database that needs an upgrade only says so."""
    engine = schema.make_engine(url)
    try:
        schema.init_db(engine, source_tables=True)
        with engine.connect() as conn:
            last = conn.execute(sa.select(sa.func.max(schema.locales_auditados.c.fecha))).scalar()
            r = schema.oppen_runs
            resend = conn.execute(sa.select(r.c.id).where(r.c.kind == "resend")
                                  .order_by(r.c.total.desc()).limit(1)).scalar()
    finally:
        engine.dispose()
    last = last if isinstance(last, dt.date) else dt.date.fromisoformat(str(last))
    return {"last": last, "resend": resend}


def _scenarios(history: dict) -> dict[str, tuple[str, Callable | None]]:
    """name -> (page, what a person does after it opens; None: the page as it opens).
    The timed render is the one after it."""
    def preview(at):
        at.selectbox(key="preview_local").select(PREVIEW_LOCAL)

    def one_day(at):
        at.selectbox(key="local").select("LOCAL07")

    def resend_detail(at):
        at.query_params["corrida"] = str(history["resend"])

    return {
        "Auditoría": ("auditoria.py", None),
        "Auditoría: un local elegido": ("auditoria.py", one_day),
        "Locales auditados (7 días)": ("locales_auditados.py", None),
        "Vista previa": ("vista_previa.py", None),
        "Vista previa: un local de 10.000 facturas": ("vista_previa.py", preview),
        "Corridas": ("corridas.py", None),
        "Corridas: detalle de un reenvío": ("corridas.py", resend_detail),
        "Facturas fallidas (30 días)": ("facturas_fallidas.py", None),
        "Monitoreo": ("monitoreo.py", None),
        "Conciliación (30 días)": ("conciliacion.py", None),
    }


def _render(page: str, step: Callable | None) -> tuple[float, list[str]]:
    """Seconds of the page's second render, and what went wrong in it (nothing: [])."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PROJECT_DIR / "pages" / page), default_timeout=120)
    at.session_state["user"] = ADMIN
    # The first run of an AppTest also scans the installed packages for components
    # (0.4 s here, a test harness's cost, not the page's): the timed run is the next,
    # the page run again as any click reruns it, or what a person picked next.
    at.run()
    if step is not None:
        step(at)
    started = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - started
    # A page that stops before its heading (a database that needs an upgrade, a user it
    # refuses) would be a fast render of nothing: counted as a failure, with what it said.
    stopped = [] if at.title else [" · ".join(e.value for e in at.error) or "sin título"]
    return seconds, [e.value for e in at.exception] + stopped


def _quiet_streamlit() -> None:
    """Outside a server every AppTest run warns of a missing ScriptRunContext: noise here."""
    import streamlit.testing.v1  # noqa: F401  (creates Streamlit's loggers)

    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("streamlit"):
            logging.getLogger(name).setLevel(logging.ERROR)


def bench_pages(url: str, repeat: int = 3, only: str | None = None) -> dict:
    """Median seconds of each scenario's render on the database at `url` (with `only`,
    of the scenarios whose name holds that text)."""
    _quiet_streamlit()
    history = _history(url)
    scenarios = {name: scenario for name, scenario in _scenarios(history).items()
                 if not only or only.lower() in name.lower()}
    with tempfile.TemporaryDirectory() as tmp:
        secrets = Path(tmp) / "secrets.toml"
        digest = bcrypt.hashpw(b"bench-clave-123", bcrypt.gensalt(4)).decode()
        secrets.write_text(f'[users.bench]\nname = "Bench Admin"\nrole = "admin"\n'
                           f'password_hash = "{digest}"\n', encoding="utf-8")
        env = {"DATABASE_URL": url, "OPPEN_ENV": "sandbox", "OPPEN_SECRETS_FILE": str(secrets),
               "OPPEN_RECONCILE_AT": "off"}
        # The pages' "today" is the morning after the history's last day, so each opens on
        # the days a person would look at (the generated history ends in the past).
        today = history["last"] + dt.timedelta(days=1)
        with mock.patch.dict(os.environ, env), \
                mock.patch("sync.state.read_models.local_today", return_value=today), \
                mock.patch("sync.background.ensure_worker",
                           return_value={"external": 0, "embedded": False, "started": False}):
            print(f"\nPáginas de la consola sobre {url.rsplit('/', 1)[-1]} "
                  f"(mediana de {repeat}, AppTest, como administrador):", flush=True)
            results, problems = {}, {}
            for name, (page, step) in scenarios.items():
                _render(page, step)   # the first render of a page also imports and connects
                _quiet_streamlit()    # loggers its first render created
                times = []
                for _ in range(repeat):
                    seconds, errors = _render(page, step)
                    times.append(seconds)
                    if errors:
                        problems[name] = errors
                median = statistics.median(times)
                results[name] = median
                mark = "✓" if median < PAGE_TARGET else f"✗ (> {PAGE_TARGET * 1000:.0f} ms)"
                print(f"  {name:<48} {median * 1000:8.0f} ms (máx. {max(times) * 1000:.0f}) "
                      f"{mark}{'  ERROR: ' + problems[name][0][:200] if name in problems else ''}",
                      flush=True)
    return {"database": url.rsplit("/", 1)[-1], "seconds": results, "errors": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_pages",
        description="Medir cuánto tarda cada página de la consola en dibujarse entera "
                    "sobre el historial de una cadena (la base que genera "
                    "benchmarks.bench_queries).")
    parser.add_argument("--database", metavar="URL",
                        help="servidor MySQL/MariaDB: su base bench_queries_keep_* "
                             "(sin ella, la base SQLite bajo data/)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="facturas (1000000)")
    parser.add_argument("--preview-n", type=int, default=10_000,
                        help="facturas del local/día de la vista previa (10000)")
    parser.add_argument("--repeat", type=int, default=3, help="veces cada página (3)")
    parser.add_argument("--only", metavar="TEXTO",
                        help="solo las páginas cuyo nombre contiene este texto")
    parser.add_argument("--json", metavar="ARCHIVO", help="guardar los resultados en este archivo")
    args = parser.parse_args(argv)
    from benchmarks.bench import server_of
    server = server_of(args.database)
    url = built_url(args.rows, args.preview_n, server)
    if url is None:
        keep = f" --database {args.database} --keep" if server is not None else ""
        print(f"No hay una base de {args.rows:,} facturas generada: correr antes "
              f"python -m benchmarks.bench_queries --rows {args.rows} "
              f"--preview-n {args.preview_n}{keep}", file=sys.stderr)
        return 2
    result = bench_pages(url, args.repeat, args.only)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
