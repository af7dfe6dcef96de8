"""The reconciliation's comparison, pure: our rows of a local/day (literal payloads, as
`map_invoice` writes them) against the records Oppen lists (literal dicts, as Oppen
answers them). No database, no HTTP."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from sync.mapping import REAL_PROFILE, SEED_PROFILE
from sync.reconcile import (Ours, attribute, compare_local, day_json, label_index, local_of,
                            pesos, problems_text, spans, summary, text_table, type_of)

DAY = dt.date(2025, 1, 5)
NEXT = dt.date(2025, 1, 6)


def payload(number: int, *, tipo_code: int = 1, day: str = "2025-01-05", cust="C00001",
            local="MATRIZ", price=15000.0) -> dict:
    """What the seed profile sends for an A invoice of point of sale 5."""
    return {"SerNr": 1_000_000_000_000 + number, "OfficialSerNr": f"0005-{number:08d}",
            "CustCode": cust, "TransDate": day, "DueDate": "2025-02-04", "Office": "100",
            "Labels": f"Local|{local}", "createUser": "API", "Status": 0,
            "InvoiceType": tipo_code, "Items": [{"ArtCode": "271240051", "Qty": 1,
                                                 "Price": price}]}


def ours(number: int, monto="15000.00", state="sent", **kw) -> Ours:
    return Ours(reference=f"A 0005-{number:08d}", payload=payload(number, **kw),
                monto=Decimal(monto), state=state, sernr=1_000_000_000_000 + number,
                state_id=number, factura_id=100 + number)


def record(number: int, total=15000.0, *, invalid=0, day="2025-01-05", label="Local|MATRIZ",
           cust="C00001", tipo_code=1, sernr=None) -> dict:
    """What Oppen lists for an invoice: the stored record, with its Total."""
    return {"SerNr": sernr or 1_000_000_000_000 + number, "OfficialSerNr": f"0005-{number:08d}",
            "CustCode": cust, "TransDate": day, "Labels": label, "Status": 0,
            "InvoiceType": tipo_code, "Total": total, "Saldo": total, "Invalid": invalid,
            "Items": [{"ArtCode": "271240051", "Qty": 1, "Price": total}]}


def compare(rows, records, days=None, profile=SEED_PROFILE):
    days = days or {DAY: rows}
    return {r.fecha: r for r in compare_local("MATRIZ", days, records, profile)}


def test_a_day_that_squares():
    result = compare([ours(1), ours(2, "10.50")], [record(1), record(2, 10.5)])[DAY]
    assert result.cuadra
    assert (result.facturas, result.monto, result.oppen_facturas, result.oppen_total) == (
        2, Decimal("15010.50"), 2, Decimal("15010.50"))
    assert result.diferencia == Decimal("0.00")
    assert not (result.faltan or result.sobran or result.difieren or result.anuladas)
    assert result.to_correct == []


def test_missing_extra_different_and_annulled_on_one_day():
    rows = [ours(1), ours(2), ours(3), ours(4)]
    records = [record(1), record(3, 15000.5), record(4, invalid=1), record(9, 700.0)]
    result = compare(rows, records)[DAY]
    assert not result.cuadra
    assert [f["factura"] for f in result.faltan] == ["A 0005-00000002"]
    assert result.faltan[0]["motivo"] == ("Enviada según nuestro registro (SerNr "
                                          "1000000000002), pero Oppen no la tiene")
    assert result.sobran == [{"factura": "0005-00000009", "sernr": 1_000_000_000_009,
                              "total": Decimal("700.00"), "tipo": "A"}]
    assert result.difieren == [{"factura": "A 0005-00000003", "factura_id": 103,
                                "sernr": 1_000_000_000_003, "campos": ["monto"],
                                "detalle": "monto: Oppen tiene $ 15.000,50, nosotros $ 15.000,00"}]
    assert [(a["factura"], a["sernr"]) for a in result.anuladas] == [
        ("A 0005-00000004", 1_000_000_000_004)]
    # Oppen's side counts only what it holds alive for the day: 1, 3 and 9.
    assert (result.oppen_facturas, result.oppen_total) == (3, Decimal("30700.50"))
    assert result.diferencia == Decimal("30700.50") - Decimal("60000.00")
    assert problems_text(day_json(result)) == ("falta 1 en Oppen, sobra 1, difiere 1, "
                                               "1 anulada")


def test_a_cent_is_the_same_amount_and_two_are_not():
    assert compare([ours(1)], [record(1, 15000.01)])[DAY].cuadra
    different = compare([ours(1)], [record(1, 15000.02)])[DAY]
    assert [d["campos"] for d in different.difieren] == [["monto"]]


def test_date_customer_and_type_differences_are_named():
    rows = [ours(1), ours(2), ours(3)]
    records = [record(1, day="2025-01-04"), record(2, cust="CUIT0"), record(3, tipo_code=2)]
    result = compare(rows, records, {DAY: rows, dt.date(2025, 1, 4): []})[DAY]
    assert {d["factura"]: d["campos"] for d in result.difieren} == {
        "A 0005-00000001": ["fecha"], "A 0005-00000002": ["cliente"],
        "A 0005-00000003": ["tipo"]}
    assert "fecha: Oppen tiene 04/01/2025, nosotros 05/01/2025" in result.difieren[0]["detalle"]
    # The record filed under the 4th is this invoice with another date, not an extra there.
    other = compare(rows, records, {DAY: rows, dt.date(2025, 1, 4): []})[dt.date(2025, 1, 4)]
    assert other.sobran == [] and other.oppen_facturas == 1


def test_failed_but_held_identical_is_proposed_for_correction_only_that_way():
    rows = [ours(1, state="failed"), ours(2, state="pending"), ours(3, state="conflict"),
            ours(4, state="failed"), ours(5, state="failed")]
    records = [record(1), record(2), record(3), record(4, 99.0), record(5), record(5)]
    result = compare(rows, records)[DAY]
    proposed = [(o.reference, r["SerNr"]) for o, r in result.to_correct]
    # 4 differs, 5 is held twice (the second copy is an extra), 3 is a person's.
    assert proposed == [("A 0005-00000001", 1_000_000_000_001),
                        ("A 0005-00000002", 1_000_000_000_002)]
    assert [s["factura"] for s in result.sobran] == ["0005-00000005"]
    # Sent and missing is never proposed: it is reported.
    missing = compare([ours(7, state="sent")], [])[DAY]
    assert missing.to_correct == [] and [f["estado"] for f in missing.faltan] == ["sent"]


def test_rows_that_cannot_be_mapped_are_missing_with_the_reason():
    bad = Ours("A 5-50X2", None, Decimal("10"), state="invalid", factura_id=7,
               problem="nro_factura: debe ser numérico (se recibió '50X2')")
    result = compare([bad], [])[DAY]
    assert result.faltan == [{"factura": "A 5-50X2", "factura_id": 7, "monto": Decimal("10"),
                              "estado": "invalid", "motivo": "Datos inválidos: nro_factura: "
                                                             "debe ser numérico (se recibió '50X2')"}]


def test_an_a_and_a_b_with_one_number_match_their_own():
    a, b = ours(1, tipo_code=1), ours(1, tipo_code=2)
    b = Ours("B 0005-00000001", b.payload, b.monto, "sent", b.sernr, 2, 102)
    result = compare([a, b], [record(1, tipo_code=2, sernr=22), record(1, tipo_code=1, sernr=11)])
    assert result[DAY].cuadra


def test_labels_up_to_the_first_comma_and_a_comma_in_our_own_label():
    index = label_index(["MATRIZ", "Perez, Juan", "TOSTADO"],
                        REAL_PROFILE.replace(labels_by_local={"MATRIZ": "ALMF01",
                                                              "TOSTADO": "TSTTR01"},
                                             label_format="Local|{local}"))
    assert local_of("ALMF01,PERSEO", index) == "MATRIZ"
    assert local_of("ALMF01", index) == "MATRIZ"
    assert local_of("Local|Perez, Juan,PERSEO", index) == "Perez, Juan"
    assert local_of("ALMF012,PERSEO", index) is None
    assert local_of(None, index) is None
    by_local = attribute([{"Labels": "TSTTR01,PERSEO", "n": 1}, {"Labels": "OTRO,X", "n": 2},
                          {"Labels": "ALMF01,PERSEO", "n": 3}, "no es un registro"], index)
    assert {k: [r["n"] for r in v] for k, v in by_local.items()} == {"TOSTADO": [1], "MATRIZ": [3]}


def test_real_profile_voucher_identity_and_types_it_does_not_send():
    profile = REAL_PROFILE
    p = {"OfficialSerNr": "00002-00009439", "CustCode": "C00001", "TransDate": "2025-01-05",
         "Labels": "TSTTR01", "VoucherCode": "006", "DocType": 1, "InvoiceType": 0,
         "FormType": None, "Items": [{"ArtCode": "271240051", "Qty": 1, "Price": 1677474.64}]}
    row = Ours("B 00002-00009439", p, Decimal("2029744.31"), "failed", None, 1, 1)
    held = {"SerNr": 10600180968, "OfficialSerNr": "00002-00009439", "Total": 2029744.30,
            "TransDate": "2025-01-05", "CustCode": "C00001", "Labels": "TSTTR01,PERSEO",
            "VoucherCode": "006", "DocType": 1, "InvoiceType": 0, "FormType": None, "Invalid": 0}
    an_a = {**held, "SerNr": 1, "VoucherCode": "001", "Total": 5.0}
    a_cc = {**held, "SerNr": 2, "OfficialSerNr": "0003-00558080", "VoucherCode": "082"}
    assert type_of(held, profile) == "B" and type_of(a_cc, profile) == "CC"
    result = compare_local("TOSTADO", {DAY: [row]}, [held, an_a, a_cc], profile)[0]
    assert [o.reference for o, _ in result.to_correct] == ["B 00002-00009439"]
    # The A with our number is another invoice (an extra); the CC is not ours to check.
    assert [(s["factura"], s["tipo"]) for s in result.sobran] == [("00002-00009439", "A")]
    assert result.oppen_facturas == 2


def test_days_without_invoices_on_either_side_square():
    result = compare([], [])[DAY]
    assert result.cuadra and result.facturas == 0 and result.oppen_total == 0


def test_totals_within_a_cent_per_invoice():
    rows = [ours(n, "100.00") for n in (1, 2, 3)]
    records = [record(n, 100.01) for n in (1, 2, 3)]
    result = compare(rows, records)[DAY]
    assert result.diferencia == Decimal("0.03") and result.cuadra


def test_the_json_of_a_day_and_the_summary():
    result = compare([ours(1)], [record(1), record(2, 5.0)])[DAY]
    result.corrected.append({"factura": "A 0005-00000001", "factura_id": 101,
                             "estado_anterior": "failed", "sernr": 7, "total": Decimal("1.00")})
    day = day_json(result)
    assert list(day) == ["local", "fecha", "faltan_en_oppen", "sobran_en_oppen", "difieren",
                         "anuladas_en_oppen", "estado_corregido", "facturas", "monto",
                         "oppen_facturas", "oppen_total", "diferencia", "cuadra"]
    assert (day["local"], day["fecha"], day["cuadra"]) == ("MATRIZ", "2025-01-05", False)
    assert json.loads(json.dumps(day, default=str))["diferencia"] == "5.00"
    assert summary([day, {**day, "cuadra": True}]) == {"dias": 2, "cuadran": 1, "no_cuadran": 1}


def test_the_text_table_is_short_spanish_in_argentine_formats():
    bad = day_json(compare([ours(1), ours(2)], [record(1)])[DAY])
    good = {**day_json(compare([ours(3, "1234567.89")], [record(3, 1234567.89)])[DAY]),
            "local": "PALERMO"}
    text = text_table({"desde": "2025-01-05", "hasta": "2025-01-05", "dias": [good, bad],
                       "resumen": summary([good, bad]),
                       "excluidos": [{"local": "DEPÓSITO", "fecha": "2025-01-05"}]}, "SANDBOX")
    lines = text.splitlines()
    assert lines[0] == "Conciliación con Oppen (SANDBOX) del 05/01/2025"
    assert "$ 1.234.567,89" in lines[2] and lines[2].endswith("✓ cuadra")
    assert lines[3].endswith("✗ no cuadra: falta 1 en Oppen") and "-$ 15.000,00" in lines[3]
    assert "  MATRIZ 05/01/2025 · falta en Oppen: A 0005-00000002 (Enviada según nuestro " \
           "registro (SerNr 1000000000002), pero Oppen no la tiene)" in lines
    assert "  DEPÓSITO 05/01/2025 · excluido de la sincronización: no se concilia" in lines
    assert lines[-1] == "Resumen: 2 día(s), 1 cuadra(n), 1 no cuadra(n)"


def test_spans_and_pesos():
    d = dt.date(2025, 1, 1)
    assert spans([d, d + dt.timedelta(2), d + dt.timedelta(1), d + dt.timedelta(9)]) == [
        (d, d + dt.timedelta(2)), (d + dt.timedelta(9), d + dt.timedelta(9))]
    assert spans([]) == []
    assert pesos(Decimal("15000.5")) == "$ 15.000,50" and pesos(None) == ""
    assert pesos(Decimal("-0.01")) == "-$ 0,01" and pesos("0") == "$ 0,00"


def test_a_row_the_sales_system_holds_twice_is_never_corrected_onto_the_other():
    """PALERMO's case: one number twice in the sales system; we sent the second row
    (its SerNr is recorded), the first failed as a duplicate; Oppen holds one."""
    first = Ours("A 0005-00000001", payload(1), Decimal("15000.00"), "failed", None, 6, 6)
    second = Ours("A 0005-00000001", payload(1), Decimal("15000.00"), "sent", 777, 7, 8)
    result = compare([first, second], [record(1, sernr=777)])[DAY]
    # The record is the sent row's (its SerNr); the failed row is the one missing.
    assert result.to_correct == []
    assert [(f["factura_id"], f["estado"]) for f in result.faltan] == [(6, "failed")]
    # Neither recorded: one of them is held, and which one cannot be known: no correction.
    both = [Ours("A 0005-00000001", payload(1), Decimal("15000.00"), "failed", None, n, n)
            for n in (6, 8)]
    result = compare(both, [record(1, sernr=777)])[DAY]
    assert result.to_correct == [] and len(result.faltan) == 1
