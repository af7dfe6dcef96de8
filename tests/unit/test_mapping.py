"""The mapping from a `facturas_trns` row to Oppen's invoice JSON, row by row.

`map_invoice` is pure: every test feeds it a literal dict and compares what comes out.
The seed's table (`seed/oppen-integration.md`, "Mapeo de Datos") is the default profile;
`REAL_PROFILE` is the "real service" column of `oppen-api.md`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sync.mapping import (EXCLUDED_LOCAL_REASON, REAL_PROFILE, SEED_PROFILE, TIPOS, Excluded,
                          Invalid, Mapped, differences, excluded_reason, is_annulled,
                          is_same_invoice, local_key, map_invoice, official_sernr, pick_ours,
                          voucher_identity)

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
    # ... an old one gets its 30 days from today (oppen-api.md: "today + 30"; Oppen
    # refuses a due date in the past with INVERTEDRANGEERR Field EstPayDate).
    payload = mapped(real(fecha="2024-06-01", today=TODAY)).payload
    assert payload["TransDate"] == "2024-06-01"
    assert payload["DueDate"] == "2025-02-05"


@pytest.mark.parametrize("fecha, due", [
    ("2024-12-07", "2025-01-06"),   # TransDate + 30 is today: not in the past, kept
    ("2024-12-06", "2025-02-05"),   # one day past: today + 30
])
def test_real_profile_duedate_boundary(fecha, due):
    assert mapped(real(fecha=fecha, today=TODAY)).payload["DueDate"] == due


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
    assert isinstance(result, (Mapped, Invalid, Excluded))
    if isinstance(result, Excluded):
        assert profile_name == "real" and result.field == "tipo" and result.reason
        return
    if isinstance(result, Mapped):
        price = result.payload["Items"][0]["Price"]
        assert math.isfinite(price) and price > 0
        assert re.fullmatch(r"[0-9]{4,5}-[0-9]{8}", result.official_sernr)
    else:
        assert result.problems


# --- the real service, as the customer's production notes document it (oppen-api.md) ----

# "The invoice as the real service takes it": a B invoice of local Tostado.
TOSTADO_ROW = {"id": 9, "local": "Tostado", "fecha": "2026-03-21 21:40:00", "tipo": "B",
               "punto_venta": "2", "nro_factura": "9439", "monto": Decimal("2029744.31")}
TOSTADO_PAYLOAD = json.loads("""
{"OfficialSerNr": "00002-00009439", "ToOfficialSerNr": "00002-00009439",
 "CustCode": "CUIT0", "TransDate": "2026-03-21", "InvoiceDate": "2026-03-21",
 "DueDate": "2026-04-20", "Office": "100", "Labels": "TSTTR01", "createUser": "API",
 "Status": 1, "VoucherCode": "006", "DocType": 1, "InvoiceType": 0, "FormType": null,
 "Items": [{"ArtCode": "271240051", "Qty": 1, "Price": 1677474.64}]}
