"""Flow control against raw loopback servers that limit like real ones: a rate limit, a login outage or bad
credentials cost time, never payments (issue 10).

The servers (`limiter_server.py`) are real sockets on 127.0.0.1 and keep what they stored: the assertions are on
that, not only on what the SDK said. Sizes are small (a few seconds each); `benchmarks/flow_control.py` runs the
full-size scenarios and measures the time. Nothing here asserts wall-clock time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from limiter_server import LimiterServer

from amili_async import (
    ApiCodeAuth,
    AsyncAmiliClient,
    AuthenticationError,
    CreditorPayment,
    NotSentError,
    RetryPolicy,
    StopOn,
)
from amili_async.bulk import Outcome

CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68e4c40d93ee14723d28fa95"


def payments(n: int, prefix: str = "P") -> list[CreditorPayment]:
    paid = datetime(2025, 10, 7, tzinfo=timezone.utc)
    return [
        CreditorPayment(
            creditor=CREDITOR,
            case=CASE,
            amount=Decimal("1.00"),
            currency="SEK",
            bank_transaction_date=paid,
            creditor_payment_reference=f"{prefix}-{i}",
        )
        for i in range(n)
    ]


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[LimiterServer]:
    srv = await LimiterServer(**getattr(request, "param", {})).start()
    try:
        yield srv
    finally:
        await srv.stop()


def client(server: LimiterServer, **kwargs: object) -> AsyncAmiliClient:
    return AsyncAmiliClient(auth=ApiCodeAuth(api_code="code"), base_url=server.base_url, **kwargs)  # type: ignore[arg-type]


async def run(amili: AsyncAmiliClient, actions: list[CreditorPayment], **kwargs: object) -> list[Outcome]:
    return [o async for o in amili.execute_many(actions, **kwargs)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("server", "n"),
    [
        ({"mode": "eve", "limit": 150}, 450),  # Eve's limiter: fixed windows, a bare 429, X-RateLimit-* on answers
        ({"mode": "retry-after", "limit": 200}, 600),  # a gateway's token bucket: 429 with Retry-After: 1 only
    ],
    indirect=["server"],
    ids=["eve-150-per-s", "retry-after-200-per-s"],
)
async def test_a_rate_limit_costs_time_not_payments_and_few_requests_are_refused(server, n):
    async with client(server) as amili:  # the defaults: adaptive limiter, default retry policy
        outcomes = await run(amili, payments(n), concurrency=64)

    assert [o.error for o in outcomes if not o.ok] == []
    assert server.summary()["stored"] == n and server.summary()["references"] == n  # every one, once
    assert server.summary()["duplicates"] == 0
    posts = server.stats["201"] + server.stats["429"]
    assert server.stats["429"] < 0.10 * posts


@pytest.mark.parametrize("server", [{"mode": "none", "outage_after": 150, "outage": 1.5}], indirect=True)
async def test_tokens_revoked_while_the_token_endpoint_is_down_for_1_5_s_fail_no_payment(server):
    async with client(server) as amili:
        outcomes = await run(amili, payments(400), concurrency=32)

    assert [o.error for o in outcomes if not o.ok] == []
    assert server.summary()["stored"] == 400 and server.summary()["duplicates"] == 0
    # the outage happened (calls got 401 and the endpoint 503), and the logins backed off: a handful, not one
    # per waiting call
    assert server.stats["401"] >= 1
    assert 3 <= server.stats["token_requests"] <= 10


@pytest.mark.parametrize("server", [{"mode": "none", "refuse_tokens": True}], indirect=True)
async def test_401_to_every_issued_token_costs_fewer_than_10_logins_for_1000_calls(server):
    async with client(server) as amili:
        outcomes = await run(amili, payments(1000), concurrency=64)

    assert len(outcomes) == 1000
    assert all(isinstance(o.error, AuthenticationError) for o in outcomes)
    assert server.stats["token_requests"] < 10
    assert server.stats["401"] <= 2 * 64  # the calls in flight, each replayed once; then nobody sends
    assert server.summary()["stored"] == 0


@pytest.mark.parametrize("server", [{"mode": "none", "refuse_tokens": True}], indirect=True)
async def test_with_stop_on_the_refused_run_ends_and_every_input_is_not_sent(server):
    async with client(server) as amili:
        outcomes = await run(amili, payments(1000), concurrency=64, stop_on=StopOn())

    assert sorted(o.index for o in outcomes) == list(range(1000))
    kinds = Counter(type(o.error).__name__ for o in outcomes)
    assert kinds["NotSentError"] >= 1000 - 64  # all but the calls whose own 401s proved the refusal
    assert set(kinds) <= {"NotSentError", "AuthenticationError"}
    not_sent = [o.error for o in outcomes if isinstance(o.error, NotSentError)]
    assert all(isinstance(e.reason, AuthenticationError) for e in not_sent)
    assert all(e.reference == o.action.reference for o in outcomes if (e := o.error) is not None)
    assert server.stats["token_requests"] < 10 and server.summary()["stored"] == 0


async def test_a_server_that_is_gone_stops_the_run_instead_of_every_call_waiting_for_its_deadline():
    srv = await LimiterServer().start()
    await srv.stop()  # nothing listens on that port any more: connection refused
    async with client(srv, retry=RetryPolicy(deadline=120.0)) as amili:
        outcomes = await run(amili, payments(500), concurrency=16, stop_on=StopOn(unreachable_for=0.5))

    assert len(outcomes) == 500
    # Every call ended with "not sent" (the in-flight ones interrupted while waiting for a token), none with a
    # deadline's TimeoutError: the run did not wait 120 s per call.
    assert {type(o.error) for o in outcomes} == {NotSentError}
    assert all("could not be reached" in str(o.error) for o in outcomes)
