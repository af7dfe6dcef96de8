"""Turns one `facturas_trns` row into the JSON Oppen expects, or into a list of problems.

Pure functions only: no database, no HTTP, no clock (callers pass `today`), no
logging. A row that cannot be mapped is never "fixed up" here: every problem comes back
naming the field, so the row can be recorded as invalid and shown to a person.

The default profile is the seed's mapping table; `REAL_PROFILE` is the real service's
column of `oppen-api.md`. Every field of `MappingProfile` can be changed by
configuration, so switching between the two needs no code change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

TIPOS = ("A", "B", "Z", "CC")
_DIGITS = re.compile(r"^[0-9]+$")
_AMOUNT = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")
_CENT = Decimal("0.01")


def _frozen(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class MappingProfile:
    """Every constant and per-type choice of the mapping. Defaults: the seed's table."""

    name: str = "seed"
    customer: str = "C00001"
    customers_by_local: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    office: str = "100"
    # "{local}" is replaced by the local's name. Empty: the local must be listed in
    # labels_by_local (the real service only accepts label codes it knows).
    label_format: str = "Local|{local}"
    labels_by_local: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    create_user: str = "API"
    status: int = 0
    # Seed: InvoiceType carries the type ("tentativo"); real service: 0 for all.
    invoice_types: Mapping[str, int] = field(
        default_factory=lambda: _frozen({"Z": 0, "A": 1, "B": 2, "CC": 3}))
    art_codes: Mapping[str, str] = field(
        default_factory=lambda: _frozen({t: "271240051" for t in TIPOS}))
    qty: int = 1
    pos_width: int = 4
    number_width: int = 8
    price_includes_vat: bool = True
    vat_rate: Decimal = Decimal("0.21")
    vat_code: str = ""
    # "client": we send a SerNr allocated from our database; "server": Oppen assigns it.
    sernr_mode: str = "client"
    # Client-assigned SerNr = sernr_base + our row id: unique, allocated once by the
    # database, and above 2**31 like the numbers Oppen itself uses.
    sernr_base: int = 1_000_000_000_000
    payment_days: int = 30
    due_date_not_past: bool = False
    voucher_codes: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    doc_types: Mapping[str, int] = field(default_factory=lambda: _frozen({}))
    # Only sent when non-empty; types missing from it send FormType null.
    form_types: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    send_to_official_sernr: bool = False
    send_invoice_date: bool = False
    allow_zero_amount: bool = False

    def replace(self, **changes: Any) -> "MappingProfile":
        return dataclasses.replace(self, **changes)


SEED_PROFILE = MappingProfile()

REAL_PROFILE = MappingProfile(
    name="real",
    label_format="",
    status=1,
    invoice_types=_frozen({t: 0 for t in TIPOS}),
    pos_width=5,
    price_includes_vat=False,
    sernr_mode="server",
    due_date_not_past=True,
    voucher_codes=_frozen({"A": "001", "B": "006", "Z": "083"}),
    doc_types=_frozen({"A": 1, "B": 1, "Z": 4, "CC": 1}),
    form_types=_frozen({"Z": "Z"}),
    send_to_official_sernr=True,
    send_invoice_date=True,
)

PROFILES = {"seed": SEED_PROFILE, "real": REAL_PROFILE}


@dataclass(frozen=True)
class Problem:
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


@dataclass(frozen=True)
class Mapped:
    reference: str          # "A 0005-00001691", as the seed's error list shows it
    official_sernr: str
    payload: dict
    amount: Decimal         # the row's monto, for totals and for comparing with Oppen