""")
TOSTADO = REAL_PROFILE.replace(customers_by_local={"Tostado": "CUIT0"}).with_labels(
    {"Tostado": "TSTTR01"})


def test_golden_real_b_invoice_is_the_documented_payload_key_for_key():
    result = mapped(map_invoice(TOSTADO_ROW, TOSTADO, today=dt.date(2026, 3, 22)))
    assert result.payload == TOSTADO_PAYLOAD
    assert list(result.payload) == list(TOSTADO_PAYLOAD)          # same keys, same order
    assert json.dumps(result.payload) == json.dumps(TOSTADO_PAYLOAD)
    assert "SerNr" not in result.payload
    assert result.reference == "B 00002-00009439"
    assert result.amount == Decimal("2029744.31")


def test_golden_real_b_invoice_with_labels_from_configuration_too():
    profile = REAL_PROFILE.replace(labels_by_local={"Tostado": "TSTTR01"},
                                   customers_by_local={"Tostado": "CUIT0"})
    result = mapped(map_invoice(TOSTADO_ROW, profile, today=dt.date(2026, 4, 20)))
    assert result.payload == TOSTADO_PAYLOAD


def test_golden_real_b_invoice_of_an_old_cash_day_is_due_thirty_days_from_today():
    result = mapped(map_invoice(TOSTADO_ROW, TOSTADO, today=dt.date(2026, 6, 1)))
    assert result.payload == {**TOSTADO_PAYLOAD, "DueDate": "2026-07-01"}
    assert result.payload["TransDate"] == "2026-03-21"


def test_golden_real_b_invoice_even_with_a_client_sernr_given():
    result = mapped(map_invoice(TOSTADO_ROW, TOSTADO, today=dt.date(2026, 3, 22), sernr=5))
    assert "SerNr" not in result.payload


@pytest.mark.parametrize("tipo, voucher, doc_type, form_type", [
    ("A", "001", 1, None), ("B", "006", 1, None), ("Z", "083", 4, "Z"),
])
def test_real_invoice_types_share_office_article_and_no_vat_code(tipo, voucher, doc_type, form_type):
    payload = mapped(map_invoice({**TOSTADO_ROW, "tipo": tipo}, TOSTADO,
                                 today=dt.date(2026, 3, 22))).payload
    assert payload == {**TOSTADO_PAYLOAD, "VoucherCode": voucher, "DocType": doc_type,
                       "FormType": form_type}
    assert "VATCode" not in payload["Items"][0]


CC_ROW = {**TOSTADO_ROW, "tipo": "CC", "punto_venta": "3", "nro_factura": "558080",
          "monto": "1000.00"}


def test_real_profile_current_account_has_its_own_rule_when_sent():
    # A chain that adds CC to send_types gets the notes' rule for current accounts.
    profile = TOSTADO.replace(send_types=TIPOS)
    result = mapped(map_invoice(CC_ROW, profile, today=dt.date(2026, 3, 22)))
    assert result.official_sernr == "0003-00558080"            # 4-digit point of sale
    payload = result.payload
    assert payload["Office"] == "200"
    assert payload["VoucherCode"] == "082"
    assert payload["OfficialSerNr"] == payload["ToOfficialSerNr"] == "0003-00558080"
    assert payload["Items"] == [{"ArtCode": "OTR-ING", "Qty": 1, "Price": 1000.0,
                                 "VATCode": "3"}]            # not divided by 1.21
    assert payload["InvoiceType"] == 0 and payload["FormType"] is None
    assert result.reference == "CC 0003-00558080"


def test_real_profile_current_account_point_of_sale_width_is_four():
    profile = TOSTADO.replace(send_types=TIPOS)
    assert_invalid(map_invoice({**CC_ROW, "punto_venta": "10000"}, profile,
                               today=dt.date(2026, 3, 22)), "punto_venta")
    # The other types keep their five digits.
    assert isinstance(map_invoice({**TOSTADO_ROW, "punto_venta": "10000"}, profile,
                                  today=dt.date(2026, 3, 22)), Mapped)


def test_real_profile_does_not_send_current_accounts():
    result = map_invoice(CC_ROW, TOSTADO, today=dt.date(2026, 3, 22))
    assert isinstance(result, Excluded)
    assert result.field == "tipo"
    assert "CC" in result.reason and "send_types" in result.reason
    assert result.reference == "CC 0003-00558080"
    assert excluded_reason(CC_ROW, TOSTADO) == result.reason
    assert excluded_reason(TOSTADO_ROW, TOSTADO) is None


# --- per-type fields fall back to the scalar: existing configurations keep their meaning ---

def per_type(profile, tipo, **row):
    return mapped(map_invoice({**ROW, "tipo": tipo, **row}, profile, today=TODAY, sernr=SERNR))


@pytest.mark.parametrize("tipo", TIPOS)
def test_scalar_office_vat_code_and_price_rule_apply_to_every_type(tipo):
    profile = SEED_PROFILE.replace(office="300", vat_code="5", price_includes_vat=False,
                                   pos_width=5)
    result = per_type(profile, tipo)
    assert result.payload["Office"] == "300"
    assert result.payload["Items"] == [{"ArtCode": "271240051", "Qty": 1, "Price": 12396.69,
                                        "VATCode": "5"}]
    assert result.official_sernr == "00005-00001691"


def test_per_type_tables_override_the_scalar_only_for_the_types_they_name():
    profile = SEED_PROFILE.replace(
        office="300", offices={"CC": "200"}, vat_code="5", vat_codes={"CC": "3", "Z": ""},
        price_includes_vat=False, price_includes_vat_by_type={"CC": True},
        pos_widths={"CC": 4}, pos_width=5, number_widths={"Z": 6})
    a, z, cc = per_type(profile, "A"), per_type(profile, "Z"), per_type(profile, "CC")
    assert (a.payload["Office"], z.payload["Office"], cc.payload["Office"]) == ("300", "300", "200")
    assert a.payload["Items"][0]["VATCode"] == "5"
    assert "VATCode" not in z.payload["Items"][0]          # "" for a type: none sent
    assert cc.payload["Items"][0]["VATCode"] == "3"
    assert a.payload["Items"][0]["Price"] == 12396.69
    assert cc.payload["Items"][0]["Price"] == 15000.0
    assert a.official_sernr == "00005-00001691"
    assert z.official_sernr == "00005-001691"
    assert cc.official_sernr == "0005-00001691"


def test_official_sernr_helper_uses_the_type_widths():
    assert official_sernr(3, 558080, REAL_PROFILE) == "00003-00558080"
    assert official_sernr(3, 558080, REAL_PROFILE, "CC") == "0003-00558080"
    assert official_sernr(3, 558080, REAL_PROFILE, "A") == "00003-00558080"


def test_seed_profile_sends_every_type_and_excludes_no_local():
    for tipo in TIPOS:
        assert excluded_reason({**ROW, "tipo": tipo}, SEED_PROFILE) is None
    assert SEED_PROFILE.send_types == TIPOS and SEED_PROFILE.excluded_locals == ()


def test_profiles_built_with_plain_dicts_are_frozen():
    table = {"MATRIZ": "MTZ"}
    profile = REAL_PROFILE.replace(labels_by_local=table, send_types=["a", "b"])
    table["MATRIZ"] = "OTRO"
    assert profile.labels_for("MATRIZ") == ("MTZ",)
    assert profile.send_types == ("A", "B")
    with pytest.raises(TypeError):
        profile.labels_by_local["X"] = "Y"


# --- exclusions -------------------------------------------------------------------------

@pytest.mark.parametrize("local", ["Centro Gallego", "centro gallego", "  CENTRO GALLEGO  "])
def test_excluded_local_is_excluded_whatever_its_case_and_spaces(local):
    profile = SEED_PROFILE.replace(excluded_locals=(" Centro Gallego",))
    result = map_invoice({**ROW, "local": local}, profile, today=TODAY, sernr=SERNR)
    assert isinstance(result, Excluded)
    assert result.reason == EXCLUDED_LOCAL_REASON
    assert result.reason == "Local excluido de la sincronización con Oppen (configuración)"
    assert result.field == "local"
    assert result.reference == "A 0005-00001691"
    assert excluded_reason({**ROW, "local": local}, profile) == EXCLUDED_LOCAL_REASON


def test_other_locals_are_not_excluded():
    profile = SEED_PROFILE.replace(excluded_locals=("CG",))
    assert isinstance(map_invoice(ROW, profile, today=TODAY, sernr=SERNR), Mapped)
    assert excluded_reason({**ROW, "local": "CGX"}, profile) is None


def test_an_excluded_row_is_excluded_even_when_its_data_is_bad():
    profile = SEED_PROFILE.replace(excluded_locals=("MATRIZ",))
    result = map_invoice({**ROW, "monto": "abc", "nro_factura": ""}, profile, today=TODAY)
    assert isinstance(result, Excluded)
    assert result.reference == "A 5-?"


def test_an_unknown_type_is_invalid_not_excluded():
    profile = SEED_PROFILE.replace(send_types=("A",))
    assert excluded_reason({**ROW, "tipo": "X"}, profile) is None
    assert_invalid(map_invoice({**ROW, "tipo": "X"}, profile, today=TODAY, sernr=SERNR), "tipo")
    assert isinstance(map_invoice({**ROW, "tipo": "b"}, profile, today=TODAY, sernr=SERNR), Excluded)


def test_excluded_reads_like_invalid_for_code_that_only_knows_invalid():
    # Until a caller learns about Excluded, .reason and .problems still work on it.
    result = map_invoice(CC_ROW, TOSTADO, today=TODAY)
    assert [(p.field, p.reason) for p in result.problems] == [("tipo", result.reason)]


# --- labels and customers by local: MariaDB's comparison, and the host's table ----------

@pytest.mark.parametrize("local", ["Tostado", "TOSTADO", " tostado ", "ToStAdO\t"])
def test_labels_and_customers_ignore_case_and_surrounding_spaces(local):
    result = mapped(map_invoice({**TOSTADO_ROW, "local": local}, TOSTADO,
                                today=dt.date(2026, 3, 22)))
    assert result.payload["Labels"] == "TSTTR01"
    assert result.payload["CustCode"] == "CUIT0"


def test_local_key_is_case_and_space_insensitive():
    assert local_key("  Tostado ") == local_key("TOSTADO") == "tostado"
    assert local_key(None) == ""


def test_with_labels_configuration_wins_over_the_table():
    profile = REAL_PROFILE.replace(labels_by_local={"tostado": "CONFIG"}).with_labels(
        [("Tostado ", "TABLA"), ("Palermo", " PAL01 ")])
    assert profile.labels_for("TOSTADO") == ("CONFIG",)
    assert profile.labels_for("palermo") == ("PAL01",)           # trimmed (CHAR columns)


def test_with_labels_is_pure():
    before = REAL_PROFILE.labels_by_local
    profile = REAL_PROFILE.with_labels({"Tostado": "TSTTR01"})
    assert dict(REAL_PROFILE.labels_by_local) == dict(before) == {}
    assert profile.labels_for("Tostado") == ("TSTTR01",)
    assert profile.replace(status=0).labels_for("Tostado") == ("TSTTR01",)


@pytest.mark.parametrize("code", [None, "", "   "])
def test_a_null_label_in_the_table_is_no_label_never_the_text_none(code):
    profile = REAL_PROFILE.with_labels([("Tostado", code)])
    result = map_invoice(TOSTADO_ROW, profile, today=TODAY)
    assert_invalid(result, "local")
    assert "None" not in result.reason


def test_a_null_label_in_a_profile_built_in_code_is_never_sent():
    result = map_invoice(TOSTADO_ROW, REAL_PROFILE.replace(labels_by_local={"Tostado": None}),
                         today=TODAY)
    assert_invalid(result, "local")
    # With a label_format, a null code falls back to it, as a missing one does.
    seed_like = SEED_PROFILE.replace(labels_by_local={"MATRIZ": None})
    assert mapped(map_invoice(ROW, seed_like, today=TODAY,
                              sernr=SERNR)).payload["Labels"] == "Local|MATRIZ"


def test_two_codes_for_one_local_in_the_table_are_not_guessed():
    # The same name twice: dropped. Two spellings of one name: both kept, reported.
    same_name = REAL_PROFILE.with_labels([("Tostado", "T1"), ("Tostado", "T2")])
    assert_invalid(map_invoice(TOSTADO_ROW, same_name, today=TODAY), "local")
    spellings = REAL_PROFILE.with_labels([("Tostado", "T1"), ("TOSTADO", "T2")])
    result = map_invoice(TOSTADO_ROW, spellings, today=TODAY)
    assert_invalid(result, "local")
    assert "T1" in result.reason and "T2" in result.reason
    # The same code twice is no conflict.
    agreed = REAL_PROFILE.with_labels([("Tostado", "T1"), ("TOSTADO ", "T1")])
    assert mapped(map_invoice(TOSTADO_ROW, agreed, today=TODAY)).payload["Labels"] == "T1"


def test_customers_by_local_with_the_real_profile():
    profile = TOSTADO.replace(customers_by_local={"Tostado": "CUIT0", "Palermo": "ZT11111"})
    palermo = map_invoice({**TOSTADO_ROW, "local": "PALERMO"},
                          profile.with_labels({"Palermo": "PAL01"}), today=TODAY)
    assert mapped(palermo).payload["CustCode"] == "ZT11111"
    other = map_invoice({**TOSTADO_ROW, "local": "Centro"},
                        profile.with_labels({"Centro": "CEN01"}), today=TODAY)
    assert mapped(other).payload["CustCode"] == "C00001"


# --- monto of any type ----------------------------------------------------------------------

@pytest.mark.parametrize("monto", ["abc", "12,50", b"12,50", b"abc", bytearray(b"1e3"), "1e3",
                                   " ", b"", object(), "0.004", Decimal("0.004"), 0.004])
def test_monto_that_is_not_an_amount_is_an_invalid_row_naming_monto(monto):
    assert_invalid(seed(monto=monto), "monto")


@pytest.mark.parametrize("monto, amount", [
    ("12.50", "12.50"), (b"12.50", "12.50"), (bytearray(b"15000"), "15000.00"),
    (memoryview(b"1.005"), "1.01"), (12.5, "12.50"), (Decimal("12.5"), "12.50"), (12, "12.00"),
    (0.005, "0.01"), (1e12, "1000000000000.00"),
])
def test_monto_of_every_driver_type(monto, amount):
    assert mapped(seed(monto=monto)).amount == Decimal(amount)


def test_monto_that_is_a_huge_negative_number_is_invalid_not_a_crash():
    assert_invalid(seed(monto=-1e26), "monto")
    assert_invalid(seed(monto=Decimal("-1E+40")), "monto")


def test_a_zero_amount_when_allowed_is_never_minus_zero():
    profile = SEED_PROFILE.replace(allow_zero_amount=True)
    price = mapped(map_invoice({**ROW, "monto": "-0.00"}, profile, today=TODAY,
                               sernr=SERNR)).payload["Items"][0]["Price"]
    assert price == 0.0 and math.copysign(1, price) == 1


def test_number_parts_given_as_bytes():
    assert mapped(seed(punto_venta=b"5", nro_factura=b"1691")).payload == SEED_PAYLOAD


# --- which record in Oppen is ours ----------------------------------------------------------

def tostado_payload():
    return mapped(map_invoice(TOSTADO_ROW, TOSTADO, today=dt.date(2026, 3, 22))).payload


def stored(payload, **changes):
    """A record as Oppen lists it: what was sent, Oppen's additions, the label with the company."""
    record = dict(payload, SerNr=10600180968, Total=2029744.31, Saldo=2029744.31, Invalid=False,
                  CustName="CLIENTE AFIP CUIT 0", Labels=f"{payload['Labels']},PERSEO")
    record.pop("Items", None)
    record.update(changes)
    return record


