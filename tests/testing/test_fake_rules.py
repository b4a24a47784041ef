from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from amili_async.testing import FakeAmili, FakeCreditor

D = Decimal


def decoded(r: httpx.Response) -> Any:
    """The body with exact Decimals, the way a careful client reads money."""
    return json.loads(r.content, parse_float=Decimal)


async def pay(http: httpx.AsyncClient, headers: dict[str, str], payment, case: str, creditor: str, amount: str) -> Any:
    r = await http.post("/creditor--payments", json=payment(case, creditor, amount=amount), headers=headers)
    assert r.status_code == 201, r.text
    return decoded(r)


async def credit(http: httpx.AsyncClient, headers: dict[str, str], case: str, amount: str) -> Any:
    body = {"case": case, "amount": amount, "currency": "SEK", "origin": "creditor_system"}
    r = await http.post("/creditor--creditings", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return decoded(r)


async def cancel(http: httpx.AsyncClient, headers: dict[str, str], case: str, creditor: str) -> Any:
    body = {"case": case, "creditor": creditor, "origin": "creditor_system"}
    r = await http.post("/creditor--cancellations", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return decoded(r)


async def test_payment_receipt_and_stored_document(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers: dict[str, str], payment
) -> None:
    case = fake.add_case(cred.id, capital=D("1000.00"), invoice_number="INV-2025-003")
    body = payment(case, cred.id, amount=250.1, creditor_payment_reference="PAY-REF-001")
    r = await http.post("/creditor--payments", json=body, headers=headers)
    assert r.status_code == 201
    receipt = decoded(r)
    assert receipt["_status"] == "OK"
    assert receipt["_payment_status"] == "completed"
    assert receipt["status"] == "completed"
    assert receipt["status_reason_locale"] is None
    assert receipt["settled_amount"] == D("250.1")
    assert receipt["case_invoice_number"] == "INV-2025-003"
    assert receipt["case_reference_number"] == fake.get_case(case)["reference_number"]
    assert len(receipt["_id"]) == 24 and len(receipt["_etag"]) == 40
    assert receipt["_created"].endswith(" GMT") and receipt["_updated"] == receipt["_created"]
    assert receipt["_links"]["self"]["href"] == f"creditor--payments/{receipt['_id']}"
    assert r.headers["Location"] == f"{FakeAmili.BASE_URL}/creditor--payments/{receipt['_id']}"
    assert "ETag" not in r.headers

    stored = fake.payments[0]
    assert stored["creditor_payment_reference"] == "PAY-REF-001"
    assert stored["case"] == case and stored["account"] == cred.account
    assert stored["amount"] == D("250.1") and stored["settled_amount"] == D("250.1")
    assert stored["client_registration_date"] == receipt["_created"]

    item = await http.get(f"/creditor--payments/{receipt['_id']}", headers=headers)
    assert item.status_code == 200
    assert item.headers["ETag"] == f'"{receipt["_etag"]}"'
    assert decoded(item)["status"] == "completed"

    where = json.dumps({"creditor_payment_reference": "PAY-REF-001"})
    found = decoded(await http.get("/creditor--payments", params={"where": where}, headers=headers))
    assert [p["_id"] for p in found["_items"]] == [receipt["_id"]]


async def test_payment_settles_costs_then_interest_then_capital(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers: dict[str, str], payment
) -> None:
    case = fake.add_case(cred.id, capital=D("1000.00"), costs=D("60.00"), interest=D("15.50"))
    assert fake.get_case(case)["local_remaining_transaction_amount"] == D("1075.50")
    await pay(http, headers, payment, case, cred.id, "70.00")
    doc = fake.get_case(case)
    assert doc["local_remaining_costs_amount"] == 0
    assert doc["local_remaining_interest_amount"] == D("5.50")
    assert doc["local_remaining_capital_amount"] == D("1000.00")
    await pay(http, headers, payment, case, cred.id, "105.50")
    doc = fake.get_case(case)
    assert doc["local_remaining_interest_amount"] == 0
    assert doc["local_remaining_capital_amount"] == D("900.00")
    assert doc["total_remaining_capital_amount"] == D("900.00")
    assert doc["local_remaining_transaction_amount"] == D("900.00")
    assert doc["local_added_capital_amount"] == D("1000.00")
    assert not doc["closed"]
    assert [e["event"] for e in doc["history"]] == ["created", "creditor_payment", "creditor_payment"]


async def test_full_payment_closes_and_overpayment_warns(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers: dict[str, str], payment
) -> None:
    case = fake.add_case(cred.id, capital=D("300.00"))
    etag = fake.get_case(case)["_etag"]
    receipt = await pay(http, headers, payment, case, cred.id, "350.00")
    assert receipt["status"] == "warning"
    assert receipt["status_reason_locale"] == "creditor_payment.overpayment"
    assert receipt["settled_amount"] == D("300.00")
    doc = fake.get_case(case)
    assert doc["closed"] is True and doc["state"] == "closed" and doc["status"] == "closed"
    assert doc["state_history"][-1]["state"] == "closed"
    assert doc["history"][-1] == {"event": "closed", "date": doc["_updated"], "reason": "paid"}
    assert doc["_etag"] != etag

    again = await pay(http, headers, payment, case, cred.id, "10")
    assert (again["status"], again["settled_amount"], again["status_reason_locale"]) == (
        "error",
        0,
        "case.closed",
    )
    assert fake.payments[-1]["status"] == "error"


async def test_exact_payment_completes_and_closes(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers: dict[str, str], payment
) -> None:
    case = fake.add_case(cred.id, capital=D("300.00"))
    receipt = await pay(http, headers, payment, case, cred.id, "300.00")
    assert receipt["status"] == "completed"
    assert fake.get_case(case)["closed"] is True


async def test_crediting_reduces_capital_only(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    case = fake.add_case(cred.id, capital=D("500.00"), costs=D("60.00"))
    receipt = await credit(http, headers, case, "100.00")
    assert receipt["_crediting_status"] == "completed"
    assert (receipt["status"], receipt["settled_amount"]) == ("completed", D("100.00"))
    doc = fake.get_case(case)
    assert doc["local_remaining_capital_amount"] == D("400.00")
    assert doc["local_remaining_costs_amount"] == D("60.00")

    over = await credit(http, headers, case, "1000")
    assert over["status"] == "warning"
    assert over["status_reason_locale"] == "creditor_crediting.overcrediting"
    assert over["settled_amount"] == D("400.00")
    doc = fake.get_case(case)
    assert doc["local_remaining_capital_amount"] == 0
    assert doc["closed"] is False  # the costs are still owed


async def test_crediting_everything_closes_and_closed_case_refuses(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    case = fake.add_case(cred.id, capital=D("500.00"))
    await credit(http, headers, case, "500.00")
    assert fake.get_case(case)["closed"] is True
    refused = await credit(http, headers, case, "1")
    assert (refused["status"], refused["settled_amount"], refused["status_reason_locale"]) == (
        "error",
        0,
        "case.closed",
    )


async def test_cancellation(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers: dict[str, str], payment
) -> None:
    case = fake.add_case(cred.id)
    first = await cancel(http, headers, case, cred.id)
    assert first["_cancellation_status"] == "completed"
    assert first["status"] == "completed"
    assert "settled_amount" not in first
    doc = fake.get_case(case)
    assert doc["closed"] is True and doc["state"] == "closed"
    assert doc["history"][-1]["reason"] == "cancelled"
    updated = doc["_etag"]
    second = await cancel(http, headers, case, cred.id)
    assert second["status"] == "warning"
    assert second["status_reason_locale"] == "creditor_cancellation.case_already_closed"
    assert fake.get_case(case)["_etag"] == updated
    assert len(fake.cancellations) == 2
    late = await pay(http, headers, payment, case, cred.id, "5")
    assert late["status"] == "error"


async def test_case_found_by_invoice_number(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers: dict[str, str], payment
) -> None:
    case = fake.add_case(cred.id, capital=D("100"), invoice_number="INV-77")
    body = payment(None, cred.id, invoice_number="INV-77", amount="40")
    r = await http.post("/creditor--payments", json=body, headers=headers)
    assert r.status_code == 201
    assert decoded(r)["case_invoice_number"] == "INV-77"
    assert fake.payments[0]["case"] == case
    assert fake.payments[0]["invoice_number"] == "INV-77"
    assert fake.get_case(case)["local_remaining_capital_amount"] == D("60")


async def test_closed_on_creation(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers, payment
) -> None:
    case = fake.add_case(cred.id, closed=True)
    receipt = await pay(http, headers, payment, case, cred.id, "1")
    assert receipt["status"] == "error"


async def test_case_document_shape(fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers) -> None:
    case = fake.add_case(
        cred.id,
        capital="300",
        customer_name="Sven Svensson",
        due_date="Fri, 17 Oct 2025 00:00:00 GMT",
        state="reminder",
    )
    doc = decoded(await http.get(f"/cases/{case}", headers=headers))
    for key in (
        "creditor",
        "creditor_name",
        "customer",
        "customer_name",
        "customer_id_number",
        "reference_number",
        "currency",
        "state",
        "state_history",
        "status",
        "status_history",
        "closed",
        "debt",
        "local_added_capital_amount",
        "local_remaining_transaction_amount",
        "total_remaining_capital_amount",
        "due_date",
        "history",
    ):
        assert key in doc, key
    assert doc["customer_name"] == "Sven Svensson"
    assert doc["state"] == "reminder" and doc["closed"] is False
    assert doc["due_date"] == "Fri, 17 Oct 2025 00:00:00 GMT"
    assert doc["debt"]["capital_to_claim"] == D("300")
    assert doc["local_added_transaction_amount"] == D("300")
    assert doc == fake.cases[case]


async def test_case_registration(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers: dict[str, str], login
) -> None:
    body = {
        "account": cred.account,
        "creditor": cred.id,
        "first_action": "reminder",
        "currency": "SEK",
        "customer": {"name": "Test Company AB", "id_number": "5560269986", "is_company": True},
        "debts": [
            {
                "invoice_number": "INV-1",
                "invoice_date": "Mon, 16 Jun 2025 00:00:00 GMT",
                "capital_to_claim": 300,
            },
            {
                "invoice_number": "INV-2",
                "capital_to_claim": "125.50",
                "fees_already_claimed": {"reminder": {"amount": 60}},
            },
        ],
    }
    r = await http.post("/case--registrations", json=body, headers=headers)
    assert r.status_code == 201, r.text
    receipt = r.json()
    assert len(receipt["_cases"]) == 2 and len(receipt["_ocr_numbers"]) == 2
    first, second = (fake.get_case(c) for c in receipt["_cases"])
    assert receipt["_ocr_numbers_ocr"] == [first["reference_number"], second["reference_number"]]
    assert first["state"] == "reminder" and first["customer"] == second["customer"]
    assert first["customer_id_number"] == "5560269986"
    assert first["debt"]["invoice_date"] == "Mon, 16 Jun 2025 00:00:00 GMT"
    assert first["case_registration"] == receipt["_id"]
    assert second["local_remaining_costs_amount"] == 60
    assert second["local_remaining_transaction_amount"] == D("185.50")
    listed = await http.get("/case--registrations", headers=headers)
    assert listed.json()["_meta"]["total"] == 1

    stranger = fake.add_creditor(name="Stranger AB")
    other = await login(stranger)
    r = await http.post("/case--registrations", json=body, headers=other)
    assert r.status_code == 403


# -- respite -------------------------------------------------------------------------------------------


def respite_url(case: str) -> str:
    return f"/domain-actions/cases/respite/{case}"


async def test_respite_check_grant_and_history(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    case = fake.add_case(cred.id, due_date="Fri, 17 Oct 2025 00:00:00 GMT")
    check = await http.get(respite_url(case), headers=headers)
    assert (check.status_code, check.json()) == (200, {"issues": []})
    granted = await http.post(respite_url(case), json={"days": 14}, headers=headers)
    assert (granted.status_code, granted.json()) == (200, {})
    doc = fake.get_case(case)
    assert doc["due_date"] == "Fri, 31 Oct 2025 00:00:00 GMT"
    entry = doc["history"][-1]
    assert entry["event"] == "respite" and entry["days"] == 14 and entry["due_date"] == doc["due_date"]
    assert entry["date"] == doc["_updated"]
    # One respite per case by default.
    check = await http.get(respite_url(case), headers=headers)
    assert (check.status_code, check.json()) == (206, {"issues": ["respite.max_per_case_reached"]})
    refused = await http.post(respite_url(case), json={"days": 5}, headers=headers)
    assert refused.status_code == 422
    assert refused.json()["_status"] == "ERR"
    assert refused.json()["_issues"] == {"respite": ["respite.max_per_case_reached"]}
    assert refused.json()["_error"]["code"] == 422
    assert fake.get_case(case)["due_date"] == "Fri, 31 Oct 2025 00:00:00 GMT"


@pytest.mark.parametrize(
    ("state", "closed", "issue"),
    [
        ("debt_collection", False, "respite.debt_collection_started"),
        ("enforcement", False, "respite.debt_collection_started"),
        ("invoice", True, "respite.case_closed"),
    ],
)
async def test_respite_refused_by_state(
    fake: FakeAmili,
    cred: FakeCreditor,
    http: httpx.AsyncClient,
    headers,
    state: str,
    closed: bool,
    issue: str,
) -> None:
    case = fake.add_case(cred.id, state=state, closed=closed)
    check = await http.get(respite_url(case), headers=headers)
    assert (check.status_code, check.json()) == (206, {"issues": [issue]})
    refused = await http.post(respite_url(case), json={"days": 5}, headers=headers)
    assert refused.json()["_issues"] == {"respite": [issue]}


async def test_respite_per_customer_limit(fake: FakeAmili, http: httpx.AsyncClient, login) -> None:
    cred = fake.add_creditor(respite_max_per_customer=2, respite_max_per_case=5, respite_max_days=10)
    headers = await login(cred)
    customer = "65a000000000000000000001"
    cases = [fake.add_case(cred.id, customer_id=customer) for _ in range(3)]
    other_customer_case = fake.add_case(cred.id)
    for case in cases[:2]:
        assert (await http.post(respite_url(case), json={"days": 10}, headers=headers)).status_code == 200
    check = await http.get(respite_url(cases[2]), headers=headers)
    assert (check.status_code, check.json()) == (206, {"issues": ["respite.max_per_customer_reached"]})
    assert (await http.get(respite_url(other_customer_case), headers=headers)).status_code == 200
    # The per-case limit is 5 here, so the first case could take another one, but the customer cannot.
    again = await http.post(respite_url(cases[0]), json={"days": 1}, headers=headers)
    assert again.json()["_issues"] == {"respite": ["respite.max_per_customer_reached"]}


@pytest.mark.parametrize(
    ("days", "message"),
    [
        (0, "must be between 1 and 30"),
        (31, "must be between 1 and 30"),
        (True, "must be of integer type"),
        ("7", "must be of integer type"),
        (7.5, "must be of integer type"),
        (None, "required field"),
    ],
)
async def test_respite_days_validation(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers, days: object, message: str
) -> None:
    case = fake.add_case(cred.id)
    body = {} if days is None else {"days": days}
    r = await http.post(respite_url(case), json=body, headers=headers)
    assert r.status_code == 422
    assert r.json()["_issues"] == {"days": message}
    assert fake.get_case(case)["history"][-1]["event"] == "created"


async def test_respite_unknown_case_and_bad_body(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers
) -> None:
    assert (await http.get(respite_url("674dbeaf08847b9501cc9132"), headers=headers)).status_code == 404
    assert (await http.post(respite_url("nope"), json={"days": 1}, headers=headers)).status_code == 404
    case = fake.add_case(cred.id)
    r = await http.post(respite_url(case), content=b"days=1", headers=headers)
    assert r.status_code == 400
