"""Odd input (issue 11): every bad value is a `ValidationError` before anything is sent, with one message per
problem — never an `OverflowError`, `TypeError` or `ValueError` from inside the SDK, never a request.

The table feeds each odd value through the public client on the in-memory Amili and checks that the fake
received nothing at all (not even a token request).
"""

from __future__ import annotations

import asyncio
import decimal
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any

import pytest
from raw_server import RawServer, Seen, respond
from reliability_helpers import PAID_AT

from amili_async import AsyncAmiliClient, RetryPolicy, StaticTokenAuth
from amili_async.errors import UnprocessableEntityError, ValidationError
from amili_async.testing import FakeAmili

CASE = "68e4c40d93ee14723d28fa95"
CREDITOR = "674dbeb208847b9501cc9138"
PLUS_1 = timezone(timedelta(hours=1))
MINUS_5 = timezone(timedelta(hours=-5))


class BrokenZone(tzinfo):
    """A time zone written by someone else: its offset raises."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("tz database missing")


class DayLongZone(tzinfo):
    """A time zone whose offset is not an offset (a full day: datetime refuses it with ValueError)."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=25)


def pay(**changes: Any) -> Callable[[Any], Any]:
    kwargs: dict[str, Any] = dict(
        creditor=CREDITOR,
        case=CASE,
        amount=Decimal("10.00"),
        currency="SEK",
        bank_transaction_date=PAID_AT,
        creditor_payment_reference="PAY-ODD-1",
    )
    kwargs.update(changes)
    kwargs = {k: v for k, v in kwargs.items() if v is not _DROP}
    return lambda amili: amili.creditor_payments.create(**kwargs)


def credit(**changes: Any) -> Callable[[Any], Any]:
    kwargs: dict[str, Any] = dict(case=CASE, amount=Decimal("5.00"), currency="SEK", creditor_reference="CRED-1")
    kwargs.update(changes)
    kwargs = {k: v for k, v in kwargs.items() if v is not _DROP}
    return lambda amili: amili.creditor_creditings.create(**kwargs)


def narrow_context(amount: Decimal) -> Callable[[Any], Any]:
    """The caller's thread runs with 3 significant digits: the SDK's checks must not depend on it."""

    async def call(amili: Any) -> Any:
        with decimal.localcontext(decimal.Context(prec=3)):
            return await pay(amount=amount)(amili)

    return call


_DROP = object()

