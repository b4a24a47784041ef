"""Throttling is waiting, not failing (issue 10): 429 and 503-with-Retry-After wait what the server asks, for
reads and writes, without spending an attempt or the retry budget; only the call's deadline bounds them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import anyio
import httpx
import pytest

from amili_async import (
    OutcomeUnknownError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TimeoutError,
)

CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68e4c40d93ee14723d28fa95"
RID = "68e4cb120da90297b3be0e01"
RECEIPT = {"_id": RID, "_status": "OK", "_payment_status": "completed"}
PAID = datetime(2025, 10, 7, tzinfo=timezone.utc)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await anyio.lowlevel.checkpoint()


def throttled(status: int = 429, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"_status": "ERR"}, headers=headers)


def answers(*steps: httpx.Response) -> Any:
    queue = list(steps)

    def handler(request: httpx.Request) -> httpx.Response:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler


def payment(reference: str | None = "PAY-T") -> dict[str, Any]:
    return dict(
        creditor=CREDITOR,
        case=CASE,
        amount=Decimal("250.00"),
        currency="SEK",
        bank_transaction_date=PAID,
        creditor_payment_reference=reference,
    )


async def test_a_write_throttled_three_times_is_sent_once_more_even_with_one_attempt_allowed(make_client):
    sleeps = Sleeps()
    handler = answers(throttled(), throttled(), throttled(), httpx.Response(201, json=RECEIPT))
    client, transport = make_client(handler, retry=RetryPolicy(max_attempts=1, sleep=sleeps))
    receipt = await client.creditor_payments.create(**payment())
    assert receipt.id == RID
    assert [r.method for r in transport.api_requests] == ["POST"] * 4
    assert client._bind().budget.level == client._bind().budget.capacity  # throttling spent nothing
    assert len(sleeps.calls) >= 3


async def test_a_read_answered_503_with_retry_after_is_throttling_not_a_failure(make_client):
    sleeps = Sleeps()
    handler = answers(throttled(503, **{"Retry-After": "2"}), throttled(503, **{"Retry-After": "2"}), ok_case())
    client, transport = make_client(handler, retry=RetryPolicy.no_delay(max_attempts=1, sleep=sleeps))
    assert (await client.cases.get(CASE)).id == CASE
    assert len(transport.api_requests) == 3
    assert [round(w) for w in sleeps.calls[:2]] == [2, 2]


def ok_case() -> httpx.Response:
    return httpx.Response(200, json={"_id": CASE})


async def test_a_write_answered_503_with_retry_after_waits_then_looks_it_up_before_sending_again(make_client):
    sleeps = Sleeps()
    sequence: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sequence.append(f"{request.method}@{sum(sleeps.calls):.0f}")
        if request.method == "GET":
            return httpx.Response(200, json={"_items": [], "_meta": {"total": 0}})
        if sequence.count("POST@0") == 1 and len(sequence) == 1:
            return throttled(503, **{"Retry-After": "3"})
        return httpx.Response(201, json=RECEIPT)

    client, transport = make_client(handler, retry=RetryPolicy.no_delay(max_attempts=1, sleep=sleeps))
    receipt = await client.creditor_payments.create(**payment())
    assert receipt.id == RID
    # The server's 3 s are honoured before anything else (the old behaviour resent after 0.02 s); then the
    # write is looked up (a 503 proves nothing), found absent, and sent again: one payment.
    assert sequence[0] == "POST@0" and sequence[1] == "GET@3" and sequence[-1].startswith("POST@")
    assert sleeps.calls[0] == 3
    assert len([r for r in transport.api_requests if r.method == "POST"]) == 2


async def test_a_write_answered_503_with_retry_after_and_no_reference_stays_unknown(make_client):
    client, transport = make_client(answers(throttled(503, **{"Retry-After": "3"})))
    with pytest.raises(OutcomeUnknownError):
        await client.creditor_payments.create(**payment(reference=None))
    assert len(transport.api_requests) == 1


@pytest.mark.parametrize(("retry_after", "waits"), [("100", True), ("200", False)])
async def test_the_deadline_caps_the_wait_not_a_fixed_60_s(make_client, retry_after, waits):
    sleeps = Sleeps()
    handler = answers(throttled(**{"Retry-After": retry_after}), httpx.Response(201, json=RECEIPT))
    client, transport = make_client(handler, retry=RetryPolicy(sleep=sleeps, deadline=120))
    if waits:  # 100 s fits in the 120 s deadline: wait, then the write goes through
        assert (await client.creditor_payments.create(**payment())).id == RID
        assert 100 <= sleeps.calls[0] <= 100.5
    else:  # 200 s does not: RateLimitError at once (nothing was applied), no sleeping in vain
        with pytest.raises(RateLimitError) as info:
            await client.creditor_payments.create(**payment())
        assert info.value.retry_after == 200 and sleeps.calls == []
        assert len(transport.api_requests) == 1


async def test_max_retry_after_still_caps_when_set(make_client):
    sleeps = Sleeps()
    handler = answers(throttled(**{"Retry-After": "30"}), httpx.Response(201, json=RECEIPT))
    client, _ = make_client(handler, retry=RetryPolicy(sleep=sleeps, max_retry_after=10))
    with pytest.raises(RateLimitError):
        await client.creditor_payments.create(**payment())
    assert sleeps.calls == []


async def test_throttled_until_the_deadline_a_write_ends_with_rate_limit_error_never_outcome_unknown(make_client):
    client, transport = make_client(answers(throttled()), retry=RetryPolicy.no_delay(deadline=20))
    with pytest.raises(RateLimitError) as info:
        await client.creditor_payments.create(**payment())
    assert info.value.attempts == len(transport.api_requests) > 3  # every throttled attempt, none counted


class Stuck:
    """A rate limiter that never gives a slot (a quota that resets in an hour)."""

    async def acquire(self) -> float:
        await anyio.sleep_forever()
        return 0.0

    async def observe(self, status: int, headers: Mapping[str, str]) -> None:
        return None


async def test_a_write_still_waiting_for_its_slot_at_the_deadline_was_not_applied(make_client):
    client, transport = make_client(answers(httpx.Response(201, json=RECEIPT)), retry=RetryPolicy(deadline=0.2))
    client = type(client)(auth=client._auth, transport=transport, retry=RetryPolicy(deadline=0.2), rate_limiter=Stuck())
    with anyio.fail_after(5), pytest.raises(TimeoutError) as info:  # a TransportError: never reached Amili
        await client.creditor_payments.create(**payment())
    assert "deadline" in str(info.value) and not isinstance(info.value, OutcomeUnknownError)
    assert transport.api_requests == []


async def test_a_write_whose_token_never_came_ends_with_the_token_endpoints_error(make_client):
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, content=b"<html>down</html>")

    client, transport = make_client(answers(httpx.Response(201, json=RECEIPT)), token_handler=down)
    client = client.with_options(retry=RetryPolicy.no_delay(deadline=30))
    with pytest.raises(ServerError) as info:
        await client.creditor_payments.create(**payment())
    assert "access token" in str(info.value) and not isinstance(info.value, OutcomeUnknownError)
    assert transport.api_requests == []
    assert 2 <= len(transport.token_requests) <= 10  # backed off through the 30 s, not once per millisecond


async def test_retry_after_ms_and_an_http_date_are_read_by_the_limiter_too(make_client):
    seen: list[int] = []

    class Recorder:
        async def acquire(self) -> float:
            return 0.0

        async def observe(self, status: int, headers: Mapping[str, str]) -> None:
            seen.append(status)
            assert headers.get("retry-after-ms") in (None, "1500")  # lower-case look-ups work

    handler = answers(throttled(503, **{"retry-after-ms": "1500"}), ok_case())
    client, _ = make_client(handler, rate_limiter=Recorder())
    await client.cases.get(CASE)
    assert seen == [503, 200]
