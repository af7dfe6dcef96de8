"""The only code that speaks HTTP to Oppen.

One `OppenClient` per thread, each with its own keep-alive connections (`Connections`,
on the standard library's `http.client`: through `requests` a call cost four times the
CPU, through urllib3 twice, and on the hot path that was most of a run); clients made
with `clone()` share one `TokenCache`, so a token is fetched once and refreshed once
when it expires, not once per worker. Each call is a single exchange, bounded as a
whole by `deadline.exchange_within`; TLS certificates are always verified; a redirect
is an answer, never followed. The caller decides about retries (`retry.py`).

No HTTP library's exception leaves this module: `_translate` turns them into the
`OppenError` family, and `error_for_response` is the one place that maps an HTTP
answer to an error class. Messages are built from status codes and bodies only, so a
password or token can never end up in them.
"""

from __future__ import annotations

import base64
import codecs
import functools
import http.client
import json
import logging
import select
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import certifi

from ..deadline import exchange_within
from ..errors import (OppenAuthError, OppenDuplicate, OppenError, OppenRejected,
                     OppenTransportError, SendWithheld)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
# Refresh a token this long before Oppen says it expires, so a request never
# leaves with a token that dies on the way.
TOKEN_MARGIN = 30.0
PAGE_SIZE = 100
MAX_LOOKUP_PAGES = 20
MAX_BODY = 2000
# Reading a date range back (reconciliation): big pages, so a month of a chain is a
# handful of requests; a server that caps __limit__ lower still pages through has_more.
RANGE_PAGE_SIZE = 1000
# An honoured range read stops past this many records (a range too long to hold);
# one whose filter is ignored stops much sooner, past IGNORED_FILTER_CAP.
MAX_RANGE_RECORDS = 200_000
IGNORED_FILTER_CAP = PAGE_SIZE * MAX_LOOKUP_PAGES


