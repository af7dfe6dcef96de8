"""Tables as files for Excel as it is set up in Argentina, for every page that exports.

CSV: UTF-8 with a BOM (so Excel reads "Día", not "DÃ­a"), `;` between cells (Excel in
Spanish uses the comma for decimals), amounts with a decimal comma and no thousands
separator (so Excel reads them back as numbers), dates dd/mm/aaaa, booleans Sí/No,
empty cells for missing values. `.xlsx` (openpyxl): real numbers, dates and times,
with Argentine display formats. Headers and any state labels come in Spanish from the
caller (`columns`: key → title; translate values before, e.g. with STATE_LABELS).

Pure: bytes out, no Streamlit, no I/O. Times must already be Argentina's (naive).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation

CSV_MIME = "text/csv"
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _decimal_text(value: Decimal) -> str:
    if value == value.to_integral_value() and value.as_tuple().exponent >= 0:
        return str(int(value))
    return f"{value:f}".replace(".", ",")


def cell_text(value) -> str:
    """One CSV cell as Excel in Argentina reads it back: the same value, the same type."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Sí" if value else "No"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:   # NaN: missing
            return ""
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        try:
            return _decimal_text(value.quantize(Decimal("0.01")) if value.as_tuple().exponent < -2
                                 else value)
        except InvalidOperation:
            return str(value)
    if isinstance(value, dt.datetime):
        return value.strftime("%d/%m/%Y %H:%M")
    if isinstance(value, dt.date):
        return value.strftime("%d/%m/%Y")
    return str(value)


def csv_bytes(rows: Sequence[Mapping], columns: Mapping[str, str]) -> bytes:
    """Rows as a CSV for Excel in Argentina: BOM, `;`, decimal comma, Spanish headers."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(list(columns.values()))
    for row in rows:
        writer.writerow([cell_text(row.get(key)) for key in columns])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def xlsx_bytes(rows: Sequence[Mapping], columns: Mapping[str, str], sheet: str = "Datos",
               *, money: Sequence[str] = ()) -> bytes:
    """Rows as an .xlsx with real cells: amounts as numbers with two decimals (`money`
    keys, and every Decimal), dates and times as dates, whole numbers (a SerNr) without
    separators, text as text; bold header, frozen first row."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    book = Workbook()
    ws = book.active
    ws.title = (sheet or "Datos")[:31]
    ws.append(list(columns.values()))
    for cell in ws[1]:
        cell.font = Font(bold=True)
    money_keys = set(money)
    for row_number, row in enumerate(rows, start=2):
        values, formats = [], []
        for key in columns:
            value = row.get(key)
            number_format = None
            if isinstance(value, bool):
                value = "Sí" if value else "No"
            elif isinstance(value, Decimal) or (key in money_keys and isinstance(value, (int, float))):
                value, number_format = float(value), "#,##0.00"
            elif isinstance(value, float):
                number_format = "#,##0.00" if value != int(value) else "0"
            elif isinstance(value, int):
                number_format = "0"
            elif isinstance(value, dt.datetime):
                value, number_format = value.replace(tzinfo=None), "DD/MM/YYYY HH:MM"
            elif isinstance(value, dt.date):
                number_format = "DD/MM/YYYY"
            values.append(value)
            formats.append(number_format)
        ws.append(values)
        # By its number: `ws.max_row` scans every cell written so far, which made a
        # sheet of a few thousand rows take seconds.
        for column, number_format in enumerate(formats, start=1):
            if number_format:
                ws.cell(row=row_number, column=column).number_format = number_format
    for n, title in enumerate(columns.values(), start=1):
        ws.column_dimensions[get_column_letter(n)].width = max(10, min(60, len(title) + 4))
    ws.freeze_panes = "A2"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
