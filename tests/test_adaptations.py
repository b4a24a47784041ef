"""What the SDK learns at run time: a server clock far from ours, and a reference lookup Amili refuses.

Against the raw loopback server of tests/amili_like.py (it checks the login JWT's `exp` on its own clock and
stores payments), and the in-memory Amili with a skewed clock. The tests look at what the server received and
stored, not only at what the SDK said.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from decimal import Decimal
from email.utils import formatdate
from typing import Any

import jwt
import pytest
from amili_like import CASE, CREDITOR, AmiliLike, Behaviour

from amili_async import ApiCodeJwtAuth, AsyncAmiliClient, AuthenticationError, OutcomeUnknownError, RetryPolicy
from amili_async._clock import server_clock_offset
from amili_async._lookups import LookupSupport
from amili_async.auth import parse_token_answer
from amili_async.models.actions import CreditorPayment
from amili_async.testing import FakeAmili

API_CODE = "api-code-SECRET-skew"


def server(keys: Any, **behaviour: Any) -> AmiliLike:
    return AmiliLike(API_CODE, keys.public_pem, Behaviour(**behaviour))


def client_for(amili: AmiliLike, auth: ApiCodeJwtAuth) -> AsyncAmiliClient:
    return AsyncAmiliClient(auth=auth, base_url=amili.base_url, retry=RetryPolicy.no_delay())


def exp_ahead_of_server(amili: AmiliLike, signed: str) -> float:
    """How far the JWT's `exp` was ahead of the server's clock (measured now, a moment after it was sent)."""
    return float(jwt.decode(signed, options={"verify_signature": False})["exp"]) - amili.now()


# -- clock skew --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [1200.0, -1200.0])
async def test_a_server_clock_20_minutes_off_does_not_fail_logins(ec_keys: Any, offset: float) -> None:
    auth = ApiCodeJwtAuth(api_code=API_CODE, private_key=ec_keys.private_pem)
    with server(ec_keys, clock_offset=offset) as amili:
        async with client_for(amili, auth) as client:
            case = await client.cases.get(CASE)
        assert case.id == CASE
        assert len(amili.jwts) == 2 and len(amili.tokens) == 1  # refused once, then accepted
        assert abs(auth.clock.offset - offset) < 2
        assert 585 < exp_ahead_of_server(amili, amili.jwts[1]) <= 600  # on the server's clock, a bit shorter
        async with client_for(amili, auth) as second:  # what was learned stays with the credentials
            await second.cases.get(CASE)
        assert len(amili.jwts) == 3 and len(amili.tokens) == 2


async def test_a_close_clock_changes_nothing(ec_keys: Any) -> None:
    auth = ApiCodeJwtAuth(api_code=API_CODE, private_key=ec_keys.private_pem)
    with server(ec_keys, clock_offset=1.0) as amili:
        async with client_for(amili, auth) as client:
            await client.cases.get(CASE)
        assert len(amili.jwts) == 1 and auth.clock.offset == 0.0
        sent_exp = jwt.decode(amili.jwts[0], options={"verify_signature": False})["exp"]
        assert 595 <= sent_exp - time.time() <= 600


async def test_a_refusal_for_another_reason_is_not_retried(ec_keys: Any) -> None:
    auth = ApiCodeJwtAuth(api_code="not-our-code", private_key=ec_keys.private_pem)
    with server(ec_keys) as amili:
        async with client_for(amili, auth) as client:
            with pytest.raises(AuthenticationError):
                await client.cases.get(CASE)
        assert len(amili.jwts) == 1


async def test_a_refusal_with_a_skewed_clock_is_retried_once_only(ec_keys: Any) -> None:
    auth = ApiCodeJwtAuth(api_code="not-our-code", private_key=ec_keys.private_pem)
    with server(ec_keys, clock_offset=1200.0) as amili:
        async with client_for(amili, auth) as client:
            with pytest.raises(AuthenticationError):
                await client.cases.get(CASE)
        assert len(amili.jwts) == 2 and amili.tokens == []


async def test_the_in_memory_amili_shows_its_clock_and_the_sdk_follows_it() -> None:
    fake = FakeAmili(seed=1, clock=lambda: time.time() + 1200)
    creditor = fake.add_creditor()
    case = fake.add_case(creditor.id)
    async with fake.client(creditor, retry=RetryPolicy.no_delay()) as client:
        assert (await client.cases.get(case)).id == case
    assert fake.token_requests == 2 and fake.tokens_issued == 1


def test_absolute_expiry_times_are_read_on_the_server_clock() -> None:
    now = time.time()
    body = f'{{"token": "tok-1", "expires": "{formatdate(now + 1200 + 3600, usegmt=True)}"}}'.encode()
    skewed = parse_token_answer((200, {"Date": formatdate(now + 1200, usegmt=True)}, body))
    assert skewed.lifetime is not None and 3595 <= skewed.lifetime <= 3601
    undated = parse_token_answer((200, {}, body))
    assert undated.lifetime is not None and undated.lifetime > 4700  # no Date: our clock, as before


def test_the_server_clock_offset_needs_a_readable_date() -> None:
    now = 1_800_000_000.0
    assert server_clock_offset({}, now) is None
    assert server_clock_offset({"Date": "yesterday"}, now) is None
    assert server_clock_offset({"date": formatdate(now + 60, usegmt=True)}, now) == pytest.approx(60.5)
    assert server_clock_offset({"Date": formatdate(now - 60)}, now) == pytest.approx(-59.5)  # "-0000" form


# -- a refused lookup --------------------------------------------------------------------------------------


def payment(reference: str) -> CreditorPayment:
    return CreditorPayment(
        creditor=CREDITOR,
        case=CASE,
        amount=Decimal("10.00"),
        currency="SEK",
        bank_transaction_date=datetime(2025, 10, 7, tzinfo=timezone.utc),
        creditor_payment_reference=reference,
    )


def lookups(amili: AmiliLike) -> int:
    return sum(1 for r in amili.requests if r.method == "GET" and "where" in r.query)


async def test_a_refused_lookup_is_remembered_and_said(ec_keys: Any) -> None:
    auth = ApiCodeJwtAuth(api_code=API_CODE, private_key=ec_keys.private_pem)
    with server(ec_keys, where="refuse", drop_after_post=True) as amili:
        async with client_for(amili, auth) as client:
            with pytest.raises(OutcomeUnknownError, match="looking the write up"):
                await client.execute(payment("PAY-A"))
            assert lookups(amili) == 1
            with pytest.raises(OutcomeUnknownError) as second:
                await client.execute(payment("PAY-B"))
            with pytest.raises(OutcomeUnknownError):
                await client.with_options(timeout=10).execute(payment("PAY-C"))  # views share what was learned
            assert lookups(amili) == 1  # not asked again
        async with client_for(amili, auth) as other:  # another client asks for itself
            with pytest.raises(OutcomeUnknownError, match="looking the write up"):
                await other.execute(payment("PAY-D"))
            assert lookups(amili) == 2
    message = str(second.value)
    assert "refused an earlier lookup by reference on /creditor--payments (400 on the where filter)" in message
    assert second.value.reference == "PAY-B"
    stored = [p["creditor_payment_reference"] for p in amili.payments]
    assert stored == ["PAY-A", "PAY-B", "PAY-C", "PAY-D"]  # each applied once: unknown, never resent


def test_only_a_refused_filter_is_remembered() -> None:
    support = LookupSupport()
    support.note_failure("/creditor--payments", 503)  # Amili down for a moment: worth trying again later
    support.note_failure("/creditor--payments", None)
    assert support.refusal("/creditor--payments") is None
    support.note_failure("/creditor--creditings", 400)
    assert support.refusal("/creditor--payments") is None
    assert "400 on the where filter" in (support.refusal("/creditor--creditings") or "")
