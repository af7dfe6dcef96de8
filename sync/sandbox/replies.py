"""What the sandbox answers, before it goes on the wire: a status and a body, or a
way of misbehaving (hang, drop, trickle). Building a reply never touches a socket.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSON = "application/json"
HTML = "text/html; charset=utf-8"

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Reply:
    """`action`: "answer" normally; "hang" writes nothing for `hang_seconds` then closes;
    "drop" closes at once; "trickle" sends the head, then the body one byte every
    `trickle_ms`."""

    status: int = 200
    body: bytes = b""
    content_type: str = JSON
    extra_headers: Headers = ()
    action: str = "answer"
    hang_seconds: float = 0.0
    trickle_ms: float = 0.0


def json_reply(status: int, payload: Any, extra_headers: Headers = ()) -> Reply:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Reply(status, body, JSON, extra_headers)


def error(status: int, message: str, extra_headers: Headers = ()) -> Reply:
    return json_reply(status, {"ok": False, "error": message}, extra_headers)


def html_reply(status: int, page: str) -> Reply:
    return Reply(status, page.encode("utf-8"), HTML)
