"""Clients that share only Redis, as separate processes do: one login, compare-and-set after a 401, a process
that dies mid-login, and Redis stopped in the middle of a batch. On asyncio and trio.

Asserted on what the servers stored (payments by reference, logins counted by the server), not only on what
the SDK reported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis as redis_py
from raw_amili import RawAmili

from amili_async import ApiCodeAuth, ApiCodeJwtAuth, AsyncAmiliClient, CreditorPayment, RetryPolicy
from amili_async.redis import RedisRateLimiter, RedisTokenStore
from amili_async.testing import FakeAmili
from amili_async.testing.redis_server import RedisServer

BACKENDS = ["asyncio", "trio"]
REPO = Path(__file__).resolve().parents[2]
CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68e4c40d93ee14723d28fa95"
PAID_ON = datetime(2025, 10, 7, tzinfo=timezone.utc)


def run(backend: str, main: Callable[[], Awaitable[Any]]) -> Any:
    return anyio.run(main, backend=backend)


def run_workers(backend: str, worker: Callable[[int], Awaitable[list[bool]]], count: int) -> list[list[bool]]:
    """`worker(0)` ... `worker(count - 1)` side by side (a test's "processes"): each one's outcomes."""

    async def main() -> list[list[bool]]:
        results: list[list[bool]] = []

        async def one(n: int) -> None:
            results.append(await worker(n))

        async with anyio.create_task_group() as tg:
            for n in range(count):
                tg.start_soon(one, n)
        return results

    return anyio.run(main, backend=backend)


def payment(case: str, reference: str, creditor: str = CREDITOR) -> CreditorPayment:
    return CreditorPayment(
        creditor=creditor,
        case=case,
        amount=Decimal("1.00"),
        currency="SEK",
        bank_transaction_date=PAID_ON,
        creditor_payment_reference=reference,
    )


# -- the in-memory Amili, single active token ------------------------------------------------------------


@pytest.fixture
def fake() -> FakeAmili:
    return FakeAmili(seed=14, single_active_token=True)


def _jwt_auth(creditor: Any) -> ApiCodeJwtAuth:
    return ApiCodeJwtAuth(api_code=creditor.api_code, private_key=creditor.private_key_pem)


@pytest.mark.parametrize("backend", BACKENDS)
def test_workers_sharing_redis_log_in_once(redis_server: RedisServer, fake: FakeAmili, backend: str):
    creditor = fake.add_creditor()
    case = fake.add_case(creditor.id, capital="100000")
    auth = _jwt_auth(creditor)

    async def worker(n: int) -> list[bool]:
        store = RedisTokenStore(redis_server.url, base_url=fake.BASE_URL, auth=auth)
        async with (
            store,
            AsyncAmiliClient(
                auth=auth, base_url=fake.BASE_URL, transport=fake.transport(), token_store=store
            ) as client,
        ):
            actions = [payment(case, f"W{n}-{i}", creditor.id) for i in range(20)]
            return [o.ok async for o in client.execute_many(actions, concurrency=8)]

    results = run_workers(backend, worker, 4)
    assert all(all(r) for r in results)
    assert fake.token_requests == 1  # four "processes", one login, no token knocked out
    refs = Counter(p["creditor_payment_reference"] for p in fake.payments)
    assert len(refs) == 80 and set(refs.values()) == {1}


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_refused_after_a_peer_refreshed_is_not_thrown_away(
    redis_server: RedisServer, fake: FakeAmili, backend: str
):
    """A and B hold tok-1; it is revoked; A logs in again (tok-2). B's 401 for tok-1 must not drop tok-2."""
    creditor = fake.add_creditor()
    case = fake.add_case(creditor.id, capital="100000")
    auth = _jwt_auth(creditor)

    async def main() -> tuple[int, int, Any]:
        a_store = RedisTokenStore(redis_server.url, base_url=fake.BASE_URL, auth=auth)
        b_store = RedisTokenStore(redis_server.url, base_url=fake.BASE_URL, auth=auth)
        kwargs: dict[str, Any] = {"base_url": fake.BASE_URL, "transport": fake.transport()}
        async with (
            a_store,
            b_store,
            AsyncAmiliClient(auth=auth, token_store=a_store, **kwargs) as a,
            AsyncAmiliClient(auth=auth, token_store=b_store, **kwargs) as b,
        ):
            await a.execute(payment(case, "A-1", creditor.id))
            await b.execute(payment(case, "B-1", creditor.id))  # B read A's token: no login
            fake.revoke_tokens()
            await a.execute(payment(case, "A-2", creditor.id))  # 401, A logs in: tok-2 in Redis
            stored_after_a = await b_store.load()
            await b.execute(payment(case, "B-2", creditor.id))  # 401 for tok-1: must adopt tok-2
            return a.token_requests, b.token_requests, stored_after_a

    a_logins, b_logins, stored = run(backend, main)
    assert fake.token_requests == 2 and a_logins == 2 and b_logins == 0
    assert stored is not None
    refs = [p["creditor_payment_reference"] for p in fake.payments]
    assert sorted(refs) == ["A-1", "A-2", "B-1", "B-2"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_redis_stopped_mid_batch_loses_no_payment(redis_server: RedisServer, backend: str):
    fake = FakeAmili(seed=14)  # tokens may multiply during the outage; this test is about payments
    creditor = fake.add_creditor()
    case = fake.add_case(creditor.id, capital="100000")
    auth = _jwt_auth(creditor)
    total = 120

    async def main() -> list[bool]:
        store = RedisTokenStore(redis_server.url, base_url=fake.BASE_URL, auth=auth)
        limiter = RedisRateLimiter(redis_server.url, base_url=fake.BASE_URL, auth=auth)
        outcomes: list[bool] = []
        async with (
            store,
            limiter,
            AsyncAmiliClient(
                auth=auth,
                base_url=fake.BASE_URL,
                transport=fake.transport(),
                token_store=store,
                rate_limiter=limiter,
                retry=RetryPolicy.no_delay(),
            ) as client,
        ):
            actions = [payment(case, f"P-{i:04d}", creditor.id) for i in range(total)]
            async for outcome in client.execute_many(actions, concurrency=8):
                outcomes.append(outcome.ok)
                if len(outcomes) == total // 3:
                    redis_server.stop()  # killed, as a crash would
                if len(outcomes) == 2 * total // 3:
                    fake.revoke_tokens()  # and a 401 while Redis is gone: the local cache logs in again
        return outcomes

    outcomes = run(backend, main)
    assert len(outcomes) == total and all(outcomes)
    refs = Counter(p["creditor_payment_reference"] for p in fake.payments)
    assert len(refs) == total and set(refs.values()) == {1}


# -- a process that dies while it logs in --------------------------------------------------------------

_CHILD = """
import sys, anyio
from amili_async import ApiCodeAuth, AsyncAmiliClient
from amili_async.redis import RedisTokenStore

base_url, redis_url = sys.argv[1], sys.argv[2]

async def main():
    auth = ApiCodeAuth(api_code="api-code-SECRET-7d1e")
    store = RedisTokenStore(redis_url, base_url=base_url, auth=auth)
    async with AsyncAmiliClient(auth=auth, base_url=base_url, token_store=store, token_timeout=2.0) as client:
        await client.cases.get("68e4c40d93ee14723d28fa95")  # never answered: the login hangs

anyio.run(main)
"""


def _lock_ttl_ms(server: RedisServer) -> int:
    with redis_py.Redis(unix_socket_path=str(server.socket)) as r:
        keys = r.keys("*:login")
        return int(r.pttl(keys[0])) if keys else -2


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_process_dying_mid_login_blocks_the_others_only_until_its_lock_expires(
    redis_server: RedisServer, backend: str
):
    with RawAmili(hang_logins=1) as amili:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, amili.base_url, redis_server.url],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while amili.logins == 0 and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.01)
            assert amili.logins == 1, "the child never started its login"
        finally:
            child.kill()  # dies holding the login lock, its login unanswered
            child.wait()
        assert _lock_ttl_ms(redis_server) > 0  # the dead process's lock is still there

        auth = ApiCodeAuth(api_code="api-code-SECRET-7d1e")

        async def survivor(n: int) -> list[bool]:
            store = RedisTokenStore(redis_server.url, base_url=amili.base_url, auth=auth)
            async with (
                store,
                AsyncAmiliClient(auth=auth, base_url=amili.base_url, token_store=store, token_timeout=2.0) as client,
            ):
                actions = [payment(CASE, f"S{n}-{i}") for i in range(5)]
                return [o.ok async for o in client.execute_many(actions, concurrency=5)]

        results = run_workers(backend, survivor, 3)
        assert all(all(r) for r in results)
        # The dead one's login, then exactly one more once its lock expired: no herd, no bouncing.
        assert amili.logins == 2
        assert amili.unauthorized == 0
        assert sorted(amili.references()) == sorted(f"S{n}-{i}" for n in range(3) for i in range(5))


