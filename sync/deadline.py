"""HTTP exchanges bounded as a whole: connect, send and the complete answer within one
deadline. A socket timeout bounds each read only, so a server that trickles its answer a
byte at a time could hold a caller for minutes; this module is the one place that reads
an answer against a deadline. `exchange_within` serves the Oppen client (a kept-alive
`http.client` connection: the hot path, without the per-call work of `requests` and
urllib3 above it); `request_within` the webhooks.

Raises the HTTP library's own exceptions (a late answer is a `TimeoutError`, or a
`requests.ReadTimeout`): each caller translates them into its own errors.
"""

from __future__ import annotations

import gzip
import http.client
import time
import zlib
from collections.abc import Mapping
from typing import Any

import requests
import urllib3

READ_SIZE = 65536
LATE = "the answer did not arrive in time"


def exchange_within(conn: http.client.HTTPConnection, method: str, target: str,
                    timeout: float, *, body: bytes | None = None,
                    headers: Mapping[str, str] | None = None
                    ) -> tuple[http.client.HTTPResponse, bytes]:
    """One exchange on a connected `conn` that ends within `timeout` seconds: the answer
    and its whole body (gzip undone). Nothing is retried and no redirect is followed.
    Raises TimeoutError when the answer is late, OSError or http.client.HTTPException
    when the connection failed on the way, or what the connection's own last check
    raises before its write (the Oppen client's SendWithheld); then `conn` is out of
    step and must be closed, never reused."""
    deadline = time.monotonic() + timeout
    sock = conn.sock
    sock.settimeout(timeout)
    conn.request(method, target, body=body, headers=headers or {})
    sock.settimeout(_left(deadline))
    resp = conn.getresponse()
    parts = []
    while True:
        sock.settimeout(_left(deadline))
        part = resp.read1(READ_SIZE)
        if not part:
            break
        parts.append(part)
    resp.close()    # read whole: the connection is free for the next exchange
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    if data and (resp.getheader("Content-Encoding") or "").strip().lower() == "gzip":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            raise http.client.HTTPException("gzip body cannot be read") from None
    return resp, data


def _left(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(LATE)
    return remaining


def request_within(session: requests.Session | None, method: str, url: str, timeout: float,
                   **kwargs: Any) -> requests.Response:
    """One request whose whole exchange ends within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    send = session.request if session is not None else requests.request
    resp = send(method, url, timeout=timeout, stream=True, **kwargs)
    try:
        resp._content = _read_within(resp, deadline)
    except BaseException:
        resp.close()
        raise
    return resp


def _read_within(resp: requests.Response, deadline: float) -> bytes:
    try:
        return _drain(resp.raw, deadline)
    except urllib3.exceptions.ReadTimeoutError:
        raise requests.ReadTimeout(LATE) from None
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.ConnectionError(str(exc)) from None


def _drain(raw: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
    """The body of a streamed answer, read one socket read at a time, each allowed only
    what is left until `deadline`; past it, a ReadTimeoutError (an unknown outcome).
    The connection goes back to its pool only once the answer was read whole."""
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    parts = []
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise urllib3.exceptions.ReadTimeoutError(None, None, LATE)
            if sock is not None:
                sock.settimeout(remaining)
            part = raw.read1(READ_SIZE, decode_content=True)
            if not part:
                break
            parts.append(part)
    except urllib3.exceptions.ReadTimeoutError:
        raise
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        if time.monotonic() >= deadline or isinstance(exc, (TimeoutError,
                                                            urllib3.exceptions.TimeoutError)):
            raise urllib3.exceptions.ReadTimeoutError(None, None, LATE) from None
        raise urllib3.exceptions.ProtocolError(str(exc)) from None
    raw.release_conn()
    return parts[0] if len(parts) == 1 else b"".join(parts)
