"""A stand-in for the Oppen "NG" generic API, served over real HTTP on loopback.

The operations console uses it as its embedded default target, and the test suite
drives it over real sockets. It answers like the publicly known
behaviour of the real service (authenticate, POST/GET Invoice, Oppen's own error texts)
and can be told to misbehave (latency, 5xx, 502 HTML pages, timeouts after storing,
dropped connections, 429, expiring tokens) so that retries and "unknown outcome"
handling can be exercised on purpose.

It never talks to the real Oppen or to any other host, never listens anywhere but the
address it is given (loopback by default), never logs passwords or tokens, and
writes to disk only the `store_path` it is handed.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hmac
import html
import http
import itertools
import json
import math
import random
import re
import secrets
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# Oppen assigns SerNr values above 2**31; starting there makes a client that stores
# them in a 32-bit column fail here rather than in production.
FIRST_ASSIGNED_SERNR = 3_000_000_001
_ASSIGNED_SERNR_SPAN = 10**9
DEFAULT_CUSTOMER = "C00001"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_BODY_BYTES = 8 * 1024 * 1024
# Bounded so a console left running for days cannot grow without limit.
LOG_MAX_ENTRIES = 100_000
# Idle keep-alive connections are closed after this long, freeing their thread.
IDLE_TIMEOUT_SECONDS = 300.0

ALLOWED_FIELDS = frozenset(
    {
        "SerNr", "OfficialSerNr", "ToOfficialSerNr", "CustCode", "TransDate", "DueDate",
        "InvoiceDate", "Office", "Labels", "createUser", "Status", "InvoiceType",
        "VoucherCode", "DocType", "FormType", "Items", "Total", "Comment",
    }
)
ALLOWED_ITEM_FIELDS = frozenset({"ArtCode", "Qty", "Price", "VATCode", "Name"})

# Every value a request_log() entry's "outcome" can take, for callers that filter on it
# ("error" is an unexpected exception answered with 500).
OUTCOMES = frozenset(
    {
        "authenticated", "auth_failed", "unauthorized", "stored", "duplicate", "rejected",
        "fault_5xx", "fault_502_html", "timeout_after_store", "dropped", "rate_limited",
        "down", "listed", "not_found", "error",
    }
)

# [0-9] rather than \d: \d would also accept other scripts' digits.
_OFFICIAL_SERNR_RE = re.compile(r"[0-9]{4,5}-[0-9]{8}")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

_JSON = "application/json"
_HTML = "text/html; charset=utf-8"

# What nginx in front of a stopped Oppen test instance sends back.
_BAD_GATEWAY_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


@dataclass
class Faults:
    """Misbehaviour to inject; every field can be changed at runtime via set_faults."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    drop_rate: float = 0.0
    hang_seconds: float = 2.0
    token_max_uses: int = 0
    token_ttl: float = 3600.0
    down: bool = False
    rate_limit_rate: float = 0.0
    duplicate_style: str = "409"
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("error_rate", "timeout_rate", "drop_rate", "rate_limit_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate!r}")
        if self.latency_ms < 0 or self.hang_seconds < 0:
            raise ValueError("latency_ms and hang_seconds cannot be negative")
        if self.token_max_uses < 0:
            raise ValueError("token_max_uses cannot be negative")
        if self.token_ttl <= 0:
            raise ValueError("token_ttl must be positive")
        if self.duplicate_style not in ("409", "real"):
            raise ValueError(f"duplicate_style must be '409' or 'real', got {self.duplicate_style!r}")


@dataclass(frozen=True, slots=True)
class _Reply:
    """What the handler must do: answer, hang then close silently, or drop at once."""

    status: int = 200
    body: bytes = b""
    content_type: str = _JSON
    extra_headers: tuple[tuple[str, str], ...] = ()
    action: str = "answer"  # "answer" | "hang" | "drop"
    hang_seconds: float = 0.0


