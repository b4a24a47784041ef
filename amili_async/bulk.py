"""`execute_many`: many actions, bounded concurrency, one outcome per action, flat memory.

Actions are pulled from the (sync or async) iterable one at a time, each only once a concurrency slot is free,
so at most `concurrency` actions talk to Amili at once, whatever the length of the input. An action whose
answer was lost and that waits out its settle window (see `docs/errors-and-retries.md`) gives its slot back for
the wait, so a storm of ambiguous failures slows only the actions it hit; at most `SETTLING_PER_SLOT` such
waiting actions per slot are alive at once, so memory stays flat. Every action pulled
produces exactly one `Outcome` (its receipt, or the error it raised), yielded in completion order and
numbered by its position in the input. Errors of actions never stop the run; only cancellation does. If the
input iterable itself raises, no new action is started, the ones in flight finish and yield their outcomes,
and then that exception is raised as is.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from . import _slots
from ._slots import Slot

__all__ = ["Outcome", "run_many"]

A = TypeVar("A")


@attrs.frozen
class Outcome(Generic[A]):
    """What became of one action: `receipt` when it succeeded, `error` when it did not (never both)."""

    index: int
    action: A
    receipt: Any = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# How many actions may wait out a settle window (without a slot) per unit of concurrency: enough that a storm of
# ambiguous failures does not stall the batch, bounded so that memory stays flat whatever the input's length.
SETTLING_PER_SLOT = 8


async def run_many(
    execute: Callable[[A], Awaitable[Any]],
    actions: Iterable[A] | AsyncIterable[A],
    *,
    concurrency: int,
) -> AsyncIterator[Outcome[A]]:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        from .models._validate import fail

        raise fail("concurrency", f"must be a positive int, got {concurrency!r}")
    source = _numbered(actions)
    input_failed: list[Exception] = []
    slots = anyio.Semaphore(concurrency)  # actions talking to Amili
    room = anyio.Semaphore(concurrency * (1 + SETTLING_PER_SLOT))  # actions alive: talking, settling, reporting
    send, receive = anyio.create_memory_object_stream[Outcome[A]](concurrency)

    async def run_one(index: int, action: A, slot: Slot, out: MemoryObjectSendStream[Outcome[A]]) -> None:
        async with out:
            _slots.current.set(slot)  # this task's own context: reconciliation steps out of it to settle
            try:
                receipt = await execute(action)
            except Exception as exc:  # an outcome, not a crash: the run goes on
                outcome: Outcome[A] = Outcome(index, action, error=exc)
            else:
                outcome = Outcome(index, action, receipt=receipt)
            finally:
                slot.release()
            try:
                await out.send(outcome)
            finally:
                room.release()

    async def feed(tg: TaskGroup, out: MemoryObjectSendStream[Outcome[A]]) -> None:
        async with out:
            while True:
                # A place and a slot first, then the next action: nothing waits in memory unstarted.
                await room.acquire()
                slot = _slots.Slot(slots)
                try:
                    await slot.acquire()
                    index, action = await anext(source)
                except StopAsyncIteration:
                    slot.release()
                    room.release()
                    return
                except Exception as exc:  # the caller's iterable broke: finish what is in flight, then raise
                    slot.release()
                    room.release()
                    input_failed.append(exc)
                    return
                except BaseException:
                    slot.release()
                    room.release()
                    raise
                tg.start_soon(run_one, index, action, slot, out.clone())

    try:
        async with anyio.create_task_group() as tg, receive:
            tg.start_soon(feed, tg, send)
            try:
                async for outcome in receive:
                    yield outcome
            except GeneratorExit:
                # The consumer stopped early (break inside `aclosing`, or aclose()): stop the workers here
                # rather than letting GeneratorExit escape through the task group as an exception group.
                tg.cancel_scope.cancel()
    finally:
        await source.aclose()
    if input_failed:
        raise input_failed[0]


async def _numbered(actions: Iterable[A] | AsyncIterable[A]) -> AsyncGenerator[tuple[int, A], None]:
    index = 0
    if isinstance(actions, AsyncIterable):
        async for action in actions:
            yield index, action
            index += 1
    else:
        for action in actions:
            yield index, action
            index += 1
