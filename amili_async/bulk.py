"""`execute_many`: many actions, bounded concurrency, one outcome per action, flat memory.

A fixed pool of `concurrency` workers pulls actions from the (sync or async) iterable one at a time, so at
most `concurrency` actions are in memory or in flight, whatever the length of the input. Every action pulled
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
from anyio.abc import ObjectSendStream

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
    pull_lock = anyio.Lock()
    input_failed: list[Exception] = []
    send, receive = anyio.create_memory_object_stream[Outcome[A]](concurrency)

    async def worker(out: ObjectSendStream[Outcome[A]]) -> None:
        async with out:
            while True:
                async with pull_lock:
                    if input_failed:
                        return
                    try:
                        index, action = await anext(source)
                    except StopAsyncIteration:
                        return
                    except Exception as exc:  # the caller's iterable broke: finish what is in flight, then raise
                        input_failed.append(exc)
                        return
                try:
                    receipt = await execute(action)
                except Exception as exc:  # an outcome, not a crash: the run goes on
                    await out.send(Outcome(index, action, error=exc))
                else:
                    await out.send(Outcome(index, action, receipt=receipt))

    try:
        async with anyio.create_task_group() as tg, receive:
            async with send:
                for _ in range(concurrency):
                    tg.start_soon(worker, send.clone())
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
