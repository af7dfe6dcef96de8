"""The Oppen client over real sockets: the sandbox fixture, and a tiny `http.server` for
the behaviours the sandbox does not have (a filter ignored, a body that echoes the
request). Nothing here mocks `requests`."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest

from sync.oppen.client import OppenClient, TokenCache
from sync.oppen.retry import backoff_delay, is_retryable
from sync.errors import (OppenAuthError, OppenDuplicate, OppenError, OppenRejected,
                         OppenTransportError, SendWithheld, SyncError)
from sync.sandbox import Faults, OppenSandbox

from helpers import seed_invoice


def invoice(number: int = 1691, **overrides) -> dict:
    return seed_invoice(number, **{"SerNr": 1_000_000_000_000 + number, **overrides})


@pytest.fixture
def clients():
    made = []

    def make(base_url, password, **kwargs):
        c = OppenClient(base_url=base_url, api=kwargs.pop("api", "ApiNg"),
                        username=kwargs.pop("username", "API"), password=password,
                        timeout=kwargs.pop("timeout", 2.0), **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def oppen(sandbox, password, clients):
    """A client for the sandbox fixture (like conftest's `client`, without a database)."""
    return clients(sandbox.url, password)


def outcomes(sandbox, outcome=None, path=None):
    return [e for e in sandbox.request_log()
            if (outcome is None or e["outcome"] == outcome) and (path is None or e["path"] == path)]


def auth_count(sandbox) -> int:
    return len(outcomes(sandbox, path="authenticate"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_secrets(exc: BaseException, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in str(exc)
        assert secret not in repr(exc)
        assert secret not in (getattr(exc, "body", None) or "")
        assert secret not in (getattr(exc, "message", None) or "")


# --- authentication and the token ----------------------------------------------------------

def test_authenticate(oppen, sandbox):
    token = oppen.authenticate()
    assert isinstance(token, str) and token
    assert oppen.tokens.get() == token
    assert [e["outcome"] for e in sandbox.request_log()] == ["authenticated"]


def test_the_seed_client_call_pattern_with_the_client_fixture(client, sandbox):
    record = client.create_invoice(invoice())
    assert record["OfficialSerNr"] == "0005-00001691"
    assert record["SerNr"] == invoice()["SerNr"]
    assert auth_count(sandbox) == 1


def test_a_post_withheld_at_the_last_moment_sends_nothing(oppen, sandbox):
    """`proceed` is asked with the request built, right before its one write: False sends
    nothing (the sandbox sees no POST), and the next POST goes out as usual."""
    oppen.create_invoice(invoice(1))            # logged in, one connection kept alive
    asked = []
    with pytest.raises(SendWithheld):
        oppen.post_invoice(invoice(2), proceed=lambda: asked.append(1) or False)
    assert asked == [1]
    assert oppen.session._idle == []    # a request begun and never sent: not reused
    assert [e for e in sandbox.request_log() if e["method"] == "POST"
            and e.get("official_sernr") == "0005-00000002"] == []
    status, record = oppen.post_invoice(invoice(2), proceed=lambda: True)
    assert status in (200, 201) and record["OfficialSerNr"] == "0005-00000002"
    assert len(outcomes(sandbox, "stored")) == 2


def test_token_is_reused_across_many_calls(oppen, sandbox):
    for n in range(1, 16):
        oppen.create_invoice(invoice(n))
    for n in range(1, 16):
        assert len(oppen.find_invoices(f"0005-{n:08d}")) == 1
    assert auth_count(sandbox) == 1
    assert len(outcomes(sandbox, "stored")) == 15
    assert outcomes(sandbox, "unauthorized") == []


def test_a_401_triggers_exactly_one_reauthentication(oppen, sandbox):
    sandbox.set_faults(token_max_uses=3)
    for n in range(1, 4):
        oppen.create_invoice(invoice(n))
    assert auth_count(sandbox) == 1
    # The fourth use is refused: the client logs in again once and repeats the call.
    record = oppen.create_invoice(invoice(4))
    assert record["OfficialSerNr"] == "0005-00000004"
    assert auth_count(sandbox) == 2
    assert len(outcomes(sandbox, "unauthorized")) == 1
    assert len(outcomes(sandbox, "stored")) == 4
    assert [i["OfficialSerNr"] for i in sandbox.invoices()].count("0005-00000004") == 1


def test_a_401_on_a_lookup_is_also_repeated_once(oppen, sandbox):
    sandbox.add_invoice(invoice(7))
    sandbox.set_faults(token_max_uses=1)
    assert len(oppen.find_invoices("0005-00000007")) == 1
    assert len(oppen.find_invoices("0005-00000007")) == 1
    assert auth_count(sandbox) == 2
    assert len(outcomes(sandbox, "unauthorized")) == 1


def test_a_persistent_401_is_an_auth_error_not_a_loop(oppen, sandbox):
    oppen.authenticate()
    sandbox.set_faults(token_ttl=0.000001)  # every token is already expired
    with pytest.raises(OppenAuthError) as info:
        oppen.create_invoice(invoice())
    assert str(info.value) == "Error de autenticación: HTTP 401 - Unauthorized"
    assert auth_count(sandbox) == 2
    assert len(outcomes(sandbox, "unauthorized")) == 2
    assert sandbox.invoices() == []


@pytest.mark.parametrize("username, wrong", [("API", "otra-clave"), ("OTRO", None)])
def test_wrong_credentials(sandbox, password, clients, username, wrong):
    c = clients(sandbox.url, wrong or password, username=username)
    with pytest.raises(OppenAuthError) as info:
        c.authenticate()
    assert str(info.value) == "Error de autenticación: HTTP 401 - Unauthorized"
    assert info.value.status == 401
    assert not is_retryable(info.value)
    no_secrets(info.value, password, "otra-clave")


def test_wrong_password_sends_no_invoice(sandbox, clients):
    c = clients(sandbox.url, "otra-clave")
    with pytest.raises(OppenAuthError) as info:
        c.create_invoice(invoice())
    assert str(info.value) == "Error de autenticación: HTTP 401 - Unauthorized"
    assert outcomes(sandbox, path="Invoice") == []
    assert sandbox.invoices() == []


def test_oppen_api_error_alias_catches_everything(sandbox, clients):
    from sync.errors import OppenAPIError
    with pytest.raises(OppenAPIError):
        clients(sandbox.url, "otra-clave").authenticate()


# --- transport failures ------------------------------------------------------------------------

def test_stopped_instance_html_502(oppen, sandbox, password):
    sandbox.set_faults(down=True)
    with pytest.raises(OppenTransportError) as info:
        oppen.authenticate()
    exc = info.value
    assert exc.status == 502
    assert str(exc).startswith("Error HTTP 502")
    assert "HTML" in str(exc)
    assert "<" not in str(exc) and ">" not in str(exc)
    assert "Bad Gateway" not in str(exc)
    assert is_retryable(exc)
    no_secrets(exc, password)


def test_stopped_instance_after_login(oppen, sandbox):
    oppen.authenticate()
    sandbox.set_faults(down=True)
    with pytest.raises(OppenTransportError) as info:
        oppen.create_invoice(invoice())
    assert "HTML" in str(info.value) and "<" not in str(info.value)
    assert info.value.maybe_applied is True
    with pytest.raises(OppenTransportError):
        oppen.find_invoices("0005-00001691")


def test_rate_limited_429(oppen, sandbox):
    oppen.authenticate()
    sandbox.set_faults(rate_limit_rate=1.0)
    with pytest.raises(OppenTransportError) as info:
        oppen.create_invoice(invoice())
    exc = info.value
    assert exc.status == 429
    assert exc.maybe_applied is False
    assert exc.retry_after == 0.0
    assert str(exc) == "Error HTTP 429: Too Many Requests"
    assert is_retryable(exc)
    assert sandbox.invoices() == []


def test_server_errors_are_transport_errors(oppen, sandbox):
    oppen.authenticate()
    sandbox.set_faults(error_rate=1.0, seed=3)
    statuses = set()
    for n in range(12):
        with pytest.raises(OppenTransportError) as info:
            oppen.create_invoice(invoice(n + 1))
        assert "<" not in str(info.value)
        assert is_retryable(info.value)
        statuses.add(info.value.status)
    assert statuses <= {500, 502, 503} and 502 in statuses


def test_timeout(sandbox, password, clients):
    c = clients(sandbox.url, password, timeout=0.3)
    c.authenticate()
    sandbox.set_faults(timeout_rate=1.0, hang_seconds=1.5)
    with pytest.raises(OppenTransportError) as info:
        c.create_invoice(invoice())
    exc = info.value
    assert str(exc) == "Error de conexión: Connection timeout"
    # The sandbox stored it before hanging: the outcome is unknown, not "not sent".
    assert exc.maybe_applied is True
    assert is_retryable(exc)
    sandbox.set_faults(timeout_rate=0.0)
    found = c.find_invoices("0005-00001691")
    assert [r["SerNr"] for r in found] == [invoice()["SerNr"]]


def test_connection_refused(password, clients):
    c = clients(f"http://127.0.0.1:{free_port()}", password)
    for call in (c.authenticate, lambda: c.create_invoice(invoice()),
                 lambda: c.find_invoices("0005-00001691")):
        with pytest.raises(OppenTransportError) as info:
            call()
        assert str(info.value) == "Error de conexión: Connection refused"
        assert info.value.maybe_applied is False
        assert is_retryable(info.value)
        assert info.value.__cause__ is None or isinstance(info.value.__cause__, OppenError)
        no_secrets(info.value, password)


def test_dropped_connection(oppen, sandbox):
    oppen.authenticate()
    sandbox.set_faults(drop_rate=1.0)
    with pytest.raises(OppenTransportError) as info:
        oppen.create_invoice(invoice())
    assert str(info.value).startswith("Error de conexión: ")
    assert info.value.maybe_applied is True


def test_no_requests_exception_escapes_for_a_bad_url(password, clients):
    c = clients("http://[::1", password)
    with pytest.raises(OppenError) as info:
        c.authenticate()
    assert str(info.value).startswith("Error de conexión")


# --- rejections and duplicates --------------------------------------------------------------

def test_duplicate_seed_style_409(oppen, sandbox):
    oppen.create_invoice(invoice())
    with pytest.raises(OppenDuplicate) as info:
        oppen.create_invoice(invoice(SerNr=999))
    exc = info.value
    assert str(exc) == "Error HTTP 409: Duplicate invoice"
    assert exc.status == 409
    assert isinstance(exc, OppenRejected)
    assert not is_retryable(exc)
    assert len(sandbox.invoices()) == 1


def test_duplicate_real_style_400(password, clients):
    with OppenSandbox(password=password, faults=Faults(duplicate_style="real")) as box:
        c = clients(box.url, password)
        c.create_invoice(invoice())
        with pytest.raises(OppenDuplicate) as info:
            c.create_invoice(invoice(SerNr=999))
    assert str(info.value) == "Error HTTP 400: Duplicate Official Serial Nr!"
    assert info.value.status == 400
    assert not is_retryable(info.value)


@pytest.mark.parametrize("overrides, message", [
    ({"OfficialSerNr": "123"}, "Error HTTP 400: Invalid invoice number"),
    ({"OfficialSerNr": "0005-1691"}, "Error HTTP 400: Invalid invoice number"),
    ({"Foo": 1}, "Error HTTP 400: Field Foo not found"),
    ({"TransDate": "05/01/2025"}, "Error HTTP 400: Invalid date TransDate"),
    ({"Items": []}, "Error HTTP 400: Invalid Items"),
])
def test_validation_errors_are_rejections(oppen, sandbox, overrides, message):
    with pytest.raises(OppenRejected) as info:
        oppen.create_invoice(invoice(**overrides))
    exc = info.value
    assert str(exc) == message
    assert not isinstance(exc, OppenDuplicate)
    assert not is_retryable(exc)
    assert exc.status == 400
    assert sandbox.invoices() == []


def test_unknown_label_is_a_rejection(password, clients):
    with OppenSandbox(password=password, labels={"MTZ"}) as box:
        c = clients(box.url, password)
        with pytest.raises(OppenRejected) as info:
            c.create_invoice(invoice(Labels="Local|MATRIZ"))
        assert str(info.value) == "Error HTTP 400: LINKTOINVALIDVALUEERR Labels"
        assert c.create_invoice(invoice(Labels="MTZ"))["Labels"] == "MTZ"


def test_create_returns_the_record_with_a_server_assigned_sernr(oppen):
    payload = invoice()
    del payload["SerNr"]
    record = oppen.create_invoice(payload)
    assert record["SerNr"] > 2**31
    assert record["OfficialSerNr"] == "0005-00001691"
    assert record["Total"] == 15000.0


# --- reading back --------------------------------------------------------------------------------

def test_find_invoices_by_official_sernr(oppen, sandbox):
    for n in range(1, 6):
        sandbox.add_invoice(invoice(n))
    found = oppen.find_invoices("0005-00000003")
    assert len(found) == 1
    assert found[0]["OfficialSerNr"] == "0005-00000003"
    assert found[0]["SerNr"] == invoice(3)["SerNr"]
    assert oppen.find_invoices("0005-00000099") == []
    assert oppen.find_invoices("00005-00000003") == []


def test_list_invoices_follows_pages(oppen, sandbox):
    for n in range(1, 8):
        sandbox.add_invoice(invoice(n))
    got = list(oppen.list_invoices({"TransDate__gte": "2025-01-01"}, page_size=3))
    assert [r["OfficialSerNr"] for r in got] == [f"0005-{n:08d}" for n in range(1, 8)]
    assert len(outcomes(sandbox, "listed")) == 3


class TinyOppen:
    """A minimal Oppen look-alike for behaviours the sandbox does not have.

    `invoice_answer(query, headers)` returns (status, content_type, body) for GET Invoice;
    `auth_answer(body)` the same for POST authenticate.
    """

    def __init__(self, invoice_answer=None, auth_answer=None, post_answer=None):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status, content_type, body):
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                path = urlsplit(self.path).path
                with outer.lock:
                    outer.requests.append({"method": "POST", "path": path})
                if path.endswith("/authenticate"):
                    answer = (auth_answer or outer.good_auth)(body)
                else:
                    answer = (post_answer or outer.not_found)(body, dict(self.headers))
                self._answer(*answer)

            def do_GET(self):
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query))
                with outer.lock:
                    outer.requests.append({"method": "GET", "path": parts.path, "query": query})
                self._answer(*(invoice_answer or outer.not_found)(query, dict(self.headers)))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    TOKEN = "tiny-token-" + "x" * 24

    @staticmethod
    def good_auth(body):
        return 200, "application/json", json.dumps(
            {"ok": True, "token": TinyOppen.TOKEN, "expires": 3600})

    @staticmethod
    def not_found(*args):
        return 404, "application/json", '{"ok": false, "error": "Not Found"}'

    def gets(self):
        return [r for r in self.requests if r["method"] == "GET"]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def ledger(total: int, target_at: int | None = None, target: str = "0005-00001691"):
    """An Oppen that ignores every filter but honours __limit__/__offset__ and has_more."""
    records = [{"SerNr": 3_000_000_001 + i, "OfficialSerNr": f"0001-{i + 1:08d}",
                "TransDate": "2025-01-05", "Total": 10.0} for i in range(total)]
    if target_at is not None:
        records[target_at] = {**records[target_at], "OfficialSerNr": target}

    def answer(query, headers):
        limit = int(query.get("__limit__", 100))
        offset = int(query.get("__offset__", 0))
        page = records[offset:offset + limit]
        return 200, "application/json", json.dumps(
            {"ok": True, "data": page, "has_more": offset + limit < len(records)})

    return answer


def test_find_invoices_never_trusts_an_ignored_filter(clients):
    with TinyOppen(invoice_answer=ledger(250)) as tiny:
        c = clients(tiny.url, "pw")
        assert c.find_invoices("0005-00001691") == []
        # It paged through everything Oppen offered, never stopping at page one.
        offsets = [int(r["query"]["__offset__"]) for r in tiny.gets()]
        assert offsets == sorted(offsets) and offsets[0] == 0
        assert len(offsets) >= 3
        assert all(r["query"].get("OfficialSerNr") == "0005-00001691" for r in tiny.gets())


@pytest.mark.parametrize("target_at", [0, 99, 100, 249])
def test_find_invoices_with_an_ignored_filter_finds_only_the_match(clients, target_at):
    with TinyOppen(invoice_answer=ledger(250, target_at=target_at)) as tiny:
        c = clients(tiny.url, "pw")
        found = c.find_invoices("0005-00001691")
        assert [r["OfficialSerNr"] for r in found] == ["0005-00001691"]
        assert found[0]["SerNr"] == 3_000_000_001 + target_at


def test_find_invoices_ignored_filter_with_lookalike_numbers(clients):
    lookalikes = ["00005-00001691", "0005-000016910", " 0005-00001691", "0005-00001691 ",
                  "0005-00001692", None, 5_00001691]

    def answer(query, headers):
        offset = int(query.get("__offset__", 0))
        page = [{"SerNr": i, "OfficialSerNr": v} for i, v in enumerate(lookalikes)][offset:offset + 3]
        return 200, "application/json", json.dumps(
            {"ok": True, "data": page, "has_more": offset + 3 < len(lookalikes)})

    with TinyOppen(invoice_answer=answer) as tiny:
        assert clients(tiny.url, "pw").find_invoices("0005-00001691") == []


@pytest.mark.parametrize("body, content_type", [
    ("not json", "text/plain"),
    ('{"ok": true}', "application/json"),
    ('{"data": "nope"}', "application/json"),
    ("<html><body>login</body></html>", "text/html"),
])
def test_unreadable_listing_is_a_transport_error(clients, body, content_type):
    with TinyOppen(invoice_answer=lambda q, h: (200, content_type, body)) as tiny:
        with pytest.raises(OppenTransportError) as info:
            clients(tiny.url, "pw").find_invoices("0005-00001691")
        assert "<" not in str(info.value)


@pytest.mark.parametrize("body", ["not json", '{"ok": true}', '{"token": ""}', '{"token": 5}', "[]"])
def test_authenticate_without_a_token_is_an_auth_error(clients, body):
    with TinyOppen(auth_answer=lambda b: (200, "application/json", body)) as tiny:
        with pytest.raises(OppenAuthError) as info:
            clients(tiny.url, "pw").authenticate()
        assert str(info.value).startswith("Error de autenticación")


# --- retry policy -----------------------------------------------------------------------

@pytest.mark.parametrize("exc, retryable", [
    (OppenTransportError("Error de conexión: Connection timeout"), True),
    (OppenTransportError("Error de conexión: Connection refused", maybe_applied=False), True),
    (OppenTransportError("Error HTTP 429: Too Many Requests", status=429, maybe_applied=False), True),
    (OppenTransportError("Error HTTP 503: x", status=503), True),
    (OppenRejected("Error HTTP 400: Invalid invoice number", status=400), False),
    (OppenDuplicate("Error HTTP 409: Duplicate invoice", status=409), False),
    (OppenDuplicate("Error HTTP 400: Duplicate Official Serial Nr!", status=400), False),
    (OppenAuthError("Error de autenticación: HTTP 401 - Unauthorized", status=401), False),
    (OppenError("Error HTTP 418: x", status=418), False),
    (SyncError("x"), False),
    (ValueError("x"), False),
    (TimeoutError("x"), False),
])
def test_is_retryable(exc, retryable):
    assert is_retryable(exc) is retryable


def test_backoff_is_reproducible_with_a_seeded_rng():
    a = [backoff_delay(n, base=0.5, cap=8.0, rng=random.Random(42)) for n in range(1, 10)]
    b = [backoff_delay(n, base=0.5, cap=8.0, rng=random.Random(42)) for n in range(1, 10)]
    assert a == b
    rng1, rng2 = random.Random(7), random.Random(7)
    assert ([backoff_delay(n, base=1, cap=10, rng=rng1) for n in range(1, 6)]
            == [backoff_delay(n, base=1, cap=10, rng=rng2) for n in range(1, 6)])


@pytest.mark.parametrize("attempt", list(range(0, 31)))
def test_backoff_stays_within_exponential_bound_and_cap(attempt):
    rng = random.Random(attempt)
    bound = min(8.0, 0.5 * 2 ** max(0, attempt - 1))
    for _ in range(200):
        delay = backoff_delay(attempt, base=0.5, cap=8.0, rng=rng)
        assert 0.0 <= delay <= bound <= 8.0


def test_backoff_has_jitter_and_grows():
    rng = random.Random(1)
    first = [backoff_delay(1, base=1.0, cap=100.0, rng=rng) for _ in range(300)]
    sixth = [backoff_delay(6, base=1.0, cap=100.0, rng=rng) for _ in range(300)]
    assert len(set(first)) > 250  # jittered, not a constant
    assert max(first) <= 1.0 and max(sixth) <= 32.0
    assert sum(sixth) / 300 > 4 * sum(first) / 300


@pytest.mark.parametrize("retry_after", [0.0, 0.5, 3.0, 20.0])
def test_retry_after_is_a_floor(retry_after):
    rng = random.Random(3)
    for attempt in range(1, 6):
        delay = backoff_delay(attempt, base=0.01, cap=0.05, retry_after=retry_after, rng=rng)
        assert delay >= retry_after
        assert delay <= max(retry_after, 0.05)


def test_retry_after_is_bounded():
    # An absurd Retry-After must not park a worker for an hour.
    assert backoff_delay(1, base=0.1, cap=1.0, retry_after=3600.0, rng=random.Random(0)) <= 60.0


def test_backoff_without_rng_uses_module_random():
    assert 0.0 <= backoff_delay(3, base=0.1, cap=0.2) <= 0.2


# --- secrets never leak ------------------------------------------------------------------

def test_password_and_token_never_in_any_error(sandbox, password, clients):
    c = clients(sandbox.url, password, timeout=0.3)
    token = c.authenticate()
    errors: list[OppenError] = []

    def collect(call):
        with pytest.raises(OppenError) as info:
            call()
        errors.append(info.value)

    c.create_invoice(invoice())
    collect(lambda: c.create_invoice(invoice()))                       # 409
    collect(lambda: c.create_invoice(invoice(OfficialSerNr="x")))      # 400
    collect(lambda: c.create_invoice(invoice(Secret=password)))        # Field ... not found
    sandbox.set_faults(rate_limit_rate=1.0)
    collect(lambda: c.create_invoice(invoice(2)))                      # 429
    sandbox.set_faults(rate_limit_rate=0.0, timeout_rate=1.0, hang_seconds=1.0)
    collect(lambda: c.create_invoice(invoice(3)))                      # timeout
    sandbox.set_faults(timeout_rate=0.0, down=True)
    collect(lambda: c.create_invoice(invoice(4)))                      # 502 HTML
    collect(lambda: c.find_invoices("0005-00000004"))
    sandbox.set_faults(down=False, token_ttl=0.000001)
    collect(lambda: c.create_invoice(invoice(5)))                      # persistent 401
    collect(lambda: clients(sandbox.url, password + "x").authenticate())
    collect(lambda: clients(f"http://127.0.0.1:{free_port()}", password).authenticate())
    assert len(errors) == 10
    for exc in errors:
        no_secrets(exc, password, token)
    assert password not in repr(c) and token not in repr(c)


def test_secrets_echoed_by_the_server_are_not_kept_in_errors(clients):
    password = "clave-que-no-debe-salir-123"

    def echo_auth(body):
        return 500, "text/plain", f"Internal error while handling {body}"

    def echo_post(body, headers):
        return 500, "text/plain", f"Internal error; headers were {headers}"

    with TinyOppen(auth_answer=echo_auth) as tiny:
        with pytest.raises(OppenError) as info:
            clients(tiny.url, password).authenticate()
        no_secrets(info.value, password)

    with TinyOppen(post_answer=echo_post) as tiny:
        with pytest.raises(OppenError) as info:
            clients(tiny.url, password).create_invoice(invoice())
        no_secrets(info.value, password, TinyOppen.TOKEN)


# --- one token for many threads -------------------------------------------------------------

def _many_threads(oppen, sandbox, workers=8, per_worker=4):
    clones = [oppen.clone() for _ in range(workers)]
    barrier = threading.Barrier(workers)

    def work(i):
        c = clones[i]
        barrier.wait()
        out = []
        for k in range(per_worker):
            n = 1 + i * per_worker + k
            out.append(c.create_invoice(invoice(n))["OfficialSerNr"])
        return out

    try:
        with ThreadPoolExecutor(workers) as pool:
            results = [r for chunk in pool.map(work, range(workers)) for r in chunk]
    finally:
        for c in clones:
            c.close()
    assert len(set(results)) == workers * per_worker
    assert all(c.tokens is oppen.tokens for c in clones)


def test_clones_share_the_token_cache(oppen, sandbox):
    clone = oppen.clone()
    try:
        assert clone.tokens is oppen.tokens
        assert clone.session is not oppen.session
        assert clone.base_url == oppen.base_url and clone.api == oppen.api
        token = oppen.authenticate()
        assert clone.tokens.get() == token
        clone.create_invoice(invoice())
        assert auth_count(sandbox) == 1
    finally:
        clone.close()


def test_eight_threads_with_a_warm_token_authenticate_once(oppen, sandbox):
    oppen.authenticate()
    _many_threads(oppen, sandbox)
    assert auth_count(sandbox) == 1
    assert len(sandbox.invoices()) == 32


def test_eight_threads_from_cold_authenticate_once(oppen, sandbox):
    sandbox.set_faults(latency_ms=30)
    _many_threads(oppen, sandbox)
    assert auth_count(sandbox) == 1


def test_token_cache_drop_only_forgets_the_current_token():
    cache = TokenCache()
    cache.put("t1", 3600)
    cache.drop("t0")
    assert cache.get() == "t1"
    cache.drop("t1")
    assert cache.get() is None


def test_token_cache_refreshes_before_expiry():
    cache = TokenCache()
    cache.put("short", 0.000001)
    assert cache.get() is None


def test_a_trickling_answer_ends_as_a_timeout_close_to_the_deadline():
    from helpers import http_server, trickling_handler
    with http_server(trickling_handler()) as url:
        with OppenClient(base_url=url, api="ApiNg", username="API", password="secret-pw",
                         timeout=1.0) as c:
            started = time.monotonic()
            with pytest.raises(OppenTransportError) as info:
                c.create_invoice(invoice())
            elapsed = time.monotonic() - started
    # Each byte arrives well within a per-read timeout of 1 s: only a deadline on the
    # whole exchange stops it. It may have reached Oppen, so it is looked up later.
    assert elapsed < 2.5, elapsed
    assert info.value.maybe_applied is True
    assert info.value.message == "Error de conexión: Connection timeout"
    assert is_retryable(info.value)