# -- one rate budget ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("style", "known_rate", "max_429"),
    [
        ("eve", None, 16),  # learnt from X-RateLimit-*: at most the first burst, before the first answer, is refused
        ("retry-after", 40, 2),  # no headers to learn from, but the limit is known: paced together from the start
    ],
)
def test_workers_sharing_a_budget_stay_under_the_servers_limit(
    redis_server: RedisServer, backend: str, style: str, known_rate: int | None, max_429: int
):
    """Three 'processes' of 16 concurrent sends each; the server allows 40 a second for all of them together."""
    from amili_async.testing import RateLimit

    fake = FakeAmili(seed=14)
    fake.set_rate_limit(RateLimit(40, style))  # type: ignore[arg-type]
    creditor = fake.add_creditor()
    case = fake.add_case(creditor.id, capital="100000")
    auth = _jwt_auth(creditor)

    async def worker(n: int) -> list[bool]:
        limiter = RedisRateLimiter(redis_server.url, base_url=fake.BASE_URL, auth=auth, rate=known_rate)
        async with (
            limiter,
            AsyncAmiliClient(
                auth=auth, base_url=fake.BASE_URL, transport=fake.transport(), rate_limiter=limiter
            ) as client,
        ):
            actions = [payment(case, f"R{n}-{i}", creditor.id) for i in range(40)]
            return [o.ok async for o in client.execute_many(actions, concurrency=16)]

    results = run_workers(backend, worker, 3)
    assert all(all(r) for r in results)
    refs = Counter(p["creditor_payment_reference"] for p in fake.payments)
    assert len(refs) == 120 and set(refs.values()) == {1}
    assert fake.statuses[429] <= max_429
