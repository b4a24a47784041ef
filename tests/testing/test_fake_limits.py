"""The in-memory Amili's rate limits (`fake.set_rate_limit(...)`): what they answer over raw httpx, and that the SDK
gets every payment through them once (a rate limit costs time, not payments)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest

from amili_async import CreditorPayment
from amili_async.testing import FakeAmili, FakeCreditor, RateLimit

Login = Callable[[FakeCreditor], Awaitable[dict[str, str]]]


class Clock:
    """The fake's clock: real time (the login JWT is checked against it), a quarter into a second."""

    def __init__(self) -> None:
        self.now = int(time.time()) + 0.25

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> FakeAmili:
    return FakeAmili(seed=0, clock=clock)


async def test_eve_style_headers_inside_the_limit_and_a_bare_429_past_it(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, login: Login, clock: Clock
) -> None:
    case = fake.add_case(cred.id)
    headers = await login(cred)  # the token endpoint is never limited
    fake.set_rate_limit(RateLimit.eve(3))
    answers = [await http.get(f"/cases/{case}", headers=headers) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in answers[:3]] == ["2", "1", "0"]
    assert answers[0].headers["X-RateLimit-Limit"] == "3"
    assert answers[0].headers["X-RateLimit-Reset"] == str(int(clock.now) + 1)  # the window's end, epoch seconds
    refused = answers[3]
    assert refused.json() == {"_status": "ERR", "_error": {"code": 429, "message": "Rate limit exceeded"}}
    assert not any(h.lower().startswith(("x-ratelimit", "retry-after")) for h in refused.headers)
    clock.now += 1  # the next window
    assert (await http.get(f"/cases/{case}", headers=headers)).status_code == 200


async def test_a_refused_write_is_not_applied_and_each_account_has_its_own_counter(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, login: Login, payment: Callable[..., Any]
) -> None:
    other = fake.add_creditor(name="Other AB")
    case, other_case = fake.add_case(cred.id), fake.add_case(other.id)
    mine, theirs = await login(cred), await login(other)
    fake.set_rate_limit(RateLimit.eve(1))
    assert (await http.post("/creditor--payments", json=payment(case, cred.id), headers=mine)).status_code == 201
    assert (await http.post("/creditor--payments", json=payment(case, cred.id), headers=mine)).status_code == 429
    assert (
        await http.post("/creditor--payments", json=payment(other_case, other.id), headers=theirs)
    ).status_code == 201
    assert len(fake.payments) == 2


async def test_the_retry_after_style_says_when_the_window_ends(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, login: Login, clock: Clock
) -> None:
    case = fake.add_case(cred.id)
    headers = await login(cred)
    clock.now = int(clock.now) // 10 * 10 + 0.25  # 9.75 s before the 10 s window ends
    fake.set_rate_limit(RateLimit.retry_after(1, window=10))
    assert (await http.get(f"/cases/{case}", headers=headers)).status_code == 200
    refused = await http.get(f"/cases/{case}", headers=headers)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "10"
    assert "X-RateLimit-Remaining" not in refused.headers
    fake.set_rate_limit(None)
    assert (await http.get(f"/cases/{case}", headers=headers)).status_code == 200


@pytest.mark.parametrize("rule", [RateLimit.eve(40), RateLimit.retry_after(40)], ids=["eve", "retry-after"])
async def test_the_sdk_gets_every_payment_through_the_fakes_limits_exactly_once(rule: RateLimit) -> None:
    fake = FakeAmili(seed=3)  # the real clock: the limits' windows pass in real time
    creditor = fake.add_creditor()
    case = fake.add_case(creditor.id, capital=Decimal("100000.00"))
    fake.set_rate_limit(rule)
    paid = datetime(2025, 10, 7, tzinfo=timezone.utc)
    actions = [
        CreditorPayment(
            creditor=creditor.id,
            case=case,
            amount=Decimal("1.00"),
            currency="SEK",
            bank_transaction_date=paid,
            creditor_payment_reference=f"LIM-{i}",
        )
        for i in range(100)
    ]
    async with fake.client(creditor) as amili:  # the default retry policy and rate limiter: real waits
        outcomes = [o async for o in amili.execute_many(actions, concurrency=8)]
    assert [o.error for o in outcomes if not o.ok] == []
    references = [p["creditor_payment_reference"] for p in fake.payments]
    assert sorted(references) == sorted(a.creditor_payment_reference for a in actions)  # each once
    refused = [r for r in fake.requests if r.status == 429]
    assert len(refused) < 0.25 * len(fake.requests)
