"""The Oppen sandbox over real sockets: each test starts its own server on port 0.

Every behaviour is driven through HTTP as a client or a trainer would (the Oppen API,
the /__sandbox__/ admin endpoint and its admin.py client); the Python API is used
only to set a test up or to read the sandbox's own records back.
"""

import datetime
import socket
import threading
import time

import pytest
import requests

from helpers import seed_invoice
from sync.errors import OppenRejected, OppenTransportError
from sync.oppen.client import OppenClient
from sync.sandbox import FIRST_ASSIGNED_SERNR, Faults, OppenSandbox, admin
from sync.sandbox.control import is_loopback

PASSWORD = "test-only-password"


@pytest.fixture
def make_sandbox():
    started = []

    def make(**kwargs):
        kwargs.setdefault("password", PASSWORD)
        sandbox = OppenSandbox(**kwargs).start()
        started.append(sandbox)
        return sandbox

    yield make
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def sandbox(make_sandbox):
    return make_sandbox()


def api(sandbox, resource):
    return f"{sandbox.url}/genericapi/ApiNg/{resource}"


def login(sandbox, session=requests):
    answer = session.post(api(sandbox, "authenticate"), json={"username": "API", "password": PASSWORD}, timeout=5)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


invoice = seed_invoice


def post(sandbox, payload, headers, session=requests, timeout=5):
    return session.post(api(sandbox, "Invoice"), json=payload, headers=headers, timeout=timeout)


# ----- authentication ------------------------------------------------------------


def test_authenticate_returns_token_and_expiry(sandbox):
    answer = requests.post(api(sandbox, "authenticate"), json={"username": "API", "password": PASSWORD}, timeout=5)
    body = answer.json()
    assert answer.status_code == 200
    assert body["ok"] is True and body["token"] and body["expires"] == 3600
    assert sandbox.request_log()[-1]["outcome"] == "authenticated"


@pytest.mark.parametrize(
    "credentials",
    [{"username": "API", "password": "wrong"}, {"username": "other", "password": PASSWORD}, {}],
)
def test_authenticate_refuses_wrong_credentials(sandbox, credentials):
    answer = requests.post(api(sandbox, "authenticate"), json=credentials, timeout=5)
    assert answer.status_code == 401
    assert answer.json() == {"ok": False, "error": "Unauthorized"}
    assert sandbox.request_log()[-1]["outcome"] == "auth_failed"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}])
def test_calls_without_a_valid_token_get_401(sandbox, headers):
    assert post(sandbox, invoice(), headers).status_code == 401
    listed = requests.get(api(sandbox, "Invoice"), headers=headers, timeout=5)
    assert listed.status_code == 401
    assert listed.json() == {"ok": False, "error": "Unauthorized"}
    assert sandbox.invoices() == []
    assert [e["outcome"] for e in sandbox.request_log()] == ["unauthorized", "unauthorized"]


def test_token_max_uses_refuses_the_next_request(make_sandbox):
    sandbox = make_sandbox(faults=Faults(token_max_uses=2))
    headers = login(sandbox)
    assert post(sandbox, invoice(1), headers).status_code == 201
    assert requests.get(api(sandbox, "Invoice"), headers=headers, timeout=5).status_code == 200
    assert post(sandbox, invoice(2), headers).status_code == 401
    assert post(sandbox, invoice(2), login(sandbox)).status_code == 201


def test_token_expires_when_ttl_is_shortened(sandbox):
    headers = login(sandbox)
    sandbox.set_faults(token_ttl=0.05)
    time.sleep(0.1)
    assert post(sandbox, invoice(), headers).status_code == 401


def test_log_never_holds_password_or_token(sandbox):
    headers = login(sandbox)
    post(sandbox, invoice(), headers)
    text = repr(sandbox.request_log())
    assert PASSWORD not in text
    assert headers["Authorization"].split()[1] not in text


# ----- creating invoices -----------------------------------------------------------


def test_post_stores_and_returns_the_record(sandbox):
    headers = login(sandbox)
    answer = post(sandbox, invoice(Items=[{"ArtCode": "1", "Qty": 2, "Price": 10.005}, {"Qty": 1, "Price": 5}]), headers)
    assert answer.status_code == 201
    body = answer.json()
    assert body["ok"] is True and set(body) == {"ok", "data"}
    record = body["data"]
    assert record["SerNr"] >= FIRST_ASSIGNED_SERNR > 2**31
    assert record["Total"] == round(2 * 10.005 + 5, 2) == record["Saldo"]
    assert record["ToOfficialSerNr"] == record["OfficialSerNr"] == "0005-00001691"
    assert (record["Status"], record["CustCode"], record["Invalid"]) == (0, "C00001", 0)
    assert isinstance(record["internalId"], int)
    assert sandbox.invoices() == [record]
    second = post(sandbox, invoice(1692, CustCode=..., Status=...), headers).json()["data"]
    assert second["SerNr"] == record["SerNr"] + 1
    assert (second["Status"], second["CustCode"]) == (0, "C00001")
    log = sandbox.request_log()[-1]
    assert (log["method"], log["path"], log["official_sernr"], log["outcome"]) == (
        "POST", "Invoice", "0005-00001692", "stored")


def test_post_keeps_a_client_sernr_and_five_digit_point_of_sale(sandbox):
    headers = login(sandbox)
    record = post(sandbox, invoice(SerNr=1735967123456789, OfficialSerNr="00005-00000001"), headers).json()["data"]
    assert record["SerNr"] == 1735967123456789
    assert record["OfficialSerNr"] == "00005-00000001"


