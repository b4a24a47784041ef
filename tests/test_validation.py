"""Bad input is refused before anything is sent: a `ValidationError` naming the field, zero requests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amili_async import (
    AmiliError,
    CreditorCancellation,
    CreditorCrediting,
    CreditorPayment,
    RespiteGrant,
    ValidationError,
    serde,
)
from amili_async.models.receipts import PaymentReceipt

CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68e4c40d93ee14723d28fa95"
WHEN = datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc)

PAYMENT: dict[str, Any] = dict(
    creditor=CREDITOR, case=CASE, amount=Decimal("250.00"), currency="SEK", bank_transaction_date=WHEN
)
CREDITING: dict[str, Any] = dict(case=CASE, amount=Decimal("100"), currency="SEK")


def never(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"nothing should be sent, got {request.method} {request.url}")


async def refused(make_client, call, field: str) -> ValidationError:
    """Run `call(client)`, expect a ValidationError naming `field`, and check nothing was sent."""
    client, transport = make_client(never)
    with pytest.raises(ValidationError) as info:
        await call(client)
    assert transport.requests == [], "a request was sent for invalid input"
    err = info.value
    assert err.status_code is None
    assert err.attempts == 0
    assert field in str(err)
    assert field in err.issues
    return err


# -- ids -----------------------------------------------------------------------------------------------------

BAD_IDS = [
    "68E4C40D93EE14723D28FA95",  # upper case (Eve answers 404 to it)
    "68e4c40d93ee14723d28fa9",  # 23 characters
    "68e4c40d93ee14723d28fa955",  # 25
    "68e4c40d93ee14723d28fa9g",  # not hex
    "",
    " 68e4c40d93ee14723d28fa95",
    "68e4c40d93ee14723d28fa95\n",
    b"68e4c40d93ee14723d28fa95",
    0x68E4C40D93EE14723D28FA95,
    None,
]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_bad_ids_are_refused_everywhere(make_client, bad):
    await refused(make_client, lambda c: c.cases.get(bad), "case_id")
    await refused(make_client, lambda c: c.respite.check(bad), "case_id")
    await refused(make_client, lambda c: c.respite.grant(bad, days=3), "case")
    await refused(make_client, lambda c: c.creditor_payments.get(bad), "id")
    await refused(make_client, lambda c: c.creditor_creditings.get(bad), "id")
    await refused(make_client, lambda c: c.creditor_cancellations.get(bad), "id")
    if bad is not None:  # None means "not given" for the optional ones
        await refused(make_client, lambda c: c.creditor_payments.create(**{**PAYMENT, "case": bad}), "case")
        await refused(make_client, lambda c: c.creditor_creditings.create(**{**CREDITING, "case": bad}), "case")
        await refused(make_client, lambda c: c.creditor_cancellations.create(creditor=CREDITOR, case=bad), "case")
        await refused(make_client, lambda c: c.creditor_creditings.create(**{**CREDITING, "creditor": bad}), "creditor")
    await refused(make_client, lambda c: c.creditor_payments.create(**{**PAYMENT, "creditor": bad}), "creditor")
    await refused(make_client, lambda c: c.creditor_cancellations.create(creditor=bad, case=CASE), "creditor")


def test_bad_id_message_does_not_echo_a_long_value():
    with pytest.raises(ValidationError) as info:
        CreditorCancellation(creditor="x" * 10_000, case=CASE)
    assert len(str(info.value)) < 200


# -- case identity -------------------------------------------------------------------------------------------


async def test_both_case_and_invoice_number_refused(make_client):
    err = await refused(make_client, lambda c: c.creditor_payments.create(**PAYMENT, invoice_number="INV-1"), "case")
    assert "invoice_number" in str(err)
    await refused(make_client, lambda c: c.creditor_creditings.create(**CREDITING, invoice_number="I"), "case")
    await refused(
        make_client,
        lambda c: c.creditor_cancellations.create(creditor=CREDITOR, case=CASE, invoice_number="I"),
        "case",
    )


async def test_neither_case_nor_invoice_number_refused(make_client):
    no_case = {k: v for k, v in PAYMENT.items() if k != "case"}
    err = await refused(make_client, lambda c: c.creditor_payments.create(**no_case), "case")
    assert "invoice_number" in str(err)
    await refused(make_client, lambda c: c.creditor_creditings.create(amount=1, currency="SEK"), "case")
    await refused(make_client, lambda c: c.creditor_cancellations.create(creditor=CREDITOR), "case")


async def test_crediting_by_invoice_number_needs_creditor(make_client):
    err = await refused(
        make_client,
        lambda c: c.creditor_creditings.create(invoice_number="INV-1", amount=1, currency="SEK"),
        "creditor",
    )
    assert "invoice_number" in str(err)


# -- amounts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "why"),
    [
        (250.0, "float"),
        (0.1, "float"),
        (True, "bool"),
        (False, "bool"),
        (Decimal("-1"), "greater than zero"),
        (-5, "greater than zero"),
        (Decimal("0"), "greater than zero"),
        (Decimal("-0"), "greater than zero"),
        (0, "greater than zero"),
        (Decimal("0.00"), "greater than zero"),
        (Decimal("NaN"), "finite"),
        (Decimal("sNaN"), "finite"),
        (Decimal("Infinity"), "finite"),
        (Decimal("-Infinity"), "finite"),
        (Decimal("1.001"), "two decimals"),
        (Decimal("0.005"), "two decimals"),
        (Decimal("1000000000000.01"), "at most"),
        (10**12 + 1, "at most"),
        (Decimal("1E+13"), "at most"),
        ("250.00", "str"),
        (None, "NoneType"),
    ],
)
async def test_bad_amounts_refused(make_client, amount, why):
    err = await refused(make_client, lambda c: c.creditor_payments.create(**{**PAYMENT, "amount": amount}), "amount")
    assert why in str(err)
    await refused(make_client, lambda c: c.creditor_creditings.create(**{**CREDITING, "amount": amount}), "amount")


def test_float_message_says_why_and_how_to_fix():
    with pytest.raises(ValidationError) as info:
        CreditorPayment(**{**PAYMENT, "amount": 250.1})
    message = str(info.value)
    assert "float" in message
    assert "exactly" in message
    assert "Decimal('250.1')" in message


@pytest.mark.parametrize("amount", [Decimal("0.01"), Decimal("1"), 1, Decimal("1.5"), Decimal("1.000"), 10**12])
def test_good_amounts_accepted_as_decimal(amount):
    payment = CreditorPayment(**{**PAYMENT, "amount": amount})
    assert isinstance(payment.amount, Decimal)
    assert payment.amount == amount


# -- currency, days, dates, text, origin ---------------------------------------------------------------------


@pytest.mark.parametrize("currency", ["sek", "SE", "SEKK", "S3K", "", " SEK", "SEK\n", None, 752])
async def test_bad_currency_refused(make_client, currency):
    await refused(make_client, lambda c: c.creditor_payments.create(**{**PAYMENT, "currency": currency}), "currency")
    await refused(
        make_client, lambda c: c.creditor_creditings.create(**{**CREDITING, "currency": currency}), "currency"
    )


@pytest.mark.parametrize("days", [0, -1, True, False, 1.5, 14.0, "14", None, 366, 10**9])
async def test_bad_respite_days_refused(make_client, days):
    await refused(make_client, lambda c: c.respite.grant(CASE, days=days), "days")
    with pytest.raises(ValidationError):
        RespiteGrant(case=CASE, days=days)


async def test_naive_datetimes_refused(make_client):
    naive = datetime(2025, 10, 7, 8, 15, 30)
    err = await refused(
        make_client,
        lambda c: c.creditor_payments.create(**{**PAYMENT, "bank_transaction_date": naive}),
        "bank_transaction_date",
    )
    assert "timezone" in str(err)
    await refused(
        make_client,
        lambda c: c.creditor_payments.create(**PAYMENT, client_registration_date=naive),
        "client_registration_date",
    )
    await refused(
        make_client,
        lambda c: c.creditor_creditings.create(**CREDITING, client_registration_date=naive),
        "client_registration_date",
    )


@pytest.mark.parametrize("when", ["Tue, 07 Oct 2025 08:15:30 GMT", "2025-10-07", 1759824930, None])
async def test_non_datetime_dates_refused(make_client, when):
    await refused(
        make_client,
        lambda c: c.creditor_payments.create(**{**PAYMENT, "bank_transaction_date": when}),
        "bank_transaction_date",
    )


@pytest.mark.parametrize("text", ["PAY\nREF", "PAY\r\nX-Injected: 1", "A\x00B", "tab\there", "del\x7f", "", "   "])
async def test_control_characters_and_empty_text_refused(make_client, text):
    await refused(
        make_client,
        lambda c: c.creditor_payments.create(**PAYMENT, creditor_payment_reference=text),
        "creditor_payment_reference",
    )
    await refused(
        make_client,
        lambda c: c.creditor_creditings.create(**CREDITING, creditor_reference=text),
        "creditor_reference",
    )
    await refused(
        make_client,
        lambda c: c.creditor_creditings.create(**CREDITING, credit_invoice=text),
        "credit_invoice",
    )
    no_case = {k: v for k, v in PAYMENT.items() if k != "case"}
    await refused(
        make_client,
        lambda c: c.creditor_payments.create(**no_case, invoice_number=text),
        "invoice_number",
    )


async def test_overlong_text_refused(make_client):
    await refused(
        make_client,
        lambda c: c.creditor_payments.create(**PAYMENT, creditor_payment_reference="R" * 256),
        "creditor_payment_reference",
    )
    CreditorPayment(**PAYMENT, creditor_payment_reference="R" * 255)  # the limit itself is fine


@pytest.mark.parametrize("origin", ["amili", "CREDITOR_SYSTEM", "", None])
async def test_origin_other_than_creditor_system_refused(make_client, origin):
    await refused(make_client, lambda c: c.creditor_payments.create(**PAYMENT, origin=origin), "origin")
    await refused(make_client, lambda c: c.creditor_creditings.create(**CREDITING, origin=origin), "origin")
    await refused(
        make_client,
        lambda c: c.creditor_cancellations.create(creditor=CREDITOR, case=CASE, origin=origin),
        "origin",
    )


@pytest.mark.parametrize("max_results", [0, -1, 101, 1000, True, 2.5, "25"])
async def test_bad_page_size_refused_before_iterating(make_client, max_results):
    client, transport = make_client(never)
    for resource in (
        client.creditor_payments,
        client.creditor_creditings,
        client.creditor_cancellations,
        client.cases,
    ):
        with pytest.raises(ValidationError) as info:
            resource.list(max_results=max_results)
        assert "max_results" in str(info.value)
    assert transport.requests == []


def test_validation_errors_are_value_errors_and_amili_errors():
    with pytest.raises(ValueError):
        CreditorCrediting(case=CASE, amount=Decimal("-1"), currency="SEK")
    with pytest.raises(AmiliError):
        CreditorCrediting(case=CASE, amount=Decimal("-1"), currency="SEK")


def test_actions_are_frozen():
    payment = CreditorPayment(**PAYMENT)
    with pytest.raises(AttributeError):
        payment.amount = Decimal("1")  # type: ignore[misc]


# -- properties ----------------------------------------------------------------------------------------------

_places = st.sampled_from([0, 1, 2])
# Any Decimal with at most two places in (0, 10^12], written in any exponent form (250.10, 1E+3, 7).
AMOUNTS = st.one_of(
    _places.flatmap(lambda p: st.integers(1, 10 ** (12 + p)).map(lambda n: Decimal(n).scaleb(-p))),
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal(10**12), places=2),
    st.integers(1, 10**12).map(lambda n: Decimal(n).normalize()),
)


@settings(max_examples=300, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(amount=AMOUNTS)
def test_any_two_place_amount_is_accepted_and_round_trips_exactly(amount):
    payment = CreditorPayment(**{**PAYMENT, "amount": amount})
    wire = serde.dumps(serde.converter().unstructure(payment))
    # On the wire: a JSON number with the Decimal's own digits.
    assert b'"amount":' + format(amount, "f").encode() + b"," in wire
    sent = json.loads(wire, parse_float=Decimal, parse_int=Decimal)
    assert sent["amount"] == amount
    # And back through the SDK's own reading of an answer (via a double): still exact.
    receipt = serde.structure_document(
        serde.loads(serde.dumps({"_id": CASE, "amount": sent["amount"], "settled_amount": sent["amount"]})),
        PaymentReceipt,
    )
    assert receipt.amount == amount
    assert receipt.settled_amount == amount


@settings(max_examples=200, database=None)
@given(
    amount=AMOUNTS,
    offset_minutes=st.integers(-14 * 60, 14 * 60),
    moment=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2999, 12, 31)),
)
def test_any_aware_datetime_goes_out_as_its_gmt_rfc1123(amount, offset_minutes, moment):
    tz = timezone(timedelta(minutes=offset_minutes))
    when = moment.replace(microsecond=0, tzinfo=tz)
    payment = CreditorPayment(**{**PAYMENT, "amount": amount, "bank_transaction_date": when})
    wire = json.loads(serde.dumps(serde.converter().unstructure(payment)))
    text = wire["bank_transaction_date"]
    assert text.endswith(" GMT")
    assert datetime.strptime(text, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=timezone.utc) == when
