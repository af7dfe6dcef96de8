"""Rows as tables in Argentina's formats, decided on the server whatever the browser's
language: a pandas Styler gives every cell its text (`$ 15.000,50`, `1.234`,
`24/11/2026`, `24/11/2026 05:20`, whole SerNr, a blank for a missing value) while the
grid keeps the real numbers and dates underneath, so sorting an amount column sorts by
amount. The column types below set widths and titles only: a `format` there would win
over the Styler and hand the formatting back to the browser's locale.

Exports for Excel live in `sync.exports` (pure, shared with every page); re-exported here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal

import pandas as pd
import streamlit as st

from sync.exports import csv_bytes, xlsx_bytes  # noqa: F401  (pages export through here)
from sync.state import read_models
from ui import formats

# Rows tall enough for three lines: the grid wraps text only in rows taller than 4rem
# (Streamlit's rule), so a long error reads whole in a narrow column instead of pushing
# the table sideways.
WRAPPED_ROW_HEIGHT = 68


def row_height(texts) -> int | None:
    """Rows that wrap when some text (an error) would not fit one line; Streamlit's
    default otherwise, so a table without errors stays compact."""
    return WRAPPED_ROW_HEIGHT if any(len(t or "") > 30 for t in texts) else None

# Whole numbers that name something (no thousands separator): Oppen's SerNr, an HTTP
# status, an id.
ID_TITLES = ("SerNr", "SerNr en Oppen", "HTTP", "Id", "Corrida", "Nº")


def _is_id(title: str, ids: Sequence[str]) -> bool:
    return title in ids or title in ID_TITLES or title.startswith("SerNr")


def _cell(value, kind: str) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if kind == "money":
        return formats.pesos(value)
    if kind == "count":
        return formats.integer(value)
    if kind == "id":
        return str(int(value))
    if kind == "datetime":
        return value.strftime("%d/%m/%Y %H:%M")
    if kind == "date":
        return value.strftime("%d/%m/%Y")
    return str(value)


def _kind(series: pd.Series, title: str, ids: Sequence[str]) -> str:
    values = [v for v in series if v is not None and not (not isinstance(v, str) and pd.isna(v))]
    if not values:
        return "text"
    if all(isinstance(v, bool) for v in values):
        return "text"
    if all(isinstance(v, (int,)) and not isinstance(v, bool) for v in values) or \
            pd.api.types.is_integer_dtype(series.dtype):
        return "id" if _is_id(title, ids) else "count"
    if all(isinstance(v, (float, Decimal)) for v in values):
        return "money"
    if all(isinstance(v, (dt.datetime, pd.Timestamp)) for v in values):
        return "datetime"
    if all(isinstance(v, dt.date) for v in values):
        return "date"
    return "text"


def frame(rows: Sequence[Mapping], columns: Mapping[str, str], *, ids: Sequence[str] = ()):
    """Rows as a table with only `columns` (key → Spanish title), in that order, each
    cell shown in Argentina's format by what it holds: floats and Decimals are amounts
    (`money`), ints are counts (or ids: `ids`, ID_TITLES), datetimes are Argentina's
    wall clock (`local_dt`), dates are days; None is a blank. Returns a Styler for
    st.dataframe (its `.data` is the DataFrame of real values)."""
    data = {}
    for key, title in columns.items():
        values = [row.get(key) for row in rows]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            data[title] = pd.array(values, dtype="Int64")   # whole, even beside a blank
        elif present and all(isinstance(v, (float, Decimal)) for v in present):
            data[title] = pd.array([None if v is None else float(v) for v in values],
                                   dtype="Float64")
        else:
            data[title] = pd.Series(["" if v is None and all(isinstance(x, str) for x in present)
                                     else v for v in values], dtype=object)
    df = pd.DataFrame(data, columns=list(columns.values()))
    kinds = {title: _kind(df[title], title, ids) for title in df.columns}
    return df.style.format({title: (lambda v, k=kind: _cell(v, k)) for title, kind in kinds.items()})


def values(table) -> pd.DataFrame:
    """The real values of a `frame` (for tests and exports)."""
    return table.data if hasattr(table, "data") else table


def show(table, **kwargs):
    """st.dataframe with a blank for missing values; every other argument passes through."""
    kwargs.setdefault("hide_index", True)
    kwargs.setdefault("width", "stretch")
    return st.dataframe(table, placeholder="", **kwargs)


def money(value) -> float | None:
    """An amount for a table (None stays an empty cell)."""
    return None if value is None else float(Decimal(str(value)))


def local_dt(value: dt.datetime | None) -> dt.datetime | None:
    """A time from our tables as Argentina's wall clock, naive (for a table or an export)."""
    local = read_models.to_local(value)
    return local.replace(tzinfo=None) if local else None


def widths(sizes: Mapping[str, int]) -> dict:
    """Columns of a set width in pixels (title → px), so a table fits 1400 px without
    scrolling sideways; each column's kind still follows its values."""
    return {title: st.column_config.Column(title, width=px) for title, px in sizes.items()}


def count_columns(*titles: str) -> dict:
    """Narrow columns, so a table of counts fits without scrolling sideways."""
    return {t: st.column_config.NumberColumn(t, width="small") for t in titles}


def id_column(title: str):
    """A whole number that names something (a SerNr): shown whole by the Styler."""
    return st.column_config.NumberColumn(title)


def money_column(title: str):
    return st.column_config.NumberColumn(title)


def date_column(title: str):
    return st.column_config.DateColumn(title)


def datetime_column(title: str):
    return st.column_config.DatetimeColumn(title)


def text_column(title: str, width: str | int = "large"):
    """A long text (an error) that wraps instead of pushing the table sideways."""
    return st.column_config.TextColumn(title, width=width)