@pytest.mark.parametrize(
    ("style", "status", "message"),
    [("409", 409, "Duplicate invoice"), ("real", 400, "Duplicate Official Serial Nr!")],
)
def test_duplicates_in_both_styles(make_sandbox, style, status, message):
    sandbox = make_sandbox(faults=Faults(duplicate_style=style))
    headers = login(sandbox)
    first = post(sandbox, invoice(SerNr=77), headers)
    assert first.status_code == 201
    again = post(sandbox, invoice(), headers)
    assert (again.status_code, again.json()) == (status, {"ok": False, "error": message})
    same_sernr = post(sandbox, invoice(2000, SerNr=77), headers)
    assert (same_sernr.status_code, same_sernr.json()["error"]) == (status, message)
    assert len(sandbox.invoices()) == 1
    assert sandbox.request_log()[-1]["outcome"] == "duplicate"


def test_add_invoice_makes_a_pre_existing_duplicate(sandbox):
    stored = sandbox.add_invoice({"OfficialSerNr": "0005-00000009", "Items": [{"Qty": 1, "Price": 3}]})
    assert stored["SerNr"] >= FIRST_ASSIGNED_SERNR and stored["Total"] == 3
    assert post(sandbox, invoice(9), login(sandbox)).status_code == 409
    with pytest.raises(ValueError):
        sandbox.add_invoice({"OfficialSerNr": "0005-00000009"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"Bogus": 1}, "Field Bogus not found"),
        ({"Items": [{"ArtCode": "1", "Qty": 1, "Price": 1, "Discount": 5}]}, "Field Discount not found"),
        ({"OfficialSerNr": ...}, "Invalid invoice number"),
        ({"OfficialSerNr": "005-00001691"}, "Invalid invoice number"),
        ({"OfficialSerNr": "0005-1691"}, "Invalid invoice number"),
        ({"TransDate": "2025-02-30"}, "Invalid date TransDate"),
        ({"TransDate": "05/01/2025"}, "Invalid date TransDate"),
        ({"DueDate": ...}, "Invalid date DueDate"),
        ({"Items": ...}, "Invalid Items"),
        ({"Items": []}, "Invalid Items"),
        ({"Items": [{"Qty": "1", "Price": 1}]}, "Invalid Items"),
        ({"Items": [{"Qty": 1, "Price": None}]}, "Invalid Items"),
        ({"Labels": "Local|NOWHERE"}, "LINKTOINVALIDVALUEERR Labels"),
        ({"Items": [{"ArtCode": "999", "Qty": 1, "Price": 1}]}, "LINKTOINVALIDVALUEERR ArtCode"),
        ({"CustCode": "C99999"}, "LINKTOINVALIDVALUEERR CustCode"),
        ({"SerNr": 0}, "Invalid SerNr"),
        ({"SerNr": "123"}, "Invalid SerNr"),
        ({"SerNr": True}, "Invalid SerNr"),
    ],
)
def test_validation_messages(make_sandbox, overrides, message):
    sandbox = make_sandbox(labels={"Local|MATRIZ"}, articles={"271240051"}, customers={"C00001"})
    answer = post(sandbox, invoice(**overrides), login(sandbox))
    assert (answer.status_code, answer.json()) == (400, {"ok": False, "error": message})
    assert sandbox.invoices() == []
    assert sandbox.request_log()[-1]["outcome"] == "rejected"


def test_link_checks_accept_anything_without_tables(sandbox):
    answer = post(sandbox, invoice(Labels="whatever", CustCode="X", Items=[{"ArtCode": "?", "Qty": 1, "Price": 1}]), login(sandbox))
    assert answer.status_code == 201


def test_invalid_json_body(sandbox):
    headers = {**login(sandbox), "Content-Type": "application/json"}
    answer = requests.post(api(sandbox, "Invoice"), data=b"{not json", headers=headers, timeout=5)
    assert (answer.status_code, answer.json()) == (400, {"ok": False, "error": "Invalid JSON"})


# ----- reading invoices back -------------------------------------------------------------


def test_get_by_official_sernr_with_paging(sandbox):
    headers = login(sandbox)
    for number in range(1, 6):
        assert post(sandbox, invoice(number, TransDate=f"2025-01-0{number}"), headers).status_code == 201

    def get(**params):
        answer = requests.get(api(sandbox, "Invoice"), params=params, headers=headers, timeout=5)
        assert answer.status_code == 200
        return answer.json()

    one = get(OfficialSerNr="0005-00000003")
    assert [r["OfficialSerNr"] for r in one["data"]] == ["0005-00000003"] and one["has_more"] is False
    assert get(OfficialSerNr="0005-00000099")["data"] == []
    assert sandbox.request_log()[-1]["official_sernr"] == "0005-00000099"

    page = get(Status="0", __limit__=2, __offset__=0, __total_records__=1)
    assert [r["OfficialSerNr"][-1] for r in page["data"]] == ["1", "2"]
    assert page["has_more"] is True and page["total_records"] == 5
    last = get(Status="0", __limit__=2, __offset__=4)
    assert [r["OfficialSerNr"][-1] for r in last["data"]] == ["5"] and last["has_more"] is False
    assert "total_records" not in last

    window = get(TransDate__gte="2025-01-02", TransDate__lte="2025-01-04")
    assert [r["TransDate"] for r in window["data"]] == ["2025-01-02", "2025-01-03", "2025-01-04"]
    sernr = one["data"][0]["SerNr"]
    assert [r["SerNr"] for r in get(SerNr=str(sernr))["data"]] == [sernr]


def test_unknown_filter_field_matches_nothing(sandbox):
    headers = login(sandbox)
    post(sandbox, invoice(), headers)
    answer = requests.get(api(sandbox, "Invoice"), params={"NoSuchField": "1"}, headers=headers, timeout=5)
    assert answer.json() == {"ok": True, "data": [], "has_more": False}


