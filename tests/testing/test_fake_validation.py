from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from amili_async.testing import FakeAmili, FakeCreditor

PAYMENTS = "/creditor--payments"
INSERTION_FAILURE = {"code": 422, "message": "Insertion failure: 1 document(s) contain(s) error(s)"}


@pytest.fixture
def case(fake: FakeAmili, cred: FakeCreditor) -> str:
    return fake.add_case(cred.id, invoice_number="INV-1")


async def issues_of(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["_status"] == "ERR"
    assert body["_error"] == INSERTION_FAILURE
    issues: dict[str, Any] = body["_issues"]
    return issues


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"surprise": 1}, "surprise", "unknown field"),
        ({"currency": None}, "currency", "required field"),
        ({"amount": None}, "amount", "required field"),
        ({"bank_transaction_date": None}, "bank_transaction_date", "required field"),
        ({"origin": None}, "origin", "required field"),
        ({"creditor": None}, "creditor", "required field"),
        ({"origin": "manual"}, "origin", "unallowed value manual"),
        ({"currency": "EUR"}, "currency", "unallowed value EUR"),
        ({"amount": True}, "amount", "must be of number type"),
        ({"amount": "12,50"}, "amount", "must be of number type"),
        ({"amount": 0}, "amount", "must be greater than 0"),
        ({"amount": "-5"}, "amount", "must be greater than 0"),
        (
            {"bank_transaction_date": "2025-10-07T08:15:30Z"},
            "bank_transaction_date",
            "must be of datetime type",
        ),
        ({"client_registration_date": "2025-10-07"}, "client_registration_date", "must be of datetime type"),
        ({"creditor_payment_reference": 42}, "creditor_payment_reference", "must be of string type"),
        ({"case": "674DBEAF08847B9501CC9132"}, "case", "value must be an ObjectId"),
        ({"creditor": "abc"}, "creditor", "value must be an ObjectId"),
        ({"account": "674dbeaf08847b9501cc9132"}, "account", "field is read-only"),
        (
            {"creditor_payment_reference": None, "case": None},
            "case",
            "required field unless 'invoice_number' is given",
        ),
    ],
)
async def test_payment_field_rules(
    fake: FakeAmili,
    cred: FakeCreditor,
    case: str,
    http: httpx.AsyncClient,
    headers: dict[str, str],
    payment,
    change: dict[str, Any],
    field: str,
    message: str,
) -> None:
    r = await http.post(PAYMENTS, json=payment(case, cred.id, **change), headers=headers)
    assert (await issues_of(r)) == {field: message}
    assert fake.payments == []


async def test_several_messages_make_a_list(
    cred: FakeCreditor, case: str, http: httpx.AsyncClient, headers: dict[str, str], payment
) -> None:
    body = payment("NOT-AN-ID", cred.id, invoice_number="INV-1")
    issues = await issues_of(await http.post(PAYMENTS, json=body, headers=headers))
    assert issues["case"] == ["value must be an ObjectId", "must not be present with 'invoice_number'"]
    assert issues["invoice_number"] == "must not be present with 'case'"


async def test_case_and_invoice_number_exclude_each_other(
    cred: FakeCreditor, case: str, http: httpx.AsyncClient, headers: dict[str, str], payment
) -> None:
    body = payment(case, cred.id, invoice_number="INV-1")
    issues = await issues_of(await http.post(PAYMENTS, json=body, headers=headers))
    assert issues == {
        "case": "must not be present with 'invoice_number'",
        "invoice_number": "must not be present with 'case'",
    }


