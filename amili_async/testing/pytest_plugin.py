"""pytest fixtures for testing code that uses amili-async: an in-memory Amili and a client bound to it.

The plugin comes with the package (entry point ``pytest11``): no import, no ``conftest.py`` line.

```python
async def test_registers_the_payment(fake_amili, amili_client):
    case_id = fake_amili.new_case(capital=Decimal("500.00"))
    await amili_client.creditor_payments.create(
        creditor=fake_amili.creditor_id, case=case_id, amount=Decimal("500.00"), currency="SEK",
        bank_transaction_date=datetime(2025, 10, 7, tzinfo=timezone.utc), creditor_payment_reference="P-1",
    )
    assert fake_amili.payments_for(case_id)[0]["amount"] == Decimal("500.00")
    assert fake_amili.get_case(case_id)["closed"]
```

- ``fake_amili``: a `FakeAmiliFixture` (a `FakeAmili` with one creditor already added, seeded from
  ``--amili-seed``, 0 by default) plus helpers: ``creditor``, ``creditor_id``, ``new_case()``,
  ``new_cases(n)``, ``fail(kind, ...)`` (inject a fault, once by default), ``payments_for(case_id)``,
  ``creditings_for(case_id)``; and ``client()`` defaults to the fixture's creditor.
- ``amili_client``: an `AsyncAmiliClient` bound to ``fake_amili`` with `RetryPolicy.no_delay()` (retries
  happen, waits do not), opened before the test and closed after it.

``amili_client`` is an async fixture. With pytest-asyncio in auto mode (``asyncio_mode = "auto"``) there is
nothing to do; in strict mode (pytest-asyncio's default) mark the tests that use it
``@pytest.mark.asyncio``. Under trio, build the client inside the test instead:
``async with fake_amili.client() as amili: ...``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest

from amili_async.client import AsyncAmiliClient
from amili_async.retry import RetryPolicy

from .fake import FakeAmili, FakeCreditor
from .faults import Fault, FaultKind

__all__ = ["FakeAmiliFixture", "amili_client", "fake_amili", "pytest_addoption"]

Doc = dict[str, Any]


def _async_fixture(func: Callable[..., Any]) -> Any:
    """pytest-asyncio's fixture decorator when it is installed (so strict mode works too), else pytest's.

    The SDK does not depend on pytest-asyncio; without it, anyio's pytest plugin runs async fixtures.
    """
    try:
        import pytest_asyncio
    except ImportError:
        return pytest.fixture(func)
    return pytest_asyncio.fixture(func)


class FakeAmiliFixture(FakeAmili):
    """A `FakeAmili` with one creditor already added, and shortcuts for the usual test set-up.

    Everything of `FakeAmili` is here too: ``payments``, ``creditings``, ``cancellations``, ``cases``,
    ``get_case()``, ``requests``, ``inject()``, ``clear_faults()``, ``revoke_tokens()``, ``add_creditor()``...
    """

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        self.creditor: FakeCreditor = self.add_creditor()

    @property
    def creditor_id(self) -> str:
        """The id of the fixture's creditor (what ``creditor=`` takes)."""
        return self.creditor.id

    def client(self, creditor: FakeCreditor | None = None, **kwargs: Any) -> AsyncAmiliClient:
        """An SDK client wired to this fake, logged in as ``creditor`` (the fixture's creditor by default).

        Retries keep their rules but never sleep, unless you pass your own ``retry=``.
        """
        kwargs.setdefault("retry", RetryPolicy.no_delay())
        return super().client(creditor or self.creditor, **kwargs)

    def new_case(self, capital: Decimal | int | str = Decimal("1000.00"), **kwargs: Any) -> str:
        """Add a case for the fixture's creditor; return its id (other arguments: `FakeAmili.add_case`)."""
        kwargs.setdefault("creditor", self.creditor.id)
        return self.add_case(capital=capital, **kwargs)

    def new_cases(self, count: int, capital: Decimal | int | str = Decimal("1000.00"), **kwargs: Any) -> list[str]:
        """Add ``count`` cases for the fixture's creditor (invoice numbers ``INV-<n>``); return their ids."""
        return [self.new_case(capital, **kwargs) for _ in range(count)]

    def fail(
        self,
        kind: FaultKind,
        *,
        path: str | None = None,
        method: str | None = None,
        times: int | None = 1,
        **params: Any,
    ) -> Fault:
        """Inject a fault; unlike `Fault` itself it fires once by default (``times=None``: every time).

        ``fake_amili.fail("drop_after_commit", path="/creditor--payments")`` loses the answer of the next
        payment after it was applied; ``fake_amili.fail("rate_limit", retry_after=1)`` answers the next
        request with a 429. The kinds and their parameters are listed in `amili_async.testing.faults`.
        """
        return self.inject(Fault(kind, path=path, method=method, times=times, **params))

    def payments_for(self, case_id: str) -> list[Doc]:
        """The payments registered on a case, oldest first."""
        return [doc for doc in self.payments if doc.get("case") == case_id]

    def creditings_for(self, case_id: str) -> list[Doc]:
        """The creditings registered on a case, oldest first."""
        return [doc for doc in self.creditings if doc.get("case") == case_id]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("amili_async", "amili-async in-memory Amili")
    group.addoption(
        "--amili-seed",
        action="store",
        type=int,
        default=0,
        metavar="SEED",
        help="seed of the fake_amili fixture (ids, tokens, probabilistic faults); default 0",
    )


@pytest.fixture
def fake_amili(request: pytest.FixtureRequest) -> FakeAmiliFixture:
    """An in-memory Amili with one creditor (``fake_amili.creditor``), seeded from ``--amili-seed``."""
    seed = request.config.getoption("amili_seed", default=0)
    return FakeAmiliFixture(seed=0 if seed is None else int(seed))


@_async_fixture
async def amili_client(fake_amili: FakeAmiliFixture) -> AsyncIterator[AsyncAmiliClient]:
    """An `AsyncAmiliClient` logged in as ``fake_amili.creditor``, with retries that never sleep."""
    async with fake_amili.client() as client:
        yield client
