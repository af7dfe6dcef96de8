"""The sandbox's request log and its repeat-POST counter: what the exactly-once tests
and the benchmark read back. An entry names the call and its outcome, never a
password, a token or a payload; the log is bounded, the counter is not.

An entry: seq, t (time.monotonic), method, path ("authenticate", "Invoice", ...),
official_sernr, voucher ("006/1" or None), outcome, repeat (a POST of an invoice
already held). Outcomes: authenticated, auth_failed, unauthorized, stored, duplicate,
rejected, listed, not_found, and the faults' fault_5xx, fault_502_html,
timeout_after_store (stored, never answered), dropped, rate_limited, empty_answer,
foreign_answer (nothing stored), trickled (handled as usual, answered a byte at a
time), down, stopped; error is an unexpected exception answered with 500.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

# Bounded so a console left running for days cannot grow without limit.
LOG_MAX_ENTRIES = 100_000


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict] = deque(maxlen=LOG_MAX_ENTRIES)
        self._seq = 0
        self._repeats: Counter[str] = Counter()
        self._in_flight: Counter[tuple[str, str]] = Counter()

    def record(self, method: str, path: str, outcome: str, *, official: object = None,
               voucher: str | None = None, repeat: str | None = None,
               received: float | None = None) -> None:
        """`repeat` is the invoice's identity when it is a POST of an invoice already
        held (counted whatever the answer was)."""
        with self._lock:
            self._seq += 1
            self._entries.append(
                {
                    "seq": self._seq,
                    "t": time.monotonic(),
                    "received": received,
                    "method": method,
                    "path": path,
                    "official_sernr": official if isinstance(official, str) else None,
                    "voucher": voucher,
                    "outcome": outcome,
                    "repeat": repeat is not None,
                }
            )
            if repeat is not None:
                self._repeats[repeat] += 1

    def arrived(self, method: str, path: str) -> None:
        with self._lock:
            self._in_flight[method, path] += 1

    def answered(self, method: str, path: str) -> None:
        with self._lock:
            self._in_flight[method, path] -= 1

    def in_flight(self, method: str, path: str) -> int:
        """Requests received whose answer is not ready yet (see OppenSandbox.in_flight)."""
        with self._lock:
            return self._in_flight[method, path]

    def entries(self) -> list[dict]:
        with self._lock:
            return [dict(entry) for entry in self._entries]

    def repeats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._repeats)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._seq = 0
            self._repeats.clear()