@dataclass(frozen=True)
class Invalid:
    reference: str
    problems: tuple[Problem, ...]

    @property
    def reason(self) -> str:
        return "; ".join(str(p) for p in self.problems)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _number_part(row: Mapping, name: str, width: int, problems: list[Problem]) -> int | None:
    raw = _text(row.get(name))
    if not raw:
        problems.append(Problem(name, "falta el número"))
        return None
    if not raw.isascii() or not _DIGITS.fullmatch(raw):
        problems.append(Problem(name, f"debe ser numérico (se recibió {raw[:40]!r})"))
        return None
    if len(raw.lstrip("0")) > width:
        problems.append(Problem(name, f"tiene más de {width} dígitos ({raw[:40]})"))
        return None
    value = int(raw)
    if value <= 0:
        problems.append(Problem(name, "debe ser mayor que cero"))
        return None
    if value >= 10 ** width:
        problems.append(Problem(name, f"tiene más de {width} dígitos ({raw[:40]})"))
        return None
    return value


def _amount(row: Mapping, profile: MappingProfile, problems: list[Problem]) -> Decimal | None:
    raw = row.get("monto")
    if raw is None or _text(raw) == "":
        problems.append(Problem("monto", "falta el monto"))
        return None
    if isinstance(raw, bool):
        problems.append(Problem("monto", "no es un número"))
        return None
    text = str(raw).strip()
    # Decimal() also takes "1_000", "١٢٣" or "Infinity"; an amount is plain ASCII digits.
    if not isinstance(raw, (int, float, Decimal)) and not _AMOUNT.fullmatch(text):
        problems.append(Problem("monto", f"no es un número ({text[:40]!r})"))
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        problems.append(Problem("monto", f"no es un número ({text[:40]!r})"))
        return None
    if not value.is_finite():
        problems.append(Problem("monto", "no es un número finito"))
        return None
    if value < 0 or (value == 0 and not profile.allow_zero_amount):
        problems.append(Problem("monto", f"debe ser mayor que cero (se recibió {str(value)[:40]})"))
        return None
    if value >= Decimal("1e13"):
        problems.append(Problem("monto", f"es demasiado grande ({str(value)[:40]})"))
        return None
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def parse_day(value: Any) -> dt.date | None:
    """A day from a date, a datetime or an ISO text ('2025-01-05' or with a time)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = _text(value)
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text).date()
    except ValueError:
        return None


def as_date(value: Any) -> dt.date:
    """`parse_day` for values a database gave us: a bad one is a bug, so it raises."""
    day = parse_day(value)
    if day is None:
        raise ValueError(f"not a date: {str(value)[:40]!r}")
    return day


def official_sernr(punto_venta: int, nro_factura: int, profile: MappingProfile) -> str:
    return f"{punto_venta:0{profile.pos_width}d}-{nro_factura:0{profile.number_width}d}"


def raw_reference(row: Mapping) -> str:
    """A best-effort reference for a row that could not be mapped."""
    tipo = _text(row.get("tipo")).upper() or "?"
    return f"{tipo} {_text(row.get('punto_venta')) or '?'}-{_text(row.get('nro_factura')) or '?'}"


def map_invoice(row: Mapping, profile: MappingProfile, *, today: dt.date,
                sernr: int | None = None) -> Mapped | Invalid:
    """Map one invoice row. `sernr` is required when the profile has the client assign it."""
    problems: list[Problem] = []
    tipo = _text(row.get("tipo")).upper()
    if tipo not in profile.invoice_types or tipo not in profile.art_codes:
        shown = _text(row.get("tipo"))[:20] or "vacío"
        problems.append(Problem(
            "tipo", f"tipo de factura desconocido ({shown!r}); se esperaba "
                    + ", ".join(sorted(profile.invoice_types))))
    local = _text(row.get("local"))
    if not local:
        problems.append(Problem("local", "falta el nombre del local"))
    day = parse_day(row.get("fecha"))
    if day is None:
        problems.append(Problem("fecha", f"fecha inválida ({_text(row.get('fecha'))[:40]!r})"))
    pv = _number_part(row, "punto_venta", profile.pos_width, problems)
    nro = _number_part(row, "nro_factura", profile.number_width, problems)
    amount = _amount(row, profile, problems)

    label = None
    if local:
        label = profile.labels_by_local.get(local)
        if label is None and profile.label_format:
            label = profile.label_format.replace("{local}", local)
        if label is None:
            problems.append(Problem(
                "local", f"el local {local!r} no tiene etiqueta (Labels) configurada para Oppen"))
    if profile.sernr_mode == "client" and sernr is None:
        problems.append(Problem("SerNr", "no se asignó número interno"))

    if problems:
        return Invalid(raw_reference(row), tuple(problems))

    number = official_sernr(pv, nro, profile)
    due = day + dt.timedelta(days=profile.payment_days)
    if profile.due_date_not_past and due < today:
        due = today
    price = amount
    if not profile.price_includes_vat:
        price = (amount / (1 + profile.vat_rate)).quantize(_CENT, rounding=ROUND_HALF_UP)
    item: dict[str, Any] = {"ArtCode": profile.art_codes[tipo], "Qty": profile.qty,
                            "Price": float(price)}
    if profile.vat_code:
        item["VATCode"] = profile.vat_code

    payload: dict[str, Any] = {}
    if profile.sernr_mode == "client":
        payload["SerNr"] = int(sernr)
    payload["OfficialSerNr"] = number
    if profile.send_to_official_sernr:
        payload["ToOfficialSerNr"] = number
    payload.update({
        "CustCode": profile.customers_by_local.get(local, profile.customer),
        "TransDate": day.isoformat(),
        "DueDate": due.isoformat(),
    })
    if profile.send_invoice_date:
        payload["InvoiceDate"] = day.isoformat()
    payload.update({
        "Office": profile.office,
        "Labels": label,
        "createUser": profile.create_user,
        "Status": profile.status,
        "InvoiceType": profile.invoice_types[tipo],
    })
    if tipo in profile.voucher_codes:
        payload["VoucherCode"] = profile.voucher_codes[tipo]
    if tipo in profile.doc_types:
        payload["DocType"] = profile.doc_types[tipo]
    if profile.form_types:
        payload["FormType"] = profile.form_types.get(tipo)
    payload["Items"] = [item]
    return Mapped(f"{tipo} {number}", number, payload, amount)


def payload_total(payload: Mapping) -> Decimal:
    total = Decimal(0)
    for item in payload.get("Items") or ():
        total += Decimal(str(item.get("Qty", 0))) * Decimal(str(item.get("Price", 0)))
    return total.quantize(_CENT, rounding=ROUND_HALF_UP)


def differences(payload: Mapping, remote: Mapping, *, gross: Decimal | None = None,
                ignore: tuple[str, ...] = ()) -> list[str]:
    """Fields where the invoice Oppen holds differs from the one we would send.

    Empty means "the same invoice": a lookup after an ambiguous attempt may then
    mark it sent. Linking a duplicate someone else sent ignores SerNr: Oppen's number
    is the one to keep. Items are compared by their sum; when Oppen's record carries only
    its Total (which includes VAT), it is compared with `gross`, the row's amount.
    Oppen may round by a cent, hence the tolerance.
    """
    diffs = []
    for key in ("OfficialSerNr", "SerNr", "CustCode", "TransDate", "Labels"):
        if key in ignore:
            continue
        theirs = str(remote.get(key))
        if key == "Labels":
            # Oppen appends the company name to what it stores ("ALMF01,PERSEO").
            theirs = theirs.split(",", 1)[0]
        if key in payload and theirs != str(payload[key]):
            diffs.append(f"{key}: Oppen tiene {str(remote.get(key))[:60]!r}, "
                         f"se esperaba {str(payload[key])[:60]!r}")
    try:
        if remote.get("Items"):
            ours, theirs = payload_total(payload), payload_total(remote)
        else:
            ours = gross if gross is not None else payload_total(payload)
            theirs = Decimal(str(remote.get("Total")))
        same = theirs.is_finite() and abs(theirs - ours) <= _CENT
    except (InvalidOperation, TypeError, ValueError, AttributeError):
        ours, same = payload_total(payload), False
    if not same:
        diffs.append(f"Total: Oppen tiene {str(remote.get('Total'))[:30]!r}, se esperaba {ours}")
    return diffs
