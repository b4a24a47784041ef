"""What the fake puts on every answer like a server would: its clock (`Date`), and an opt-in Eve-style limiter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from amili_async.testing import FakeAmili
from amili_async.testing._limits import FixedWindowLimit

BASE = FakeAmili.BASE_URL
PAYMENTS = "/creditor--payments"
NOW = 1_800_000_000.0  # Fri, 15 Jan 2027 08:00:00 GMT


async def test_every_answer_carries_the_fakes_clock(mint: Callable[..., str]) -> None:
    fake = FakeAmili(clock=lambda: NOW + 1200)
    cred = fake.add_creditor()
    async with httpx.AsyncClient(transport=fake.transport(), base_url=BASE) as client:
        token = await client.get("/authenticates/api-code", headers={"X-API-Key": mint(cred, now=NOW + 1200)})
        refused = await client.get("/cases")
        missing = await client.get("/nowhere")
    assert token.status_code == 200 and refused.status_code == 401 and missing.status_code == 404
    assert {r.headers["Date"] for r in (token, refused, missing)} == {"Fri, 15 Jan 2027 08:20:00 GMT"}
    assert "X-RateLimit-Limit" not in refused.headers  # no limiter unless asked for


async def test_the_eve_style_limiter(payment: Callable[..., dict[str, Any]], mint: Callable[..., str]) -> None:
    fake = FakeAmili(clock=lambda: NOW + 0.25, rate_limit=(2, 10.0))
    cred = fake.add_creditor()
    body = payment(fake.add_case(cred.id), cred.id)
    async with httpx.AsyncClient(transport=fake.transport(), base_url=BASE) as client:
        login = await client.get("/authenticates/api-code", headers={"X-API-Key": mint(cred, now=NOW)})
        auth = {"X-API-Key": login.json()["token"]}
        first = await client.get("/cases", headers=auth)
        second = await client.post(PAYMENTS, json=body, headers=auth)
        third = await client.post(PAYMENTS, json=body, headers=auth)
    assert "X-RateLimit-Limit" not in login.headers  # the token endpoint is not counted
    assert (first.status_code, second.status_code, third.status_code) == (200, 201, 429)
    assert [r.headers["X-RateLimit-Remaining"] for r in (first, second, third)] == ["1", "0", "0"]
    assert {r.headers["X-RateLimit-Reset"] for r in (first, second, third)} == {"1800000010"}
    assert "Retry-After" not in third.headers  # Eve's limiter sends none
    assert len(fake.payments) == 1  # the refused one was not applied
    assert third.json()["_error"]["code"] == 429


def test_windows_are_aligned_to_the_clock() -> None:
    limit = FixedWindowLimit(1, 1.0)
    assert limit.admit(100.1)[0] and not limit.admit(100.9)[0]
    allowed, headers = limit.admit(101.0)  # a new window
    assert allowed and dict(headers)["X-RateLimit-Reset"] == "102"
    with pytest.raises(ValueError):
        FixedWindowLimit(0)