ODD_INPUTS: list[tuple[str, str, Callable[[Any], Any]]] = [
    # amounts
    ("amount zero", "amount", pay(amount=Decimal("0"))),
    ("amount negative", "amount", pay(amount=Decimal("-1.00"))),
    ("amount minus zero", "amount", pay(amount=Decimal("-0"))),
    ("amount three decimals", "amount", pay(amount=Decimal("1.005"))),
    ("amount below a cent", "amount", pay(amount=Decimal("0.001"))),
    ("amount NaN", "amount", pay(amount=Decimal("NaN"))),
    ("amount signalling NaN", "amount", pay(amount=Decimal("sNaN"))),
    ("amount infinity", "amount", pay(amount=Decimal("Infinity"))),
    ("amount above 10^12", "amount", pay(amount=Decimal("1E+13"))),
    ("amount with a huge exponent", "amount", pay(amount=Decimal("1e999999"))),
    ("amount with a tiny exponent", "amount", pay(amount=Decimal("1e-999999"))),
    ("amount a float", "amount", pay(amount=10.5)),
    ("amount a str", "amount", pay(amount="100.00")),
    ("amount a bool", "amount", pay(amount=True)),
    ("amount None", "amount", pay(amount=None)),
    ("amount three decimals, narrow context", "amount", narrow_context(Decimal("12345.678"))),
    ("crediting amount a huge int", "amount", credit(amount=10**400)),
    # dates
    ("date before year 1 in UTC", "bank_transaction_date", pay(bank_transaction_date=datetime(1, 1, 1, tzinfo=PLUS_1))),
    (
        "date after 9999 in UTC",
        "bank_transaction_date",
        pay(bank_transaction_date=datetime(9999, 12, 31, 23, 0, tzinfo=MINUS_5)),
    ),
    (
        "registration date after 9999 in UTC",
        "client_registration_date",
        pay(client_registration_date=datetime.max.replace(tzinfo=MINUS_5)),
    ),
    ("date naive", "bank_transaction_date", pay(bank_transaction_date=datetime(2025, 10, 7))),
    ("date a date", "bank_transaction_date", pay(bank_transaction_date=date(2025, 10, 7))),
    ("date a str", "bank_transaction_date", pay(bank_transaction_date="2025-10-07")),
    ("date an epoch int", "bank_transaction_date", pay(bank_transaction_date=1_700_000_000)),
    (
        "date in a zone that raises",
        "bank_transaction_date",
        pay(bank_transaction_date=datetime(2025, 1, 1, tzinfo=BrokenZone())),
    ),
    (
        "date 25 hours off UTC",
        "bank_transaction_date",
        pay(bank_transaction_date=datetime(2025, 1, 1, tzinfo=DayLongZone())),
    ),
    # ids
    ("case upper-case hex", "case", pay(case=CASE.upper())),
    ("case 23 characters", "case", pay(case=CASE[:-1])),
    ("case with a newline", "case", pay(case=CASE + "\n")),
    ("case in full-width digits", "case", pay(case="\uff16\uff18" + CASE[2:])),
    ("case an int", "case", pay(case=int(CASE, 16))),
    ("creditor with a lone surrogate", "creditor", pay(creditor=CREDITOR[:-1] + "\ud800")),
    ("get with a path in the id", "case_id", lambda amili: amili.cases.get("../../authenticates/api-code")),
    ("get with a space before the id", "id", lambda amili: amili.creditor_payments.get(" " + CASE[1:])),
    ("respite for a bad case", "case", lambda amili: amili.respite.grant(CASE[:-2] + "zz", days=5)),
    # text (identifiers)
    ("reference with NUL", "creditor_payment_reference", pay(creditor_payment_reference="PAY\x00-1")),
    ("reference with a newline", "creditor_payment_reference", pay(creditor_payment_reference="PAY\n-1")),
    ("reference with C1 NEL", "creditor_payment_reference", pay(creditor_payment_reference="PAY\x85-1")),
    ("reference with C1 CSI", "creditor_payment_reference", pay(creditor_payment_reference="PAY\x9b31m")),
    ("reference with U+2028", "creditor_payment_reference", pay(creditor_payment_reference="PAY\u2028-1")),
    ("reference with U+2029", "creditor_payment_reference", pay(creditor_payment_reference="PAY\u2029-1")),
    ("reference with a bidi override", "creditor_payment_reference", pay(creditor_payment_reference="PAY-\u202e1-YAP")),
    (
        "reference with a bidi isolate",
        "creditor_payment_reference",
        pay(creditor_payment_reference="\u2066PAY-1\u2069"),
    ),
    ("reference with a zero-width space", "creditor_payment_reference", pay(creditor_payment_reference="PAY\u200b-1")),
    ("reference with a BOM", "creditor_payment_reference", pay(creditor_payment_reference="\ufeffPAY-1")),
    ("reference with a lone surrogate", "creditor_payment_reference", pay(creditor_payment_reference="PAY-\udc80")),
    ("reference with a leading space", "creditor_payment_reference", pay(creditor_payment_reference=" PAY-1")),
    ("reference with a trailing space", "creditor_payment_reference", pay(creditor_payment_reference="PAY-1 ")),
    ("reference with a trailing NBSP", "creditor_payment_reference", pay(creditor_payment_reference="PAY-1\u00a0")),
    ("reference empty", "creditor_payment_reference", pay(creditor_payment_reference="")),
    ("reference blank", "creditor_payment_reference", pay(creditor_payment_reference="   ")),
    ("reference 256 characters", "creditor_payment_reference", pay(creditor_payment_reference="R" * 256)),
    ("reference bytes", "creditor_payment_reference", pay(creditor_payment_reference=b"PAY-1")),
    ("invoice number with DEL", "invoice_number", pay(case=None, invoice_number="INV\x7f1")),
    (
        "invoice number with an override",
        "invoice_number",
        credit(case=None, creditor=CREDITOR, invoice_number="\u202dINV"),
    ),
    ("credit invoice with a tab", "credit_invoice", credit(credit_invoice="CI\t1")),
    # currencies
    ("currency lower case", "currency", pay(currency="sek")),
    ("currency two letters", "currency", pay(currency="SE")),
    ("currency four letters", "currency", pay(currency="SEKK")),
    ("currency with a newline", "currency", pay(currency="SEK\n")),
    ("currency with a space", "currency", pay(currency=" SEK")),
    ("currency non-ASCII letters", "currency", pay(currency="ÅÄÖ")),
    ("currency full-width", "currency", pay(currency="\uff33\uff25\uff2b")),
    ("currency None", "currency", pay(currency=None)),
    ("currency a number", "currency", pay(currency=752)),
    # case identity, origin, respite days
    ("case and invoice number both", "case", pay(invoice_number="INV-1")),
    ("neither case nor invoice number", "case", pay(case=None)),
    ("invoice number without creditor", "creditor", credit(case=None, invoice_number="INV-1")),
    ("origin changed", "origin", pay(origin="somewhere_else")),
    ("respite zero days", "days", lambda amili: amili.respite.grant(CASE, days=0)),
    ("respite a year and a day", "days", lambda amili: amili.respite.grant(CASE, days=366)),
    ("respite days a float", "days", lambda amili: amili.respite.grant(CASE, days=1.5)),
    ("respite days a bool", "days", lambda amili: amili.respite.grant(CASE, days=True)),
    # lists and execute
    ("list max_results zero", "max_results", lambda amili: amili.cases.list(max_results=0)),
    ("list max_results 101", "max_results", lambda amili: amili.cases.list(max_results=101)),
    ("list where not a mapping", "where", lambda amili: amili.cases.list(where="customer=1")),
    ("list where with a lone surrogate", "where", lambda amili: amili.cases.list(where={"customer_name": "A\ud800"})),
    ("list where with a set", "where", lambda amili: amili.cases.list(where={"state": {"open"}})),
    ("list where with a non-str key", "where", lambda amili: amili.cases.list(where={1: "x"})),
    (
        "list where with a date after 9999 in UTC",
        "where",
        lambda amili: amili.cases.list(where={"_created": datetime.max.replace(tzinfo=MINUS_5)}),
    ),
    ("list sort with a newline", "sort", lambda amili: amili.cases.list(sort="-_created\nX-Injected: 1")),
    ("list limit negative", "limit", lambda amili: amili.cases.list(limit=-1)),
    ("list limit a str", "limit", lambda amili: amili.cases.list(limit="10")),
    ("list max_pages zero", "max_pages", lambda amili: amili.cases.list(max_pages=0)),
    ("execute a dict", "action", lambda amili: amili.execute({"amount": "10.00"})),
    ("execute None", "action", lambda amili: amili.execute(None)),
]