class TokenCache:
    """A bearer token shared by the clients of one run (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Held while logging in, so that N workers finding no token log in once.
        self.refresh_lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def get(self) -> str | None:
        with self._lock:
            if self._token and time.monotonic() < self._expires_at:
                return self._token
            return None

    def put(self, token: str, expires_in: float) -> None:
        with self._lock:
            self._token = token
            self._expires_at = time.monotonic() + max(expires_in - TOKEN_MARGIN, expires_in / 2)

    def current(self) -> str | None:
        """The token even if expired: only for scrubbing it out of texts."""
        with self._lock:
            return self._token

    def drop(self, token: str) -> None:
        """Forget `token` if it is still the current one (another thread may have renewed it)."""
        with self._lock:
            if self._token == token:
                self._token = None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def redact(text: str | None, secrets: tuple[str | None, ...]) -> str | None:
    """Oppen's answer with our password and token blanked out, should it echo them."""
    if not text:
        return text
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class Answer:
    """One HTTP answer of Oppen, read whole within the deadline (what this module reads of
    it, named as `requests.Response` names it)."""

    __slots__ = ("status_code", "reason", "headers", "content")

    def __init__(self, status_code: int, reason: str | None, headers: Mapping[str, str],
                 content: bytes) -> None:
        self.status_code, self.reason = status_code, reason or ""
        self.headers, self.content = headers, content     # headers: case-insensitive

    @property
    def text(self) -> str:
        return self.content.decode(_charset(self.headers.get("Content-Type", "")), "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            try:
                return codecs.lookup(value.strip('"')).name
            except LookupError:
                break
    return "utf-8"


def answer_text(resp: Answer) -> str:
    """What Oppen said, in its own words: the error field of a JSON body, or the text."""
    content_type = resp.headers.get("Content-Type", "")
    if "html" in content_type or resp.text.lstrip().lower().startswith(("<!doctype", "<html")):
        return "Oppen respondió una página HTML (servicio detenido o no disponible)"
    try:
        body = resp.json()
    except ValueError:
        return _short(resp.text) or (resp.reason or "sin detalle")
    if isinstance(body, Mapping):
        for key in ("error", "message", "msg", "detail"):
            if body.get(key):
                return _short(str(body[key]))
    return _short(json.dumps(body, ensure_ascii=False))


def error_for_response(resp: Answer, secrets: tuple[str | None, ...] = ()
                       ) -> OppenError:
    """The one place where an HTTP answer becomes an error class."""
    status = resp.status_code
    text = redact(answer_text(resp), secrets)
    body = redact(resp.text[:MAX_BODY], secrets)
    message = f"Error HTTP {status}: {text}"
    retry_after = None
    if "Retry-After" in resp.headers:
        try:
            retry_after = max(0.0, float(resp.headers["Retry-After"]))
        except ValueError:
            retry_after = None
    if status == 401:
        return OppenAuthError(f"Error de autenticación: HTTP 401 - {text}", status=status, body=body)
    if status == 409 or "duplicate" in text.lower():
        return OppenDuplicate(message, status=status, body=body)
    if status == 429:
        # Oppen said "not now": the request was not applied.
        return OppenTransportError(message, status=status, body=body, retry_after=retry_after,
                                   maybe_applied=False)
    if status >= 500 or status == 408:
        return OppenTransportError(message, status=status, body=body, retry_after=retry_after)
    return OppenRejected(message, status=status, body=body)


class Unconnected(Exception):
    """Connecting failed: nothing of the request left (carries what connecting raised)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


# What a failed exchange raises before `_translate` words it.
TRANSPORT_ERRORS = (Unconnected, OSError, http.client.HTTPException, ValueError)


def _translate(exc: BaseException) -> OppenTransportError:
    """A transport exception as the seed words it ("Error de conexión: Connection timeout")."""
    if isinstance(exc, Unconnected):
        # Nothing was sent: a refused, unresolvable or timed-out connect never reached
        # Oppen, and a certificate that does not verify stops everything until fixed.
        cause = exc.cause
        if isinstance(cause, ssl.SSLError):     # certificate errors included
            return OppenTransportError("Error de conexión: el certificado TLS de Oppen no "
                                       "es válido", maybe_applied=False)
        if isinstance(cause, TimeoutError):
            return OppenTransportError("Error de conexión: Connection timeout",
                                       maybe_applied=False)
        if isinstance(cause, (ConnectionRefusedError, socket.gaierror)):
            return OppenTransportError("Error de conexión: Connection refused",
                                       maybe_applied=False)
        if isinstance(cause, ValueError):       # a malformed URL or proxy
            return OppenTransportError("Error de conexión: la URL de Oppen no es válida",
                                       maybe_applied=False)
        return OppenTransportError("Error de conexión: Connection dropped")
    # Anything after connecting may have reached Oppen.
    if isinstance(exc, TimeoutError):
        return OppenTransportError("Error de conexión: Connection timeout")
    if isinstance(exc, (OSError, http.client.HTTPException)):
        return OppenTransportError("Error de conexión: Connection dropped")
    return OppenTransportError(f"Error de conexión: {type(exc).__name__}")


@functools.cache
def _tls() -> ssl.SSLContext:
    """Certificates and host names always verified, against certifi's authorities (as
    `requests` verified them). Built once per process: loading them takes a while."""
    return ssl.create_default_context(cafile=certifi.where())


class Connections:
    """A client's keep-alive connections to Oppen's host (thread-safe: a connection is
    lent to one exchange at a time). One that the server closed while idle is replaced
    before anything is written on it; one an exchange failed on is closed, never lent
    again. TLS is always verified; the environment's HTTPS proxy applies as it did with
    `requests`. The host is read from the URL on first use, so a malformed URL is an
    OppenError of the call, like any other."""

    verify = True   # never switched off: plain http is refused by the settings off loopback

    def __init__(self, base_url: str, pool_size: int) -> None:
        self.base_url, self.pool_size = base_url, max(1, pool_size)
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []

    def exchange(self, method: str, target: str, timeout: float, *, body: bytes | None,
                 headers: Mapping[str, str], proceed: Callable[[], bool] | None = None
                 ) -> tuple[http.client.HTTPResponse, bytes]:
        """One exchange within `timeout` (`deadline.exchange_within`). Raises Unconnected
        when connecting failed, SendWithheld when `proceed` said no (nothing was sent),
        else what the exchange raised."""
        conn = self._lend(timeout)
        conn.proceed = proceed
        try:
            resp, content = exchange_within(conn, method, target, timeout, body=body,
                                            headers=headers)
        except BaseException:
            conn.close()     # out of step with the server (or withheld): never reused
            raise
        finally:
            conn.proceed = None
        if resp.will_close:
            conn.close()
        else:
            with self._lock:
                if len(self._idle) < self.pool_size:
                    self._idle.append(conn)
                    return resp, content
            conn.close()
        return resp, content

    def _lend(self, timeout: float) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if conn.sock is not None and not _readable(conn.sock):
                return conn
            conn.close()     # closed by the server while idle (or it sent something unasked)
        try:
            conn = self._connection(timeout)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise Unconnected(exc) from None
        return conn

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        parts = urlsplit(self.base_url)
        host, port = parts.hostname, parts.port     # ValueError: a malformed URL
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError("not an http(s) URL")
        if parts.scheme == "http":
            return _HTTPConnection(host, port, timeout=timeout)
        proxy = urllib.request.getproxies_environment().get("https")
        if not proxy or urllib.request.proxy_bypass_environment(parts.netloc):
            return _HTTPSConnection(host, port, timeout=timeout, context=_tls())
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if via.scheme != "http" or not via.hostname:
            raise ValueError("only an http:// proxy can tunnel to Oppen")
        tunnel = {}
        if via.username is not None:
            secret = f"{unquote(via.username)}:{unquote(via.password or '')}"
            tunnel["Proxy-Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
        # To the proxy in the clear, CONNECT, then TLS to Oppen verified through the tunnel.
        conn = _HTTPSConnection(via.hostname, via.port or 80, timeout=timeout,
                                           context=_tls())
        conn.set_tunnel(host, port or 443, headers=tunnel)
        return conn

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _OneWrite:
    """Head and body of a request in one write. http.client writes them apart: one more
    system call, one more wake-up of the server and one more trip through the GIL per
    POST, which at Oppen's pace was a measurable share of a run's CPU. (The standard
    library did this itself until Python 3.3; `_buffer` holds the head it built.)

    `proceed`, when set, is asked between building the request and that write, so
    nothing but the system call follows the answer: a thread frozen between the two
    (a paused process, a stalled VM) is the only way a request it was allowed to make
    can still leave once it no longer should, and that gap is a few bytecodes wide.
    False raises SendWithheld; the connection then holds a request begun and never
    sent, so it is closed, not reused."""

    proceed: Callable[[], bool] | None = None

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if not isinstance(message_body, bytes) or encode_chunked:
            self._last_word()
            return super()._send_output(message_body, encode_chunked)  # type: ignore[misc]
        self._buffer.extend((b"", b""))
        data = b"\r\n".join(self._buffer) + message_body
        del self._buffer[:]
        self._last_word()
        self.send(data)

    def _last_word(self) -> None:
        if self.proceed is not None and not self.proceed():
            raise SendWithheld()


class _HTTPConnection(_OneWrite, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    pass


def _readable(sock: socket.socket) -> bool:
    """An idle kept-alive socket with something to read was closed by the server."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class OppenClient:
    """A client for one Oppen API project (`/genericapi/<api>/`)."""

    def __init__(self, *, base_url: str, api: str, username: str, password: str,
                 timeout: float = DEFAULT_TIMEOUT, tokens: TokenCache | None = None,
                 pool_size: int = 4) -> None:
        self.base_url = base_url.rstrip("/")
        self.api = api
        self._username = username
        self._password = password
        self.timeout = timeout
        self.tokens = tokens or TokenCache()
        self._pool_size = pool_size
        # TLS certificates are always verified; plain http is refused by the
        # configuration for anything but loopback.
        self.session = Connections(self.base_url, pool_size)
        self._prefix = f"{_path_of(self.base_url)}/genericapi/{api}/"

    def __repr__(self) -> str:
        return f"OppenClient({self.base_url!r}, api={self.api!r})"

    def target(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        """The request target on Oppen's host: the API's path, then the query."""
        return self._prefix + path + ("?" + urlencode(params, doseq=True) if params else "")

    def clone(self) -> "OppenClient":
        """A client for another thread: own Session, shared token."""
        return OppenClient(base_url=self.base_url, api=self.api, username=self._username,
                           password=self._password, timeout=self.timeout, tokens=self.tokens,
                           pool_size=self._pool_size)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "OppenClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- authentication -----------------------------------------------------------

    def authenticate(self) -> str:
        """Log in and cache the token. Raises OppenAuthError or OppenTransportError."""
        try:
            resp = self._exchange("POST", "authenticate", body=_json_bytes(
                {"username": self._username, "password": self._password}))
        except OppenTransportError as err:
            logger.error("❌ %s", err.message)
            raise
        if resp.status_code != 200:
            err = error_for_response(resp, self._secrets())
            if not isinstance(err, OppenTransportError):
                err = OppenAuthError(f"Error de autenticación: HTTP {resp.status_code} - "
                                     f"{redact(answer_text(resp), self._secrets())}",
                                     status=resp.status_code)
            logger.error("❌ %s", err.message)
            raise err
        try:
            body = resp.json()
            token = body["token"]
            expires = float(body.get("expires") or 3600)
            if not isinstance(token, str) or not token:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            err = OppenAuthError("Error de autenticación: Oppen no devolvió un token válido",
                                 status=resp.status_code)
            logger.error("❌ %s", err.message)
            raise err from None
        self.tokens.put(token, expires)
        logger.info("✅ Autenticación exitosa en Oppen")
        return token

    def _exchange(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                  body: bytes | None = None, token: str | None = None,
                  proceed: Callable[[], bool] | None = None) -> Answer:
        """One request whose whole exchange (connect, send, the complete answer) ends
        within `timeout`: a socket timeout bounds each read only, so an Oppen that
        trickles its answer a byte at a time could otherwise hold a run for minutes.
        Raises OppenTransportError when no answer came."""
        headers = _JSON_HEADERS if body is not None else _HEADERS
        if token is not None:
            headers = {**headers, "Authorization": f"Bearer {token}"}
        try:
            resp, content = self.session.exchange(method, self.target(path, params),
                                                  self.timeout, body=body, headers=headers,
                                                  proceed=proceed)
        except TRANSPORT_ERRORS as exc:
            raise _translate(exc) from None
        return Answer(resp.status, resp.reason, resp.headers, content)

    def _secrets(self) -> tuple[str | None, ...]:
        return (self._password, self.tokens.current())

    def _token(self) -> str:
        token = self.tokens.get()
        if token:
            return token
        with self.tokens.refresh_lock:
            return self.tokens.get() or self.authenticate()

    def _call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
              json: Any = None, body: bytes | None = None,
              proceed: Callable[[], bool] | None = None) -> Answer:
        """One authenticated exchange; on 401 log in again once and repeat it once.
        `json` is encoded here once, not once per try (or comes encoded, as `body`).
        `proceed`: asked right before each try is written (see `post_invoice`)."""
        if json is not None:
            body = _json_bytes(json)
        for attempt in (1, 2):
            token = self._token()
            resp = self._exchange(method, path, params=params, body=body, token=token,
                                  proceed=proceed)
            if resp.status_code == 401 and attempt == 1:
                self.tokens.drop(token)
                continue
            return resp
        return resp

    # -- invoices -----------------------------------------------------------------

    def create_invoice(self, payload: Mapping) -> dict:
        """POST one invoice; returns the record Oppen answered with (see `post_invoice`)."""
        return self.post_invoice(payload)[1]

    def post_invoice(self, payload: Mapping, *, body: bytes | None = None,
                     proceed: Callable[[], bool] | None = None) -> tuple[int, dict]:
        """POST one invoice; returns Oppen's status and the record its 2xx carried.
        `body`: the payload already encoded (`json_body`), when the caller has it.
        `proceed`: asked as late as possible, with the connection ready and right before
        the request is written; False raises SendWithheld and nothing is sent (a run
        checks there that it still owns the invoice's day).

        The record is evidence, not proof: it may be empty or another invoice's, and
        the caller checks it is ours before believing the invoice is stored."""
        resp = self._call("POST", "Invoice", body=_json_bytes(payload) if body is None else body,
                          proceed=proceed)
        if resp.status_code not in (200, 201):
            raise error_for_response(resp, self._secrets())
        record = self._record(resp)
        if record is None:
            # A 2xx we cannot read: the invoice may be stored, but we cannot prove it,
            # so it is treated as an ambiguous outcome and looked up.
            raise OppenTransportError(f"Error HTTP {resp.status_code}: respuesta ilegible de Oppen",
                                      status=resp.status_code,
                                      body=redact(resp.text[:MAX_BODY], self._secrets()))
        return resp.status_code, record

    @staticmethod
    def _record(resp: Answer) -> dict | None:
        try:
            body = resp.json()
        except ValueError:
            return None
        if isinstance(body, Mapping) and isinstance(body.get("data"), Mapping):
            return dict(body["data"])
        if isinstance(body, Mapping) and body.get("OfficialSerNr") is not None:
            return dict(body)
        return None

    def list_invoices(self, filters: Mapping[str, Any], *, page_size: int = PAGE_SIZE
                      ) -> Iterator[dict]:
        """Every invoice matching `filters`, following `has_more` page by page."""
        offset = 0
        while True:
            params = dict(filters, __limit__=page_size, __offset__=offset)
            resp = self._call("GET", "Invoice", params=params)
            if resp.status_code != 200:
                raise error_for_response(resp, self._secrets())
            try:
                body = resp.json()
                records = body["data"]
                if not isinstance(records, list):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                raise OppenTransportError("Error HTTP 200: respuesta ilegible de Oppen "
                                          "al consultar facturas", status=200) from None
            yield from (r for r in records if isinstance(r, Mapping))
            if not body.get("has_more") or not records:
                return
            offset += len(records)

    def find_invoices(self, official_sernr: str, *, trans_date: str | None = None
                      ) -> list[dict]:
        """Every invoice Oppen holds under this OfficialSerNr (numbers run per point of
        sale and voucher type, so an A and a B can share one; annulled ones are listed
        too: which one is ours is for the caller to decide, with `mapping.pick_ours`).

        The filter is checked on every record that comes back: were Oppen to ignore
        it, every invoice would be listed, and trusting that would be a disaster. If
        the first page shows the filter is ignored, the search is narrowed to the
        invoice's day and capped; past the cap it gives up (OppenRejected) rather than
        read the whole ledger or guess.
        """
        filters: dict[str, Any] = {"OfficialSerNr": official_sernr}
        found: list[dict] = []
        for seen, record in enumerate(self.list_invoices(filters), start=1):
            if str(record.get("OfficialSerNr")) == official_sernr:
                found.append(record)
            elif seen - len(found) >= PAGE_SIZE:  # a page's worth of others: ignored filter
                break
            if seen >= PAGE_SIZE * MAX_LOOKUP_PAGES:
                raise OppenRejected("No se pudo verificar en Oppen: la consulta por "
                                    "OfficialSerNr devuelve demasiadas facturas")
        else:
            return found
        found.clear()
        if trans_date:
            filters["TransDate"] = trans_date
        for seen, record in enumerate(self.list_invoices(filters), start=1):
            if str(record.get("OfficialSerNr")) == official_sernr:
                found.append(record)
            if seen >= PAGE_SIZE * MAX_LOOKUP_PAGES:
                raise OppenRejected("No se pudo verificar en Oppen: la consulta por "
                                    "OfficialSerNr no filtra y hay demasiadas facturas")
        return found

    def invoices_between(self, desde: str, hasta: str, *, page_size: int = RANGE_PAGE_SIZE,
                         max_records: int = MAX_RANGE_RECORDS,
                         ignored_cap: int = IGNORED_FILTER_CAP) -> list[dict]:
        """Every invoice Oppen holds with a TransDate from `desde` to `hasta` (ISO days,
        both included), annulled ones too, in as few paginated requests as the API allows
        (`TransDate__gte` / `__lte`, paging through `has_more`).

        The filter is checked on every record that comes back, never trusted: a record
        outside the range (or without a readable TransDate) is dropped, and proves the
        filter is being ignored. Then Oppen would list its whole ledger, so the read stops
        with OppenRejected once `ignored_cap` records were read (a small ledger read whole
        before that still gives the right answer). An honoured read stops the same way
        past `max_records`, rather than hold more in memory than a range should have.
        """
        found: list[dict] = []
        outside = 0
        filters = {"TransDate__gte": desde, "TransDate__lte": hasta}
        for seen, record in enumerate(self.list_invoices(filters, page_size=page_size), start=1):
            day = str(record.get("TransDate") or "")[:10]
            if len(day) == 10 and desde <= day <= hasta:
                found.append(record)
            else:
                outside += 1
            if outside and seen >= ignored_cap:
                raise OppenRejected(
                    f"No se pudo leer Oppen: no aplica el filtro de fechas (TransDate__gte/__lte) "
                    f"y devuelve facturas de otros días; se detuvo la lectura tras {seen:,} "
                    "facturas para no recorrer todo Oppen".replace(",", "."))
            if seen > max_records:
                raise OppenRejected(
                    (f"No se pudo leer Oppen: del {desde} al {hasta} hay más de {max_records:,} "
                     "facturas; elegí un rango más corto").replace(",", "."))
        return found

    def find_by_sernr(self, sernr: int) -> list[dict]:
        """The invoices Oppen holds under this SerNr (each record checked: an ignored
        filter must not make another invoice look like the one asked for)."""
        found = []
        for seen, record in enumerate(self.list_invoices({"SerNr": sernr}), start=1):
            if str(record.get("SerNr")) == str(sernr):
                found.append(record)
            if seen >= PAGE_SIZE:   # one page is plenty for a key: stop reading the ledger
                break
        return found

    def ping(self) -> dict:
        """Authenticate and read one invoice: what the console's connectivity check shows."""
        started = time.monotonic()
        self.authenticate()
        auth_ms = (time.monotonic() - started) * 1000
        started = time.monotonic()
        next(self.list_invoices({}, page_size=1), None)
        return {"auth_ms": round(auth_ms, 1), "query_ms": round((time.monotonic() - started) * 1000, 1)}


_HEADERS = {"Accept": "application/json", "Accept-Encoding": "gzip"}
_JSON_HEADERS = {**_HEADERS, "Content-Type": "application/json"}


def json_body(payload: Any) -> tuple[str, bytes]:
    """A payload as the text we keep (non-ASCII as it is) and the bytes we send (ASCII,
    as `requests` sent them), encoded once: the two are one when the text is ASCII."""
    text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
    return text, (text.encode() if text.isascii() else _json_bytes(payload))


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, allow_nan=False).encode()


def _path_of(base_url: str) -> str:
    try:
        return urlsplit(base_url).path.rstrip("/")
    except ValueError:      # a malformed URL fails on the first call, as an OppenError
        return ""
