"""The token lifecycle under load and faults: single flight, one refresh per revocation, backoff (§3, §5.3 C)."""

from __future__ import annotations

import time
from collections import Counter

import anyio
import pytest
from reliability_helpers import PAYMENTS, payment, sent

from amili_async import RetryPolicy
from amili_async.errors import ServerError
from amili_async.testing import FakeAmili, Fault

TOKEN_PATH = "/authenticates/api-code"


@pytest.mark.parametrize("skew", [+600.0, -600.0], ids=["amili-10-min-ahead", "amili-10-min-behind"])
async def test_clock_skew_causes_no_refresh_loop(skew):
    # The fake stamps `expires` with its own (wrong) wall clock; the SDK must not refresh on every call.
    fake = FakeAmili(seed=3, token_lifetime=300, clock=lambda: time.time() + skew)
    creditor = fake.add_creditor()
    case_id = fake.add_case(creditor.id)
    async with fake.client(creditor, retry=RetryPolicy.no_delay()) as amili:
        for n in range(50):
            await amili.execute(payment(creditor, case_id, f"PAY-SKEW-{n}", amount=1))
        assert fake.tokens_issued == 1

        fake.revoke_tokens()  # Amili expires the token early (its clock, not ours): one 401, one refresh
        for _ in range(20):
            assert (await amili.cases.get(case_id)).id == case_id

    assert fake.tokens_issued == 2
    assert fake.token_requests == 2
    assert Counter(r.status for r in fake.requests if r.path != TOKEN_PATH) == {201: 50, 200: 20, 401: 1}


async def test_a_token_revoked_mid_batch_is_refreshed_once_and_every_call_replayed_at_most_once(
    fake, creditor, client_for
):
    cases = [fake.add_case(creditor.id, capital=1_000_000) for _ in range(10)]
    actions = [payment(creditor, cases[n % 10], f"PAY-REVOKE-{n}", amount=1) for n in range(300)]
    outcomes = []
    async with client_for() as amili:
        async for outcome in amili.execute_many(actions, concurrency=32):
            outcomes.append(outcome)
            if len(outcomes) == 100:
                fake.revoke_tokens()

    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:3]
    assert sorted(o.index for o in outcomes) == list(range(300))
    assert fake.tokens_issued == 2  # one refresh for the whole batch
    posts = Counter(r.json["creditor_payment_reference"] for r in sent(fake, "POST", PAYMENTS))
    assert max(posts.values()) <= 2  # each call replayed at most once
    unauthorized = [r for r in sent(fake, "POST", PAYMENTS) if r.status == 401]
    assert 1 <= len(unauthorized) <= 32  # only the calls in flight at the revocation
    assert len(fake.payments) == 300
    assert len({p["creditor_payment_reference"] for p in fake.payments}) == 300


async def test_token_endpoint_down_for_longer_than_the_deadline_waiters_back_off_together_then_recovery(
    fake, case_id, client_for
):
    # The token endpoint stays down past the deadline: one login at a time, with back-off, for all 200 waiting
    # calls together; they all end with the endpoint's error at their deadline, and the next call recovers.
    fake.inject(Fault(kind="token_endpoint_down", status=503))
    errors: list[BaseException] = []
    policy = RetryPolicy.no_delay(deadline=30.0)
    async with client_for(retry=policy) as amili:

        async def one() -> None:
            try:
                await amili.cases.get(case_id)
            except Exception as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(one)
        outage_logins = fake.token_requests

        fake.clear_faults()
        case = await amili.cases.get(case_id)

    assert len(errors) == 200
    assert {type(e) for e in errors} == {ServerError}
    assert all(e.status_code == 503 and "access token" in e.message for e in errors)
    # back-off 0.25 s, 0.5 s, 1 s, ... up to 10 s (jittered) within 30 s: a handful of logins, not 200
    assert 3 <= outage_logins <= 12
    assert sent(fake, "GET", f"/cases/{case_id}")[-1].status == 200 and case.id == case_id
    assert fake.token_requests == outage_logins + 1 and fake.tokens_issued == 1


async def test_10000_concurrent_calls_with_a_cold_cache_make_exactly_one_token_request(fake, case_id, client_for):
    done = 0
    async with client_for() as amili:

        async def one() -> None:
            nonlocal done
            await amili.cases.get(case_id)
            done += 1

        async with anyio.create_task_group() as tg:
            for _ in range(10_000):
                tg.start_soon(one)

    assert done == 10_000
    assert fake.tokens_issued == 1
    assert fake.token_requests == 1