def test_pages_and_unknown_paths(sandbox):
    root = requests.get(sandbox.url + "/", timeout=5)
    docs = requests.get(api(sandbox, "docs/"), timeout=5)
    assert root.status_code == docs.status_code == 200
    assert root.headers["Content-Type"].startswith("text/html") and "ApiNg" in docs.text
    for url in (sandbox.url + "/elsewhere", sandbox.url + "/genericapi/OtherApi/Invoice", api(sandbox, "Customer")):
        answer = requests.get(url, timeout=5)
        assert (answer.status_code, answer.json()["ok"]) == (404, False)
    assert sandbox.request_log()[-1]["outcome"] == "not_found"


# ----- faults ------------------------------------------------------------------------


def test_error_rate_gives_5xx_half_html_and_repeats_with_seed(make_sandbox):
    sandbox = make_sandbox(faults=Faults(error_rate=1.0, seed=7))
    headers = login(sandbox)
    session = requests.Session()

    def run():
        statuses = []
        for number in range(40):
            answer = post(sandbox, invoice(number), headers, session=session)
            if answer.status_code == 502:
                assert answer.headers["Content-Type"].startswith("text/html")
            else:
                assert answer.status_code in (500, 503)
                assert answer.json() == {"ok": False, "error": "Internal Server Error"}
            statuses.append(answer.status_code)
        return statuses

    first = run()
    assert 8 <= first.count(502) <= 32 and len(set(first)) == 3
    assert sandbox.invoices() == []
    assert requests.get(api(sandbox, "Invoice"), headers=headers, timeout=5).status_code >= 500
    sandbox.set_faults(seed=7)
    assert run() == first
    outcomes = {e["outcome"] for e in sandbox.request_log()[1:]}
    assert outcomes == {"fault_5xx", "fault_502_html"}


def test_timeout_stores_then_never_answers(make_sandbox):
    sandbox = make_sandbox(faults=Faults(timeout_rate=1.0, hang_seconds=0.6))
    headers = login(sandbox)
    with pytest.raises(requests.exceptions.ReadTimeout):
        post(sandbox, invoice(), headers, timeout=0.3)
    assert [r["OfficialSerNr"] for r in sandbox.invoices()] == ["0005-00001691"]
    assert sandbox.request_log()[-1]["outcome"] == "timeout_after_store"
    sandbox.set_faults(timeout_rate=0.0)
    assert post(sandbox, invoice(), headers).status_code == 409


def test_drop_closes_before_storing(make_sandbox):
    sandbox = make_sandbox(faults=Faults(drop_rate=1.0))
    headers = login(sandbox)
    with pytest.raises(requests.exceptions.ConnectionError):
        post(sandbox, invoice(), headers)
    assert sandbox.invoices() == []
    assert sandbox.request_log()[-1]["outcome"] == "dropped"


def test_down_answers_502_html_to_everything(make_sandbox):
    sandbox = make_sandbox()
    headers = login(sandbox)
    sandbox.set_faults(down=True)
    auth = requests.post(api(sandbox, "authenticate"), json={"username": "API", "password": PASSWORD}, timeout=5)
    assert auth.status_code == 502 and auth.headers["Content-Type"].startswith("text/html")
    assert "502 Bad Gateway" in auth.text
    assert post(sandbox, invoice(), headers).status_code == 502
    assert sandbox.invoices() == []
    assert [e["outcome"] for e in sandbox.request_log()[-2:]] == ["down", "down"]


def test_rate_limit_answers_429_with_retry_after(make_sandbox):
    sandbox = make_sandbox(faults=Faults(rate_limit_rate=1.0))
    answer = post(sandbox, invoice(), login(sandbox))
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "0"
    assert sandbox.invoices() == []
    assert sandbox.request_log()[-1]["outcome"] == "rate_limited"


def test_latency_delays_every_call(make_sandbox):
    sandbox = make_sandbox(faults=Faults(latency_ms=150))
    started = time.monotonic()
    login(sandbox)
    assert time.monotonic() - started >= 0.15


def test_in_flight_counts_the_requests_waiting_for_their_answer(make_sandbox):
    sandbox = make_sandbox()
    headers = login(sandbox)
    sandbox.set_faults(latency_ms=400)
    answers = []
    senders = [threading.Thread(target=lambda n=n: answers.append(
        post(sandbox, invoice(n), headers).status_code)) for n in (1, 2)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 5
    while sandbox.in_flight("POST", "Invoice") < 2:
        assert time.monotonic() < deadline, "both POSTs never were in flight together"
        time.sleep(0.005)
    assert sandbox.in_flight("GET", "Invoice") == 0
    for sender in senders:
        sender.join(timeout=5)
    assert sorted(answers) == [201, 201]
    assert sandbox.in_flight("POST", "Invoice") == 0


def test_fault_settings_are_checked():
    with pytest.raises(ValueError):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError):
        Faults(duplicate_style="418")
    sandbox = OppenSandbox(password=PASSWORD)
    try:
        with pytest.raises(TypeError):
            sandbox.set_faults(no_such_fault=1)
    finally:
        sandbox.stop()


# ----- persistence, concurrency, speed ---------------------------------------------------


def test_store_path_survives_a_restart(tmp_path):
    path = str(tmp_path / "oppen.jsonl")
    with OppenSandbox(password=PASSWORD, store_path=path) as first:
        headers = login(first)
        stored = [post(first, invoice(n), headers).json()["data"] for n in (1, 2)]
    with OppenSandbox(password=PASSWORD, store_path=path) as second:
        assert second.invoices() == stored
        headers = login(second)
        assert post(second, invoice(1), headers).status_code == 409
        third = post(second, invoice(3), headers).json()["data"]
        assert third["SerNr"] == stored[-1]["SerNr"] + 1
        assert third["internalId"] == stored[-1]["internalId"] + 1
        second.reset()
        assert second.invoices() == [] and second.request_log() == []
    with OppenSandbox(password=PASSWORD, store_path=path) as after_reset:
        assert after_reset.invoices() == []