def test_the_table_is_big_enough_and_every_kind_is_in_it():
    assert len(ODD_INPUTS) >= 40
    fields = {field for _, field, _ in ODD_INPUTS}
    assert {"amount", "bank_transaction_date", "case", "creditor_payment_reference", "currency"} <= fields


@pytest.mark.parametrize("name, field, call", ODD_INPUTS, ids=[name for name, _, _ in ODD_INPUTS])
async def test_an_odd_input_is_a_validation_error_and_nothing_is_sent(name, field, call):
    fake = FakeAmili(seed=3)
    creditor = fake.add_creditor()
    async with fake.client(creditor, retry=RetryPolicy.no_delay()) as amili:
        with pytest.raises(ValidationError) as caught:
            result = call(amili)
            if asyncio.iscoroutine(result):
                await result
    err = caught.value
    assert type(err) is ValidationError  # raised here, not a 422 from Amili
    assert err.status_code is None
    assert fake.requests == []  # not one request, not even for a token
    assert list(err.issues) == [field], err.issues
    text = str(err)
    for problem in err.issues[field]:
        assert text.count(problem) == 1, text  # one message per problem, said once
    assert len(text) < 400


def test_a_validation_error_says_each_problem_once():
    from amili_async.models.actions import CreditorPayment

    with pytest.raises(ValidationError) as caught:
        CreditorPayment(
            creditor=CREDITOR, case=CASE, amount=Decimal("0"), currency="SEK", bank_transaction_date=PAID_AT
        )
    assert str(caught.value) == "amount: must be greater than zero, got 0"


def test_odd_text_is_described_by_code_point_never_quoted():
    from amili_async.models.actions import CreditorPayment

    with pytest.raises(ValidationError) as caught:
        CreditorPayment(
            creditor=CREDITOR,
            case=CASE,
            amount=Decimal("1"),
            currency="SEK",
            bank_transaction_date=PAID_AT,
            creditor_payment_reference="SECRET-LOOKING\u202e",
        )
    assert "U+202E at position 14" in str(caught.value)
    assert "SECRET-LOOKING" not in str(caught.value)


async def test_a_422_that_repeats_an_issue_says_it_once():
    issue = "max length is 64"  # not a uniqueness refusal: that one is settled by a lookup (issue 9)

    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        body = {"_status": "ERR", "_issues": {"creditor_payment_reference": [issue, issue]}, "_error": issue}
        return await respond(writer, 422, body)

    async with RawServer(handler) as server:
        client = AsyncAmiliClient(auth=StaticTokenAuth("tok-odd-0001"), base_url=server.base_url)
        async with client as amili:
            with pytest.raises(UnprocessableEntityError) as caught:
                await pay()(amili)
    assert caught.value.issues == {"creditor_payment_reference": (issue,)}
    assert str(caught.value).count(issue) == 2  # the message, and the field's issue once: not three times
    assert len(server.requests) == 1


async def test_identifiers_with_ordinary_non_ascii_letters_still_go_through():
    fake = FakeAmili(seed=4)
    creditor = fake.add_creditor()
    case_id = fake.add_case(creditor.id, capital=Decimal("100.00"))
    async with fake.client(creditor, retry=RetryPolicy.no_delay()) as amili:
        receipt = await amili.creditor_payments.create(
            creditor=creditor.id,
            case=case_id,
            amount=Decimal("1.00"),
            currency="SEK",
            bank_transaction_date=datetime(1, 1, 1, 2, tzinfo=PLUS_1),  # still year 1 in UTC: fine
            creditor_payment_reference="Betalning Åsa Öberg \u2013 faktura 7",
        )
    assert receipt.id
    assert [p["creditor_payment_reference"] for p in fake.payments] == ["Betalning Åsa Öberg \u2013 faktura 7"]
