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

With `stop_on=StopOn(...)` a run that cannot succeed stops sending instead of failing every action slowly
(bad credentials, Amili unreachable): every action not sent from then on, and every one still only waiting for
a token or its turn, gets a `NotSentError` outcome, so the run ends within seconds and nothing sent is lost
track of (a write whose fate is open is always settled first).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from . import _slots
from ._flow import CURRENT_STOP, StopSwitch
from ._slots import Slot
from .errors import AmiliError, AuthenticationError, NotSentError, TransportError

__all__ = ["Outcome", "StopOn", "run_many"]

logger = logging.getLogger("amili_async")

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


# -- stopping a run that cannot succeed (issue 10) ------------------------------------------------------------


@attrs.frozen
class StopOn:
    """When `execute_many` stops taking new actions, because the rest would fail the same way.

    `credential_refusal`: Amili refused the credentials (the token endpoint answered 401/403/422, or two
    freshly issued tokens were refused). `unreachable_for`: seconds in which Amili did not answer at all
    (connect errors, timeouts, a proxy's 502/503/504 page); None never stops for that. A rate limit never stops
    a run: it costs time only.
    """

    credential_refusal: bool = True
    unreachable_for: float | None = 5.0


# (credential_refusal, unreachable_for) -> why the run cannot succeed now, or None
StopProbe = Callable[[bool, "float | None"], "AmiliError | None"]


def _not_sent(switch: StopSwitch, action: Any, error: Exception | None = None) -> Exception:
    """The outcome of an action the stopped run did not send; an error that proves the same is replaced."""
    reason = switch.reason
    if error is not None and not isinstance(error, NotSentError):
        same_cause = (isinstance(reason, AuthenticationError) and isinstance(error, AuthenticationError)) or (
            isinstance(reason, TransportError) and isinstance(error, TransportError)
        )
        if not same_cause:
            return error
    not_sent = switch.not_sent()
    not_sent.action = action
    not_sent.reference = getattr(action, "reference", None)
    return not_sent


# ----------------------------------------------------------------------------------------------------------


async def run_many(
    execute: Callable[[A], Awaitable[Any]],
    actions: Iterable[A] | AsyncIterable[A],
    *,
    concurrency: int,
    stop_on: StopOn | None = None,
    probe: StopProbe | None = None,
) -> AsyncIterator[Outcome[A]]:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        from .models._validate import fail

        raise fail("concurrency", f"must be a positive int, got {concurrency!r}")
    source = _numbered(actions)
    input_failed: list[Exception] = []
    slots = anyio.Semaphore(concurrency)  # actions talking to Amili
    room = anyio.Semaphore(concurrency * (1 + SETTLING_PER_SLOT))  # actions alive: talking, settling, reporting
    send, receive = anyio.create_memory_object_stream[Outcome[A]](concurrency)
    switch = StopSwitch() if stop_on is not None and probe is not None else None  # issue 10

    def check() -> None:
        if switch is None or switch.reason is not None:
            return
        assert stop_on is not None and probe is not None
        reason = probe(stop_on.credential_refusal, stop_on.unreachable_for)
        if reason is not None:
            logger.warning("execute_many stops: %s; the actions not sent yet get NotSentError", reason)
            switch.stop(reason)

    async def monitor() -> None:
        while switch is not None and switch.reason is None:
            check()
            await anyio.sleep(0.1)

    async def run_one(index: int, action: A, slot: Slot, out: MemoryObjectSendStream[Outcome[A]]) -> None:
        async with out:
            _slots.current.set(slot)  # this task's own context: reconciliation steps out of it to settle
            if switch is not None:
                CURRENT_STOP.set(switch)  # this task's calls can be stopped while they only wait (`_flow.py`)
            try:
                receipt = await execute(action)
            except Exception as exc:  # an outcome, not a crash: the run goes on
                if switch is not None:
                    check()
                    if switch.reason is not None:
                        exc = _not_sent(switch, action, exc)
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
                if switch is not None and switch.reason is not None:  # stopped: not sent, an outcome at once
                    slot.release()
                    try:
                        await out.send(Outcome(index, action, error=_not_sent(switch, action)))
                    finally:
                        room.release()
                    continue
                tg.start_soon(run_one, index, action, slot, out.clone())

    try:
        async with anyio.create_task_group() as tg, receive:
            if switch is not None:
                tg.start_soon(monitor)
            tg.start_soon(feed, tg, send)
            try:
                async for outcome in receive:
                    yield outcome
            except GeneratorExit:
                # The consumer stopped early (break inside `aclosing`, or aclose()): stop the workers here
                # rather than letting GeneratorExit escape through the task group as an exception group.
                tg.cancel_scope.cancel()
            tg.cancel_scope.cancel()  # every action has its outcome: stop the monitor
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
