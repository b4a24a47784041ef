"""The client-side rate controller: open at first, quota windows from headers, CUBIC without them."""

from __future__ import annotations

import time
from collections.abc import Mapping

import anyio
import httpx
import pytest

from amili_async import AdaptiveRateLimiter, NoRateLimit, RateLimiter, RetryPolicy

CASE = "68e4c40d93ee14723d28fa95"
WALL = 1_800_000_000.0  # the fake wall clock's epoch seconds at monotonic 0


class Time:
    """A fake monotonic clock, a wall clock that moves with it, and a sleep that advances both."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.gate: anyio.Event | None = None  # when set: sleepers wait for it before their time passes

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.gate is not None:
            await self.gate.wait()
        self.now = max(self.now, self.now + seconds)
        await anyio.lowlevel.checkpoint()


def limiter(t: Time, **kwargs: float) -> AdaptiveRateLimiter:
    return AdaptiveRateLimiter(clock=t.clock, wall_clock=t.wall, sleep=t.sleep, **kwargs)


def eve_headers(remaining: int, reset_in: float, limit: int = 150) -> dict[str, str]:
    return {
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-reset": str(int(WALL + reset_in)),
    }


async def test_it_starts_open_and_an_open_limiter_never_suspends():
    t = Time()
    rl = limiter(t)
    assert rl.rate is None
    for _ in range(1000):
        assert await rl.acquire() == 0.0
        await rl.observe(201, {})
    assert t.sleeps == [] and t.now == 0.0


async def test_remaining_zero_holds_new_sends_until_the_reset():
    t = Time()
    t.now = 0.25  # a quarter into the window ending at WALL + 1
    rl = limiter(t, window_guard=0.05)
    await rl.acquire()
    await rl.observe(201, eve_headers(0, 1))
    waited = await rl.acquire()
    assert waited == pytest.approx(1 - 0.25 + 0.05)  # the window's end, plus the guard
    # the next window starts with X-RateLimit-Limit sends, paced over the window
    waits = [await rl.acquire() for _ in range(149)]
    assert max(waits) < 1 / 100 and sum(waits) < 1.0


async def test_the_remaining_quota_is_spread_over_the_time_left():
    t = Time()
    rl = limiter(t, window_guard=0.0)
    await rl.acquire()
    await rl.observe(201, {**eve_headers(9, 1), "x-ratelimit-limit": "10"})
    start = t.now
    for _ in range(9):
        await rl.acquire()
    # nine sends over the second that is left, none bunched at the start
    assert 0.7 <= t.now - start <= 1.0
    assert max(t.sleeps) <= 0.2


async def test_a_bare_429_when_the_quota_is_nearly_used_up_holds_until_the_window_ends_without_a_cut():
    t = Time()
    t.now = 0.5
    rl = limiter(t, window_guard=0.0)
    await rl.acquire()
    await rl.observe(201, eve_headers(1, 1))  # one left
    await rl.observe(429, {})  # Eve's 429: no header at all
    assert rl._w_max is None  # the window explains it: no CUBIC cut
    assert await rl.acquire() == pytest.approx(0.5)


async def test_without_headers_a_429_cuts_to_about_what_the_server_accepted_then_probes_back_up():
    t = Time()
    rl = limiter(t, beta=0.7, keep=0.9, recovery=2.0)
    for _ in range(100):  # 100 sends and answers over one second: 100/s accepted
        await rl.acquire()
        await rl.observe(201, {})
        t.now += 0.01
    await rl.observe(429, {})
    cut = rl.rate
    assert cut is not None and 85 <= cut <= 95  # keep x accepted: a limiter has no queue to drain
    t.now += 1.0
    assert rl.rate is not None and cut < rl.rate < 100  # growing back, concave below the throttled rate
    t.now += 3.0
    assert rl.rate is not None and rl.rate > 100  # past it: probing above the rate that was throttled


async def test_when_nothing_is_accepted_cuts_are_multiplicative():
    t = Time()
    rl = limiter(t, beta=0.5)
    for _ in range(100):
        await rl.acquire()
        t.now += 0.001
    await rl.observe(429, {})  # the first cut: beta x beta x the measured send rate (1000/s)
    first = rl.rate
    assert first is not None and 200 <= first <= 300
    t.now += 1.5
    await rl.acquire()
    await rl.observe(429, {})
    assert rl.rate is not None and rl.rate <= first * 0.75


async def test_one_cut_per_congestion_event():
    t = Time()
    rl = limiter(t)
    for _ in range(50):
        await rl.acquire()
        await rl.observe(201, {})
        t.now += 0.01
    for _ in range(64):  # 64 sends in flight when the server starts refusing
        await rl.acquire()
    await rl.observe(429, {})
    first = rl.rate
    for _ in range(63):  # the 429s of the requests sent before the cut do not cut again
        await rl.observe(429, {})
    assert rl.rate == pytest.approx(first, rel=0.01)
    await rl.acquire()  # a send after the cut, and its 429: a new event
    await rl.observe(429, {})
    assert rl.rate is not None and first is not None and rl.rate < first * 0.9


@pytest.mark.parametrize(("headers", "cuts"), [({"retry-after": "2"}, True), ({}, False)])
async def test_a_503_is_throttling_only_when_it_says_when_to_come_back(headers: Mapping[str, str], cuts: bool):
    t = Time()
    rl = limiter(t)
    await rl.acquire()
    await rl.observe(200, {})
    await rl.observe(503, headers)
    assert (rl.rate is not None) is cuts


async def test_max_rate_holds_even_while_open():
    t = Time()
    rl = limiter(t, max_rate=10)
    for _ in range(11):
        await rl.acquire()
    assert t.now == pytest.approx(1.0)


async def test_a_queued_send_is_requeued_when_a_hold_begins_while_it_sleeps():
    t = Time()
    rl = limiter(t, window_guard=0.0)
    await rl.acquire()
    await rl.observe(201, {**eve_headers(2, 1), "x-ratelimit-limit": "3"})
    order: list[str] = []
    t.gate = anyio.Event()

    async def send(name: str) -> None:
        await rl.acquire()
        order.append(f"{name}@{t.now:.2f}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(send, "a")
        tg.start_soon(send, "b")
        await anyio.wait_all_tasks_blocked()  # a went out at once, b sleeps until its slot (0.5 s)
        await rl.observe(201, eve_headers(0, 1, limit=3))  # somebody else used the quota up
        t.gate.set()
    assert order[0] == "a@0.00"
    assert float(order[1].split("@")[1]) >= 1.0, order  # b waits for the next window


def test_protocol_and_switch_off():
    assert isinstance(AdaptiveRateLimiter(), RateLimiter)
    assert isinstance(NoRateLimit(), RateLimiter)
    with pytest.raises(ValueError):
        AdaptiveRateLimiter(beta=1.5)
    with pytest.raises(ValueError):
        AdaptiveRateLimiter(min_rate=5, max_rate=1)
    assert "open" in repr(AdaptiveRateLimiter())


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_default_limiter_paces_on_asyncio_and_trio(anyio_backend: str) -> None:
    async def run() -> float:
        rl = AdaptiveRateLimiter(max_rate=200)
        started = time.monotonic()
        for _ in range(21):
            await rl.acquire()
        return time.monotonic() - started

    elapsed = await anyio.to_thread.run_sync(lambda: anyio.run(run, backend=anyio_backend))
    assert elapsed >= 0.09  # 20 intervals of 5 ms: it really slept, on that event loop


# -- through the client ---------------------------------------------------------------------------------------


class CountingLimiter:
    def __init__(self) -> None:
        self.acquired = 0
        self.seen: list[int] = []

    async def acquire(self) -> float:
        self.acquired += 1
        return 0.0

    async def observe(self, status: int, headers: Mapping[str, str]) -> None:
        self.seen.append(status)


async def test_a_custom_limiter_sees_every_send_and_every_answer(make_client):
    answers = iter([httpx.Response(429, json={}), httpx.Response(503), httpx.Response(200, json={"_id": CASE})])
    custom = CountingLimiter()
    client, transport = make_client(lambda r: next(answers), rate_limiter=custom)
    await client.cases.get(CASE)
    assert custom.acquired == 3 and custom.seen == [429, 503, 200]
    assert len(transport.token_requests) == 1  # the token endpoint is not paced


class BrokenLimiter:
    async def acquire(self) -> float:
        raise ConnectionError("redis is down")

    async def observe(self, status: int, headers: Mapping[str, str]) -> None:
        raise ConnectionError("redis is down")


async def test_a_broken_limiter_never_stops_a_call_and_is_reported_once(make_client, caplog):
    client, _ = make_client(lambda r: httpx.Response(200, json={"_id": CASE}), rate_limiter=BrokenLimiter())
    for _ in range(3):
        assert (await client.cases.get(CASE)).id == CASE
    warnings = [r for r in caplog.records if "rate limiter failed" in r.getMessage() and r.levelname == "WARNING"]
    assert len(warnings) == 1


async def test_rate_limiter_false_switches_pacing_off(make_client):
    client, _ = make_client(lambda r: httpx.Response(200, json={"_id": CASE}), rate_limiter=False)
    await client.cases.get(CASE)
    assert isinstance(client._bind().limiter.limiter, NoRateLimit)
    client2, _ = make_client(lambda r: httpx.Response(200, json={"_id": CASE}), retry=RetryPolicy.no_delay())
    await client2.cases.get(CASE)
    assert isinstance(client2._bind().limiter.limiter, AdaptiveRateLimiter)