def test_concurrent_identical_posts_store_exactly_one(sandbox):
    headers = login(sandbox)
    barrier = threading.Barrier(20)
    statuses = []

    def send():
        barrier.wait()
        statuses.append(post(sandbox, invoice(), headers).status_code)

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201] + [409] * 19
    assert len(sandbox.invoices()) == 1


def test_keep_alive_posts_are_not_stalled_by_nagle(sandbox):
    with requests.Session() as session:
        headers = login(sandbox, session)
        started = time.monotonic()
        for number in range(200):
            assert post(sandbox, invoice(number), headers, session=session).status_code == 201
        elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"200 keep-alive POSTs took {elapsed:.2f} s"


def test_stop_is_idempotent_and_does_not_wait_for_idle_clients():
    sandbox = OppenSandbox(password=PASSWORD).start()
    session = requests.Session()
    login(sandbox, session)  # leaves an idle keep-alive connection open
    started = time.monotonic()
    sandbox.stop()
    sandbox.stop()
    assert time.monotonic() - started < 2.0
    session.close()


# ----- the real service's behaviour ----------------------------------------------------

REAL_DAY = datetime.date(2026, 3, 21)


def real_invoice(number: int = 9439, voucher: str = "006", **overrides) -> dict:
    """The invoice of oppen-api.md as the real service takes it (B of local Tostado)."""
    official = f"00002-{number:08d}"
    payload = {
        "OfficialSerNr": official, "ToOfficialSerNr": official, "CustCode": "CUIT0",
        "TransDate": "2026-03-21", "InvoiceDate": "2026-03-21", "DueDate": "2026-04-20",
        "Office": "100", "Labels": "TSTTR01", "createUser": "API", "Status": 1,
        "VoucherCode": voucher, "DocType": 4 if voucher == "083" else 1, "InvoiceType": 0,
        "FormType": "Z" if voucher == "083" else None,
        "Items": [{"ArtCode": "271240051", "Qty": 1, "Price": 1677474.64}],
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not ...}


def get(sandbox, headers, **params):
    answer = requests.get(api(sandbox, "Invoice"), params=params, headers=headers, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture
def real(make_sandbox):
    return make_sandbox(profile="real", today=REAL_DAY)


def test_real_profile_stores_the_documented_invoice_with_the_company_in_labels(real):
    headers = login(real)
    answer = post(real, real_invoice(), headers)
    assert answer.status_code == 201, answer.text
    record = answer.json()["data"]
    assert record["Labels"] == "TSTTR01,PERSEO"
    assert record["SerNr"] >= FIRST_ASSIGNED_SERNR and record["Invalid"] == 0
    assert (record["VoucherCode"], record["DocType"], record["Status"]) == ("006", 1, 1)
    assert get(real, headers, OfficialSerNr="00002-00009439")["data"] == [record]
    assert real.invoices()[0]["Labels"] == "TSTTR01,PERSEO"


@pytest.mark.parametrize(("company", "stored"), [("ACME SA", "ALMF01,ACME SA"), (None, "ALMF01")])
def test_company_name_is_configurable_and_none_disables_it(make_sandbox, company, stored):
    sandbox = make_sandbox(company=company)
    record = post(sandbox, invoice(Labels="ALMF01"), login(sandbox)).json()["data"]
    assert record["Labels"] == stored


def test_the_seed_profile_keeps_labels_as_sent(sandbox):
    record = post(sandbox, invoice(), login(sandbox)).json()["data"]
    assert record["Labels"] == "Local|MATRIZ"


def test_a_and_b_invoices_may_share_a_number(real):
    headers = login(real)
    factura_a = post(real, real_invoice(1691, "001"), headers)
    factura_b = post(real, real_invoice(1691, "006"), headers)
    assert (factura_a.status_code, factura_b.status_code) == (201, 201)
    assert factura_a.json()["data"]["SerNr"] != factura_b.json()["data"]["SerNr"]
    again = post(real, real_invoice(1691, "001"), headers)
    assert (again.status_code, again.json()["error"]) == (400, "Duplicate Official Serial Nr!")
    # Without voucher fields the number alone names the invoice: it clashes with both.
    bare = post(real, real_invoice(1691, VoucherCode=..., DocType=...), headers)
    assert bare.status_code == 400 and "Duplicate" in bare.json()["error"]
    both = get(real, headers, OfficialSerNr="00002-00001691")["data"]
    assert sorted(r["VoucherCode"] for r in both) == ["001", "006"]
    only_b = get(real, headers, OfficialSerNr="00002-00001691", VoucherCode="006")["data"]
    assert [r["VoucherCode"] for r in only_b] == ["006"]
    assert len(real.invoices()) == 2


def test_without_voucher_fields_the_number_alone_is_unique(sandbox):
    headers = login(sandbox)
    assert post(sandbox, invoice(5), headers).status_code == 201
    # An invoice stored without a voucher clashes with any voucher of its number.
    assert post(sandbox, invoice(5, VoucherCode="006", DocType=1), headers).status_code == 409
    assert post(sandbox, invoice(6, VoucherCode="006", DocType=1), headers).status_code == 201
    assert post(sandbox, invoice(6, VoucherCode="001", DocType=1), headers).status_code == 201
    assert post(sandbox, invoice(6, VoucherCode="006"), headers).status_code == 409


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SerNr": 2**63}, "RANGEERR4"),
        ({"SerNr": 10**30}, "RANGEERR4"),
        ({"DueDate": "2026-03-20"}, "INVERTEDRANGEERR Field EstPayDate"),
        ({"TransDate": "2026-03-01", "DueDate": "2026-03-20"}, "INVERTEDRANGEERR Field EstPayDate"),
        ({"Labels": "NOWHERE"}, "LINKTOINVALIDVALUEERR Labels"),
        ({"OfficialEndSerNr": "00002-00009439"}, "Field OfficialEndSerNr not found"),
        ({"Items": [{"ArtCode": "271240051", "Qty": 1, "Price": 1, "Discount": 0}]},
         "Field Discount not found"),
        ({"InvoiceDate": "21/03/2026"}, "Invalid date InvoiceDate"),
    ],
)
def test_real_validation_errors_are_422_with_oppens_texts(make_sandbox, overrides, message):
    sandbox = make_sandbox(profile="real", today=REAL_DAY, labels={"TSTTR01", "ALMF01"})
    answer = post(sandbox, real_invoice(**overrides), login(sandbox))
    assert (answer.status_code, answer.json()) == (422, {"ok": False, "error": message})
    assert sandbox.invoices() == []
    assert sandbox.request_log()[-1]["outcome"] == "rejected"