def test_voucher_identity():
    assert voucher_identity(tostado_payload()) == (("VoucherCode", "6"), ("DocType", "1"))
    assert voucher_identity({"VoucherCode": "006", "DocType": "1"}) == \
        voucher_identity({"VoucherCode": 6, "DocType": 1})
    assert voucher_identity(mapped(seed()).payload) == ()
    assert voucher_identity({"VoucherCode": None, "DocType": ""}) == ()
    assert voucher_identity({"FormType": "Z"}) == ()


def test_is_same_invoice():
    payload = tostado_payload()
    assert is_same_invoice(payload, stored(payload))
    assert is_same_invoice(payload, stored(payload, VoucherCode="6", DocType="1"))
    # The Factura A with the same number is another invoice.
    assert not is_same_invoice(payload, stored(payload, VoucherCode="001"))
    assert not is_same_invoice(payload, stored(payload, DocType=4))
    assert not is_same_invoice(payload, stored(payload, OfficialSerNr="00002-00009440"))
    # A record that does not say its voucher type is not known to be ours.
    assert not is_same_invoice(payload, {k: v for k, v in stored(payload).items()
                                         if k != "VoucherCode"})


@pytest.mark.parametrize("flag", [True, 1, "1", "true", " TRUE "])
def test_an_annulled_record_is_not_ours(flag):
    payload = tostado_payload()
    record = stored(payload, Invalid=flag)
    assert is_annulled(record)
    assert not is_same_invoice(payload, record)


