"""429s, server-requested waits and the per-client retry budget (§1.2, §2.3, §5.3 B16-20).

Waits are recorded by a fake `sleep` (nothing really sleeps); the assertions are on what the policy asked
for and on what the fake received.
"""

from __future__ import annotations

import time
from collections import Counter
from email.utils import formatdate

import anyio
import anyio.lowlevel
import pytest
from reliability_helpers import PAYMENTS, HeaderRewriteTransport, payment, sent

from amili_async import RetryPolicy
from amili_async.errors import RateLimitError, ServerError
from amili_async.testing import Fault

JITTER = 0.5  # the most the default policy adds on top of a server-requested wait: uniform(0, min(wait/10, base))


async def test_429_with_retry_after_seconds_waits_that_long_and_the_post_is_applied_once(
    fake, creditor, case_id, client_for, sleeps
):
    fake.inject(Fault(kind="rate_limit", retry_after=2, path=PAYMENTS, method="POST", times=1))
    async with client_for(retry=RetryPolicy(sleep=sleeps)) as amili:
        receipt = await amili.execute(payment(creditor, case_id, reference=None))

    assert len(sleeps.calls) == 1 and 2 <= sleeps.calls[0] <= 2 + JITTER
    assert [p.status for p in sent(fake, "POST", PAYMENTS)] == [429, 201]  # refused before processing: resent
    assert [p["_id"] for p in fake.payments] == [receipt.id]


async def test_429_with_retry_after_as_an_http_date_is_honoured(fake, creditor, case_id, client_for, sleeps):
    fake.inject(Fault(kind="rate_limit", retry_after=1, path="/cases", method="GET", times=1))

    def as_date(headers):
        yield from ((k, v) for k, v in headers.items() if k.lower() != "retry-after")
        yield "Retry-After", formatdate(time.time() + 30, usegmt=True)

    transport = HeaderRewriteTransport(fake.transport(), as_date)
    async with client_for(transport=transport, retry=RetryPolicy(sleep=sleeps)) as amili:
        assert (await amili.cases.get(case_id)).id == case_id

    assert len(sleeps.calls) == 1 and 28 <= sleeps.calls[0] <= 30 + JITTER


async def test_429_with_x_ratelimit_reset_waits_until_the_reset_and_the_post_is_retried(
    fake, creditor, case_id, client_for, sleeps
):
    # Eve's own limiter: no Retry-After, only X-RateLimit-Reset (epoch seconds).
    fake.inject(Fault(kind="rate_limit", reset_after=5, path=PAYMENTS, method="POST", times=1))
    async with client_for(retry=RetryPolicy(sleep=sleeps)) as amili:
        receipt = await amili.execute(payment(creditor, case_id, "PAY-RESET"))

    # One wait until the reset; the rate controller may add a pacing pause of a few hundredths after its cut.
    long_waits = [s for s in sleeps.calls if s >= 0.1]
    assert len(long_waits) == 1 and 3.5 <= long_waits[0] <= 5 + JITTER
    assert all(s < 0.1 for s in sleeps.calls if s is not long_waits[0])
    assert [p.status for p in sent(fake, "POST", PAYMENTS)] == [429, 201]
    assert [p["_id"] for p in fake.payments] == [receipt.id]


async def test_429_with_retry_after_ms_is_honoured_before_retry_after(fake, case_id, client_for, sleeps):
    fake.inject(Fault(kind="rate_limit", retry_after=20, path="/cases", method="GET", times=1))

    def with_ms(headers):
        yield from headers.items()
        yield "retry-after-ms", "1500"

    transport = HeaderRewriteTransport(fake.transport(), with_ms)
    async with client_for(transport=transport, retry=RetryPolicy(sleep=sleeps)) as amili:
        assert (await amili.cases.get(case_id)).id == case_id

    assert len(sleeps.calls) == 1 and 1.5 <= sleeps.calls[0] <= 1.5 + JITTER


async def test_429_asking_for_an_hour_raises_rate_limit_error_at_once_without_sleeping(
    fake, creditor, case_id, client_for, sleeps
):
    fake.inject(Fault(kind="rate_limit", retry_after=3600, path=PAYMENTS, method="POST"))
    async with client_for(retry=RetryPolicy(sleep=sleeps)) as amili:
        with pytest.raises(RateLimitError) as caught:
            await amili.execute(payment(creditor, case_id, "PAY-HOUR"))

    err = caught.value
    assert err.retry_after == 3600
    assert err.attempts == 1
    assert err.reference == "PAY-HOUR"
    assert sleeps.calls == []
    assert len(sent(fake, "POST", PAYMENTS)) == 1
    assert fake.payments == []


