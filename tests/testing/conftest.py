"""Fixtures for driving the in-memory Amili over raw httpx (the SDK is not used here)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import jwt
import pytest

from amili_async.testing import FakeAmili, FakeCreditor

BASE = FakeAmili.BASE_URL
Login = Callable[[FakeCreditor], Awaitable[dict[str, str]]]


def mint_jwt(
    creditor: FakeCreditor,
    *,
    exp_in: float = 600,
    now: float | None = None,
    key: str | None = None,
    claims: dict[str, Any] | None = None,
) -> str:
    """The JWT a client sends to GET /authenticates/api-code."""
    payload: dict[str, Any] = {"api_code": creditor.api_code, "exp": int((now or time.time()) + exp_in)}
    payload.update(claims or {})
    return jwt.encode(payload, key or creditor.private_key_pem, algorithm=creditor.algorithm)


@pytest.fixture
def fake() -> FakeAmili:
    return FakeAmili(seed=0)


@pytest.fixture
def cred(fake: FakeAmili) -> FakeCreditor:
    return fake.add_creditor()


@pytest.fixture
async def http(fake: FakeAmili) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=fake.transport(), base_url=BASE) as client:
        yield client


@pytest.fixture
def login(http: httpx.AsyncClient) -> Login:
    async def _login(creditor: FakeCreditor) -> dict[str, str]:
        r = await http.get("/authenticates/api-code", headers={"X-API-Key": mint_jwt(creditor)})
        assert r.status_code == 200, r.text
        return {"X-API-Key": r.json()["token"]}

    return _login


@pytest.fixture
async def headers(login: Login, cred: FakeCreditor) -> dict[str, str]:
    return await login(cred)


def _payment(case: str | None, creditor: str | None, /, **extra: Any) -> dict[str, Any]:
    """A valid payment body; a keyword set to None removes that field."""
    body: dict[str, Any] = {
        "creditor": creditor,
        "case": case,
        "amount": 100.0,
        "currency": "SEK",
        "bank_transaction_date": "Tue, 07 Oct 2025 08:15:30 GMT",
        "origin": "creditor_system",
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture
def mint() -> Callable[..., str]:
    return mint_jwt


@pytest.fixture
def payment() -> Callable[..., dict[str, Any]]:
    return _payment
