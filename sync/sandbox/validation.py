"""What a POSTed invoice must look like before the sandbox stores it, answered with the
texts Oppen (or the seed, for the checks the seed describes) uses.

Pure: a payload and the rules in, a message or None out. No I/O here, and no clock:
"today" comes from the rules, so a test can pin it.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

# Every field the project's mapping may send (both profiles), plus the two the seed's
# examples carry (Total, Comment). Anything else is "Field <X> not found", as Oppen says
# of e.g. OfficialEndSerNr.
INVOICE_FIELDS = frozenset(
    {
        "SerNr", "OfficialSerNr", "ToOfficialSerNr", "CustCode", "TransDate", "InvoiceDate",
        "DueDate", "Office", "Labels", "createUser", "Status", "InvoiceType", "VoucherCode",
        "DocType", "FormType", "Items", "Total", "Comment",
    }
)
ITEM_FIELDS = frozenset({"ArtCode", "Qty", "Price", "VATCode", "Name"})
# Oppen keeps SerNr in a signed 64-bit column; beyond it answers RANGEERR4.
MAX_SERNR = 2**63 - 1

# [0-9] rather than \d: \d would also accept other scripts' digits.
OFFICIAL_SERNR_RE = re.compile(r"[0-9]{4,5}-[0-9]{8}")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

Today = Callable[[], datetime.date]


@dataclass(frozen=True)
class Rules:
    """Link tables (None: anything links), the SerNr ceiling, and "today" for the due-date
    check (None: a due date in the past is accepted, as the seed's examples need)."""

    labels: frozenset[str] | None = None
    articles: frozenset[str] | None = None
    customers: frozenset[str] | None = None
    max_sernr: int = MAX_SERNR
    today: Today | None = None


def is_number(value: Any) -> bool:
    # bool is an int subclass, but `true` is not a quantity.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_sernr(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def parse_date(value: Any) -> datetime.date | None:
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        return None


def _member(value: Any, allowed: frozenset[str]) -> bool:
    try:
        return value in allowed
    except TypeError:  # unhashable (list, dict) cannot be a code
        return False


def check_invoice(payload: dict, rules: Rules) -> str | None:
    """The first thing wrong with `payload`, in Oppen's (or the seed's) words; None if
    it may be stored. The order is fixed so one payload always gets one message."""
    for key in payload:
        if key not in INVOICE_FIELDS:
            return f"Field {key} not found"
    items = payload.get("Items")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                for key in item:
                    if key not in ITEM_FIELDS:
                        return f"Field {key} not found"
    official = payload.get("OfficialSerNr")
    if not isinstance(official, str) or not OFFICIAL_SERNR_RE.fullmatch(official):
        return "Invalid invoice number"
    dates = {}
    for field in ("TransDate", "DueDate"):
        dates[field] = parse_date(payload.get(field))
        if dates[field] is None:
            return f"Invalid date {field}"
    if "InvoiceDate" in payload and parse_date(payload["InvoiceDate"]) is None:
        return "Invalid date InvoiceDate"
    # Oppen calls the due date EstPayDate inside; it must not precede the invoice, and
    # the real service also refuses one already past.
    if dates["DueDate"] < dates["TransDate"]:
        return "INVERTEDRANGEERR Field EstPayDate"
    if rules.today is not None and dates["DueDate"] < rules.today():
        return "INVERTEDRANGEERR Field EstPayDate"
    if not isinstance(items, list) or not items:
        return "Invalid Items"
    for item in items:
        if not (isinstance(item, dict) and is_number(item.get("Qty")) and is_number(item.get("Price"))):
            return "Invalid Items"
    # Link checks apply only to fields that are present: a missing code links nothing.
    if rules.labels is not None and "Labels" in payload and not _member(payload["Labels"], rules.labels):
        return "LINKTOINVALIDVALUEERR Labels"
    if rules.articles is not None:
        for item in items:
            if "ArtCode" in item and not _member(item["ArtCode"], rules.articles):
                return "LINKTOINVALIDVALUEERR ArtCode"
    if rules.customers is not None and "CustCode" in payload \
            and not _member(payload["CustCode"], rules.customers):
        return "LINKTOINVALIDVALUEERR CustCode"
    if "SerNr" in payload:
        if not is_sernr(payload["SerNr"]):
            return "Invalid SerNr"
        if payload["SerNr"] > rules.max_sernr:
            return "RANGEERR4"
    return None