def test_every_field_the_mapping_may_send_is_known(real):
    payload = real_invoice(SerNr=10600180968, Items=[
        {"ArtCode": "OTR-ING", "Qty": 1, "Price": 10.0, "VATCode": "3"}])
    answer = post(real, payload, login(real))
    assert answer.status_code == 201, answer.text
    assert answer.json()["data"]["SerNr"] == 10600180968


def test_due_date_checks_against_an_injected_today(make_sandbox):
    clock = {"today": datetime.date(2025, 1, 5)}
    sandbox = make_sandbox(today=lambda: clock["today"])
    headers = login(sandbox)
    assert post(sandbox, invoice(1), headers).status_code == 201  # due 2025-02-04
    clock["today"] = datetime.date(2025, 2, 5)
    late = post(sandbox, invoice(2), headers)
    assert (late.status_code, late.json()["error"]) == (400, "INVERTEDRANGEERR Field EstPayDate")
    assert post(sandbox, invoice(3, DueDate="2025-03-07"), headers).status_code == 201


def test_due_date_before_the_invoice_is_refused_in_every_profile(sandbox):
    answer = post(sandbox, invoice(DueDate="2025-01-04"), login(sandbox))
    assert (answer.status_code, answer.json()["error"]) == (400, "INVERTEDRANGEERR Field EstPayDate")


def test_max_sernr_is_configurable_and_the_style_switches_at_runtime(make_sandbox):
    sandbox = make_sandbox(max_sernr=10**12)
    headers = login(sandbox)
    assert post(sandbox, invoice(1, SerNr=10**12), headers).status_code == 201
    too_big = post(sandbox, invoice(2, SerNr=10**12 + 1), headers)
    assert (too_big.status_code, too_big.json()["error"]) == (400, "RANGEERR4")
    sandbox.set_faults(validation_style="real")
    assert post(sandbox, invoice(2, SerNr=10**12 + 1), headers).status_code == 422


# ----- annulled invoices and the query language --------------------------------------------


def test_annulled_invoices_stay_count_and_filter(real):
    headers = login(real)
    stored = [post(real, real_invoice(n), headers).json()["data"] for n in (1, 2, 3)]
    annulled = real.annul(sernr=stored[1]["SerNr"])
    assert annulled["Invalid"] == 1 and annulled["SerNr"] == stored[1]["SerNr"]
    by_admin = admin.annul(real.url, password=PASSWORD, official_sernr="00002-00000003",
                           voucher_code="006", doc_type=1)
    assert by_admin["Invalid"] == 1
    for value in ("0", "false", "False"):
        assert [r["OfficialSerNr"] for r in get(real, headers, Invalid=value)["data"]] == ["00002-00000001"]
    for value in ("1", "true"):
        assert [r["OfficialSerNr"][-1] for r in get(real, headers, Invalid=value)["data"]] == ["2", "3"]
    assert get(real, headers, Status="1", Invalid="0", __total_records__="1")["total_records"] == 1
    again = post(real, real_invoice(2), headers)
    assert again.status_code == 400 and "Duplicate" in again.json()["error"]
    assert len(real.invoices()) == 3


def test_annul_needs_exactly_one_invoice(real):
    headers = login(real)
    post(real, real_invoice(7, "001"), headers)
    post(real, real_invoice(7, "006"), headers)
    with pytest.raises(admin.SandboxAdminError) as info:
        admin.annul(real.url, password=PASSWORD, official_sernr="00002-00000007")
    assert info.value.status == 409 and "VoucherCode" in str(info.value)
    with pytest.raises(admin.SandboxAdminError) as info:
        admin.annul(real.url, password=PASSWORD, sernr=123)
    assert info.value.status == 404
    with pytest.raises(ValueError):
        real.annul(official_sernr="00002-00000099")
    assert [r["Invalid"] for r in real.invoices()] == [0, 0]


def test_filters_equality_ranges_numbers_and_paging(sandbox):
    headers = login(sandbox)
    for number in range(1, 8):
        post(sandbox, invoice(number, TransDate=f"2025-01-0{number}", Status=number % 2), headers)
    window = get(sandbox, headers, TransDate__gte="2025-01-02", TransDate__lte="2025-01-05",
                 Status="1", __total_records__="1")
    assert [r["TransDate"] for r in window["data"]] == ["2025-01-03", "2025-01-05"]
    assert window["total_records"] == 2 and window["has_more"] is False
    first = sandbox.invoices()[0]["SerNr"]
    # SerNr compares as a number, not as text.
    numbers = get(sandbox, headers, SerNr__gte=str(first + 5))["data"]
    assert [r["SerNr"] for r in numbers] == [first + 5, first + 6]
    page = get(sandbox, headers, __limit__="3", __offset__="3", __total_records__="1")
    assert [r["OfficialSerNr"][-1] for r in page["data"]] == ["4", "5", "6"]
    assert page["has_more"] is True and page["total_records"] == 7
    bad = requests.get(api(sandbox, "Invoice"), params={"__limit__": "-1"}, headers=headers, timeout=5)
    assert (bad.status_code, bad.json()["error"]) == (400, "Invalid __limit__")


