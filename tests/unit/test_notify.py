"""The failure webhook: a real tiny HTTP server on port 0, a dead port, a failing one."""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from sync.settings import Settings
from sync.notify import failure_text, notify_failures

ERRORES = [{"factura": f"A 0005-{n:08d}", "error": f"Error HTTP 400: malo {n}"}
           for n in range(1, 8)]


class _Hook:
    """A webhook on 127.0.0.1:<free port> that records what it receives."""

    def __init__(self, status: int = 200, delay: float = 0.0):
        self.received: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                hook.received.append({"path": self.path, "json": json.loads(body),
                                      "type": self.headers.get("Content-Type")})
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/SECRET-PATH"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_posts_local_day_and_first_five_errors():
    with _Hook() as hook:
        ok = notify_failures(Settings(webhook_url=hook.url), local="PALERMO",
                             fecha=dt.date(2025, 1, 5), errores=ERRORES)
    assert ok is True
    [call] = hook.received
    assert call["path"] == "/services/T000/SECRET-PATH"
    assert call["type"] == "application/json"
    assert set(call["json"]) == {"text"}
    text = call["json"]["text"]
    assert text.splitlines()[0] == "⚠️ Errores sincronizando PALERMO (2025-01-05):"
    for n in range(1, 6):
        assert f"• A 0005-{n:08d}: Error HTTP 400: malo {n}" in text
    assert "A 0005-00000006" not in text
    assert "y 2 error(es) más" in text


def test_message_matches_the_seed_sketch():
    assert failure_text("MATRIZ", "2025-01-05", ERRORES[:1]) == (
        "⚠️ Errores sincronizando MATRIZ (2025-01-05):\n"
        "• A 0005-00000001: Error HTTP 400: malo 1")


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_url_returns_false_and_logs_without_the_secret_path(caplog):
    url = f"http://127.0.0.1:{_dead_port()}/services/T000/SECRET-PATH"
    with caplog.at_level(logging.WARNING, logger="sync.notify"):
        started = time.monotonic()
        ok = notify_failures(Settings(webhook_url=url), local="MATRIZ", fecha="2025-01-05",
                             errores=ERRORES)
    assert ok is False
    assert time.monotonic() - started < 5
    assert caplog.records, "the failure must be logged"
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"127.0.0.1:{url.split(':')[2].split('/')[0]}" in logged
    assert "SECRET-PATH" not in logged and "T000" not in logged


@pytest.mark.parametrize("status", [404, 500])
def test_an_error_answer_returns_false(status, caplog):
    with _Hook(status=status) as hook, caplog.at_level(logging.WARNING, logger="sync.notify"):
        ok = notify_failures(Settings(webhook_url=hook.url), local="MATRIZ",
                             fecha="2025-01-05", errores=ERRORES)
    assert ok is False
    assert f"HTTP {status}" in caplog.text and "SECRET-PATH" not in caplog.text


def test_a_slow_webhook_times_out_without_raising():
    with _Hook(delay=1.0) as hook:
        started = time.monotonic()
        ok = notify_failures(Settings(webhook_url=hook.url), local="MATRIZ",
                             fecha="2025-01-05", errores=ERRORES, timeout=0.2)
        elapsed = time.monotonic() - started
    assert ok is False
    assert elapsed < 0.9


def test_nothing_is_sent_without_url_or_errors():
    assert notify_failures(Settings(), local="MATRIZ", fecha="2025-01-05",
                           errores=ERRORES) is False
    with _Hook() as hook:
        assert notify_failures(Settings(webhook_url=hook.url), local="MATRIZ",
                               fecha="2025-01-05", errores=[]) is False
    assert hook.received == []


def test_hostile_error_text_never_raises():
    weird = [{"factura": None, "error": "x" * 10000}, {"error": "\x00\ud800"}, {}]
    with _Hook() as hook:
        ok = notify_failures(Settings(webhook_url=hook.url), local="M", fecha="2025-01-05",
                             errores=weird)
    # Whatever the text (even an unpaired surrogate), the answer is a bool, never an error.
    assert isinstance(ok, bool)


def test_a_trickling_webhook_is_cut_at_its_deadline():
    """A webhook that answers a byte at a time must not hold the end of a run."""
    from helpers import http_server, trickling_handler

    with http_server(trickling_handler(status=200, length=300, token=False)) as url:
        settings = Settings(webhook_url=url + "/hook")
        started = time.monotonic()
        assert notify_failures(settings, local="MATRIZ", fecha=dt.date(2025, 1, 5),
                               errores=ERRORES, timeout=1.0) is False
        assert time.monotonic() - started < 2.5
