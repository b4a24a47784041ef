"""Helpers of the reliability suite (imported by its tests and its conftest)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import anyio.lowlevel
import httpx

from amili_async.models.actions import CreditorCancellation, CreditorCrediting, CreditorPayment
from amili_async.testing import FakeAmili, FakeCreditor
from amili_async.testing.fake import RecordedRequest

PAID_AT = datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc)
BIG_CAPITAL = Decimal("100000000.00")
PAYMENTS = "/creditor--payments"


class SleepRecorder:
    """A `RetryPolicy(sleep=...)` that records every wait and only yields to the event loop."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await anyio.lowlevel.checkpoint()


class VirtualTime:
    """Real time plus every wait the SDK asked for: give it to a `FakeAmili(clock=...)` and to
    `RetryPolicy(sleep=...)`, and a settle window of 15 s passes for both sides at once, without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.offset += seconds
        await anyio.lowlevel.checkpoint()


class HeaderRewriteTransport(httpx.AsyncBaseTransport):
    """Wraps a transport and rewrites the headers of the answers whose status is in `statuses`.

    The fake's `rate_limit` fault only writes `Retry-After` / `X-RateLimit-Reset` as seconds; this adds the
    other forms real proxies send (HTTP date, `retry-after-ms`).
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        rewrite: Callable[[httpx.Headers], Iterable[tuple[str, str]]],
        statuses: tuple[int, ...] = (429,),
    ) -> None:
        self._inner = inner
        self._rewrite = rewrite
        self._statuses = statuses

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if response.status_code not in self._statuses:
            return response
        content = await response.aread()
        return httpx.Response(
            response.status_code,
            headers=list(self._rewrite(response.headers)),
            content=content,
            request=request,
        )


class RecordingTransport(httpx.AsyncBaseTransport):
    """Wraps a transport and keeps every `X-API-Key` value sent (JWTs and access tokens): the secrets."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.keys: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("x-api-key")
        if key:
            self.keys.add(key)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def payment(
    creditor: FakeCreditor | str,
    case: str,
    reference: str | None = "PAY-1",
    amount: Decimal = Decimal("10.00"),
) -> CreditorPayment:
    creditor_id = creditor if isinstance(creditor, str) else creditor.id
    return CreditorPayment(
        creditor=creditor_id,
        case=case,
        amount=amount,
        currency="SEK",
        bank_transaction_date=PAID_AT,
        creditor_payment_reference=reference,
    )


def crediting(creditor: FakeCreditor, case: str, reference: str | None = "CRED-1") -> CreditorCrediting:
    return CreditorCrediting(
        creditor=creditor.id, case=case, amount=Decimal("5.00"), currency="SEK", creditor_reference=reference
    )


def cancellation(creditor: FakeCreditor, case: str) -> CreditorCancellation:
    return CreditorCancellation(creditor=creditor.id, case=case)


def sent(fake: FakeAmili, method: str, path: str) -> list[RecordedRequest]:
    """The requests the fake received for `method` on exactly `path` (no query string in `path`)."""
    return [r for r in fake.requests if r.method == method and r.path == path]


def lookups(fake: FakeAmili, path: str = PAYMENTS) -> list[RecordedRequest]:
    """The reconciliation look-ups (`GET path?where=...`) the fake received."""
    return [r for r in fake.requests if r.method == "GET" and r.path == path and "where" in r.query]


def stored_with_reference(fake: FakeAmili, reference: str) -> list[dict[str, Any]]:
    return [p for p in fake.payments if p.get("creditor_payment_reference") == reference]