def test_ignore_filters_fault_lists_every_invoice_but_pages(sandbox):
    headers = login(sandbox)
    for number in range(1, 6):
        post(sandbox, invoice(number), headers)
    sandbox.set_faults(ignore_filters=True)
    answer = get(sandbox, headers, OfficialSerNr="0005-00000003", __limit__="2", __offset__="1")
    assert [r["OfficialSerNr"][-1] for r in answer["data"]] == ["2", "3"] and answer["has_more"]
    assert len(get(sandbox, headers, NoSuchField="x")["data"]) == 5
    admin.set_faults(sandbox.url, {"ignore_filters": False}, password=PASSWORD)
    assert get(sandbox, headers, NoSuchField="x")["data"] == []


def test_the_client_never_trusts_an_ignored_filter(make_sandbox):
    sandbox = make_sandbox(faults=Faults(ignore_filters=True))
    sandbox.load_invoices([seed_invoice(n, TransDate="2025-01-05" if n % 2 else "2025-01-06")
                           for n in range(1, 251)])
    with OppenClient(base_url=sandbox.url, api="ApiNg", username="API", password=PASSWORD,
                     timeout=5) as oppen:
        found = oppen.find_invoices("0005-00000240", trans_date="2025-01-06")
        assert [r["OfficialSerNr"] for r in found] == ["0005-00000240"]
        assert oppen.find_invoices("0005-00009999", trans_date="2025-01-06") == []
        assert oppen.find_invoices("00005-00000240") == []
        sandbox.load_invoices([seed_invoice(n) for n in range(1000, 3100)])
        with pytest.raises(OppenRejected):
            oppen.find_invoices("0005-00009999", trans_date="2025-01-05")


# ----- the stopped test instance ---------------------------------------------------------


def test_a_stopped_instance_answers_the_testing_framework_page_until_started(make_sandbox):
    sandbox = make_sandbox(stopped=True)
    auth = requests.post(api(sandbox, "authenticate"), json={"username": "API", "password": PASSWORD}, timeout=5)
    assert auth.status_code == 502 and auth.headers["Content-Type"].startswith("text/html")
    assert "Testing Framework" in auth.text and "nginx" not in auth.text
    assert requests.get(api(sandbox, "docs/"), timeout=5).status_code == 502
    assert requests.get(sandbox.url + "/", timeout=5).status_code == 200  # the sandbox's own page
    assert admin.stats(sandbox.url, password=PASSWORD)["stopped"] is True
    assert admin.start(sandbox.url, password=PASSWORD) == {"stopped": False}
    headers = login(sandbox)
    assert post(sandbox, invoice(), headers).status_code == 201
    assert admin.stop(sandbox.url, password=PASSWORD) == {"stopped": True}
    stopped = post(sandbox, invoice(2), headers)
    assert stopped.status_code == 502 and "Testing Framework" in stopped.text
    assert [e["outcome"] for e in sandbox.request_log()] == ["stopped", "authenticated", "stored", "stopped"]
    sandbox.start_instance()
    assert post(sandbox, invoice(2), headers).status_code == 201


def test_stopped_and_down_are_distinct(sandbox):
    headers = login(sandbox)
    sandbox.set_faults(down=True)
    assert "nginx" in post(sandbox, invoice(), headers).text
    sandbox.stop_instance()
    assert sandbox.instance_stopped
    assert "Testing Framework" in post(sandbox, invoice(), headers).text
    sandbox.start_instance()
    assert "nginx" in post(sandbox, invoice(), headers).text
    assert [e["outcome"] for e in sandbox.request_log()[-3:]] == ["down", "stopped", "down"]


def test_the_client_sees_a_stopped_instance_as_a_transport_error(make_sandbox):
    sandbox = make_sandbox(stopped=True)
    with OppenClient(base_url=sandbox.url, api="ApiNg", username="API", password=PASSWORD,
                     timeout=5) as oppen:
        with pytest.raises(OppenTransportError) as info:
            oppen.create_invoice(invoice())
        assert info.value.status == 502
        sandbox.start_instance()
        assert oppen.create_invoice(invoice())["OfficialSerNr"] == "0005-00001691"


# ----- invoices loaded by hand -------------------------------------------------------------


def test_loading_by_hand_assigns_sernr_applies_labels_and_is_not_a_post(make_sandbox):
    sandbox = make_sandbox(company="PERSEO")
    loaded = admin.load(sandbox.url, [seed_invoice(1, Labels="ALMF01"),
                                      seed_invoice(2, Labels="ALMF01,PERSEO", SerNr=77, Invalid=1)],
                        password=PASSWORD)
    assert [r["Labels"] for r in loaded] == ["ALMF01,PERSEO", "ALMF01,PERSEO"]
    assert loaded[0]["SerNr"] >= FIRST_ASSIGNED_SERNR and loaded[1]["SerNr"] == 77
    assert [r["Invalid"] for r in loaded] == [0, 1]
    assert sandbox.request_log() == []
    stats = admin.stats(sandbox.url, password=PASSWORD)
    assert (stats["invoices"], stats["loaded_by_hand"], stats["posted"], stats["annulled"]) == (2, 2, 0, 1)
    headers = login(sandbox)
    assert post(sandbox, invoice(3), headers).status_code == 201
    assert post(sandbox, invoice(1), headers).status_code == 409  # Oppen holds it, however it came
    assert admin.stats(sandbox.url, password=PASSWORD)["posted"] == 1
    assert admin.invoices(sandbox.url, password=PASSWORD) == sandbox.invoices()


