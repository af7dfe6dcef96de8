"""HTTP exchanges bounded as a whole: connect, send and the complete answer within one
deadline. A socket timeout bounds each read only, so a server that trickles its answer a
byte at a time could hold a caller for minutes; this module is the one place that reads
an answer against a deadline. `urlopen_within` serves the Oppen client (a urllib3 pool:
the hot path, without `requests`' per-call work); `request_within` the webhooks.

Raises the HTTP library's own exceptions (a late answer is urllib3's `ReadTimeoutError`,
or `requests.ReadTimeout`): each caller translates them into its own errors.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import requests
import urllib3

READ_SIZE = 65536
LATE = "the answer did not arrive in time"


def urlopen_within(pool: urllib3.HTTPConnectionPool, method: str, url: str, timeout: float, *,
                   body: bytes | None = None, headers: Mapping[str, str] | None = None
                   ) -> tuple[urllib3.BaseHTTPResponse, bytes]:
    """One exchange through a urllib3 pool (its connection kept alive for the next one)
    that ends within `timeout` seconds: the answer and its whole body. Nothing is retried
    and no redirect is followed: what Oppen answers is what the caller sees."""
    deadline = time.monotonic() + timeout
    resp = pool.urlopen(method, url, body=body, headers=headers, retries=False, redirect=False,
                        preload_content=False, timeout=urllib3.Timeout(connect=timeout,
                                                                       read=timeout))
    try:
        return resp, _drain(resp, deadline)
    except BaseException:
        resp.close()        # the connection is out of step: never reused
        resp.release_conn()
        raise


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
