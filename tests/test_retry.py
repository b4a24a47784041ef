"""Retry basics: reads retry, writes never duplicate money, reconciliation, Retry-After, budget."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import anyio
import httpx
import pytest

from amili_async import (
    ConflictError,
    CreditorPayment,
    OutcomeUnknownError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TimeoutError,
    TransportError,
)
from amili_async.retry import retry_after_seconds
from amili_async.serde import format_rfc1123

CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68e4c40d93ee14723d28fa95"
RID = "68e4cb120da90297b3be0e01"
WHEN = datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc)
RECEIPT = {"_id": RID, "_status": "OK", "_payment_status": "completed"}


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await anyio.lowlevel.checkpoint()


def script(*steps: Any) -> Callable[[httpx.Request], httpx.Response]:
    """Answer the n-th API request with steps[n] (a Response, an exception to raise, or a callable)."""
    queue = list(steps)

    def handler(request: httpx.Request) -> httpx.Response:
        step = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            return step(request)
        return step

    return handler


def ok_case() -> httpx.Response:
    return httpx.Response(200, json={"_id": CASE})


def created() -> httpx.Response:
    return httpx.Response(201, json=RECEIPT)


def payment(**changes: Any) -> dict[str, Any]:
    return (
        dict(creditor=CREDITOR, case=CASE, amount=Decimal("250.00"), currency="SEK", bank_transaction_date=WHEN)
        | changes
    )


def methods(transport: Any) -> list[str]:
    return [r.method for r in transport.api_requests]


# -- reads ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503, content=b"busy"),
        httpx.Response(500, content=b"<html>oops</html>"),
        httpx.Response(502, content=b"bad gateway"),
        httpx.Response(504, content=b"timeout"),
        httpx.Response(429, json={"_status": "ERR"}),
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset"),
    ],
    ids=lambda f: f"{f.status_code}" if isinstance(f, httpx.Response) else type(f).__name__,
)
async def test_a_get_is_retried_until_it_succeeds(make_client, failure):
    client, transport = make_client(script(failure, failure, ok_case()))
    case = await client.cases.get(CASE)
    assert case.id == CASE
    assert len(transport.api_requests) == 3
    assert len(transport.token_requests) == 1


async def test_a_get_gives_up_after_max_attempts(make_client):
    client, transport = make_client(script(httpx.ReadTimeout("read timed out")))
    with pytest.raises(TimeoutError) as info:
        await client.cases.get(CASE)
    assert info.value.attempts == 3
    assert len(transport.api_requests) == 3


async def test_max_attempts_is_configurable(make_client):
    client, transport = make_client(
        script(httpx.Response(503, content=b"")), retry=RetryPolicy.no_delay(max_attempts=5)
    )
    with pytest.raises(ServerError) as info:
        await client.cases.get(CASE)
    assert info.value.attempts == 5
    assert len(transport.api_requests) == 5


async def test_backoff_is_full_jitter_and_grows(make_client):
    sleeps = Sleeps()
    policy = RetryPolicy.no_delay(sleep=sleeps, max_attempts=4, backoff_base=0.5, backoff_cap=8.0)
    client, _ = make_client(script(httpx.Response(503, content=b"")), retry=policy)
    with pytest.raises(ServerError):
        await client.cases.get(CASE)
    assert len(sleeps.calls) == 3
    for n, wait in enumerate(sleeps.calls, start=1):
        assert 0 <= wait <= 0.5 * 2 ** (n - 1)


async def test_a_tls_certificate_failure_is_never_retried(make_client):
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("certificate verify failed") from ssl.SSLCertVerificationError(
            1, "certificate verify failed"
        )

    client, transport = make_client(handler)
    with pytest.raises(TransportError):
        await client.cases.get(CASE)
    assert len(transport.api_requests) == 1


# -- writes that provably never arrived, or were refused before processing -----------------------------------


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ConnectTimeout("connect"), httpx.PoolTimeout("pool")],
    ids=lambda e: type(e).__name__,
)
async def test_a_post_is_retried_when_it_never_left(make_client, failure):
    client, transport = make_client(script(failure, created()))
    receipt = await client.creditor_payments.create(**payment())
    assert receipt.id == RID
    assert methods(transport) == ["POST", "POST"]
    first, second = transport.api_requests
    assert first.content == second.content


async def test_a_post_is_retried_after_429_honouring_retry_after(make_client):
    sleeps = Sleeps()
    throttled = httpx.Response(
        429,
        json={"_status": "ERR", "_error": {"code": 429, "message": "slow down"}},
        headers={"Retry-After": "3"},
    )
    client, transport = make_client(script(throttled, created()), retry=RetryPolicy.no_delay(sleep=sleeps))
    receipt = await client.creditor_payments.create(**payment())
    assert receipt.id == RID
    assert methods(transport) == ["POST", "POST"]
    (wait,) = sleeps.calls
    assert 3.0 <= wait <= 3.5  # the server's wait plus a little jitter, never less


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"X-RateLimit-Reset": "4"}, 4.0),
    ],
)
@pytest.mark.parametrize("status", [429, 503])
async def test_other_rate_limit_headers_are_honoured(make_client, headers, expected, status):
    sleeps = Sleeps()
    throttled = httpx.Response(status, json={"_status": "ERR"}, headers=headers)
    client, _ = make_client(script(throttled, ok_case()), retry=RetryPolicy.no_delay(sleep=sleeps))
    await client.cases.get(CASE)
    (wait,) = sleeps.calls
    assert expected <= wait <= expected + 0.5


def test_retry_after_seconds_forms():
    now = 1_800_000_000.0
    assert retry_after_seconds({"retry-after": "5"}, now) == 5.0
    assert retry_after_seconds({"retry-after": "-5"}, now) == 0.0
    date = format_rfc1123(datetime.fromtimestamp(now, timezone.utc) + timedelta(seconds=30))
    assert retry_after_seconds({"retry-after": date}, now) == pytest.approx(30.0)
    assert retry_after_seconds({"x-ratelimit-reset": str(int(now + 12))}, now) == pytest.approx(12.0)
    assert retry_after_seconds({"retry-after": "soon"}, now) is None
    assert retry_after_seconds({}, now) is None


async def test_a_long_retry_after_raises_at_once(make_client):
    sleeps = Sleeps()
    throttled = httpx.Response(
        429,
        json={"_status": "ERR", "_error": {"code": 429, "message": "Rate limit exceeded"}},
        headers={"Retry-After": "3600"},
    )
    client, transport = make_client(script(throttled, created()), retry=RetryPolicy.no_delay(sleep=sleeps))
    with pytest.raises(RateLimitError) as info:
        await client.creditor_payments.create(**payment())
    assert info.value.retry_after == 3600
    assert info.value.status_code == 429
    assert sleeps.calls == []
    assert len(transport.api_requests) == 1


# -- ambiguous writes ----------------------------------------------------------------------------------------

AMBIGUOUS = [
    httpx.ReadTimeout("read timed out"),
    httpx.RemoteProtocolError("Server disconnected without sending a response."),
    httpx.ReadError("connection reset by peer"),
    httpx.WriteTimeout("write timed out"),
    httpx.Response(500, content=b"<html>Internal Server Error</html>"),
    httpx.Response(502, content=b"<html>Bad Gateway</html>"),
    httpx.Response(503, content=b"<html>Service Unavailable</html>"),
    httpx.Response(504, content=b"<html>Gateway Timeout</html>"),
    httpx.Response(201, content=b"<html>not json</html>"),
]
AMBIGUOUS_IDS = [f"{a.status_code}" if isinstance(a, httpx.Response) else type(a).__name__ for a in AMBIGUOUS]
# The unreadable 201 (last) proves the write applied: it is never "unknown" and never "absent" (test_evidence.py).
UNPROVEN, UNPROVEN_IDS = AMBIGUOUS[:-1], AMBIGUOUS_IDS[:-1]


@pytest.mark.parametrize("failure", UNPROVEN, ids=UNPROVEN_IDS)
async def test_an_ambiguous_write_without_reference_is_outcome_unknown(make_client, failure):
    client, transport = make_client(script(failure, created()))
    with pytest.raises(OutcomeUnknownError) as info:
        await client.creditor_payments.create(**payment())
    err = info.value
    assert methods(transport) == ["POST"], "never sent twice blindly"
    assert isinstance(err.action, CreditorPayment)
    assert err.action.amount == Decimal("250.00")
    assert err.reference is None
    assert err.method == "POST"
    assert err.path == "/creditor--payments"


@pytest.mark.parametrize("failure", AMBIGUOUS[:5], ids=AMBIGUOUS_IDS[:5])
async def test_an_ambiguous_crediting_and_respite_are_outcome_unknown(make_client, failure):
    client, transport = make_client(script(failure, created()))
    with pytest.raises(OutcomeUnknownError) as info:
        await client.creditor_creditings.create(case=CASE, amount=1, currency="SEK")
    assert info.value.reference is None
    client, transport = make_client(script(failure, httpx.Response(200, json={})))
    with pytest.raises(OutcomeUnknownError) as info:
        await client.respite.grant(CASE, days=5)
    assert info.value.reference == CASE
    assert methods(transport) == ["POST"]


def lookup_then(found: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(200, json={"_items": found, "_meta": {"total": len(found)}})


@pytest.mark.parametrize("failure", AMBIGUOUS, ids=AMBIGUOUS_IDS)
async def test_an_ambiguous_payment_with_reference_returns_the_existing_record(make_client, failure):
    existing = {**RECEIPT, "creditor_payment_reference": "PAY-REF-001", "settled_amount": 250.0}
    client, transport = make_client(script(failure, lookup_then([existing])))
    receipt = await client.creditor_payments.create(**payment(creditor_payment_reference="PAY-REF-001"))
    assert receipt.id == RID
    assert receipt.creditor_payment_reference == "PAY-REF-001"
    assert receipt.settled_amount == Decimal("250")
    post, lookup = transport.api_requests
    assert (post.method, lookup.method) == ("POST", "GET")
    assert lookup.url.path == "/creditor--payments"
    assert json.loads(lookup.url.params["where"]) == {
        "creditor": CREDITOR,
        "creditor_payment_reference": "PAY-REF-001",
    }


@pytest.mark.parametrize("failure", UNPROVEN, ids=UNPROVEN_IDS)
async def test_an_ambiguous_payment_proven_absent_is_sent_once_more(make_client, failure):
    # Absent means: not found, and still not found after the settle window (a second lookup).
    client, transport = make_client(script(failure, lookup_then([]), lookup_then([]), created()))
    receipt = await client.creditor_payments.create(**payment(creditor_payment_reference="PAY-REF-001"))
    assert receipt.id == RID
    assert methods(transport) == ["POST", "GET", "GET", "POST"]
    assert transport.api_requests[0].content == transport.api_requests[3].content


async def test_resends_stop_at_max_attempts(make_client):
    failure = httpx.ReadTimeout("read timed out")
    empty = lookup_then([])
    client, transport = make_client(script(failure, empty, empty, failure, empty, empty, failure, empty, empty))
    with pytest.raises(TransportError) as info:
        await client.creditor_payments.create(**payment(creditor_payment_reference="PAY-REF-001"))
    # Proven absent every time: not an unknown outcome, and never more sends than max_attempts.
    assert not isinstance(info.value, OutcomeUnknownError)
    assert "verified not applied" in str(info.value)
    assert info.value.reference == "PAY-REF-001"
    assert methods(transport) == ["POST", "GET", "GET"] * 3


async def test_when_the_lookup_fails_too_the_outcome_is_unknown(make_client):
    client, transport = make_client(script(httpx.ReadTimeout("read timed out"), httpx.Response(503, content=b"down")))
    with pytest.raises(OutcomeUnknownError) as info:
        await client.creditor_payments.create(**payment(creditor_payment_reference="PAY-REF-001"))
    assert info.value.reference == "PAY-REF-001"
    assert isinstance(info.value.action, CreditorPayment)
    assert methods(transport).count("POST") == 1


async def test_an_ambiguous_crediting_with_reference_is_looked_up(make_client):
    existing = {"_id": RID, "_crediting_status": "completed", "creditor_reference": "CR-1"}
    client, transport = make_client(script(httpx.ReadTimeout("t"), lookup_then([existing])))
    receipt = await client.creditor_creditings.create(
        case=CASE, amount=Decimal("10"), currency="SEK", creditor_reference="CR-1"
    )
    assert receipt.crediting_status == "completed"
    lookup = transport.api_requests[1]
    assert lookup.url.path == "/creditor--creditings"
    assert json.loads(lookup.url.params["where"]) == {"creditor_reference": "CR-1", "case": CASE}


async def test_an_ambiguous_cancellation_is_looked_up_by_case(make_client):
    existing = {"_id": RID, "_cancellation_status": "completed", "case": CASE}  # a record carries its case
    client, transport = make_client(script(httpx.Response(502, content=b""), lookup_then([existing])))
    receipt = await client.creditor_cancellations.create(creditor=CREDITOR, case=CASE)
    assert receipt.cancellation_status == "completed"
    assert json.loads(transport.api_requests[1].url.params["where"]) == {"creditor": CREDITOR, "case": CASE}


async def test_a_409_on_a_write_with_reference(make_client):
    conflict = httpx.Response(409, json={"_status": "ERR", "_error": {"code": 409, "message": "duplicate"}})
    existing = {**RECEIPT, "creditor_payment_reference": "PAY-REF-001"}
    client, transport = make_client(script(conflict, lookup_then([existing])))
    receipt = await client.creditor_payments.create(**payment(creditor_payment_reference="PAY-REF-001"))
    assert receipt.id == RID
    client, transport = make_client(script(conflict, lookup_then([])))
    # Amili says a record holds the reference, but none can be read (not even after the settle window): that
    # record may be this payment's, from an earlier run, so "not applied" would be a guess. Never resent.
    with pytest.raises(OutcomeUnknownError) as info:
        await client.creditor_payments.create(**payment(creditor_payment_reference="PAY-REF-001"))
    assert isinstance(info.value.__cause__, ConflictError)
    assert methods(transport) == ["POST", "GET", "GET"]


# -- deadline and budget -------------------------------------------------------------------------------------


async def test_the_deadline_bounds_a_call(make_client):
    async def hang(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(30)
        raise AssertionError("unreachable")  # pragma: no cover

    client, _ = make_client(hang, retry=RetryPolicy.no_delay(deadline=0.2))
    with anyio.fail_after(5):
        with pytest.raises(TimeoutError):
            await client.cases.get(CASE)
        with pytest.raises(OutcomeUnknownError) as info:
            await client.creditor_payments.create(**payment())
    assert isinstance(info.value.action, CreditorPayment)
    assert "deadline" in str(info.value)


async def test_the_retry_budget_stops_retries_when_spent(make_client):
    policy = RetryPolicy.no_delay(budget_capacity=20, budget_timeout_cost=10, budget_retry_cost=5, budget_refund=1)
    client, transport = make_client(script(httpx.Response(503, content=b"down")), retry=policy)
    with pytest.raises(ServerError) as info:
        await client.cases.get(CASE)  # two retries: the budget (20) is spent
    assert info.value.attempts == 3
    assert len(transport.api_requests) == 3
    with pytest.raises(ServerError) as info:
        await client.cases.get(CASE)  # nothing left: fails on its first error
    assert info.value.attempts == 1
    assert len(transport.api_requests) == 4


async def test_successes_refill_the_budget(make_client):
    policy = RetryPolicy.no_delay(budget_capacity=10, budget_timeout_cost=10, budget_refund=10)
    answers = [httpx.Response(503, content=b""), ok_case(), ok_case()]
    client, transport = make_client(script(*answers, httpx.Response(503, content=b""), ok_case()), retry=policy)
    await client.cases.get(CASE)  # 503 then ok: the retry cost 10, its success paid it back
    await client.cases.get(CASE)
    await client.cases.get(CASE)  # 503 then ok again: the budget allowed the retry
    assert len(transport.api_requests) == 5


def test_policy_arguments_checked():
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(deadline=0)
    assert RetryPolicy.disabled().max_attempts == 1