def test_loading_by_hand_is_all_or_nothing(sandbox):
    sandbox.add_invoice(seed_invoice(5))
    for records, status in (([seed_invoice(6), seed_invoice(5)], 409),
                            ([seed_invoice(7), seed_invoice(7)], 409),
                            ([seed_invoice(8), {"OfficialSerNr": "8"}], 400),
                            ([seed_invoice(9), "x"], 400)):
        with pytest.raises(admin.SandboxAdminError) as info:
            admin.load(sandbox.url, records, password=PASSWORD)
        assert info.value.status == status and "Registro 2" in str(info.value)
        assert "No se cargó ningún registro" in str(info.value)
    assert [r["OfficialSerNr"] for r in sandbox.invoices()] == ["0005-00000005"]
    answer = requests.post(sandbox.url + "/__sandbox__/load", json={"records": [seed_invoice(6)]},
                           auth=("API", PASSWORD), timeout=5)
    assert answer.status_code == 200 and answer.json()["data"][0]["OfficialSerNr"] == "0005-00000006"


def test_annulments_and_origins_survive_a_restart(tmp_path):
    path = str(tmp_path / "oppen.jsonl")
    with OppenSandbox(password=PASSWORD, store_path=path) as first:
        first.load_invoices([seed_invoice(1)])
        post(first, invoice(2), login(first))
        first.annul(official_sernr="0005-00000002")
        before = first.invoices()
    with OppenSandbox(password=PASSWORD, store_path=path) as second:
        assert second.invoices() == before
        assert [r["Invalid"] for r in second.invoices()] == [0, 1]
        assert (second.stats()["loaded_by_hand"], second.stats()["posted"]) == (1, 1)
        assert post(second, invoice(2), login(second)).status_code == 409


# ----- the new faults --------------------------------------------------------------------


def test_empty_answer_is_a_2xx_that_stores_nothing(make_sandbox):
    sandbox = make_sandbox(faults=Faults(empty_answer_rate=1.0))
    answer = post(sandbox, invoice(), login(sandbox))
    assert (answer.status_code, answer.json()) == (201, {"ok": True, "data": {}})
    assert sandbox.invoices() == []
    assert sandbox.request_log()[-1]["outcome"] == "empty_answer"


def test_foreign_answer_carries_another_invoice_and_stores_nothing(sandbox):
    other = sandbox.add_invoice(seed_invoice(1))
    headers = login(sandbox)
    admin.set_faults(sandbox.url, {"foreign_answer_rate": 1.0}, password=PASSWORD)
    answer = post(sandbox, invoice(2), headers)
    assert (answer.status_code, answer.json()) == (201, {"ok": True, "data": other})
    assert [r["OfficialSerNr"] for r in sandbox.invoices()] == ["0005-00000001"]
    assert sandbox.request_log()[-1]["outcome"] == "foreign_answer"
    # Its own invoice is never the "foreign" one: with nothing else stored, an empty record.
    alone = post(sandbox, invoice(1), headers)
    assert alone.json() == {"ok": True, "data": {}}
    assert sandbox.request_log()[-1]["outcome"] == "empty_answer"


def test_a_trickling_answer_outlasts_a_per_read_timeout(sandbox):
    headers = login(sandbox)
    sandbox.set_faults(trickle_rate=1.0, trickle_ms=25)
    started = time.monotonic()
    # 39 bytes, one every 25 ms: each read is well inside 0.2 s, the whole takes ~1 s.
    answer = requests.get(api(sandbox, "Invoice"), headers=headers, timeout=0.2)
    elapsed = time.monotonic() - started
    assert answer.json() == {"ok": True, "data": [], "has_more": False}
    assert elapsed >= len(answer.content) * 0.025 * 0.9 > 0.2
    assert sandbox.request_log()[-1]["outcome"] == "trickled"


def test_a_trickled_post_stores_and_the_client_deadline_cuts_it(make_sandbox):
    sandbox = make_sandbox(faults=Faults(trickle_rate=1.0, trickle_ms=100))
    with OppenClient(base_url=sandbox.url, api="ApiNg", username="API", password=PASSWORD,
                     timeout=0.6) as oppen:
        started = time.monotonic()
        with pytest.raises(OppenTransportError) as info:
            oppen.create_invoice(invoice())
        assert time.monotonic() - started < 2.0
    assert info.value.maybe_applied is True
    assert [r["OfficialSerNr"] for r in sandbox.invoices()] == ["0005-00001691"]
    assert sandbox.request_log()[-1]["outcome"] == "trickled"


def test_new_fault_rates_are_checked_and_set_through_admin(sandbox):
    with pytest.raises(ValueError):
        Faults(trickle_rate=2)
    with pytest.raises(ValueError):
        Faults(ignore_filters="yes")
    changed = admin.set_faults(sandbox.url, {"empty_answer_rate": 0.5, "trickle_ms": 5,
                                             "validation_style": "real"}, password=PASSWORD)
    assert (changed["empty_answer_rate"], changed["trickle_ms"], changed["validation_style"]) == (0.5, 5, "real")
    assert sandbox.faults.empty_answer_rate == 0.5
    assert admin.get_faults(sandbox.url, password=PASSWORD) == changed
    for bad in ({"nope": 1}, {"error_rate": 7}, {"validation_style": "418"}, {"down": "si"}):
        with pytest.raises(admin.SandboxAdminError) as info:
            admin.set_faults(sandbox.url, bad, password=PASSWORD)
        assert info.value.status == 400
    assert sandbox.faults == Faults(**changed)


def test_old_seeded_fault_sequences_do_not_move(make_sandbox):
    """New fault bands sit after the old ones: a seeded run with only the old rates draws
    the same faults as the single-module sandbox did (sequence recorded from it)."""
    sandbox = make_sandbox(faults=Faults(error_rate=0.3, rate_limit_rate=0.2, drop_rate=0.1,
                                         timeout_rate=0.1, hang_seconds=0.01, seed=11))
    headers = login(sandbox)
    statuses = []
    for number in range(20):
        try:
            statuses.append(post(sandbox, invoice(number), headers, timeout=2).status_code)
        except requests.exceptions.ConnectionError:
            statuses.append("closed")
        if number % 3 == 0:
            statuses.append(requests.get(api(sandbox, "Invoice"), headers=headers, timeout=2).status_code)
    assert statuses == [
        429, 200, 201, 429, "closed", 200, 503, 201, 502, 503, 503, "closed", "closed", 502,
        "closed", 502, 502, 200, 429, 201, "closed", 200, 429, "closed", 429, 503, 201,
    ]


