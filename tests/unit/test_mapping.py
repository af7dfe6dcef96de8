"""The mapping from a `facturas_trns` row to Oppen's invoice JSON, row by row.

`map_invoice` is pure: every test feeds it a literal dict and compares what comes out.
The seed's table (`seed/oppen-integration.md`, "Mapeo de Datos") is the default profile;
`REAL_PROFILE` is the "real service" column of `oppen-api.md`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sync.mapping import (REAL_PROFILE, SEED_PROFILE, Invalid, Mapped, differences,
                          map_invoice)

TODAY = dt.date(2025, 1, 6)
SERNR = 1735967123456789  # the seed's example SerNr

# The seed's "Debugging Manual" row: the invoice its payload example shows.
ROW = {
    "id": 17,
    "local": "MATRIZ",
    "fecha": "2025-01-05 12:00:00",
    "tipo": "A",
    "punto_venta": "5",
    "nro_factura": "1691",
    "monto": 15000.00,
}

# The seed's "Ejemplo de Factura Enviada a Oppen", plus the InvoiceType its table adds.
SEED_PAYLOAD = {
    "SerNr": 1735967123456789,
    "OfficialSerNr": "0005-00001691",
    "CustCode": "C00001",
    "TransDate": "2025-01-05",
    "DueDate": "2025-02-04",
    "Office": "100",
    "Labels": "Local|MATRIZ",
    "createUser": "API",
    "Status": 0,
    "InvoiceType": 1,
    "Items": [{"ArtCode": "271240051", "Qty": 1, "Price": 15000.00}],
}

REAL = REAL_PROFILE.replace(labels_by_local={"MATRIZ": "MTZ"})


def seed(row=None, **changes):
    return map_invoice({**(row or ROW), **changes}, SEED_PROFILE, today=TODAY, sernr=SERNR)


def real(today=TODAY, **changes):
    return map_invoice({**ROW, **changes}, REAL, today=today)


def mapped(result) -> Mapped:
    assert isinstance(result, Mapped), getattr(result, "reason", result)
    return result


def problem_fields(result) -> set[str]:
    assert isinstance(result, Invalid), f"expected Invalid, got {result!r}"
    assert result.problems, "an Invalid must say what is wrong"
    return {p.field for p in result.problems}


def assert_invalid(result, field: str) -> None:
    assert field in problem_fields(result), result.reason
    # The reason a person reads names the field too.
    assert field in result.reason


# --- the seed's example, whole ----------------------------------------------------

def test_seed_example_payload_is_reproduced_exactly():
    result = mapped(seed())
    assert result.payload == SEED_PAYLOAD
    assert result.official_sernr == "0005-00001691"
    assert result.reference == "A 0005-00001691"
    assert result.amount == Decimal("15000.00")


def test_the_row_id_is_not_sent():
    payload = mapped(seed()).payload
    assert 17 not in payload.values()
    assert "id" not in payload


def test_the_debugging_example_row_with_padded_numbers_gives_the_same_payload():
    # The seed's "Debugging Manual" passes the numbers already zero-padded.
    result = mapped(seed(punto_venta="0005", nro_factura="00001691"))
    assert result.payload == SEED_PAYLOAD


# --- the mapping table, row by row ------------------------------------------------

@pytest.mark.parametrize("local, labels", [
    ("MATRIZ", "Local|MATRIZ"),
    ("PALERMO", "Local|PALERMO"),
    ("  SUCURSAL  ", "Local|SUCURSAL"),
])
def test_local_becomes_labels(local, labels):
    assert mapped(seed(local=local)).payload["Labels"] == labels


@pytest.mark.parametrize("fecha", [
    "2025-01-05",
    "2025-01-05 12:00:00",
    "2025-01-05T23:59:59",
    dt.datetime(2025, 1, 5, 12, 0),
    dt.datetime(2025, 1, 5, 0, 0),
    dt.date(2025, 1, 5),
])
def test_fecha_becomes_transdate_and_duedate_is_thirty_days_later(fecha):
    payload = mapped(seed(fecha=fecha)).payload
    assert payload["TransDate"] == "2025-01-05"
    assert payload["DueDate"] == "2025-02-04"


@pytest.mark.parametrize("fecha, due", [
    ("2025-12-15", "2026-01-14"),   # across a year
    ("2024-02-01", "2024-03-02"),   # leap February
    ("2025-02-01", "2025-03-03"),
])
def test_duedate_is_transdate_plus_thirty_days(fecha, due):
    payload = mapped(seed(fecha=fecha)).payload
    assert payload["TransDate"] == fecha
    assert payload["DueDate"] == due


def test_seed_duedate_may_be_in_the_past_for_old_invoices():
    # The seed's column: TransDate + 30 whatever today is.
    payload = mapped(map_invoice({**ROW, "fecha": "2020-01-01"}, SEED_PROFILE,
                                 today=TODAY, sernr=SERNR)).payload
    assert payload["DueDate"] == "2020-01-31"


@pytest.mark.parametrize("tipo, invoice_type", [
    ("Z", 0), ("A", 1), ("B", 2), ("CC", 3),
    ("a", 1), ("cc", 3), (" B ", 2),
])
def test_tipo_becomes_invoice_type(tipo, invoice_type):
    result = mapped(seed(tipo=tipo))
    assert result.payload["InvoiceType"] == invoice_type
    assert result.reference.startswith(tipo.strip().upper() + " ")


@pytest.mark.parametrize("pv, nro, official", [
    ("5", "1691", "0005-00001691"),
    ("0005", "00001691", "0005-00001691"),
    (5, 1691, "0005-00001691"),
    ("2", "150", "0002-00000150"),
    ("9999", "99999999", "9999-99999999"),
    ("1", "1", "0001-00000001"),
])
def test_official_sernr_is_zero_padded(pv, nro, official):
    result = mapped(seed(punto_venta=pv, nro_factura=nro))
    assert result.payload["OfficialSerNr"] == official
    assert result.official_sernr == official


@pytest.mark.parametrize("monto, price", [
    (15000.00, 15000.0),
    (Decimal("15000.00"), 15000.0),
    ("15000", 15000.0),
    (Decimal("1234.56"), 1234.56),
    (0.01, 0.01),
    (99, 99.0),
])
def test_monto_is_the_price_vat_included_as_float(monto, price):
    result = mapped(seed(monto=monto))
    item_price = result.payload["Items"][0]["Price"]
    assert type(item_price) is float
    assert item_price == price
    assert result.amount == Decimal(str(price)).quantize(Decimal("0.01"))


def test_sernr_is_the_number_given():
    assert mapped(seed()).payload["SerNr"] == SERNR
    assert mapped(map_invoice(ROW, SEED_PROFILE, today=TODAY, sernr=42)).payload["SerNr"] == 42


def test_seed_profile_without_a_sernr_is_invalid_not_a_crash():
    result = map_invoice(ROW, SEED_PROFILE, today=TODAY)
    assert "SerNr" in problem_fields(result)


def test_constants_of_the_table():
    payload = mapped(seed()).payload
    assert payload["CustCode"] == "C00001"
    assert payload["Office"] == "100"
    assert payload["Status"] == 0
    assert payload["createUser"] == "API"
    assert payload["Items"] == [{"ArtCode": "271240051", "Qty": 1, "Price": 15000.0}]
    assert type(payload["Items"][0]["Qty"]) is int


@pytest.mark.parametrize("tipo", ["A", "B", "Z", "CC"])
def test_every_type_uses_the_generic_article_by_default(tipo):
    assert mapped(seed(tipo=tipo)).payload["Items"][0]["ArtCode"] == "271240051"


@pytest.mark.parametrize("tipo, art_code", [
    ("Z", "271240051"), ("A", "271240052"), ("B", "271240053"), ("CC", "271240054"),
])
def test_per_type_article_codes_from_the_seed_faq(tipo, art_code):
    profile = SEED_PROFILE.replace(art_codes={
        "Z": "271240051", "A": "271240052", "B": "271240053", "CC": "271240054"})
    result = mapped(map_invoice({**ROW, "tipo": tipo}, profile, today=TODAY, sernr=SERNR))
    assert result.payload["Items"][0]["ArtCode"] == art_code


def test_mapping_does_not_mutate_the_row():
    row = dict(ROW)
    seed(row)
    assert row == ROW


# --- bad input: always an Invalid naming the field ----------------------------------

@pytest.mark.parametrize("tipo", ["X", "", None, "AB", "C", "Factura A", "Z'; DROP TABLE x;--", 1])
def test_unknown_tipo(tipo):
    assert_invalid(seed(tipo=tipo), "tipo")


@pytest.mark.parametrize("field, width", [("punto_venta", 4), ("nro_factura", 8)])
@pytest.mark.parametrize("value", [None, "", "   ", "abc", "5a", "-5", "5.0", "1e3", "0x10",
                                   "١٢٣", "１２３", "²", "12 34", 5.5])
def test_bad_number_parts(field, width, value):
    assert_invalid(seed(**{field: value}), field)


@pytest.mark.parametrize("field, width", [("punto_venta", 4), ("nro_factura", 8)])
def test_number_parts_longer_than_their_width(field, width):
    assert isinstance(seed(**{field: "9" * width}), Mapped)
    assert_invalid(seed(**{field: "1" + "0" * width}), field)


@pytest.mark.parametrize("field", ["punto_venta", "nro_factura"])
def test_missing_number_part_key(field):
    row = {k: v for k, v in ROW.items() if k != field}
    assert_invalid(seed(row), field)


@pytest.mark.parametrize("field", ["punto_venta", "nro_factura"])
def test_number_part_zero_is_invalid(field):
    assert_invalid(seed(**{field: "0"}), field)


def test_real_profile_point_of_sale_has_width_five():
    assert mapped(real(punto_venta="99999")).official_sernr == "99999-00001691"
    assert_invalid(real(punto_venta="100000"), "punto_venta")
    assert_invalid(real(nro_factura="100000000"), "nro_factura")


@pytest.mark.parametrize("monto", [
    0, "0", "0.00", Decimal("0"), -1, "-15000", Decimal("-0.01"), -0.5,
    None, "", "   ", "abc", "15.000,50", "$15000", [15000], {"v": 1}, True, False,
    float("nan"), "NaN", "nan", Decimal("NaN"), "sNaN",
    float("inf"), float("-inf"), "Infinity", "-Infinity", "inf", Decimal("Infinity"),
])
def test_bad_monto(monto):
    assert_invalid(seed(monto=monto), "monto")


def test_missing_monto_key():
    row = {k: v for k, v in ROW.items() if k != "monto"}
    assert_invalid(seed(row), "monto")


def test_monto_with_unicode_digits_is_invalid():
    assert_invalid(seed(monto="١٢٣"), "monto")


@pytest.mark.parametrize("fecha", [
    None, "", "   ", "hoy", "2025-13-01", "2025-02-30", "05/01/2025", "2025/01/05",
    "٢٠٢٥-٠١-٠٥", "2025-01-05'; DROP TABLE facturas_trns;--", 20250105.5, [2025, 1, 5],
])
def test_bad_fecha(fecha):
    assert_invalid(seed(fecha=fecha), "fecha")


def test_missing_fecha_key():
    row = {k: v for k, v in ROW.items() if k != "fecha"}
    assert_invalid(seed(row), "fecha")


@pytest.mark.parametrize("local", [None, "", "   ", "\t\n"])
def test_empty_local(local):
    assert_invalid(seed(local=local), "local")


def test_every_problem_of_a_row_is_reported_at_once():
    result = seed(tipo="X", local="", fecha="nunca", punto_venta="a", nro_factura="", monto=0)
    assert {"tipo", "local", "fecha", "punto_venta", "nro_factura", "monto"} <= problem_fields(result)


def test_empty_row_is_invalid_not_a_crash():
    result = map_invoice({}, SEED_PROFILE, today=TODAY, sernr=SERNR)
    assert {"tipo", "local", "fecha", "punto_venta", "nro_factura", "monto"} <= problem_fields(result)


HOSTILE = [
    "'", '"', "\\", "' OR '1'='1", "Robert'); DROP TABLE facturas_trns;--",
    "\x00", "\x00A", "A\x00", "\x1b[31mrojo\x1b[0m", "\r\n", "\u202eA", "\ufeffA", "🧾",
    "<script>alert(1)</script>", "{local}", "%s%s%n", "x" * 10_000, "A" * 10_000,
    "5" + "\x00" * 10, "Local|MATRIZ|otro",
]


@pytest.mark.parametrize("field", ["local", "fecha", "tipo", "punto_venta", "nro_factura", "monto"])
@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:20])
def test_hostile_text_never_crashes(field, value):
    result = seed(**{field: value})
    assert isinstance(result, (Mapped, Invalid))
    if isinstance(result, Invalid):
        assert len(result.reason) < 2000
    if field != "local":
        # Only the local name is free text; everything else here is garbage.
        assert_invalid(result, field)


@pytest.mark.parametrize("field", ["punto_venta", "nro_factura"])
def test_ten_thousand_digit_number_is_invalid_not_a_crash(field):
    assert_invalid(seed(**{field: "9" * 10_000}), field)


def test_hostile_local_is_carried_verbatim_in_labels():
    local = "O'Brien \"Sucursal\"; DROP TABLE x;--"
    assert mapped(seed(local=local)).payload["Labels"] == "Local|" + local


# --- the real service's column --------------------------------------------------------

def test_real_profile_payload():
    result = mapped(real())
    assert result.payload == {
        "OfficialSerNr": "00005-00001691",
        "ToOfficialSerNr": "00005-00001691",
        "CustCode": "C00001",
        "TransDate": "2025-01-05",
        "DueDate": "2025-02-04",
        "InvoiceDate": "2025-01-05",
        "Office": "100",
        "Labels": "MTZ",
        "createUser": "API",
        "Status": 1,
        "InvoiceType": 0,
        "VoucherCode": "001",
        "DocType": 1,
        "FormType": None,
        "Items": [{"ArtCode": "271240051", "Qty": 1, "Price": 12396.69}],
    }
    assert result.amount == Decimal("15000.00")


def test_real_profile_never_sends_a_sernr():
    assert "SerNr" not in mapped(real()).payload
    assert "SerNr" not in mapped(map_invoice(ROW, REAL, today=TODAY, sernr=SERNR)).payload


@pytest.mark.parametrize("tipo, voucher, doc_type, form_type", [
    ("A", "001", 1, None), ("B", "006", 1, None), ("Z", "083", 4, "Z"),
])
def test_real_profile_type_is_carried_by_voucher_doc_and_form_type(tipo, voucher, doc_type, form_type):
    payload = mapped(real(tipo=tipo)).payload
    assert payload["InvoiceType"] == 0
    assert payload["Status"] == 1
    assert payload["VoucherCode"] == voucher
    assert payload["DocType"] == doc_type
    assert "FormType" in payload and payload["FormType"] == form_type
    assert payload["ToOfficialSerNr"] == payload["OfficialSerNr"]
    assert payload["InvoiceDate"] == payload["TransDate"]


@pytest.mark.parametrize("monto, price", [
    ("15000", 12396.69),
    ("121", 100.0),
    ("100", 82.64),
    ("1", 0.83),
    ("0.01", 0.01),
    ("1234.56", 1020.30),
])
def test_real_profile_price_is_amount_without_vat_rounded_to_cents(monto, price):
    result = mapped(real(monto=monto))
    assert result.payload["Items"][0]["Price"] == price
    assert result.amount == Decimal(monto).quantize(Decimal("0.01"))


def test_real_profile_duedate_is_never_in_the_past():
    # A recent invoice keeps TransDate + 30 ...
    assert mapped(real(fecha="2025-01-05", today=TODAY)).payload["DueDate"] == "2025-02-04"
    # ... an old one is due today at the earliest.
    payload = mapped(real(fecha="2024-06-01", today=TODAY)).payload
    assert payload["TransDate"] == "2024-06-01"
    assert payload["DueDate"] >= TODAY.isoformat()
    assert payload["DueDate"] == "2025-01-06"


def test_real_profile_labels_come_from_the_per_local_table():
    assert mapped(real()).payload["Labels"] == "MTZ"
    result = real(local="PALERMO")
    assert_invalid(result, "local")
    assert "PALERMO" in result.reason


def test_real_profile_without_any_label_table_names_local():
    result = map_invoice(ROW, REAL_PROFILE, today=TODAY)
    assert_invalid(result, "local")


def test_per_local_customer_exception():
    profile = SEED_PROFILE.replace(customers_by_local={"PALERMO": "C00042"})
    assert mapped(map_invoice({**ROW, "local": "PALERMO"}, profile, today=TODAY,
                              sernr=SERNR)).payload["CustCode"] == "C00042"
    assert mapped(map_invoice(ROW, profile, today=TODAY, sernr=SERNR)).payload["CustCode"] == "C00001"


def test_real_profile_is_still_strict_about_bad_rows():
    result = map_invoice({**ROW, "tipo": "X", "monto": "-1"}, REAL, today=TODAY)
    assert {"tipo", "monto"} <= problem_fields(result)


# --- differences: is the invoice Oppen holds the one we would send? -------------------

def remote_of(payload, **changes):
    """The record as Oppen stores it: our fields plus what it adds."""
    record = dict(payload, Saldo=15000.0, Total=15000.0, Invalid=0, internalId=1)
    record.update(changes)
    return record


def test_differences_equal_is_empty():
    payload = mapped(seed()).payload
    assert differences(payload, remote_of(payload)) == []


def test_differences_with_total_only_is_empty():
    payload = mapped(seed()).payload
    remote = {k: v for k, v in remote_of(payload).items() if k != "Items"}
    assert differences(payload, remote) == []


@pytest.mark.parametrize("field, value", [
    ("TransDate", "2025-01-06"),
    ("CustCode", "C00002"),
    ("OfficialSerNr", "0005-00001692"),
    ("Labels", "Local|PALERMO"),
    ("SerNr", SERNR + 1),
])
def test_differences_lists_a_different_field(field, value):
    payload = mapped(seed()).payload
    diffs = differences(payload, remote_of(payload, **{field: value}))
    assert len(diffs) == 1
    assert diffs[0].startswith(field)


@pytest.mark.parametrize("price", [15000.02, 14999.98, 15100.0, 1.0])
def test_differences_lists_an_amount_beyond_one_cent(price):
    payload = mapped(seed()).payload
    remote = remote_of(payload, Items=[{"ArtCode": "271240051", "Qty": 1, "Price": price}],
                       Total=price)
    diffs = differences(payload, remote)
    assert len(diffs) == 1 and diffs[0].startswith("Total")
    remote.pop("Items")
    assert len(differences(payload, remote)) == 1


@pytest.mark.parametrize("price", [15000.01, 14999.99, 15000.0])
def test_differences_tolerates_one_cent(price):
    payload = mapped(seed()).payload
    remote = remote_of(payload, Items=[{"ArtCode": "271240051", "Qty": 1, "Price": price}],
                       Total=price)
    assert differences(payload, remote) == []
    remote.pop("Items")
    assert differences(payload, remote) == []


@pytest.mark.parametrize("remote", [{}, {"Total": None}, {"Total": "abc"}, {"Items": []}])
def test_differences_with_an_unreadable_remote_lists_something(remote):
    payload = mapped(seed()).payload
    assert differences(payload, remote)


def test_differences_real_profile_with_items_is_empty():
    payload = mapped(real()).payload
    remote = dict(payload, SerNr=3_000_000_001, Total=12396.69, Saldo=12396.69)
    assert differences(payload, remote) == []


def test_differences_real_profile_total_includes_vat():
    # oppen-api.md: Oppen adds 21 % VAT to the price; Total may differ by ±0.01.
    payload = mapped(real()).payload
    remote = {k: v for k, v in payload.items() if k != "Items"}
    remote.update(SerNr=3_000_000_001, Total=15000.01, Saldo=15000.01)
    m = mapped(real())
    assert differences(payload, remote, gross=m.amount) == []
    remote["Total"] = 12396.69  # the net price: not what Oppen would hold
    assert differences(payload, remote, gross=m.amount) != []


# --- properties ------------------------------------------------------------------------

OFFICIAL_RE = re.compile(r"^\d{4}-\d{8}$", re.ASCII)

locals_ = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")
days = st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2099, 12, 31))
amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("999999999999.99"),
                      places=2, allow_nan=False, allow_infinity=False)


@st.composite
def valid_rows(draw):
    pv = draw(st.integers(1, 9999))
    nro = draw(st.integers(1, 99_999_999))
    day = draw(days)
    monto = draw(amounts)
    row = {
        "local": draw(locals_),
        "tipo": draw(st.sampled_from(["A", "B", "Z", "CC", "a", "b", "z", "cc", " A "])),
        "punto_venta": draw(st.sampled_from([pv, str(pv), f"{pv:04d}"])),
        "nro_factura": draw(st.sampled_from([nro, str(nro), f"{nro:08d}"])),
        "fecha": draw(st.sampled_from([
            day, day.isoformat(), dt.datetime.combine(day, dt.time(12, 30)),
            f"{day.isoformat()} 23:59:59"])),
        "monto": draw(st.sampled_from([monto, str(monto), float(monto)])),
    }
    return row, monto, day


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_rows(), st.integers(1, 2**62))
def test_property_valid_rows_always_map(case, sernr):
    row, monto, day = case
    result = map_invoice(row, SEED_PROFILE, today=TODAY, sernr=sernr)
    assert isinstance(result, Mapped), result
    payload = result.payload
    assert OFFICIAL_RE.fullmatch(payload["OfficialSerNr"])
    assert payload["Items"][0]["Price"] == float(monto)
    assert result.amount == monto
    assert payload["TransDate"] == day.isoformat()
    assert payload["DueDate"] == (day + dt.timedelta(days=30)).isoformat()
    assert payload["SerNr"] == sernr
    assert differences(payload, payload) == []


anything = st.one_of(
    st.none(), st.text(max_size=60), st.text(alphabet="0123456789 .,-+eE", max_size=30),
    st.integers(-10**20, 10**20), st.floats(), st.decimals(), st.booleans(),
    st.dates(), st.datetimes(), st.lists(st.integers(), max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "local": anything, "fecha": anything, "tipo": anything,
    "punto_venta": anything, "nro_factura": anything, "monto": anything}),
    st.sampled_from(["seed", "real"]))
def test_property_arbitrary_fields_never_raise(row, profile_name):
    profile = SEED_PROFILE if profile_name == "seed" else REAL
    result = map_invoice(row, profile, today=TODAY, sernr=SERNR)
    assert isinstance(result, (Mapped, Invalid))
    if isinstance(result, Mapped):
        price = result.payload["Items"][0]["Price"]
        assert math.isfinite(price) and price > 0
        assert re.fullmatch(r"[0-9]{4,5}-[0-9]{8}", result.official_sernr)
    else:
        assert result.problems
