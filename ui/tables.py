"""Rows as DataFrames for st.dataframe, and the column types that show them in
Argentina's formats (the grid formats numbers and dates itself: it gets real numbers
and naive local times, never preformatted text, so it sorts them right).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal

import pandas as pd
import streamlit as st

from sync.state import read_models


def frame(rows: Sequence[Mapping], columns: Mapping[str, str]) -> pd.DataFrame:
    """Rows as a DataFrame with only `columns` (key → Spanish title), in that order."""
    # An empty text cell reads better than "None" to the people using the console.
    text_keys = [key for key in columns
                 if all(row.get(key) is None or isinstance(row.get(key), str) for row in rows)]
    data = [{title: ("" if key in text_keys and row.get(key) is None else row.get(key))
             for key, title in columns.items()} for row in rows]
    return pd.DataFrame(data, columns=list(columns.values()))


def money(value) -> float | None:
    """An amount for a `money_column` (None stays an empty cell)."""
    return None if value is None else float(Decimal(str(value)))


def local_dt(value: dt.datetime | None) -> dt.datetime | None:
    """A time from our tables for a `datetime_column`: Argentina's wall clock, naive."""
    local = read_models.to_local(value)
    return local.replace(tzinfo=None) if local else None


def count_columns(*titles: str) -> dict:
    """Narrow integer columns, so a table of counts fits without scrolling sideways."""
    return {t: st.column_config.NumberColumn(t, format="plain", width="small") for t in titles}


def id_column(title: str):
    """A whole number that names something (a SerNr): no thousands separator."""
    return st.column_config.NumberColumn(title, format="plain")


def money_column(title: str):
    return st.column_config.NumberColumn(title, format="localized")


def date_column(title: str):
    return st.column_config.DateColumn(title, format="DD/MM/YYYY")


def datetime_column(title: str):
    return st.column_config.DatetimeColumn(title, format="DD/MM/YYYY HH:mm")
