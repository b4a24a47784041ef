"""Resources: create/get/list of the case actions, respite check/grant, the case read model, receipts.

Reads and respite go through respx routes on the client's default transport: each route names the method and
path the SDK must use, and a request to anything else fails the test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amili_async import (
    AsyncAmiliClient,
    CancellationReceipt,
    Case,
    CreditingReceipt,
    CreditorCancellation,
    CreditorCrediting,
    CreditorPayment,
    NotFoundError,
    PaymentReceipt,
    RespiteCheck,
    RespiteGrant,
    RespiteNotAllowedError,
    RespiteReceipt,
    RetryPolicy,
    StaticTokenAuth,
    UnprocessableEntityError,
    serde,
)

CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68e4c40d93ee14723d28fa95"
RID = "68e4cb120da90297b3be0e01"
WHEN = datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc)
WHEN_WIRE = "Tue, 07 Oct 2025 08:15:30 GMT"

BASE = "https://amili.invalid"
RESPITE = f"/domain-actions/cases/respite/{CASE}"

pytestmark = pytest.mark.respx(base_url=BASE)

META = {"_id": RID, "_etag": "a1b2c3", "_created": WHEN_WIRE, "_updated": WHEN_WIRE, "_status": "OK"}


def answer(status: int, payload: Any) -> Any:
    return lambda request: httpx.Response(status, json=payload)


@pytest.fixture
async def client() -> AsyncIterator[AsyncAmiliClient]:
    """A client on its default transport: under `respx_mock`, respx answers every request it sends."""
    async with AsyncAmiliClient(
        auth=StaticTokenAuth("tok-static-123456"), base_url=BASE, retry=RetryPolicy.no_delay()
    ) as amili:
        yield amili


# -- create --------------------------------------------------------------------------------------------------


async def test_payment_receipt(make_client):
    client, _ = make_client(
        answer(
            201,
            {
                **META,
                "_payment_status": "completed",
                "settled_amount": 250.1,
                "status": "warning",
                "status_reason_locale": "payment.overpaid",
                "case_invoice_number": "INV-1",
                "case_reference_number": "1234",
                "_links": {"self": {"href": f"creditor--payments/{RID}"}},
            },
        )
    )
    receipt = await client.creditor_payments.create(
        creditor=CREDITOR, case=CASE, amount=Decimal("250.10"), currency="SEK", bank_transaction_date=WHEN
    )
    assert isinstance(receipt, PaymentReceipt)
    assert receipt.id == RID
    assert receipt.etag == "a1b2c3"
    assert receipt.created == WHEN and receipt.updated == WHEN
    assert receipt.created.tzinfo is not None
    assert receipt.eve_status == "OK"
    assert receipt.payment_status == "completed"
    assert receipt.settled_amount == Decimal("250.1")
    assert str(receipt.settled_amount) == "250.1"
    assert receipt.status == "warning"
    assert receipt.applied  # a warning was still applied
    assert receipt.status_reason_locale == "payment.overpaid"
    assert receipt.case_invoice_number == "INV-1"
    assert receipt.case_reference_number == "1234"
    assert receipt.extra == {"_links": {"self": {"href": f"creditor--payments/{RID}"}}}


async def test_crediting_receipt_reads_either_status_key(make_client):
    client, _ = make_client(answer(201, {**META, "_crediting_status": "completed", "status": "error"}))
    receipt = await client.creditor_creditings.create(case=CASE, amount=Decimal("100"), currency="SEK")
    assert isinstance(receipt, CreditingReceipt)
    assert receipt.crediting_status == "completed"
    assert not receipt.applied
    client, _ = make_client(answer(201, {**META, "_payment_status": "completed"}))  # as the docs' table says
    receipt = await client.creditor_creditings.create(case=CASE, amount=Decimal("100"), currency="SEK")
    assert receipt.crediting_status == "completed"


async def test_cancellation_receipt(make_client):
    client, _ = make_client(answer(201, {**META, "_cancellation_status": "completed", "status": "completed"}))
    receipt = await client.creditor_cancellations.create(creditor=CREDITOR, case=CASE)
    assert isinstance(receipt, CancellationReceipt)
    assert receipt.cancellation_status == "completed"
    assert receipt.id == RID


async def test_receipts_accept_iso_8601_dates(make_client):
    client, _ = make_client(
        answer(201, {"_id": RID, "_created": "2025-10-07T08:15:30Z", "_updated": "2025-10-07T10:15:30+02:00"})
    )
    receipt = await client.creditor_cancellations.create(creditor=CREDITOR, case=CASE)
    assert receipt.created == WHEN
    assert receipt.updated == WHEN
    assert receipt.updated.utcoffset() is not None


async def test_a_201_without_an_id_is_a_decode_error(make_client):
    from amili_async import ResponseDecodeError

    client, _ = make_client(answer(201, {"_status": "OK"}))
    with pytest.raises(ResponseDecodeError):
        await client.creditor_cancellations.create(creditor=CREDITOR, case=CASE)


@pytest.mark.parametrize(
    ("action", "receipt_type", "path"),
    [
        (
            CreditorPayment(
                creditor=CREDITOR, case=CASE, amount=Decimal("1"), currency="SEK", bank_transaction_date=WHEN
            ),
            PaymentReceipt,
            "/creditor--payments",
        ),
        (
            CreditorCrediting(case=CASE, amount=Decimal("1"), currency="SEK"),
            CreditingReceipt,
            "/creditor--creditings",
        ),
        (CreditorCancellation(creditor=CREDITOR, case=CASE), CancellationReceipt, "/creditor--cancellations"),
    ],
)
async def test_execute_returns_the_right_receipt(make_client, action, receipt_type, path):
    client, transport = make_client(answer(201, META))
    receipt = await client.execute(action)
    assert type(receipt) is receipt_type
    assert receipt.id == RID
    (request,) = transport.api_requests
    assert request.url.path == path
    assert json.loads(request.content) == json.loads(serde.dumps(serde.converter().unstructure(action)))


async def test_execute_respite_grant(make_client):
    client, transport = make_client(answer(200, {}))
    receipt = await client.execute(RespiteGrant(case=CASE, days=14))
    assert receipt == RespiteReceipt(case=CASE, days=14)
    assert transport.api_requests[0].content == b'{"days":14}'


async def test_errors_from_execute_carry_the_action_and_reference(make_client):
    client, _ = make_client(answer(404, {"_status": "ERR", "_error": {"code": 404, "message": "not found"}}))
    action = CreditorCrediting(case=CASE, amount=Decimal("1"), currency="SEK", creditor_reference="CR-9")
    with pytest.raises(NotFoundError) as info:
        await client.execute(action)
    assert info.value.action is action
    assert info.value.reference == "CR-9"


# -- get and list --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "path", "cls"),
    [
        ("creditor_payments", "/creditor--payments", PaymentReceipt),
        ("creditor_creditings", "/creditor--creditings", CreditingReceipt),
        ("creditor_cancellations", "/creditor--cancellations", CancellationReceipt),
    ],
)
async def test_get_and_list(client, respx_mock, resource, path, cls):
    document = {**META, "creditor": CREDITOR, "_case": CASE, "amount": 12.5, "origin": "creditor_system"}
    if cls is CancellationReceipt:
        del document["amount"]
    one = respx_mock.get(f"{path}/{RID}").respond(200, json=document)
    page = {"_items": [document], "_meta": {"page": 1, "max_results": 25, "total": 1}}
    many = respx_mock.get(path).respond(200, json=page)
    got = await getattr(client, resource).get(RID)
    assert type(got) is cls
    assert got.id == RID
    assert got.case == CASE
    assert got.creditor == CREDITOR
    assert got.extra["origin"] == "creditor_system"
    if cls is not CancellationReceipt:
        assert got.amount == Decimal("12.5")
    listed = [item async for item in getattr(client, resource).list(where={"case": CASE})]
    assert listed == [got]
    assert one.call_count == many.call_count == 1
    assert json.loads(many.calls.last.request.url.params["where"]) == {"case": CASE}


async def test_get_unknown_id_is_not_found(client, respx_mock):
    respx_mock.get(f"/creditor--payments/{RID}").respond(
        404, json={"_status": "ERR", "_error": {"code": 404, "message": "Not Found"}}
    )
    with pytest.raises(NotFoundError):
        await client.creditor_payments.get(RID)


# -- respite -------------------------------------------------------------------------------------------------


async def test_respite_check_allowed(client, respx_mock):
    respx_mock.get(RESPITE).respond(200, json={})
    assert await client.respite.check(CASE) == RespiteCheck(allowed=True, issues=())


async def test_respite_check_allowed_with_an_empty_body(client, respx_mock):
    respx_mock.get(RESPITE).respond(200)
    assert await client.respite.check(CASE) == RespiteCheck(allowed=True, issues=())


@pytest.mark.parametrize(
    ("body", "issues"),
    [
        (
            {"issues": ["Case is in debt collection", "Max respites reached"]},
            ("Case is in debt collection", "Max respites reached"),
        ),
        (
            {"issues": [{"code": "state", "message": "Case is in debt collection"}, {"code": "limit"}]},
            ("Case is in debt collection", "limit"),
        ),
        ({"_issues": {"days": "limit reached"}}, ("limit reached",)),
        ({"issues": "not allowed"}, ("not allowed",)),
        ({}, ()),
    ],
)
async def test_respite_check_refused_with_206(client, respx_mock, body, issues):
    route = respx_mock.get(RESPITE).respond(206, json=body)
    check = await client.respite.check(CASE)
    assert check == RespiteCheck(allowed=False, issues=issues)
    assert route.call_count == 1


async def test_respite_check_on_unknown_case(client, respx_mock):
    respx_mock.get(RESPITE).respond(404, json={"_status": "ERR", "_error": {"code": 404, "message": "Not Found"}})
    with pytest.raises(NotFoundError):
        await client.respite.check(CASE)


async def test_respite_grant_ok(client, respx_mock):
    route = respx_mock.post(RESPITE, json={"days": 14}).respond(200, json={})
    receipt = await client.respite.grant(CASE, days=14)
    assert receipt == RespiteReceipt(case=CASE, days=14)
    assert route.call_count == 1


@pytest.mark.parametrize("status", [200, 204])
async def test_respite_grant_ok_with_empty_body_or_204(client, respx_mock, status):
    respx_mock.post(RESPITE, json={"days": 1}).respond(status)
    assert await client.respite.grant(CASE, days=1) == RespiteReceipt(case=CASE, days=1)


async def test_respite_grant_refused_with_206(client, respx_mock):
    route = respx_mock.post(RESPITE).respond(206, json={"issues": ["Case is in debt collection"]})
    with pytest.raises(RespiteNotAllowedError) as info:
        await client.respite.grant(CASE, days=14)
    err = info.value
    assert err.status_code == 206
    assert [m for ms in err.issues.values() for m in ms] == ["Case is in debt collection"]
    assert err.reference == CASE
    assert isinstance(err.action, RespiteGrant)
    assert route.call_count == 1, "a refusal is not retried"


async def test_respite_grant_refused_with_422_issues(client, respx_mock):
    body = {
        "_status": "ERR",
        "_issues": {"days": "max value is 30"},
        "_error": {"code": 422, "message": "Insertion failure"},
    }
    respx_mock.post(RESPITE, json={"days": 45}).respond(422, json=body)
    with pytest.raises(RespiteNotAllowedError) as info:
        await client.respite.grant(CASE, days=45)
    assert info.value.status_code == 422
    assert info.value.issues == {"days": ("max value is 30",)}
    assert isinstance(info.value.__cause__, UnprocessableEntityError)


# -- the case read model -------------------------------------------------------------------------------------

CASE_DOC = {
    "_id": CASE,
    "_etag": "e1",
    "_created": WHEN_WIRE,
    "_updated": "2025-10-08T09:00:00Z",
    "creditor": CREDITOR,
    "creditor_name": "Acme AB",
    "customer": "674dbeaf08847b9501cc9132",
    "customer_name": "Sven Svensson",
    "customer_id_number": "198001011234",
    "customer_number": "C-77",
    "reference_number": "55512",
    "currency": "SEK",
    "state": "debt_collection",
    "status": "debt_collection_active",
    "closed": False,
    "due_date": "Mon, 16 Jun 2025 00:00:00 GMT",
    "debt": {"invoice_number": "INV-2025-003", "capital_to_claim": 300.0},
    "local_added_capital_amount": 300.0,
    "local_remaining_capital_amount": 49.9,
    "local_remaining_costs_amount": 180,
    "local_remaining_interest_amount": 0.07,
    "local_remaining_transaction_amount": 230.0,
    "total_remaining_capital_amount": 49.9,
    "state_history": [{"state": "invoice", "state_date": WHEN_WIRE}],
    "case_settings": {"interest_rate": {"reference_rate": True}},
}


async def test_cases_get(client, respx_mock):
    route = respx_mock.get(f"/cases/{CASE}").respond(200, json=CASE_DOC)
    case = await client.cases.get(CASE)
    assert route.call_count == 1
    assert isinstance(case, Case)
    assert case.id == CASE
    assert case.state == "debt_collection"
    assert case.status == "debt_collection_active"
    assert case.closed is False
    assert case.due_date == datetime(2025, 6, 16, tzinfo=timezone.utc)
    assert case.due_date.tzinfo is not None
    assert case.updated == datetime(2025, 10, 8, 9, tzinfo=timezone.utc)
    assert case.local_remaining_capital_amount == Decimal("49.9")
    assert case.local_remaining_costs_amount == Decimal("180")
    assert case.local_remaining_interest_amount == Decimal("0.07")
    assert case.remaining == Decimal("230.0")
    assert case.total_remaining_capital_amount == Decimal("49.9")
    for name in (
        "local_added_capital_amount",
        "local_remaining_capital_amount",
        "local_remaining_costs_amount",
    ):
        assert isinstance(getattr(case, name), Decimal)
    assert case.invoice_number == "INV-2025-003"
    assert case.extra == {
        "state_history": [{"state": "invoice", "state_date": WHEN_WIRE}],
        "case_settings": {"interest_rate": {"reference_rate": True}},
    }


async def test_case_repr_hides_customer_data(client, respx_mock):
    respx_mock.get(f"/cases/{CASE}").respond(200, json=CASE_DOC)
    case = await client.cases.get(CASE)
    text = repr(case)
    for secret in ("Sven", "198001011234", "C-77", "674dbeaf08847b9501cc9132", "INV-2025-003"):
        assert secret not in text
    assert "debt_collection" in text  # the useful, non-personal part is there


async def test_cases_list(client, respx_mock):
    route = respx_mock.get("/cases").respond(200, json={"_items": [CASE_DOC], "_meta": {"total": 1}})
    cases = [c async for c in client.cases.list(where={"closed": False}, sort="-_created")]
    assert [c.id for c in cases] == [CASE]
    assert route.call_count == 1
    params = route.calls.last.request.url.params
    assert params["sort"] == "-_created"
    assert json.loads(params["where"]) == {"closed": False}


# -- serialise -> parse round trips (property) ---------------------------------------------------------------

_ids = st.text("0123456789abcdef", min_size=24, max_size=24)
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
_money = st.decimals(min_value=Decimal("0"), max_value=Decimal(10**12), places=2)
_moment = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2999, 12, 31)).map(
    lambda d: d.replace(microsecond=0, tzinfo=timezone.utc)
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
_extra = st.dictionaries(st.text("abcdefgh", min_size=1, max_size=8).map(lambda k: "x_" + k), _json, max_size=4)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


_RECEIPT_BASE = dict(
    id=_ids,
    etag=_optional(st.text("0123456789abcdef", min_size=1, max_size=40)),
    created=_optional(_moment),
    updated=_optional(_moment),
    eve_status=_optional(st.sampled_from(["OK"])),
    status=_optional(st.sampled_from(["completed", "warning", "error"])),
    status_reason_locale=_optional(_text),
    case=_optional(_ids),
    creditor=_optional(_ids),
    case_invoice_number=_optional(_text),
    case_reference_number=_optional(_text),
    extra=_extra,
)
_AMOUNTS = dict(settled_amount=_optional(_money), amount=_optional(_money), currency=_optional(st.just("SEK")))
RECEIPTS = st.one_of(
    st.builds(
        PaymentReceipt,
        **_RECEIPT_BASE,
        **_AMOUNTS,
        payment_status=_optional(_text),
        creditor_payment_reference=_optional(_text),
    ),
    st.builds(
        CreditingReceipt,
        **_RECEIPT_BASE,
        **_AMOUNTS,
        crediting_status=_optional(_text),
        creditor_reference=_optional(_text),
    ),
    st.builds(CancellationReceipt, **_RECEIPT_BASE, cancellation_status=_optional(_text)),
)
_CASE_MONEY = {
    name: _optional(_money)
    for name in (
        "local_added_capital_amount",
        "local_added_costs_amount",
        "local_added_interest_amount",
        "local_added_transaction_amount",
        "local_remaining_capital_amount",
        "local_remaining_costs_amount",
        "local_remaining_interest_amount",
        "local_remaining_transaction_amount",
        "total_remaining_capital_amount",
    )
}
CASES = st.builds(
    Case,
    id=_ids,
    etag=_optional(_text),
    created=_optional(_moment),
    updated=_optional(_moment),
    creditor=_optional(_ids),
    creditor_name=_optional(_text),
    customer=_optional(_ids),
    customer_name=_optional(_text),
    customer_id_number=_optional(_text),
    customer_number=_optional(_text),
    reference_number=_optional(_text),
    currency=_optional(st.just("SEK")),
    state=_optional(st.sampled_from(["invoice", "reminder", "debt_collection"])),
    status=_optional(_text),
    closed=_optional(st.booleans()),
    due_date=_optional(_moment),
    debt=_optional(st.dictionaries(st.sampled_from(["invoice_number", "debt_reference"]), _text)),
    extra=_extra,
    **_CASE_MONEY,
)

_WIRE_NAMES = {
    "id": "_id",
    "etag": "_etag",
    "created": "_created",
    "updated": "_updated",
    "eve_status": "_status",
    "payment_status": "_payment_status",
    "crediting_status": "_crediting_status",
    "cancellation_status": "_cancellation_status",
}


def to_wire(model: Any) -> bytes:
    """What Amili would send for `model`: Eve meta names, RFC 1123 dates, JSON numbers, extra keys inline."""
    import attrs

    document: dict[str, Any] = {}
    for field in attrs.fields(type(model)):
        value = getattr(model, field.name)
        if field.name == "extra":
            document.update(value)
        elif value is not None and not field.metadata.get("local"):  # a receipt's provenance is not on the wire
            document[_WIRE_NAMES.get(field.name, field.name)] = value
    return serde.dumps(document)


@settings(max_examples=150, database=None)
@given(receipt=RECEIPTS)
def test_every_receipt_round_trips(receipt):
    parsed = serde.structure_document(serde.loads(to_wire(receipt)), type(receipt))
    assert parsed == receipt
    assert parsed.extra == receipt.extra


@settings(max_examples=150, database=None)
@given(case=CASES)
def test_case_round_trips(case):
    parsed = serde.structure_document(serde.loads(to_wire(case)), Case)
    assert parsed == case
    assert parsed.extra == case.extra
