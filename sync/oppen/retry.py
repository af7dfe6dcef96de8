"""When to try again: the one predicate, the backoff with its jitter, how hard to try
in one run (`Policy`), and when to stop trying because Oppen is down (`Breaker`).

Pure and small on purpose: tests pin the jitter with their own `random.Random` and
sleep with their own function.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import OppenTransportError
from ..settings import Settings


def is_retryable(exc: BaseException) -> bool:
    """Worth another try in the same run: no answer, 408/429, 5xx. Never a rejection."""
    return isinstance(exc, OppenTransportError)


def backoff_delay(attempt: int, *, base: float, cap: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Capped exponential backoff with full jitter; Oppen's Retry-After is a floor."""
    rng = rng or random
    delay = rng.uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, 60.0))
    return delay


@dataclass
class Policy:
    """How hard to try within one run. Delays come from settings; tests shorten them."""
    max_attempts: int = Settings.max_attempts
    backoff_base: float = Settings.backoff_base
    backoff_cap: float = Settings.backoff_cap
    breaker_threshold: int = Settings.breaker_threshold
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Policy":
        return cls(max_attempts=settings.max_attempts, backoff_base=settings.backoff_base,
                   backoff_cap=settings.backoff_cap, breaker_threshold=settings.breaker_threshold)


class Breaker:
    """Stops a run after N transport failures in a row, instead of hammering a dead Oppen."""

    def __init__(self, threshold: int):
        self.threshold = threshold
        self._lock = threading.Lock()
        self._streak = 0
        self.reason: str | None = None
        self.kind: str | None = None     # the error kind of what opened it (schema.ERROR_*)

    @property
    def open(self) -> bool:
        return self.reason is not None

    def failure(self, message: str) -> None:
        with self._lock:
            self._streak += 1
            if self._streak >= self.threshold and self.reason is None:
                self.reason = (f"Oppen no responde: se detuvo la sincronización tras "
                               f"{self._streak} errores de conexión seguidos ({message})")
                self.kind = "transport"

    def trip(self, reason: str, kind: str = "unknown") -> None:
        with self._lock:
            if self.reason is None:
                self.reason, self.kind = reason, kind

    def success(self) -> None:
        with self._lock:
            self._streak = 0
