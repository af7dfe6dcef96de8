"""Helpers for the fault-injection tests: run the CLI as a real process, kill it, and
check the exactly-once invariants against the sandbox's own records and log."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from sync.state import schema

ROOT = Path(__file__).resolve().parents[2]
AMBIGUOUS = {"fault_5xx", "fault_502_html", "timeout_after_store", "dropped"}


def cli_env(settings, **extra) -> dict:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": settings.database_url, "OPPEN_ENV": "sandbox",
        "OPPEN_BASE_URL": settings.base_url, "OPPEN_USERNAME": settings.username,
        "OPPEN_PASSWORD": settings.password, "OPPEN_SECRETS_FILE": "/nonexistent/secrets.toml",
        "OPPEN_TIMEOUT": "0.3", "OPPEN_LEASE_SECONDS": "1.5", "OPPEN_BACKOFF_BASE": "0.01",
        "OPPEN_BACKOFF_CAP": "0.05", "OPPEN_MAX_ATTEMPTS": "4", "OPPEN_CONCURRENCY": "4",
        "OPPEN_BREAKER_THRESHOLD": "25", "PYTHONPATH": str(ROOT),
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_cli(args, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sync", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(args, env, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sync", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def kill_after_posts(proc: subprocess.Popen, sandbox, posts: int, limit: float = 30
                     ) -> float | None:
    """SIGKILL the process once the sandbox has seen `posts` more POSTs. Returns when it
    was killed (time.monotonic(), the in-process sandbox's clock too), None if not."""
    base = sum(1 for e in sandbox.request_log() if e["method"] == "POST")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        seen = sum(1 for e in sandbox.request_log() if e["method"] == "POST") - base
        if seen >= posts:
            killed_at = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return killed_at
        time.sleep(0.005)
    proc.wait()
    return None


def resend_until_done(env, engine, target, rounds: int = 40) -> int:
    """Run `resend` as an admin would until nothing is left to send; returns the rounds."""
    for n in range(1, rounds + 1):
        result = run_cli(["resend"], env)
        assert result.returncode in (0, 1, 3), result.stderr
        if "Traceback" in result.stderr:
            raise AssertionError(result.stderr)
        if result.returncode == 1:      # a dead run's lock: wait for its lease
            time.sleep(0.3)
            continue
        if not unsent(engine, target):
            return n
    raise AssertionError(f"still unsent after {rounds} rounds: {unsent(engine, target)[:5]}")


def unsent(engine, target):
    t = schema.oppen_invoices
    with engine.connect() as conn:
        return conn.execute(sa.select(t.c.reference, t.c.state, t.c.last_error).where(
            t.c.target == target, t.c.state.notin_((schema.SENT, schema.INVALID)))).all()


def seed_days(engine, locals_, days, per_day, start=dt.date(2025, 3, 1), audited=True):
    rows, audits, closes = [], [], []
    for d in range(days):
        fecha = start + dt.timedelta(days=d)
        for k, local in enumerate(locals_):
            closes.append({"local": local, "fecha": fecha, "cerrado_en": None})
            if audited:
                audits.append({"local": local, "fecha": fecha, "auditor": "test"})
            for n in range(per_day):
                rows.append({"local": local, "fecha": dt.datetime.combine(fecha, dt.time(10, 0)),
                             "tipo": "AB"[n % 2], "punto_venta": str(k + 1),
                             "nro_factura": str(d * 10000 + n + 1),
                             "monto": Decimal(100 + n) / 4, "estado": "ok"})
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.facturas_trns), rows)
        conn.execute(sa.insert(schema.cierres_locales), closes)
        if audits:
            conn.execute(sa.insert(schema.locales_auditados), audits)
    return len(rows)


def check_log(log) -> None:
    """No POST of an invoice after an ambiguous attempt without a successful lookup between,
    and no blind re-POST at all (Oppen never had to refuse a duplicate of ours)."""
    ambiguous: set[str] = set()
    for entry in sorted(log, key=lambda e: e["seq"]):
        number = entry.get("official_sernr")
        if entry["path"] != "Invoice" or not number:
            continue
        if entry["method"] == "GET" and entry["outcome"] == "listed":
            ambiguous.discard(number)
        elif entry["method"] == "POST":
            assert number not in ambiguous, f"POST {number} after an ambiguous attempt, no lookup"
            assert entry["outcome"] != "duplicate", f"blind re-POST of {number}"
            if entry["outcome"] in AMBIGUOUS:
                ambiguous.add(number)


def check_exactly_once(engine, target, sandbox, expected: int) -> None:
    stored = sandbox.invoices()
    counts = Counter(inv["OfficialSerNr"] for inv in stored)
    assert [n for n, c in counts.items() if c > 1] == []
    by_number = {inv["OfficialSerNr"]: inv for inv in stored}
    t = schema.oppen_invoices
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.official_sernr, t.c.state, t.c.sernr)
                            .where(t.c.target == target)).all()
    sent = {r.official_sernr: r.sernr for r in rows if r.state == schema.SENT}
    assert len(sent) == expected
    # The database agrees with Oppen for every invoice: state and SerNr.
    assert set(sent) == set(by_number)
    for number, sernr in sent.items():
        assert by_number[number]["SerNr"] == sernr, number


def check_accounting(engine, target) -> None:
    """sent + failed + invalid + pending + conflict = every ok row of every registered day;
    every row not sent says why."""
    t, f = schema.oppen_invoices, schema.facturas_trns
    with engine.connect() as conn:
        days = conn.execute(sa.select(t.c.local, t.c.fecha).distinct()
                            .where(t.c.target == target)).all()
        for local, fecha in days:
            start, end = schema.day_bounds(fecha)
            total = conn.execute(sa.select(sa.func.count()).select_from(f).where(
                f.c.local == local, f.c.fecha >= start, f.c.fecha < end,
                f.c.estado == "ok")).scalar()
            by_state = dict(conn.execute(sa.select(t.c.state, sa.func.count()).where(
                t.c.target == target, t.c.local == local, t.c.fecha == fecha)
                .group_by(t.c.state)).all())
            assert sum(by_state.values()) == total, (local, fecha, by_state, total)
            assert set(by_state) <= set(schema.STATES)
        unexplained = conn.execute(sa.select(sa.func.count()).select_from(t).where(
            t.c.target == target, t.c.state.in_((schema.FAILED, schema.INVALID, schema.CONFLICT)),
            t.c.last_error.is_(None))).scalar()
        assert unexplained == 0


def check_no_repeat_posts(sandbox, interruptions=()) -> None:
    """Exactly once without leaning on Oppen's duplicate refusal: the sandbox counts every
    POST of an invoice it already holds, and there must be none, except a POST that was
    already on the wire when its sender was killed or paused (at one of `interruptions`,
    time.monotonic() values): received before that moment, so nothing could stop it."""
    repeats = sandbox.repeat_posts()
    if not repeats:
        return
    log = sorted(sandbox.request_log(), key=lambda e: e["seq"])
    excused = set()
    for number in repeats:
        posts = [e for e in log if e["method"] == "POST" and e.get("official_sernr")
                 and number.startswith(e["official_sernr"])]
        first = next((e for e in posts if not e.get("repeat")), None)
        if first is not None and any(first["received"] is not None and
                                     first["received"] <= moment for moment in interruptions):
            excused.add(number)
    unexcused = set(repeats) - excused
    assert not unexcused, (
        {n: repeats[n] for n in unexcused}, list(interruptions),
        [e for e in log if e.get("official_sernr") and any(
            n.startswith(e["official_sernr"]) for n in unexcused)])