def _json_reply(status: int, payload: Any, extra_headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return _Reply(status, body, _JSON, extra_headers)


def _error(status: int, message: str, extra_headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _json_reply(status, {"ok": False, "error": message}, extra_headers)


def _bad_gateway() -> _Reply:
    return _Reply(502, _BAD_GATEWAY_PAGE, _HTML)


class _BadRequest(Exception):
    """The request cannot be read; answer and close, since the stream is out of step."""

    def __init__(self, reply: _Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


_INVALID_JSON = object()


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return _INVALID_JSON


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but `true` is not a quantity.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_date(value: Any) -> bool:
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _member(value: Any, allowed: frozenset[str]) -> bool:
    try:
        return value in allowed
    except TypeError:  # unhashable (list, dict) cannot be a code
        return False


def _items_total(items: Any) -> float:
    total = 0.0
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and _is_number(item.get("Qty")) and _is_number(item.get("Price")):
                total += item["Qty"] * item["Price"]
    return round(total, 2)


def _truthy(text: str) -> bool:
    return text.strip().lower() not in ("", "0", "false", "no")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Idle keep-alive clients would otherwise make server_close() wait for ever.
    block_on_close = False
    # The default backlog of 5 makes bursts of new connections wait for SYN retries.
    request_queue_size = 128
    sandbox: OppenSandbox

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-request is routine here (timeouts, drops); no tracebacks.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "OppenSandbox/1"
    sys_version = ""
    timeout = IDLE_TIMEOUT_SECONDS
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.sandbox._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sandbox._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        try:
            body = self._read_body()
            reply = self.server.sandbox._respond(method, self.path, self.headers, body)
        except _BadRequest as exc:
            self.close_connection = True
            reply = exc.reply
        except Exception:
            reply = _error(500, "Internal Server Error")
        try:
            self._deliver(reply)
        except OSError:
            self.close_connection = True

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            raise _BadRequest(_error(400, "Invalid Content-Length")) from None
        if length < 0:
            raise _BadRequest(_error(400, "Invalid Content-Length"))
        if length > MAX_BODY_BYTES:
            raise _BadRequest(_error(413, "Payload Too Large"))
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        size_so_far = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(_error(400, "Invalid chunked body")) from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            size_so_far += size
            if size_so_far > MAX_BODY_BYTES:
                raise _BadRequest(_error(413, "Payload Too Large"))
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _deliver(self, reply: _Reply) -> None:
        if reply.action == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if reply.action == "hang":
            # Nothing may be written: the client must see a read timeout, not an answer.
            self.server.sandbox._stopping.wait(reply.hang_seconds)
            self.close_connection = True
            return
        try:
            phrase = http.HTTPStatus(reply.status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [
            f"HTTP/1.1 {reply.status} {phrase}",
            f"Server: {self.server_version}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in reply.extra_headers)
        if self.close_connection:
            lines.append("Connection: close")
        # One write for head and body: with a split write, Nagle plus delayed ACK can
        # stall every keep-alive answer by ~40 ms.
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body)


class OppenSandbox:
    """An Oppen NG API look-alike on a real socket; see the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api: str = "ApiNg",
        username: str = "API",
        password: str,
        faults: Faults | None = None,
        labels: set[str] | None = None,
        articles: set[str] | None = None,
        customers: set[str] | None = None,
        store_path: str | None = None,
    ) -> None:
        if not isinstance(password, str):
            raise TypeError("password must be a string")
        self.host = host
        self.api = api
        self.username = username
        self._password = password
        self._base = f"/genericapi/{api}/"
        self._faults = dataclasses.replace(faults) if faults is not None else Faults()
        self._rng = random.Random(self._faults.seed)
        self._labels = frozenset(labels) if labels is not None else None
        self._articles = frozenset(articles) if articles is not None else None
        self._customers = frozenset(customers) if customers is not None else None

        self._lock = threading.Lock()  # tokens, rng, faults, log
        self._store_lock = threading.Lock()  # invoices, indexes, store file
        self._life_lock = threading.Lock()  # start/stop
        self._conn_lock = threading.Lock()

        self._records: list[dict] = []
        self._by_official: dict[str, dict] = {}
        self._by_sernr: dict[int, dict] = {}
        self._next_sernr = FIRST_ASSIGNED_SERNR
        self._next_internal_id = 1
        self._tokens: dict[str, list] = {}  # token -> [issued_at (monotonic), uses]
        self._log: deque[dict] = deque(maxlen=LOG_MAX_ENTRIES)
        self._seq = 0

        self._store_path = store_path
        self._store_file = None
        if store_path:
            self._load_store()

        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        # Bound now so `url` is known before start(); a port of 0 is fixed here and
        # reused on a restart so the URL stays valid.
        self._server: _Server | None = self._bind(port)
        self.port: int = self._server.server_address[1]
        self.url: str = f"http://{host}:{self.port}"

    # ----- lifecycle -------------------------------------------------------------

    def _bind(self, port: int) -> _Server:
        server = _Server((self.host, port), _Handler)
        server.sandbox = self
        return server

    def start(self) -> OppenSandbox:
        with self._life_lock:
            if self._thread is not None:
                return self
            if self._server is None:
                self._server = self._bind(self.port)
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},  # stop() waits up to one interval
                name=f"oppen-sandbox-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._life_lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping on latency or hang_seconds
        if thread is not None:
            server.shutdown()
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        with self._store_lock:
            if self._store_file is not None:
                self._store_file.close()
                self._store_file = None

    def __enter__(self) -> OppenSandbox:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # ----- state for callers -----------------------------------------------------

    @property
    def faults(self) -> Faults:
        """A copy of the faults in force."""
        return dataclasses.replace(self._faults)

    def set_faults(self, **changes: Any) -> None:
        with self._lock:
            self._faults = dataclasses.replace(self._faults, **changes)
            if "seed" in changes:
                self._rng.seed(changes["seed"])

    def invoices(self) -> list[dict]:
        with self._store_lock:
            records = list(self._records)
        # Stored records are never mutated, so copying outside the lock is safe.
        return copy.deepcopy(records)

    def issued_tokens(self) -> list[str]:
        """Every token handed out and not yet forgotten (for tests that hunt for leaks)."""
        with self._lock:
            return list(self._tokens)

    def request_log(self) -> list[dict]:
        with self._lock:
            return [dict(entry) for entry in self._log]

    def add_invoice(self, record: dict) -> dict:
        """Store a record as if it already existed in Oppen; no validation, no faults."""
        payload = copy.deepcopy(record)
        with self._store_lock:
            if self._find_duplicate(payload):
                raise ValueError("an invoice with that SerNr or OfficialSerNr is already stored")
            stored = self._store_locked(payload)
        return copy.deepcopy(stored)

    def reset(self) -> None:
        with self._store_lock:
            self._records = []
            self._by_official = {}
            self._by_sernr = {}
            self._next_sernr = FIRST_ASSIGNED_SERNR
            self._next_internal_id = 1
            if self._store_path:
                # Forgetting must survive a restart too.
                if self._store_file is not None:
                    self._store_file.close()
                    self._store_file = None
                open(self._store_path, "w", encoding="utf-8").close()
        with self._lock:
            self._tokens.clear()
            self._log.clear()
            self._seq = 0

    # ----- persistence -----------------------------------------------------------

    def _load_store(self) -> None:
        try:
            handle = open(self._store_path, encoding="utf-8")
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(record, dict):
                    self._index(record)

    def _index(self, record: dict) -> None:
        self._records.append(record)
        official = record.get("OfficialSerNr")
        if official is not None:
            self._by_official.setdefault(str(official), record)
        sernr = record.get("SerNr")
        if isinstance(sernr, int) and not isinstance(sernr, bool):
            self._by_sernr.setdefault(sernr, record)
            if FIRST_ASSIGNED_SERNR <= sernr < FIRST_ASSIGNED_SERNR + _ASSIGNED_SERNR_SPAN:
                self._next_sernr = max(self._next_sernr, sernr + 1)
        internal_id = record.get("internalId")
        if isinstance(internal_id, int):
            self._next_internal_id = max(self._next_internal_id, internal_id + 1)

    def _persist_locked(self, record: dict) -> None:
        if not self._store_path:
            return
        if self._store_file is None:
            self._store_file = open(self._store_path, "a", encoding="utf-8")
        self._store_file.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
        self._store_file.flush()

    # ----- storage ---------------------------------------------------------------

    def _find_duplicate(self, payload: dict) -> bool:
        sernr = payload.get("SerNr")
        if isinstance(sernr, int) and sernr in self._by_sernr:
            return True
        official = payload.get("OfficialSerNr")
        return official is not None and str(official) in self._by_official

    def _store_locked(self, payload: dict) -> dict:
        record = dict(payload)
        if record.get("SerNr") is None:
            while self._next_sernr in self._by_sernr:
                self._next_sernr += 1
            record["SerNr"] = self._next_sernr
            self._next_sernr += 1
        if "ToOfficialSerNr" not in record and "OfficialSerNr" in record:
            record["ToOfficialSerNr"] = record["OfficialSerNr"]
        if "Total" not in record:
            record["Total"] = _items_total(record.get("Items"))
        record["Saldo"] = record["Total"]
        record.setdefault("Status", 0)
        record.setdefault("CustCode", DEFAULT_CUSTOMER)
        record["Invalid"] = 0
        record["internalId"] = self._next_internal_id
        # Written before it becomes visible: a failed write must not leave an invoice
        # that a restart would forget.
        self._persist_locked(record)
        self._next_internal_id += 1
        self._index(record)
        return record

    # ----- request handling ------------------------------------------------------

    def _record(self, method: str, path: str, official: Any, outcome: str) -> None:
        with self._lock:
            self._seq += 1
            self._log.append(
                {
                    "seq": self._seq,
                    "t": time.monotonic(),
                    "method": method,
                    "path": path,
                    "official_sernr": official if isinstance(official, str) else None,
                    "outcome": outcome,
                }
            )

    def _respond(self, method: str, raw_path: str, headers: Any, body: bytes) -> _Reply:
        parts = urlsplit(raw_path)
        path = parts.path
        if path in ("", "/"):
            return self._root_page() if method == "GET" else _error(404, "Not Found")
        if not (path + "/").startswith(self._base):
            return _error(404, "Not Found")
        resource = path[len(self._base):].strip("/")
        faults = self._faults
        if resource == "docs" and method == "GET":
            return _bad_gateway() if faults.down else self._docs_page()

        payload: Any = None
        official: Any = None
        query: list[tuple[str, str]] = []
        if method == "POST":
            payload = _parse_json(body)
            if isinstance(payload, dict):
                official = payload.get("OfficialSerNr")
        elif method == "GET":
            query = parse_qsl(parts.query, keep_blank_values=True)
            official = next((v for k, v in query if k == "OfficialSerNr"), None)
        try:
            return self._api_call(method, resource, headers, payload, official, query, faults)
        except Exception:
            self._record(method, resource, official, "error")
            return _error(500, "Internal Server Error")

    def _api_call(
        self,
        method: str,
        resource: str,
        headers: Any,
        payload: Any,
        official: Any,
        query: list[tuple[str, str]],
        faults: Faults,
    ) -> _Reply:
        if faults.latency_ms > 0:
            self._stopping.wait(faults.latency_ms / 1000.0)
        # A stopped instance answers everything the same way, before any checking.
        if faults.down:
            self._record(method, resource, official, "down")
            return _bad_gateway()
        if resource == "authenticate" and method == "POST":
            return self._authenticate(payload, faults)
        if resource != "Invoice" or method not in ("GET", "POST"):
            self._record(method, resource, official, "not_found")
            return _error(404, "Not Found")
        if not self._use_token(headers.get("Authorization", ""), faults):
            self._record(method, resource, official, "unauthorized")
            return _error(401, "Unauthorized")
        if method == "POST":
            return self._create_invoice(payload, official, faults)
        return self._list_invoices(query, official, faults)

    def _authenticate(self, payload: Any, faults: Faults) -> _Reply:
        if payload is _INVALID_JSON:
            self._record("POST", "authenticate", None, "rejected")
            return _error(400, "Invalid JSON")
        user = payload.get("username") if isinstance(payload, dict) else None
        password = payload.get("password") if isinstance(payload, dict) else None
        if not (isinstance(user, str) and isinstance(password, str)):
            self._record("POST", "authenticate", None, "auth_failed")
            return _error(401, "Unauthorized")
        # Both comparisons always run, so timing does not tell which one failed.
        user_ok = hmac.compare_digest(user.encode("utf-8"), self.username.encode("utf-8"))
        password_ok = hmac.compare_digest(password.encode("utf-8"), self._password.encode("utf-8"))
        if not (user_ok and password_ok):
            self._record("POST", "authenticate", None, "auth_failed")
            return _error(401, "Unauthorized")
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            if len(self._tokens) > 1000:
                ttl = faults.token_ttl
                for old in [t for t, (issued, _) in self._tokens.items() if now - issued >= ttl]:
                    del self._tokens[old]
            self._tokens[token] = [now, 0]
        self._record("POST", "authenticate", None, "authenticated")
        return _json_reply(200, {"ok": True, "token": token, "expires": int(faults.token_ttl)})

    def _use_token(self, authorization: str, faults: Faults) -> bool:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        now = time.monotonic()
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None:
                return False
            # Measured against the ttl in force now, so shortening it expires old tokens.
            if now - entry[0] >= faults.token_ttl:
                del self._tokens[token]
                return False
            if faults.token_max_uses and entry[1] >= faults.token_max_uses:
                return False
            entry[1] += 1
        return True

    def _draw_fault(self, faults: Faults, *, post: bool) -> str | None:
        bands = [("error", faults.error_rate)]
        if post:
            bands += [
                ("rate_limit", faults.rate_limit_rate),
                ("drop", faults.drop_rate),
                ("timeout", faults.timeout_rate),
            ]
        with self._lock:
            # One draw per call whatever the rates, so a seeded run stays repeatable
            # when rates change between calls.
            roll = self._rng.random()
            edge = 0.0
            for name, rate in bands:
                edge += rate
                if roll < edge:
                    if name != "error":
                        return name
                    if self._rng.random() < 0.5:
                        return "error_502"
                    return "error_500" if self._rng.random() < 0.5 else "error_503"
        return None

    def _fault_reply(self, fault: str, method: str, official: Any) -> _Reply:
        if fault == "error_502":
            self._record(method, "Invoice", official, "fault_502_html")
            return _bad_gateway()
        if fault in ("error_500", "error_503"):
            self._record(method, "Invoice", official, "fault_5xx")
            return _error(int(fault[-3:]), "Internal Server Error")
        if fault == "rate_limit":
            self._record(method, "Invoice", official, "rate_limited")
            return _error(429, "Too Many Requests", (("Retry-After", "0"),))
        self._record(method, "Invoice", official, "dropped")
        return _Reply(action="drop")

    def _create_invoice(self, payload: Any, official: Any, faults: Faults) -> _Reply:
        fault = self._draw_fault(faults, post=True)
        if fault is not None and fault != "timeout":
            return self._fault_reply(fault, "POST", official)
        if not isinstance(payload, dict):
            self._record("POST", "Invoice", official, "rejected")
            return _error(400, "Invalid JSON")
        problem = self._validate(payload)
        if problem is not None:
            self._record("POST", "Invoice", official, "rejected")
            return _error(400, problem)
        # Check and store under one lock: two identical concurrent POSTs store one.
        with self._store_lock:
            duplicate = self._find_duplicate(payload)
            record = None if duplicate else self._store_locked(payload)
        if record is None:
            self._record("POST", "Invoice", official, "duplicate")
            if faults.duplicate_style == "real":
                return _error(400, "Duplicate Official Serial Nr!")
            return _error(409, "Duplicate invoice")
        if fault == "timeout":
            self._record("POST", "Invoice", official, "timeout_after_store")
            return _Reply(action="hang", hang_seconds=faults.hang_seconds)
        self._record("POST", "Invoice", official, "stored")
        return _json_reply(201, {"ok": True, "data": record})

    def _validate(self, payload: dict) -> str | None:
        for key in payload:
            if key not in ALLOWED_FIELDS:
                return f"Field {key} not found"
        items = payload.get("Items")
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict):
                    for key in item:
                        if key not in ALLOWED_ITEM_FIELDS:
                            return f"Field {key} not found"
        official = payload.get("OfficialSerNr")
        if not isinstance(official, str) or not _OFFICIAL_SERNR_RE.fullmatch(official):
            return "Invalid invoice number"
        for field in ("TransDate", "DueDate"):
            if not _is_date(payload.get(field)):
                return f"Invalid date {field}"
        if not isinstance(items, list) or not items:
            return "Invalid Items"
        for item in items:
            if not (isinstance(item, dict) and _is_number(item.get("Qty")) and _is_number(item.get("Price"))):
                return "Invalid Items"
        # Link checks apply only to fields that are present: a missing code links nothing.
        if self._labels is not None and "Labels" in payload and not _member(payload["Labels"], self._labels):
            return "LINKTOINVALIDVALUEERR Labels"
        if self._articles is not None:
            for item in items:
                if "ArtCode" in item and not _member(item["ArtCode"], self._articles):
                    return "LINKTOINVALIDVALUEERR ArtCode"
        if self._customers is not None and "CustCode" in payload and not _member(payload["CustCode"], self._customers):
            return "LINKTOINVALIDVALUEERR CustCode"
        if "SerNr" in payload:
            sernr = payload["SerNr"]
            if not isinstance(sernr, int) or isinstance(sernr, bool) or sernr <= 0:
                return "Invalid SerNr"
        return None

    def _list_invoices(self, query: list[tuple[str, str]], official: Any, faults: Faults) -> _Reply:
        fault = self._draw_fault(faults, post=False)
        if fault is not None:
            return self._fault_reply(fault, "GET", official)
        limit, offset, want_total = DEFAULT_LIMIT, 0, False
        conditions: list[tuple[str, str, str]] = []
        for key, value in query:
            if key in ("__limit__", "__offset__"):
                try:
                    number = int(value)
                except ValueError:
                    number = -1
                if number < 0:
                    self._record("GET", "Invoice", official, "rejected")
                    return _error(400, f"Invalid {key}")
                if key == "__limit__":
                    limit = min(number, MAX_LIMIT)
                else:
                    offset = number
            elif key == "__total_records__":
                want_total = _truthy(value)
            elif key.endswith("__gte"):
                conditions.append((key[:-5], ">=", value))
            elif key.endswith("__lte"):
                conditions.append((key[:-5], "<=", value))
            else:
                conditions.append((key, "==", value))

        candidates = self._candidates(conditions)
        page: list[dict] = []
        total = 0
        has_more = False
        for record in candidates:
            if not _matches(record, conditions):
                continue
            if total >= offset + limit:
                has_more = True
                if not want_total:
                    break
            elif total >= offset:
                page.append(record)
            total += 1
        answer: dict[str, Any] = {"ok": True, "data": page, "has_more": has_more}
        if want_total:
            answer["total_records"] = total
        self._record("GET", "Invoice", official, "listed")
        return _json_reply(200, answer)

    def _candidates(self, conditions: list[tuple[str, str, str]]) -> Any:
        """Records worth testing: an index hit for OfficialSerNr/SerNr equality, else all."""
        with self._store_lock:
            for field, op, value in conditions:
                if op != "==":
                    continue
                if field == "OfficialSerNr":
                    record = self._by_official.get(value)
                    return [record] if record is not None else []
                if field == "SerNr":
                    try:
                        record = self._by_sernr.get(int(value))
                    except ValueError:
                        record = None
                    return [record] if record is not None else []
            # The list only grows (reset swaps in a new one), so a length-bounded walk
            # over this reference needs no copy of 100k entries.
            records, count = self._records, len(self._records)
        return itertools.islice(records, count)

    # ----- pages for a browser ---------------------------------------------------

    def _root_page(self) -> _Reply:
        faults = self._faults
        api = html.escape(self._base)
        body = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Oppen sandbox</title></head>"
            f"<body><h1>Oppen sandbox</h1><p>Local stand-in for the Oppen NG API at "
            f"<a href='{api}docs/'><code>{api}</code></a>. It never contacts the real Oppen.</p>"
            f"<p>Invoices stored: {len(self._records)}. Down: {'yes' if faults.down else 'no'}.</p>"
            "</body></html>"
        )
        return _Reply(200, body.encode("utf-8"), _HTML)

    def _docs_page(self) -> _Reply:
        api = html.escape(self._base)
        body = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Oppen sandbox API</title></head>"
            f"<body><h1>{api}</h1><ul>"
            f"<li><code>POST {api}authenticate</code> {{username, password}}</li>"
            f"<li><code>POST {api}Invoice</code> invoice record (Bearer token)</li>"
            f"<li><code>GET {api}Invoice?Field=v&amp;Field__gte=v&amp;__limit__=N&amp;__offset__=K"
            "&amp;__total_records__=1</code> (Bearer token)</li>"
            "</ul></body></html>"
        )
        return _Reply(200, body.encode("utf-8"), _HTML)


def _matches(record: dict, conditions: list[tuple[str, str, str]]) -> bool:
    for field, op, value in conditions:
        if field not in record:
            return False  # an unknown field matches nothing rather than being ignored
        text = str(record[field])
        if op == "==":
            if text != value:
                return False
        elif op == ">=":
            if text < value:
                return False
        elif text > value:
            return False
    return True
