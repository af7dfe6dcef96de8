"""How a value reads on screen, in Argentina's formats whatever the browser says:
`$ 15.000,50`, `1.234`, `24/11/2026`, `24/11/2026 05:20`, `12,5 %`, `0,8 s`, `45 ms`; a blank,
never "None"; text from the database or Oppen shown literally. Pure functions: no
Streamlit here.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation

from sync import messages
from sync.state.read_models import fmt_date, fmt_datetime  # noqa: F401  (the dates' one place)

# An invoice's state as a label of its own (a table cell, a filter).
STATE_LABELS = {state: label.capitalize() for state, label in messages.STATE_LABELS.items()}

# Characters markdown (and Streamlit's own :color[…] and $…$) act on anywhere in a line;
# and what starts a block at the start of a line (a list, a numbered list, a quote).
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>~|$#!&])")
_MD_LINE_START = re.compile(r"^(\s*)(\d+(?=[.)])|)([-+=>]\s|[.)])", re.MULTILINE)
# Bare addresses that GitHub-flavoured markdown would turn into links by themselves.
_AUTOLINK = re.compile(r"(?i)(://|\bwww\.|@)")


def md(text: str | None) -> str:
    """Text shown literally inside markdown (a local's name, Oppen's words): every
    character markdown or HTML would act on is escaped, so `[a](http://x)` stays those
    characters, `![p](…)` never becomes an image and `<img>` never a tag; newlines kept."""
    escaped = _MD_SPECIAL.sub(r"\\\1", text or "")
    escaped = _MD_LINE_START.sub(lambda m: m.group(1) + m.group(2) + "\\" + m.group(3), escaped)
    # GFM's literal autolinks (http://…, www.…, a@b) are found in the text after escapes
    # and character references are decoded: only an invisible word joiner (U+2060)
    # between the letters breaks them, and the text still reads the same.
    escaped = _AUTOLINK.sub(lambda m: "\u2060" + m.group(1), escaped)
    return escaped.replace("\n", "  \n")


def _grouped(text: str) -> str:
    """'1,234.50' (Python's grouping) as '1.234,50'."""
    return text.replace(",", "·").replace(".", ",").replace("·", ".")


def pesos(value) -> str:
    """'$ 98.000,00': an amount as people in Argentina write it ('' when missing)."""
    if value is None or value == "":
        return ""
    amount = Decimal(str(value))
    sign = "-" if amount < 0 else ""
    return f"{sign}$ {_grouped(f'{abs(amount):,.2f}')}"


def pesos_or_text(value) -> str:
    """An amount as pesos, or the raw value when it is not a number (invalid rows)."""
    try:
        return pesos(value)
    except (ArithmeticError, ValueError, TypeError, InvalidOperation):
        return "" if value is None else str(value)


def integer(value) -> str:
    """'1.234': a count ('' when missing)."""
    if value is None:
        return ""
    return _grouped(f"{int(value):,d}")


def decimal(value, places: int = 1) -> str:
    """'12,5': a number with `places` decimals ('' when missing)."""
    if value is None:
        return ""
    return _grouped(f"{float(value):,.{places}f}")


def percent(part: int, whole: int) -> str:
    """'87,5 %' with one decimal; '—' when there is nothing to divide."""
    return f"{decimal(100.0 * part / whole)} %" if whole else "—"


def duration(seconds: float | None) -> str:
    """'45 ms' under a tenth of a second, '0,8 s', '12,4 s' under a minute (decimals
    matter there), '3 min 05 s', '2 h 04 min'."""
    if seconds is None:
        return ""
    seconds = max(0.0, float(seconds))
    if seconds < 0.1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{decimal(seconds)} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def run_duration(seconds: float | None) -> str:
    """A run's duration: measured by the run itself to the millisecond (migration 0008),
    it reads like `duration` ('0,8 s', '12,4 s'); older runs have only their start and
    end, stored to the whole second, so a decimal would be invented: 'menos de 1 s',
    '12 s'."""
    if seconds is None:
        return ""
    seconds = max(0.0, float(seconds))
    if seconds.is_integer() and seconds < 60:
        return "menos de 1 s" if seconds < 1 else f"{int(seconds)} s"
    return duration(seconds)


def fmt_time(value: dt.datetime | None) -> str:
    """'05:20:07' in Argentina's time (a step within one run)."""
    text = fmt_datetime(value)
    if not text:
        return ""
    from sync.state.read_models import to_local
    return to_local(value).strftime("%H:%M:%S")
