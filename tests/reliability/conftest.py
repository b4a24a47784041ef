"""Fixtures for the reliability suite: the in-memory Amili, clients bound to it, a loopback server, helpers.

Nothing here really sleeps on a retry: clients use `RetryPolicy.no_delay()` or a `SleepRecorder` (a fake
`sleep` that records what the policy asked for). Tests assert counts and outcomes, never wall-clock limits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from reliability_helpers import BIG_CAPITAL, SleepRecorder

from amili_async import AsyncAmiliClient, RetryPolicy
from amili_async.testing import FakeAmili, FakeCreditor
from amili_async.testing.server import FakeServer, start_server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: the seeded fault-storm batch (fast enough for CI: it runs by default)")


@pytest.fixture
def fake() -> FakeAmili:
    return FakeAmili(seed=20251007)


@pytest.fixture
def creditor(fake: FakeAmili) -> FakeCreditor:
    return fake.add_creditor()


@pytest.fixture
def case_id(fake: FakeAmili, creditor: FakeCreditor) -> str:
    return fake.add_case(creditor.id, capital=BIG_CAPITAL)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


ClientFactory = Callable[..., AsyncAmiliClient]


@pytest.fixture
def client_for(fake: FakeAmili, creditor: FakeCreditor) -> ClientFactory:
    """`client_for(**client_kwargs)`: a client of `creditor` on the in-memory Amili, no retry delays."""

    def factory(**kwargs: Any) -> AsyncAmiliClient:
        kwargs.setdefault("retry", RetryPolicy.no_delay())
        return fake.client(creditor, **kwargs)

    return factory


@pytest.fixture
async def loopback(fake: FakeAmili) -> AsyncIterator[FakeServer]:
    """The fake on a real loopback socket (asyncio only)."""
    async with await start_server(fake) as server:
        yield server
