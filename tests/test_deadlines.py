"""Call deadlines on asyncio: one timer for all calls of a loop (`_flow.Deadlines`), with the semantics of
`asyncio.timeout`: each call ends at its own deadline, and a cancellation from anywhere else is never taken
for one."""

from __future__ import annotations

import asyncio
import sys
import time

import httpx
import pytest

from amili_async import OutcomeUnknownError, RetryPolicy, TimeoutError
from amili_async._flow import Deadlines

pytestmark = [
    pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 uses anyio's cancel scope instead"),
    pytest.mark.parametrize("anyio_backend", ["asyncio"]),
]

CASE = "68e4c40d93ee14723d28fa95"
CREDITOR = "674dbeb208847b9501cc9138"


async def _bounded(deadlines: Deadlines, seconds: float, work: float) -> str:
    """Sleep `work` seconds under a deadline of `seconds`: "done" or "expired"."""
    entry = deadlines.start(seconds)
    try:
        await asyncio.sleep(work)
    except BaseException as exc:
        if deadlines.end(entry, exc):
            return "expired"
        raise
    deadlines.end(entry, None)
    return "done"


async def test_each_call_ends_at_its_own_deadline(anyio_backend):
    deadlines = Deadlines()
    ended: list[tuple[str, float]] = []
    started = time.monotonic()

    async def call(name: str, seconds: float, delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        begun = time.monotonic()
        outcome = await _bounded(deadlines, seconds, 5)
        ended.append((name, time.monotonic() - begun))
        assert outcome == "expired"

    await asyncio.gather(call("long", 0.4), call("short", 0.1), call("long-later", 0.4, delay=0.2))
    assert [name for name, _ in ended] == ["short", "long", "long-later"]
    for name, took in ended:
        assert took >= {"short": 0.1, "long": 0.4, "long-later": 0.4}[name] - 0.002  # never before its deadline
    assert time.monotonic() - started < 5  # the work (5 s) was cut, not waited out


async def test_finished_calls_leave_no_timer_behind(anyio_backend):
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    before = len(loop._scheduled)  # CPython's heap of timers: asyncio.timeout leaves one cancelled handle per call
    for _ in range(500):
        assert await _bounded(deadlines, 30, 0) == "done"
    assert len(loop._scheduled) <= before + 1


async def test_a_cancellation_from_elsewhere_is_not_a_deadline(anyio_backend):
    deadlines = Deadlines()
    task = asyncio.create_task(_bounded(deadlines, 30, 5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _bounded(deadlines, 0.05, 5) == "expired"  # and the watcher still works afterwards


async def test_a_cancellation_arriving_as_the_deadline_passes_still_propagates(anyio_backend):
    deadlines = Deadlines()
    judged: list[bool] = []

    async def both() -> None:
        entry = deadlines.start(0.05)
        try:
            await asyncio.sleep(0.2)
        except BaseException as exc:
            asyncio.current_task().cancel()  # someone else wants the task gone too, before the call ends
            judged.append(deadlines.end(entry, exc))
            raise

    task = asyncio.create_task(both())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert judged == [False]  # not the deadline's alone: the cancellation is not swallowed


async def test_a_nested_call_expires_alone_and_the_task_carries_on(anyio_backend):
    deadlines = Deadlines()
    entry = deadlines.start(30)
    assert await _bounded(deadlines, 0.05, 5) == "expired"
    await asyncio.sleep(0.01)  # no cancellation left pending on the task
    assert deadlines.end(entry, None) is False


# -- through the client -----------------------------------------------------------------------------------


def _payment(reference: str) -> dict[str, object]:
    from datetime import datetime, timezone
    from decimal import Decimal

    return {
        "creditor": CREDITOR,
        "case": CASE,
        "amount": Decimal("250.00"),
        "currency": "SEK",
        "bank_transaction_date": datetime(2025, 10, 7, tzinfo=timezone.utc),
        "creditor_payment_reference": reference,
    }


async def test_views_with_other_deadlines_each_keep_their_own(make_client, anyio_backend):
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")  # pragma: no cover

    client, _ = make_client(hang, retry=RetryPolicy.no_delay(deadline=0.6))
    quick = client.with_options(retry=RetryPolicy.no_delay(deadline=0.1))
    ended: list[str] = []

    async def read(view: object, name: str) -> None:
        with pytest.raises(TimeoutError):
            await view.cases.get(CASE)  # type: ignore[attr-defined]
        ended.append(name)

    async with client:
        await asyncio.wait_for(asyncio.gather(read(client, "slow"), read(quick, "quick")), 10)
        assert ended == ["quick", "slow"]
        with pytest.raises(OutcomeUnknownError) as info:
            await asyncio.wait_for(quick.creditor_payments.create(**_payment("PAY-D1")), 10)
        assert "deadline" in str(info.value)
        await asyncio.sleep(0.01)  # the expired calls left no cancellation pending on this task


async def test_cancelling_a_call_is_not_reported_as_its_deadline(make_client, anyio_backend):
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")  # pragma: no cover

    client, _ = make_client(hang, retry=RetryPolicy.no_delay(deadline=30))
    async with client:
        task = asyncio.create_task(client.cases.get(CASE))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(asyncio.TimeoutError):  # the caller's own timeout is the caller's
            await asyncio.wait_for(client.cases.get(CASE), 0.05)
