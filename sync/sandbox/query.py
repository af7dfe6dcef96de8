"""GET Invoice's query language, as the real API has it: `Field=value` equality,
`Field__gte` / `Field__lte` ranges, `__limit__` / `__offset__` paging,
`__total_records__=1` for the count, and `has_more` in every answer.

Pure: query parameters and records in, an answer dict out. It never reads the ledger
itself and never decides whether filters are honoured (the caller passes them or not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from .validation import is_number

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Oppen's booleans travel as 0/1; `Invalid=true` is also understood.
BOOLEAN_FIELDS = frozenset({"Invalid"})
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")

Condition = tuple[str, str, str]  # (field, "==" | ">=" | "<=", value as sent)


class QueryError(ValueError):
    """A paging parameter that is not a whole number >= 0; the message is Oppen-style."""


@dataclass(frozen=True)
class Query:
    conditions: tuple[Condition, ...] = ()
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    want_total: bool = False

    def equal_to(self, field: str) -> str | None:
        """The value of the first `field=value` condition, if any (for index lookups)."""
        return next((v for f, op, v in self.conditions if f == field and op == "=="), None)


def parse(params: Iterable[tuple[str, str]]) -> Query:
    limit, offset, want_total = DEFAULT_LIMIT, 0, False
    conditions: list[Condition] = []
    for key, value in params:
        if key in ("__limit__", "__offset__"):
            try:
                number = int(value)
            except ValueError:
                number = -1
            if number < 0:
                raise QueryError(f"Invalid {key}")
            if key == "__limit__":
                limit = min(number, MAX_LIMIT)
            else:
                offset = number
        elif key == "__total_records__":
            want_total = value.strip().lower() not in ("", "0", "false", "no")
        elif key.endswith("__gte"):
            conditions.append((key[:-5], ">=", value))
        elif key.endswith("__lte"):
            conditions.append((key[:-5], "<=", value))
        else:
            conditions.append((key, "==", value))
    return Query(tuple(conditions), limit, offset, want_total)


def _number(text: str) -> int | float | None:
    # int first: a SerNr near 2**63 would lose its last digits as a float.
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _flag(text: str) -> int | None:
    text = text.strip().lower()
    return 1 if text in _TRUE else 0 if text in _FALSE else None


def _holds(stored: Any, op: str, wanted: Any) -> bool:
    if op == "==":
        return stored == wanted
    return stored >= wanted if op == ">=" else stored <= wanted


def matches(record: dict, conditions: Iterable[Condition]) -> bool:
    for field, op, value in conditions:
        if field not in record:
            return False  # an unknown field matches nothing rather than being ignored
        stored = record[field]
        if field in BOOLEAN_FIELDS:
            wanted = _flag(value)
            if wanted is None or not _holds(1 if stored else 0, op, wanted):
                return False
        elif is_number(stored) and (number := _number(value)) is not None:
            # Numbers compare as numbers: SerNr__gte=999 must not sort as text.
            if not _holds(stored, op, number):
                return False
        elif not _holds("" if stored is None else str(stored), op, value):
            return False
    return True


def answer(records: Iterable[dict], query: Query, *, honour_filters: bool = True) -> dict:
    """The page of `records` the query asks for, with has_more (and total_records)."""
    conditions = query.conditions if honour_filters else ()
    page: list[dict] = []
    total = 0
    has_more = False
    end = query.offset + query.limit
    for record in records:
        if not matches(record, conditions):
            continue
        if total >= end:
            has_more = True
            if not query.want_total:
                break
        elif total >= query.offset:
            page.append(record)
        total += 1
    result: dict[str, Any] = {"ok": True, "data": page, "has_more": has_more}
    if query.want_total:
        result["total_records"] = total
    return result
