"""How a value reads on screen, in Argentina's formats whatever the browser says:
`$ 15.000,50`, `24/11/2026`, `24/11/2026 05:20`, `12,5 %`; a blank, never "None"; text
from the database or Oppen shown literally. Pure functions: no Streamlit here.
"""

from __future__ import annotations

import re
from decimal import Decimal

from sync import messages
from sync.state.read_models import fmt_date, fmt_datetime  # noqa: F401  (the dates' one place)

# An invoice's state as a label of its own (a table cell, a filter).
STATE_LABELS = {state: label.capitalize() for state, label in messages.STATE_LABELS.items()}

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>~|$#])")


def md(text: str | None) -> str:
    """Text shown literally in markdown (Oppen's words may contain * _ $ …), newlines kept."""
    escaped = _MD_SPECIAL.sub(r"\\\1", text or "")
    return escaped.replace("\n", "  \n")


def pesos(value) -> str:
    """'$ 98.000,00': an amount as people in Argentina write it."""
    amount = Decimal(0) if value is None else Decimal(str(value))
    text = f"{amount:,.2f}".replace(",", "·").replace(".", ",").replace("·", ".")
    return f"$ {text}"


def pesos_or_text(value) -> str:
    """An amount as pesos, or the raw value when it is not a number (invalid rows)."""
    try:
        return pesos(value)
    except (ArithmeticError, ValueError, TypeError):
        return "" if value is None else str(value)


def percent(part: int, whole: int) -> str:
    """'87,5 %' with one decimal; '—' when there is nothing to divide."""
    return f"{100.0 * part / whole:.1f} %".replace(".", ",") if whole else "—"