@pytest.mark.parametrize("flag", [False, 0, "0", "false", None, ""])
def test_a_valid_record_is_not_annulled(flag):
    assert not is_annulled({"Invalid": flag})
    assert not is_annulled({})


def test_seed_payload_matches_on_official_sernr_alone():
    payload = mapped(seed()).payload
    assert is_same_invoice(payload, dict(payload, VoucherCode="001", Invalid=0))


def test_pick_ours_out_of_a_lookup():
    payload = tostado_payload()
    annulled = stored(payload, Invalid=1, SerNr=1)
    factura_a = stored(payload, VoucherCode="001", SerNr=2)
    ours = stored(payload, SerNr=3)
    twin = stored(payload, SerNr=4)
    unrelated = stored(payload, OfficialSerNr="00009-00000001", SerNr=5)
    found, others = pick_ours(payload, [annulled, unrelated, factura_a, ours, twin, "basura"])
    assert found is ours
    assert others == [annulled, factura_a, twin]
    assert [r for r in others if is_same_invoice(payload, r)] == [twin]   # Oppen has it twice


def test_pick_ours_when_oppen_has_only_others():
    payload = tostado_payload()
    annulled = stored(payload, Invalid=True)
    assert pick_ours(payload, [annulled]) == (None, [annulled])
    assert pick_ours(payload, []) == (None, [])


