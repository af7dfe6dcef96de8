"""The sandbox's switchable misbehaviour, and the one seeded dice that picks it per call.

`Faults` is plain settings, checked when built, changed at runtime through
`OppenSandbox.set_faults` or the admin endpoint. `Dice` only says which fault, if any,
a call gets. Nothing here touches a socket, a token or a stored invoice.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from dataclasses import dataclass
from typing import Any, Sequence

RATES = (
    "error_rate", "timeout_rate", "drop_rate", "rate_limit_rate",
    "empty_answer_rate", "foreign_answer_rate", "trickle_rate",
)
_SWITCHES = ("down", "ignore_filters")
_DURATIONS = ("latency_ms", "hang_seconds", "trickle_ms")
STYLES = {"duplicate_style": ("409", "real"), "validation_style": ("400", "real")}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Faults:
    """Misbehaviour to inject; every field can be changed at runtime via set_faults.

    Rates are chances per call between 0 and 1: `error_rate` (500/503 JSON or 502 HTML,
    also on GET), then for POST only `rate_limit_rate` (429), `drop_rate` (connection
    closed, nothing stored), `timeout_rate` (stored, then no answer for `hang_seconds`),
    `empty_answer_rate` (a 2xx with an empty record, nothing stored),
    `foreign_answer_rate` (a 2xx carrying another stored invoice, nothing stored), and
    `trickle_rate` (also on GET: the answer's body sent one byte every `trickle_ms`).
    `down` answers an nginx 502 page to every API call; `ignore_filters` makes GET
    Invoice list every invoice whatever the filters say (paging still applies).
    `duplicate_style` "409" is the seed's duplicate answer, "real" Oppen's 400;
    `validation_style` "400" answers rejected payloads with the seed's 400, "real" with
    Oppen's 422. `seed` makes the draws repeatable.
    """

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
    ignore_filters: bool = False
    empty_answer_rate: float = 0.0
    foreign_answer_rate: float = 0.0
    trickle_rate: float = 0.0
    trickle_ms: float = 200.0
    validation_style: str = "400"

    def __post_init__(self) -> None:
        for name in RATES:
            rate = getattr(self, name)
            if not _is_number(rate) or not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} debe estar entre 0 y 1 (se recibió {rate!r})")
        for name in _DURATIONS:
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ValueError(f"{name} debe ser un número no negativo (se recibió {value!r})")
        for name in _SWITCHES:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} debe ser true o false")
        if not isinstance(self.token_max_uses, int) or isinstance(self.token_max_uses, bool) \
                or self.token_max_uses < 0:
            raise ValueError("token_max_uses debe ser un entero no negativo")
        if not _is_number(self.token_ttl) or self.token_ttl <= 0:
            raise ValueError("token_ttl debe ser positivo")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ValueError("seed debe ser un entero o null")
        for name, allowed in STYLES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} debe ser uno de {allowed} (se recibió {getattr(self, name)!r})")

    def changed(self, **changes: Any) -> Faults:
        """A checked copy with `changes`; an unknown name is a TypeError."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Dice:
    """The seeded random source behind every fault draw and every random pick."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def reseed(self, seed: int | None) -> None:
        with self._lock:
            self._rng.seed(seed)

    def draw(self, faults: Faults, *, post: bool) -> str | None:
        """The fault this call gets, or None: error_500/503/502, rate_limit, drop,
        timeout, empty, foreign, trickle."""
        bands = [("error", faults.error_rate)]
        if post:
            # New bands go after the old ones: a seeded run with the old rates draws
            # the same faults as before they existed.
            bands += [
                ("rate_limit", faults.rate_limit_rate),
                ("drop", faults.drop_rate),
                ("timeout", faults.timeout_rate),
                ("empty", faults.empty_answer_rate),
                ("foreign", faults.foreign_answer_rate),
            ]
        bands.append(("trickle", faults.trickle_rate))
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

    def pick(self, choices: Sequence[Any]) -> Any:
        with self._lock:
            return self._rng.choice(choices)
