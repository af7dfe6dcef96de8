"""The Oppen sandbox over real sockets: each test starts its own server on port 0."""

import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from helpers import seed_invoice
from sync.sandbox import FIRST_ASSIGNED_SERNR, Faults, OppenSandbox

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
