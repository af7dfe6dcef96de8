"""Turns one `facturas_trns` row into the JSON Oppen expects, or into a list of problems.

Pure functions only: no database, no HTTP, no clock (callers pass `today`), no
logging. A row that cannot be mapped is never "fixed up" here: every problem comes back
naming the field, so the row can be recorded as invalid and shown to a person. A row the
profile does not send (a type it leaves out, a local excluded by configuration) is not
an error of the row: it comes back as `Excluded`, with the reason.

The default profile is the seed's mapping table; `REAL_PROFILE` is the real service's
column of `oppen-api.md` and the customer's production notes. Every field of
`MappingProfile` can be changed by configuration, so switching between the two needs
no code change. Per-type choices (office, VAT code, price rule, article, widths, voucher
fields) fall back to the profile's scalar value for every type they do not name.

Local names are compared the way MariaDB's default collations compare them (case and
surrounding spaces do not count): see `local_key`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

TIPOS = ("A", "B", "Z", "CC")
# What, besides OfficialSerNr, tells one fiscal voucher from another: Argentine numbers
# run per point of sale *and* per voucher type (an A and a B can both be 0002-00009439).
VOUCHER_KEYS = ("VoucherCode", "DocType")
EXCLUDED_LOCAL_REASON = "Local excluido de la sincronización con Oppen (configuración)"
_DIGITS = re.compile(r"^[0-9]+$")
_AMOUNT = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")
_CENT = Decimal("0.01")
_TOO_BIG = Decimal("1e13")


def _frozen(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))


def _text(value: Any) -> str:
    if type(value) is str:   # nearly every call (ten per invoice mapped): no other test
        return value.strip()
    if isinstance(value, (bytes, bytearray, memoryview)):
        # A driver may hand a VARBINARY/BLOB column over as bytes; str() would give "b'5'".
        value = bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value).strip()


def local_key(name: Any) -> str:
    """A local's name as MariaDB compares it: case and surrounding spaces do not count.

    The host's MariaDB finds "Tostado" when asked for "TOSTADO " (case-insensitive
    collation, trailing spaces padded); SQLite does not. Every lookup by local name in
    this module goes through this key so both databases behave the same.
    """
    return _text(name).lower()


def _index_by_local(table: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """local_key -> the distinct non-empty values configured for it (more than one: ambiguous)."""
    index: dict[str, list[str]] = {}
    for name, value in table.items():
        text = _text(value)
        if not text:
            continue  # a null/empty code is "no code", never the text "None"
        values = index.setdefault(local_key(name), [])
        if text not in values:
            values.append(text)
    return {k: tuple(v) for k, v in index.items()}


@dataclass(frozen=True)
class MappingProfile:
    """Every constant and per-type choice of the mapping. Defaults: the seed's table.

    Per-type tables (`offices`, `vat_codes`, `price_includes_vat_by_type`, `pos_widths`,
    `number_widths`) override the scalar of the same meaning for the types they name;
    a type they do not name uses the scalar, so a configuration that only sets the
    scalar keeps its meaning for every type.
    """

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
    # DueDate = TransDate + payment_days; when that is already past, today + payment_days
    # (Oppen refuses a due date in the past: INVERTEDRANGEERR Field EstPayDate).
    due_date_not_past: bool = False
    voucher_codes: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    doc_types: Mapping[str, int] = field(default_factory=lambda: _frozen({}))
    # Only sent when non-empty; types missing from it send FormType null.
    form_types: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    send_to_official_sernr: bool = False
    send_invoice_date: bool = False
    allow_zero_amount: bool = False
    # Per type, over `office`: CC goes to the non-fiscal office 200 in the real service.
    offices: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    # Per type, over `vat_code`; "" sends no VATCode for that type.
    vat_codes: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    # Per type, over `price_includes_vat`: CC (VAT exempt) sends the amount as it is.
    price_includes_vat_by_type: Mapping[str, bool] = field(default_factory=lambda: _frozen({}))
    # Per type, over `pos_width` / `number_width`: CC numbers are 0003-00558080.
    pos_widths: Mapping[str, int] = field(default_factory=lambda: _frozen({}))
    number_widths: Mapping[str, int] = field(default_factory=lambda: _frozen({}))
    # The types this profile sends; a known type left out comes back `Excluded`.
    send_types: tuple[str, ...] = TIPOS
    # Locals never synced (audited by hand): their rows come back `Excluded`.
    excluded_locals: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Freeze what callers pass as plain dicts or lists: a profile is shared by
        # threads and must not change under them. Frozen dataclass: object.__setattr__.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping) and not isinstance(value, MappingProxyType):
                object.__setattr__(self, f.name, _frozen(value))
        if isinstance(self.send_types, str):
            object.__setattr__(self, "send_types", (self.send_types,))
        object.__setattr__(self, "send_types",
                           tuple(dict.fromkeys(_text(t).upper() for t in self.send_types)))
        if isinstance(self.excluded_locals, str):
            object.__setattr__(self, "excluded_locals", (self.excluded_locals,))
        object.__setattr__(self, "excluded_locals", tuple(self.excluded_locals))
        # Derived lookups (not dataclass fields: not configuration, not compared).
        object.__setattr__(self, "_labels_index", _index_by_local(self.labels_by_local))
        object.__setattr__(self, "_customers_index", _index_by_local(self.customers_by_local))
        object.__setattr__(self, "_excluded_keys",
                           frozenset(local_key(n) for n in self.excluded_locals if _text(n)))

    def replace(self, **changes: Any) -> "MappingProfile":
        return dataclasses.replace(self, **changes)

    # --- per type: the type's own value, else the scalar ---------------------------

    def office_for(self, tipo: str) -> str:
        return self.offices.get(tipo, self.office)

    def vat_code_for(self, tipo: str) -> str:
        return self.vat_codes.get(tipo, self.vat_code)

    def price_includes_vat_for(self, tipo: str) -> bool:
        return bool(self.price_includes_vat_by_type.get(tipo, self.price_includes_vat))

    def pos_width_for(self, tipo: str) -> int:
        return self.pos_widths.get(tipo, self.pos_width)

    def number_width_for(self, tipo: str) -> int:
        return self.number_widths.get(tipo, self.number_width)

    def knows_type(self, tipo: str) -> bool:
        return tipo in self.invoice_types and tipo in self.art_codes

    # --- per local --------------------------------------------------------------------

    def labels_for(self, local: str) -> tuple[str, ...]:
        """The label codes configured for a local (by `local_key`); two or more: ambiguous."""
        return self._labels_index.get(local_key(local), ())

    def customers_for(self, local: str) -> tuple[str, ...]:
        return self._customers_index.get(local_key(local), ())

    def is_excluded_local(self, local: str) -> bool:
        return local_key(local) in self._excluded_keys

    def with_labels(self, table_labels: Mapping[str, Any] | Iterable[tuple[Any, Any]]
                    ) -> "MappingProfile":
        """This profile with the labels of the host's `labels_oppen(local, cod_oppen)` table.

        Pure: the caller reads the table and passes its rows (a mapping or (local,
        cod_oppen) pairs). Configuration wins: a local already in `labels_by_local`
        (compared by `local_key`) keeps its configured code. A NULL or blank cod_oppen
        gives no label. Names that differ only in case or spaces with different codes
        stay both, so mapping such a local reports the ambiguity instead of guessing;
        the same name listed twice with different codes is dropped for the same reason.
        Call it on the configured profile (`settings.mapping`) with the whole table, once
        per run: on a profile that already has a table's labels, those would count as
        configuration and win over the new table.
        """
        pairs = table_labels.items() if isinstance(table_labels, Mapping) else table_labels
        configured = {local_key(n) for n in self.labels_by_local}
        from_table: dict[str, str] = {}
        conflicting: set[str] = set()
        for name, code in pairs:
            name, code = _text(name), _text(code)
            if not name or not code or local_key(name) in configured:
                continue
            if name in from_table and from_table[name] != code:
                conflicting.add(name)
            from_table.setdefault(name, code)
        for name in conflicting:
            del from_table[name]
        return self.replace(labels_by_local={**from_table, **self.labels_by_local})


SEED_PROFILE = MappingProfile()

REAL_PROFILE = MappingProfile(
    name="real",
    label_format="",
    status=1,
    invoice_types=_frozen({t: 0 for t in TIPOS}),
    art_codes=_frozen({"A": "271240051", "B": "271240051", "Z": "271240051", "CC": "OTR-ING"}),
    pos_width=5,
    price_includes_vat=False,
    sernr_mode="server",
    due_date_not_past=True,
    voucher_codes=_frozen({"A": "001", "B": "006", "Z": "083", "CC": "082"}),
    doc_types=_frozen({"A": 1, "B": 1, "Z": 4, "CC": 1}),
    form_types=_frozen({"Z": "Z"}),
    send_to_official_sernr=True,
    send_invoice_date=True,
    # Current accounts: non-fiscal office, VAT exempt (code 3), amount as is, their own
    # article and 4-digit points of sale. Not sent from facturas_trns (send_types), but
    # mappable with their own rule the day a chain adds them.
    offices=_frozen({"CC": "200"}),
    vat_codes=_frozen({"CC": "3"}),
    price_includes_vat_by_type=_frozen({"CC": True}),
    pos_widths=_frozen({"CC": 4}),
    send_types=("A", "B", "Z"),
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


@dataclass(frozen=True)
class Excluded:
    """A row this profile does not send: not an error of the row, nothing to fix in it.

    `field` is what excluded it ("local" or "tipo"); `reason` is the Spanish line a
    person reads. `problems` exists only so code written for `Invalid` never crashes on
    it; a caller should test for `Excluded` first and record it as excluded.
    """
    reference: str
    field: str
    reason: str

    @property
    def problems(self) -> tuple[Problem, ...]:
        return (Problem(self.field, self.reason),)


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
    """The row's monto as cents, whatever type the driver gave it; else a problem on `monto`.

    int, Decimal and float are numbers already; text and bytes must be plain ASCII
    digits with an optional point ("12,50" or "$15000" are not guessed at). Anything
    else (bool, list, ...) is not an amount.
    """
    raw = row.get("monto")
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = _text(raw)
    if raw is None or _text(raw) == "":
        problems.append(Problem("monto", "falta el monto"))
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float, Decimal)):
        problems.append(Problem("monto", f"no es un número ({_text(raw)[:40]!r})"))
        return None
    text = str(raw).strip()
    # Decimal() also takes "1_000", "١٢٣" or "Infinity"; an amount is plain ASCII digits.
    if isinstance(raw, str) and not _AMOUNT.fullmatch(text):
        problems.append(Problem("monto", f"no es un número ({text[:40]!r})"))
        return None
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        problems.append(Problem("monto", f"no es un número ({text[:40]!r})"))
        return None
    if not value.is_finite():
        problems.append(Problem("monto", "no es un número finito"))
        return None
    if value < 0:
        problems.append(Problem("monto", f"debe ser mayor que cero (se recibió {text[:40]})"))
        return None
    if value >= _TOO_BIG:
        problems.append(Problem("monto", f"es demasiado grande ({text[:40]})"))
        return None
    # Rounded before the zero check: 0.004 is a zero amount, not a positive one sent as 0.00.
    value = value.quantize(_CENT, rounding=ROUND_HALF_UP)
    if value == 0:
        if not profile.allow_zero_amount:
            problems.append(Problem("monto", f"debe ser mayor que cero (se recibió {text[:40]})"))
            return None
        value = Decimal("0.00")  # "-0.00" would be sent as Price -0.0
    return value


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


def official_sernr(punto_venta: int, nro_factura: int, profile: MappingProfile,
                   tipo: str | None = None) -> str:
    """`PPPP-NNNNNNNN` with the widths of `tipo` (the profile's scalar widths without one)."""
    pos = profile.pos_width_for(tipo) if tipo else profile.pos_width
    num = profile.number_width_for(tipo) if tipo else profile.number_width
    return f"{punto_venta:0{pos}d}-{nro_factura:0{num}d}"


def raw_reference(row: Mapping) -> str:
    """A best-effort reference for a row that could not be mapped."""
    tipo = _text(row.get("tipo")).upper() or "?"
    return f"{tipo} {_text(row.get('punto_venta')) or '?'}-{_text(row.get('nro_factura')) or '?'}"


def _reference(row: Mapping, profile: MappingProfile) -> str:
    """"A 0005-00001691" when type and numbers are readable, else `raw_reference`."""
    tipo = _text(row.get("tipo")).upper()
    scratch: list[Problem] = []
    if profile.knows_type(tipo):
        pv = _number_part(row, "punto_venta", profile.pos_width_for(tipo), scratch)
        nro = _number_part(row, "nro_factura", profile.number_width_for(tipo), scratch)
        if not scratch:
            return f"{tipo} {official_sernr(pv, nro, profile, tipo)}"
    return raw_reference(row)


def excluded_reason(row: Mapping, profile: MappingProfile) -> str | None:
    """Why this profile does not send the row, or None when it does.

    A local listed in `excluded_locals` (compared by `local_key`) or a known type
    missing from `send_types`. An unknown type is not excluded: it is an invalid row,
    and `map_invoice` says so.
    """
    found = _exclusion(row, profile)
    return found[1] if found else None


def _exclusion(row: Mapping, profile: MappingProfile) -> tuple[str, str] | None:
    return _excluded(_text(row.get("local")), _text(row.get("tipo")).upper(), profile)


def _excluded(local: str, tipo: str, profile: MappingProfile) -> tuple[str, str] | None:
    """`_exclusion` of a row whose local (stripped) and type (upper case) are read."""
    if local and profile.is_excluded_local(local):
        return "local", EXCLUDED_LOCAL_REASON
    if profile.knows_type(tipo) and tipo not in profile.send_types:
        return "tipo", (f"Las facturas de tipo {tipo} no se envían a Oppen con esta "
                        f"configuración (send_types: {', '.join(profile.send_types) or 'ninguno'})")
    return None


def _due_date(day: dt.date, profile: MappingProfile, today: dt.date) -> dt.date:
    due = day + dt.timedelta(days=profile.payment_days)
    if profile.due_date_not_past and due < today:
        # An old cash day: Oppen refuses a due date in the past, so the term starts today.
        due = today + dt.timedelta(days=profile.payment_days)
    return due


def map_invoice(row: Mapping, profile: MappingProfile, *, today: dt.date,
                sernr: int | None = None) -> Mapped | Invalid | Excluded:
    """Map one invoice row. `sernr` is required when the profile has the client assign it.

    `Excluded` when the profile does not send the row (see `excluded_reason`), whatever
    else is wrong with it; else `Invalid` with every problem at once; else `Mapped`.
    """
    # The local and the type are read once: this runs for every invoice of a run.
    local = _text(row.get("local"))
    tipo = _text(row.get("tipo")).upper()
    found = _excluded(local, tipo, profile)
    if found:
        return Excluded(_reference(row, profile), *found)
    problems: list[Problem] = []
    known = profile.knows_type(tipo)
    if not known:
        shown = _text(row.get("tipo"))[:20] or "vacío"
        problems.append(Problem(
            "tipo", f"tipo de factura desconocido ({shown!r}); se esperaba "
                    + ", ".join(sorted(profile.invoice_types))))
    if not local:
        problems.append(Problem("local", "falta el nombre del local"))
    day = parse_day(row.get("fecha"))
    if day is None:
        problems.append(Problem("fecha", f"fecha inválida ({_text(row.get('fecha'))[:40]!r})"))
    pos_width = profile.pos_width_for(tipo) if known else profile.pos_width
    number_width = profile.number_width_for(tipo) if known else profile.number_width
    pv = _number_part(row, "punto_venta", pos_width, problems)
    nro = _number_part(row, "nro_factura", number_width, problems)
    amount = _amount(row, profile, problems)

    label = customer = None
    if local:
        labels = profile.labels_for(local)
        if len(labels) > 1:
            problems.append(Problem("local", f"el local {local!r} tiene más de una etiqueta "
                                             f"(Labels) configurada ({', '.join(labels)[:120]})"))
        elif labels:
            label = labels[0]
        elif profile.label_format:
            label = profile.label_format.replace("{local}", local)
        else:
            problems.append(Problem(
                "local", f"el local {local!r} no tiene etiqueta (Labels) configurada para Oppen"))
        customers = profile.customers_for(local)
        if len(customers) > 1:
            problems.append(Problem("local", f"el local {local!r} tiene más de un cliente (CustCode) "
                                             f"configurado ({', '.join(customers)[:120]})"))
        elif customers:
            customer = customers[0]
    if profile.sernr_mode == "client" and sernr is None:
        problems.append(Problem("SerNr", "no se asignó número interno"))

    if problems:
        return Invalid(raw_reference(row), tuple(problems))

    number = official_sernr(pv, nro, profile, tipo)
    due = _due_date(day, profile, today)
    price = amount
    if not profile.price_includes_vat_for(tipo):
        price = (amount / (1 + profile.vat_rate)).quantize(_CENT, rounding=ROUND_HALF_UP)
    item: dict[str, Any] = {"ArtCode": profile.art_codes[tipo], "Qty": profile.qty,
                            "Price": float(price)}
    vat_code = profile.vat_code_for(tipo)
    if vat_code:
        item["VATCode"] = vat_code

    # Key order as the real service's documented payload shows it; the seed's keys keep
    # the seed example's order (none of the optional ones sit between them).
    payload: dict[str, Any] = {}
    if profile.sernr_mode == "client":
        payload["SerNr"] = int(sernr)
    payload["OfficialSerNr"] = number
    if profile.send_to_official_sernr:
        payload["ToOfficialSerNr"] = number
    payload["CustCode"] = customer or profile.customer
    payload["TransDate"] = day.isoformat()
    if profile.send_invoice_date:
        payload["InvoiceDate"] = day.isoformat()
    payload.update({
        "DueDate": due.isoformat(),
        "Office": profile.office_for(tipo),
        "Labels": label,
        "createUser": profile.create_user,
        "Status": profile.status,
    })
    if tipo in profile.voucher_codes:
        payload["VoucherCode"] = profile.voucher_codes[tipo]
    if tipo in profile.doc_types:
        payload["DocType"] = profile.doc_types[tipo]
    payload["InvoiceType"] = profile.invoice_types[tipo]
    if profile.form_types:
        payload["FormType"] = profile.form_types.get(tipo)
    payload["Items"] = [item]
    return Mapped(f"{tipo} {number}", number, payload, amount)


def payload_total(payload: Mapping) -> Decimal:
    total = Decimal(0)
    for item in payload.get("Items") or ():
        total += Decimal(str(item.get("Qty", 0))) * Decimal(str(item.get("Price", 0)))
    return total.quantize(_CENT, rounding=ROUND_HALF_UP)


# --- is this record in Oppen our invoice? ----------------------------------------------

def _code(value: Any) -> str:
    """A voucher field as comparable text: "006", "6" and 6 are the same code."""
    if value is None or isinstance(value, bool):
        return ""
    text = _text(value)
    if text.isascii() and text.isdigit():
        return str(int(text))
    return text


def is_annulled(record: Mapping) -> bool:
    """Oppen keeps an annulled invoice with `Invalid` true (1, true, "1", "true")."""
    flag = record.get("Invalid")
    if isinstance(flag, str):
        return flag.strip().lower() in ("1", "true", "t", "yes", "si", "sí")
    return bool(flag) if isinstance(flag, (bool, int)) else False


def voucher_identity(payload_or_record: Mapping) -> tuple[tuple[str, str], ...]:
    """What tells this voucher apart from another with the same OfficialSerNr.

    The (field, value) pairs of `VOUCHER_KEYS` (VoucherCode, DocType) that are present
    and not empty, values as comparable text (digits without leading zeros: "006" -> "6",
    DocType 1 -> "1"); for comparing, not for showing. Empty when there are none, as
    with the seed profile, which sends neither.
    """
    pairs = []
    for key in VOUCHER_KEYS:
        value = _code(payload_or_record.get(key))
        if value:
            pairs.append((key, value))
    return tuple(pairs)


def is_same_invoice(payload: Mapping, record: Mapping) -> bool:
    """Whether `record` (as Oppen lists it) is the invoice `payload` describes.

    Same OfficialSerNr; every voucher field our payload sends (VoucherCode, DocType) is
    the same in the record (a record that lacks one is not known to be ours); and the
    record is not annulled (`Invalid` true: an annulled invoice is nobody's to link).
    Nothing else is compared here: whether its data matches is `differences()`.
    """
    if not isinstance(record, Mapping) or is_annulled(record):
        return False
    if _text(record.get("OfficialSerNr")) != _text(payload.get("OfficialSerNr")):
        return False
    return all(_code(record.get(key)) == value for key, value in voucher_identity(payload))


def pick_ours(payload: Mapping, records: Iterable[Mapping]) -> tuple[Mapping | None, list[Mapping]]:
    """Out of what a lookup by OfficialSerNr returned, the record that is our invoice.

    Returns (ours, others). `ours` is the first record for which `is_same_invoice` holds,
    or None. `others` are the remaining records with the same OfficialSerNr: another
    voucher type's invoice with that number, annulled ones, and any second copy of ours
    (if `is_same_invoice(payload, r)` holds for one of them, Oppen holds the invoice
    twice: a case for a person). Records with another OfficialSerNr (a filter Oppen
    ignored) are dropped.
    """
    ours: Mapping | None = None
    others: list[Mapping] = []
    number = _text(payload.get("OfficialSerNr"))
    for record in records:
        if not isinstance(record, Mapping) or _text(record.get("OfficialSerNr")) != number:
            continue
        if ours is None and is_same_invoice(payload, record):
            ours = record
        else:
            others.append(record)
    return ours, others


def _same_label(ours: Any, theirs: Any) -> bool:
    # Oppen appends the company name to what it stores ("ALMF01,PERSEO"); our own label
    # may hold a comma too ("Local|Perez, Juan"), so compare the start, not a split.
    ours, theirs = str(ours), str(theirs)
    return theirs == ours or theirs.startswith(ours + ",")


def differences(payload: Mapping, remote: Mapping, *, gross: Decimal | None = None,
                ignore: tuple[str, ...] = ()) -> list[str]:
    """Fields where the invoice Oppen holds differs from the one we would send.

    Empty means "the same invoice": a lookup after an ambiguous attempt may then
    mark it sent. Linking a duplicate someone else sent ignores SerNr: Oppen's number
    is the one to keep. Labels are compared up to what Oppen appends after a comma.
    The voucher fields we send (VoucherCode, DocType) are compared as codes ("006" and
    "6" are the same). Items are compared by their sum; when Oppen's record carries only
    its Total (which includes VAT), it is compared with `gross`, the row's amount.
    Oppen may round by a cent, hence the tolerance.
    """
    diffs = []
    for key in ("OfficialSerNr", "SerNr", "CustCode", "TransDate", "Labels"):
        if key in ignore or key not in payload:
            continue
        if key == "Labels":
            same = _same_label(payload[key], remote.get(key))
        else:
            same = str(remote.get(key)) == str(payload[key])
        if not same:
            diffs.append(f"{key}: Oppen tiene {str(remote.get(key))[:60]!r}, "
                         f"se esperaba {str(payload[key])[:60]!r}")
    for key, value in voucher_identity(payload):
        if key not in ignore and _code(remote.get(key)) != value:
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