@pytest.mark.parametrize("limiter", [False, None], ids=["no-rate-limiter", "default-rate-limiter"])
async def test_a_429_storm_of_1000_concurrent_calls_all_succeed_spending_no_budget(fake, creditor, client_for, limiter):
    calls = 1000
    cases = [fake.add_case(creditor.id) for _ in range(calls)]
    waits: list[float] = []
    everyone_throttled = anyio.Event()

    async def gate(seconds: float) -> None:
        # Hold every retry until all 1000 first attempts were refused: a true storm, then the stampede.
        waits.append(seconds)
        if len(waits) == calls:
            everyone_throttled.set()
        await everyone_throttled.wait()
        await anyio.lowlevel.checkpoint()

    policy = RetryPolicy(sleep=gate)
    results = {}
    async with client_for(retry=policy, rate_limiter=limiter) as amili:
        await amili.cases.get(cases[0])  # warm token
        fake.requests.clear()
        fake.inject(Fault(kind="rate_limit", retry_after=1, path="/cases", method="GET", times=calls))

        async def one(case: str) -> None:
            results[case] = await amili.cases.get(case)

        async with anyio.create_task_group() as tg:
            for case in cases:
                tg.start_soon(one, case)
        budget = amili._bind().budget

    assert sorted(results) == sorted(cases)
    statuses = Counter(r.path for r in fake.requests)
    assert set(statuses.values()) == {2}  # every call: one 429, one success
    assert Counter(r.status for r in fake.requests) == {429: calls, 200: calls}
    assert budget.level == budget.capacity  # throttle waits are not failures: they spend nothing
    throttle_waits = waits[:calls]  # the calls' own waits; with a limiter, its pacing waits follow
    assert all(1 <= w <= 1.1 for w in throttle_waits)  # the server's second, and a tenth of it at most on top
    assert len(set(throttle_waits)) > calls * 0.95  # spread by jitter, not one instant
    assert max(throttle_waits) - min(throttle_waits) > 0.05
    if limiter is False:
        assert len(waits) == calls


async def test_calls_throttled_for_good_wait_until_their_deadline_then_raise_without_spending_the_budget(
    fake, creditor, client_for
):
    # Eve's bare 429, for ever. Throttling costs time, not attempts: every call keeps waiting (backing off, at
    # the rate the limiter cut to) until its deadline leaves no room, then raises RateLimitError (nothing applied).
    calls = 100
    cases = [fake.add_case(creditor.id) for _ in range(calls)]
    policy = RetryPolicy.no_delay(deadline=30.0)
    errors: list[RateLimitError] = []
    async with client_for(retry=policy) as amili:
        await amili.cases.get(cases[0])  # warm token
        fake.requests.clear()
        fake.inject(Fault(kind="rate_limit", path="/cases", method="GET"))

        async def one(case: str) -> None:
            with pytest.raises(RateLimitError) as caught:
                await amili.cases.get(case)
            errors.append(caught.value)

        async with anyio.create_task_group() as tg:
            for case in cases:
                tg.start_soon(one, case)
        runtime = amili._bind()

    assert len(errors) == calls
    assert all(e.attempts > policy.max_attempts for e in errors)  # throttled attempts do not count
    assert runtime.budget.level == runtime.budget.capacity
    assert runtime.limiter.limiter.rate is not None and runtime.limiter.limiter.rate < 50  # the limiter backed off
    assert len(fake.requests) == sum(e.attempts for e in errors)
    assert len(fake.requests) < 15 * calls  # waiting, not hammering


async def test_a_persistent_outage_empties_the_budget_then_calls_fail_fast_with_one_attempt(fake, case_id, client_for):
    policy = RetryPolicy.no_delay()
    per_call = policy.max_attempts - 1
    retries_in_budget = int(policy.budget_capacity // policy.budget_timeout_cost)  # 5xx retries cost more
    full_calls = retries_in_budget // per_call
    fake.inject(Fault(kind="server_error", status=503, path="/cases", method="GET"))
    attempts = []
    async with client_for(retry=policy) as amili:
        for _ in range(100):
            with pytest.raises(ServerError) as caught:
                await amili.cases.get(case_id)
            attempts.append(caught.value.attempts)
        gets = len(sent(fake, "GET", f"/cases/{case_id}"))

        # The outage ends: successes pay the bucket back, and retries come back with it.
        fake.clear_faults()
        for _ in range(int(policy.budget_timeout_cost)):
            await amili.cases.get(case_id)
        fake.inject(Fault(kind="server_error", status=503, path="/cases", method="GET", times=1))
        assert (await amili.cases.get(case_id)).id == case_id

    assert attempts == [policy.max_attempts] * full_calls + [1] * (100 - full_calls)
    assert gets == full_calls * policy.max_attempts + (100 - full_calls)