async def test_invoice_number_needs_creditor(case: str, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    body = {"invoice_number": "INV-1", "amount": 10, "currency": "SEK", "origin": "creditor_system"}
    issues = await issues_of(await http.post("/creditor--creditings", json=body, headers=headers))
    assert issues == {"creditor": "required field with 'invoice_number'"}


async def test_numeric_strings_are_numbers(
    fake: FakeAmili, cred: FakeCreditor, case: str, http: httpx.AsyncClient, headers: dict[str, str], payment
) -> None:
    r = await http.post(PAYMENTS, json=payment(case, cred.id, amount="12.50"), headers=headers)
    assert r.status_code == 201
    assert fake.payments[0]["amount"] == Decimal("12.50")


async def test_unknown_case_and_creditor(
    cred: FakeCreditor, http: httpx.AsyncClient, headers: dict[str, str], payment
) -> None:
    ghost = "674dbeaf08847b9501cc9132"
    issues = await issues_of(await http.post(PAYMENTS, json=payment(ghost, cred.id), headers=headers))
    assert issues == {"case": f"value '{ghost}' must exist in resource 'cases'"}
    issues = await issues_of(await http.post(PAYMENTS, json=payment(None, ghost, invoice_number="X"), headers=headers))
    assert issues == {"creditor": f"value '{ghost}' must exist in resource 'creditors'"}
    body = payment(None, cred.id, invoice_number="NO-SUCH")
    issues = await issues_of(await http.post(PAYMENTS, json=body, headers=headers))
    assert issues == {"invoice_number": "value 'NO-SUCH' must exist in resource 'cases' for this creditor"}


async def test_creditor_must_be_the_cases_creditor(
    fake: FakeAmili, cred: FakeCreditor, case: str, http: httpx.AsyncClient, headers: dict[str, str], payment
) -> None:
    sibling = fake.add_creditor(name="Sibling AB", account=cred.account)
    issues = await issues_of(await http.post(PAYMENTS, json=payment(case, sibling.id), headers=headers))
    assert issues == {"creditor": "does not match the creditor of the case"}


async def test_crediting_and_cancellation_fields(
    fake: FakeAmili, cred: FakeCreditor, case: str, http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    crediting = {"case": case, "amount": 10, "currency": "SEK", "origin": "creditor_system"}
    r = await http.post("/creditor--creditings", json=crediting, headers=headers)
    assert r.status_code == 201, r.text  # creditor may be omitted with case
    assert fake.creditings[0]["creditor"] == cred.id
    bad = {**crediting, "bank_transaction_date": "Tue, 07 Oct 2025 08:15:30 GMT"}
    issues = await issues_of(await http.post("/creditor--creditings", json=bad, headers=headers))
    assert issues == {"bank_transaction_date": "unknown field"}

    cancellation = {"case": case, "origin": "creditor_system", "amount": 1}
    issues = await issues_of(await http.post("/creditor--cancellations", json=cancellation, headers=headers))
    assert issues == {"amount": "unknown field", "creditor": "required field"}


@pytest.mark.parametrize("content", [b"", b"{oops", b"[1, 2]", b'"text"', b'{"amount": NaN}', b"\xff\xfe"])
async def test_bad_bodies_are_400(
    fake: FakeAmili, http: httpx.AsyncClient, headers: dict[str, str], content: bytes
) -> None:
    r = await http.post(PAYMENTS, content=content, headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["_status"] == "ERR"
    assert r.json()["_error"]["code"] == 400
    assert fake.requests[-1].json is None or content in (b"[1, 2]", b'"text"')


async def test_null_values(
    cred: FakeCreditor, case: str, http: httpx.AsyncClient, headers: dict[str, str], payment
) -> None:
    body = {**payment(case, cred.id), "creditor_payment_reference": None}
    issues = await issues_of(await http.post(PAYMENTS, json=body, headers=headers))
    assert issues == {"creditor_payment_reference": "null value not allowed"}


async def test_case_registration_validation(
    cred: FakeCreditor, http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    body = {
        "account": cred.account,
        "creditor": cred.id,
        "first_action": "lawsuit",
        "currency": "SEK",
        "customer": {"name": 5},
        "debts": [{"capital_to_claim": 100}, {"invoice_number": "A", "invoice_date": "2025-01-01"}],
    }
    issues = await issues_of(await http.post("/case--registrations", json=body, headers=headers))
    assert issues == {
        "first_action": "unallowed value lawsuit",
        "customer": {"name": "must be of string type"},
        "debts": {"1": {"invoice_date": "must be of datetime type", "capital_to_claim": "required field"}},
    }
    issues = await issues_of(await http.post("/case--registrations", json={**body, "debts": []}, headers=headers))
    assert issues["debts"] == "empty values not allowed"