# --- differences: labels with commas, voucher identity ------------------------------------

def test_differences_with_the_company_name_oppen_appends_is_empty():
    payload = tostado_payload()
    assert differences(payload, stored(payload), gross=Decimal("2029744.31")) == []


@pytest.mark.parametrize("local", [",", "Pérez, Juan", "a,b,c"])
def test_differences_labels_with_a_comma_of_our_own(local):
    payload = mapped(seed(local=local)).payload
    assert differences(payload, payload) == []
    assert differences(payload, dict(payload, Labels=payload["Labels"] + ",PERSEO")) == []
    assert differences(payload, dict(payload, Labels="Local|otro")) != []


def test_differences_a_label_that_only_starts_the_same_is_different():
    payload = tostado_payload()
    diffs = differences(payload, stored(payload, Labels="TSTTR012,PERSEO"),
                        gross=Decimal("2029744.31"))
    assert len(diffs) == 1 and diffs[0].startswith("Labels")


@pytest.mark.parametrize("field, value", [("VoucherCode", "001"), ("DocType", 4),
                                          ("VoucherCode", None)])
def test_differences_lists_another_voucher_identity(field, value):
    payload = tostado_payload()
    diffs = differences(payload, stored(payload, **{field: value}), gross=Decimal("2029744.31"))
    assert len(diffs) == 1 and diffs[0].startswith(field)


def test_differences_voucher_codes_compare_as_codes():
    payload = tostado_payload()
    assert differences(payload, stored(payload, VoucherCode="6", DocType="1"),
                       gross=Decimal("2029744.31")) == []
    assert differences(payload, stored(payload, VoucherCode="001"),
                       gross=Decimal("2029744.31"), ignore=("VoucherCode",)) == []


def test_differences_seed_payload_ignores_voucher_fields_it_does_not_send():
    payload = mapped(seed()).payload
    assert differences(payload, dict(payload, VoucherCode="001", DocType=1)) == []
