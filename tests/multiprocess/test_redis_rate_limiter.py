"""`RedisRateLimiter` against a real redis-server, on asyncio and trio: one budget for many limiters.

Each limiter here stands for one process (its own connection, its own local state); they share only Redis.
Waits are asserted as lower bounds (what the shared budget imposes), never as wall-clock limits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import pytest
import redis as redis_py

from amili_async.redis import RedisRateLimiter
from amili_async.testing.redis_server import RedisServer

BASE = "https://api-sandbox.amili.se"
BACKENDS = ["asyncio", "trio"]


class LocalRecorder:
    """A stand-in local limiter: records what reaches it."""

    def __init__(self) -> None:
        self.acquired = 0
        self.observed: list[int] = []

    async def acquire(self) -> float:
        self.acquired += 1
        return 0.0

    async def observe(self, status: int, headers: Mapping[str, str]) -> None:
        self.observed.append(status)


def run(backend: str, main: Callable[[], Awaitable[Any]]) -> Any:
    return anyio.run(main, backend=backend)


def limiter(server: RedisServer, **kwargs: Any) -> RedisRateLimiter:
    kwargs.setdefault("fallback", LocalRecorder())
    return RedisRateLimiter(server.url, base_url=BASE, scope="creditor-1", **kwargs)


def state(server: RedisServer) -> dict[str, str]:
    with redis_py.Redis(unix_socket_path=str(server.socket), decode_responses=True) as r:
        (key,) = r.keys("*:rate:state")
        return r.hgetall(key)


def hold_ms(server: RedisServer) -> int:
    with redis_py.Redis(unix_socket_path=str(server.socket)) as r:
        found = r.keys("*:rate:hold")
        return int(r.pttl(found[0])) if found else -2


def eve_headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(remaining), "x-ratelimit-reset": str(reset)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_processes_share_one_pace(redis_server: RedisServer, backend: str):
    """Two 'processes' sending 4 each at a shared 20/s: the 8 slots are 50 ms apart, whoever takes them."""

    async def main() -> list[float]:
        waits: list[float] = []
        async with limiter(redis_server, rate=20) as one, limiter(redis_server, rate=20) as two:

            async def send(lim: RedisRateLimiter) -> None:
                waits.append(await lim.acquire())

            async with anyio.create_task_group() as tg:
                for lim in (one, two) * 4:
                    tg.start_soon(send, lim)
        return sorted(waits)

    waits = run(backend, main)
    assert len(waits) == 8
    # Slot k waits at least k * 50 ms (minus scheduling slack): the last one 350 ms.
    for k, wait in enumerate(waits):
        assert wait >= k * 0.05 - 0.01


@pytest.mark.parametrize("backend", BACKENDS)
def test_rate_learnt_from_eve_headers_and_window_measured(redis_server: RedisServer, backend: str):
    async def main() -> list[dict[str, str]]:
        async with limiter(redis_server) as lim:
            reset = int(time.time()) + 1
            await lim.observe(200, eve_headers(50, 49, reset))
            first = state(redis_server)
            # Two resets 10 s apart: the window is 10 s (a fixed-window limiter), so 50 per 10 s.
            await lim.observe(200, eve_headers(50, 48, reset + 10))
            await lim.observe(200, eve_headers(50, 47, reset + 20))
            return [first, state(redis_server)]

    first, later = run(backend, main)
    assert float(first["rate"]) == pytest.approx(50 * 0.95)  # 1 s window at first (reset within a second)
    assert float(later["rate"]) == pytest.approx(5 * 0.95)
    assert later["learned"] == "1"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_429_holds_every_process_and_cuts_the_shared_rate(redis_server: RedisServer, backend: str):
    async def main() -> float:
        async with limiter(redis_server, rate=100) as one, limiter(redis_server, rate=100) as two:
            await one.acquire()
            await one.observe(200, eve_headers(100, 50, int(time.time()) + 1))
            await one.observe(429, {"retry-after": "0.4"})
            await one.observe(429, {"retry-after": "0.2"})  # a shorter hold never shortens the first
            assert 250 < hold_ms(redis_server) <= 400
            return await two.acquire()  # the other process waits out the hold

    waited = run(backend, main)
    assert waited >= 0.25
    cut = state(redis_server)
    assert float(cut["rate"]) == pytest.approx(100 * 0.95 * 0.7)  # cut once, although two 429s came back
    assert float(cut["ceiling"]) == pytest.approx(100 * 0.95)


@pytest.mark.parametrize("backend", BACKENDS)
def test_remaining_zero_holds_until_the_reset(redis_server: RedisServer, backend: str):
    async def main() -> None:
        async with limiter(redis_server) as lim:
            await lim.observe(201, eve_headers(10, 0, time.time() + 0.5))

    run(backend, main)
    assert 300 < hold_ms(redis_server) <= 500


@pytest.mark.parametrize("backend", BACKENDS)
def test_throttle_without_headers_cuts_to_what_the_server_accepted(redis_server: RedisServer, backend: str):
    async def main() -> None:
        async with limiter(redis_server) as one, limiter(redis_server) as two:  # no rate known: unpaced
            second = int(time.time())
            while int(time.time()) <= second + 1:  # the rest of this second and a whole one, two processes
                for lim in (one, two):
                    await lim.acquire()
                    await lim.observe(201, {})  # accepted; reported with the next call, no extra round trip
                await anyio.sleep(0.02)
            await one.observe(429, {})  # bare: no header, no Retry-After

    run(backend, main)
    shared = state(redis_server)
    # The ceiling is what both processes got accepted in the last whole second (about 2 x 1 / 0.02 s).
    assert 20 <= float(shared["ceiling"]) <= 110
    assert float(shared["rate"]) == pytest.approx(float(shared["ceiling"]) * 0.7)
    assert 1_000 >= hold_ms(redis_server) > 0  # no window known: a one-second hold


@pytest.mark.parametrize("backend", BACKENDS)
def test_redis_down_falls_back_to_the_local_limiter(
    redis_server: RedisServer, backend: str, caplog: pytest.LogCaptureFixture
):
    local = LocalRecorder()

    async def main() -> None:
        async with limiter(redis_server, fallback=local, recheck=60) as lim:
            await lim.acquire()
            await lim.observe(200, {})
            redis_server.stop()
            for _ in range(5):
                await lim.acquire()
                await lim.observe(429, {"retry-after": "1"})

    with caplog.at_level(logging.WARNING, logger="amili_async"):
        run(backend, main)
    assert local.acquired == 5  # only while Redis was down
    assert local.observed == [200] + [429] * 5  # informed all along
    assert sum("Redis is unreachable" in r.getMessage() for r in caplog.records) == 1
