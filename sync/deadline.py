"""HTTP exchanges bounded as a whole: connect, send and the complete answer within one
deadline. `requests`' own timeout bounds each socket read, so a server that trickles its
answer a byte at a time could hold a caller for minutes; this module is the one place
that reads an answer against a deadline. Used by the Oppen client and the webhook.

Raises `requests`' own exceptions (a late answer is a `requests.ReadTimeout`): each
caller translates them into its own errors.
"""

from __future__ import annotations

import time
from typing import Any

import requests
import urllib3

READ_SIZE = 65536


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
    """The body of a streamed answer, read one socket read at a time, each allowed only
    what is left until `deadline`; past it, a ReadTimeout (an unknown outcome)."""
    raw = resp.raw
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    parts = []
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise requests.ReadTimeout("the answer did not arrive in time")
            if sock is not None:
                sock.settimeout(remaining)
            part = raw.read1(READ_SIZE, decode_content=True)
            if not part:
                break
            parts.append(part)
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        if time.monotonic() >= deadline or isinstance(exc, (TimeoutError,
                                                            urllib3.exceptions.TimeoutError)):
            raise requests.ReadTimeout("the answer did not arrive in time") from None
        raise requests.ConnectionError(str(exc)) from None
    raw.release_conn()
    return b"".join(parts)