# ----- the repeat-POST counter ---------------------------------------------------------


def test_every_post_of_a_held_invoice_is_counted_whatever_the_answer(make_sandbox):
    sandbox = make_sandbox(profile="real", today=REAL_DAY)
    headers = login(sandbox)
    post(sandbox, real_invoice(1, "001"), headers)
    post(sandbox, real_invoice(1, "006"), headers)  # another invoice: not a repeat
    assert sandbox.repeat_posts() == {}
    post(sandbox, real_invoice(1, "001"), headers)  # duplicate
    sandbox.set_faults(error_rate=1.0)
    post(sandbox, real_invoice(1, "001"), headers)  # 5xx or 502, still a repeat
    sandbox.set_faults(error_rate=0.0)
    sandbox.stop_instance()
    post(sandbox, real_invoice(1, "006"), headers)  # answered by the stopped page
    sandbox.start_instance()
    post(sandbox, real_invoice(1, "006", DueDate="2026-01-01"), headers)  # rejected
    assert sandbox.repeat_posts() == {"00002-00000001 001/1": 2, "00002-00000001 006/1": 2}
    log = [e for e in sandbox.request_log() if e["method"] == "POST" and e["path"] == "Invoice"]
    assert [e["repeat"] for e in log] == [False, False, True, True, True, True]
    assert [e["voucher"] for e in log][:2] == ["001/1", "006/1"]
    stats = admin.stats(sandbox.url, password=PASSWORD)
    assert stats["repeat_posts"] == 4
    assert stats["repeat_posts_by_invoice"] == sandbox.repeat_posts()


def test_concurrent_identical_posts_count_every_repeat(sandbox):
    headers = login(sandbox)
    barrier = threading.Barrier(10)

    def send():
        barrier.wait()
        post(sandbox, invoice(), headers)

    threads = [threading.Thread(target=send) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sandbox.repeat_posts() == {"0005-00001691": 9}
    sandbox.reset()
    assert sandbox.repeat_posts() == {}


# ----- the admin endpoint ----------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, ("API", "wrong"), ("other", PASSWORD)])
def test_admin_needs_the_sandboxs_credentials(sandbox, auth):
    answer = requests.get(sandbox.url + "/__sandbox__/stats", auth=auth, timeout=5)
    assert answer.status_code == 401 and answer.json()["ok"] is False
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    with pytest.raises(admin.SandboxAdminError) as info:
        admin.stop(sandbox.url, password="wrong")
    assert info.value.status == 401 and "wrong" not in str(info.value)
    assert not sandbox.instance_stopped


def test_admin_refuses_a_bearer_token_forms_and_unknown_routes(sandbox):
    token = login(sandbox)
    assert requests.post(sandbox.url + "/__sandbox__/stop", headers=token, json={}, timeout=5).status_code == 401
    form = requests.post(sandbox.url + "/__sandbox__/stop", data={"x": "1"}, auth=("API", PASSWORD), timeout=5)
    assert form.status_code == 415 and not sandbox.instance_stopped
    assert requests.get(sandbox.url + "/__sandbox__/nothing", auth=("API", PASSWORD), timeout=5).status_code == 404
    assert requests.get(sandbox.url + "/__sandbox__/stop", auth=("API", PASSWORD), timeout=5).status_code == 405
    bad = requests.post(sandbox.url + "/__sandbox__/annul", data=b"{", auth=("API", PASSWORD),
                        headers={"Content-Type": "application/json"}, timeout=5)
    assert bad.status_code == 400


def test_admin_ignores_faults_and_stays_out_of_the_request_log(make_sandbox):
    sandbox = make_sandbox(faults=Faults(down=True, error_rate=1.0, latency_ms=1000))
    started = time.monotonic()
    assert admin.stats(sandbox.url, password=PASSWORD)["down"] is True
    admin.stop(sandbox.url, password=PASSWORD)
    admin.start(sandbox.url, password=PASSWORD)
    assert time.monotonic() - started < 1.0  # with the latency, one call alone takes 1 s
    assert sandbox.request_log() == []


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))  # no packet is sent for a UDP connect
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if is_loopback(address) else address


def test_admin_answers_only_loopback_clients(make_sandbox):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to call from")
    sandbox = make_sandbox(host="0.0.0.0")
    outside = f"http://{address}:{sandbox.port}"
    answer = requests.post(outside + "/__sandbox__/stop", json={}, auth=("API", PASSWORD), timeout=5)
    assert answer.status_code == 403 and not sandbox.instance_stopped
    local = requests.post(f"http://127.0.0.1:{sandbox.port}/__sandbox__/stop", json={},
                          auth=("API", PASSWORD), timeout=5)
    assert local.status_code == 200 and sandbox.instance_stopped


def test_loopback_check():
    assert is_loopback("127.0.0.1") and is_loopback("127.8.0.1") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not any(is_loopback(h) for h in ("192.0.2.2", "::ffff:192.0.2.2", "0.0.0.0", "x"))


def test_admin_client_only_talks_to_loopback():
    for url in ("https://ngprueba.oppen.io", "http://192.0.2.2:8765", "ftp://127.0.0.1:1"):
        with pytest.raises(admin.SandboxAdminError) as info:
            admin.stats(url, password="secret-pw")
        assert info.value.status is None and "secret-pw" not in str(info.value)


def test_admin_client_reports_a_sandbox_that_is_not_there():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(admin.SandboxAdminError) as info:
        admin.start(f"http://127.0.0.1:{port}", password="secret-pw", timeout=2)
    assert "No se pudo conectar" in str(info.value) and "secret-pw" not in str(info.value)
