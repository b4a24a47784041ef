"""What a waiting call listens to: the client's clock, whether Amili can be reached, whether its run stopped.

- `Clock` is a client's monotonic time, in which a wait counts as passed even when a test's `sleep` skipped
  it. The rate limiter and every call of the client read it: with `RetryPolicy.no_delay()` their waits take
  no real time, yet deadlines and rate windows still see them go by (a throttled test neither sleeps nor
  retries for ever).

- `Reachability` remembers since when Amili has not answered (connect errors, timeouts, a proxy's 502-504):
  `execute_many(stop_on=...)` stops a run that cannot succeed instead of failing every line slowly.
- `Deadlines` watches the deadlines of every call on one asyncio loop with a single timer.
- `StopSwitch` is a bulk run's "stop": once thrown, every call of that run that is only *waiting* (for a
  token, for its turn under the rate limit, for a retry) and has nothing in flight whose fate is unknown ends
  at once with `NotSentError`. A call whose write may have reached Amili always finishes its reconciliation.
  The run hands its switch to its calls through a context variable set in its own worker tasks, so nothing
  is shared between runs or clients.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from .errors import AmiliError, NotSentError, TransportError
from .ratelimit import asks_to_wait

if TYPE_CHECKING:
    import asyncio

    import anyio

    from .transports import Exchange

__all__ = [
    "CURRENT_STOP",
    "Clock",
    "Deadlines",
    "Reachability",
    "StopSwitch",
    "interruptible",
    "stop_probe",
    "watched",
]

T = TypeVar("T")


class Clock:
    """Monotonic seconds, plus whatever waits an injected `sleep` returned from early (see the docstring)."""

    def __init__(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        self._default_sleep = sleep
        self._skew = 0.0

    def now(self) -> float:
        return time.monotonic() + self._skew

    async def sleep(self, seconds: float, sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        target = self.now() + seconds
        await (sleep or self._default_sleep)(seconds)
        self._skew = max(self._skew, target - time.monotonic())


class Reachability:
    """Since when Amili has not answered: set by the first failure to reach it, cleared by any real answer."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._down_since: float | None = None

    def failed(self) -> None:
        if self._down_since is None:
            self._down_since = self._clock()

    def saw(self, status: int, headers: Mapping[str, str]) -> None:
        """An answer: Amili is there, unless it is a proxy's 502-504 page (a 503 with Retry-After is throttling)."""
        if status in (502, 503, 504) and not asks_to_wait(headers):
            self.failed()
        else:
            self._down_since = None  # a real answer: reachable

    def down_for(self) -> float:
        """Seconds since Amili last could not be reached with no answer since (0 while it answers)."""
        since = self._down_since
        return 0.0 if since is None else self._clock() - since


def watched(exchange: Exchange, reach: Reachability) -> Exchange:
    """`exchange`, telling `reach` about every answer and every failure to get one."""

    async def send(
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        timeouts: Mapping[str, float | None],
    ) -> tuple[int, Mapping[str, str], bytes]:
        try:
            answer = await exchange(method, url, headers, body, timeouts)
        except httpx.TransportError:
            reach.failed()
            raise
        reach.saw(answer[0], answer[1])
        return answer

    return send


class Deadlines:
    """The deadlines of the calls running on one asyncio loop (Python 3.11+), watched by a single timer.

    `asyncio.timeout` per call costs a timer handle, a push into the loop's heap and a cancel (4 µs and more
    while cancelled handles pile up in the heap); here a call costs two dictionary operations. Calls given
    the same number of seconds end in the order they started, so each length keeps its calls in a dict (its
    insertion order is their deadline order) and the one timer waits for the earliest of their heads.

    An expired call's task is cancelled, and the call turns that cancellation into its deadline error the way
    `asyncio.timeout` does (`Task.uncancel`): a cancellation from anywhere else still propagates.
    """

    def __init__(self) -> None:
        import asyncio

        self._loop = asyncio.get_running_loop()
        self._current_task = asyncio.current_task
        self._cancelled = asyncio.CancelledError
        self._groups: dict[float, dict[_Deadline, None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def start(self, seconds: float) -> _Deadline:
        """The running task's call must end within `seconds`."""
        task = self._current_task(self._loop)  # the loop given: a third cheaper than looking it up
        if task is None:
            raise RuntimeError("a call with a deadline must run inside an asyncio task")
        group = self._groups.get(seconds)
        if group is None:
            group = self._groups[seconds] = {}
        entry = _Deadline(task, self._loop.time() + seconds, group)
        group[entry] = None
        if entry.at < self._armed_at:
            self._arm(entry.at)
        return entry

    def end(self, entry: _Deadline, error: BaseException | None) -> bool:
        """The call of `entry` ended (with `error`, or not); True when `error` is its own deadline passing."""
        if not entry.expired:
            del entry.group[entry]
            return False
        remaining = 0
        if sys.version_info >= (3, 11):  # only built there
            remaining = entry.task.uncancel()
        return isinstance(error, self._cancelled) and remaining <= entry.cancelling

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = at
        self._timer = self._loop.call_at(at, self._expire)

    def _expire(self) -> None:
        self._timer, self._armed_at = None, math.inf
        now = self._loop.time() + 0.001  # the loop may run a timer a hair early
        earliest = math.inf
        for group in self._groups.values():
            while group:
                entry = next(iter(group))
                if entry.at > now:
                    earliest = min(earliest, entry.at)
                    break
                del group[entry]
                entry.expired = True
                entry.task.cancel()
        if earliest < math.inf:
            self._arm(earliest)


class _Deadline:
    __slots__ = ("at", "cancelling", "expired", "group", "task")

    def __init__(self, task: asyncio.Task[Any], at: float, group: dict[_Deadline, None]) -> None:
        self.task = task
        self.at = at
        self.group = group
        # Cancellations requested before the call started are not ours to swallow (3.11+, as Deadlines).
        self.cancelling = 0
        if sys.version_info >= (3, 11):
            self.cancelling = task.cancelling()
        self.expired = False


class StopSwitch:
    """A run's stop: `stop(reason)` interrupts its waiting calls (see the module docstring)."""

    def __init__(self) -> None:
        self.reason: AmiliError | None = None
        self._waiting: set[anyio.CancelScope] = set()

    def stop(self, reason: AmiliError) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        for scope in self._waiting:
            scope.cancel()

    def not_sent(self) -> NotSentError:
        reason = self.reason
        error = NotSentError(f"not sent: the run stopped ({reason})", reason=reason)
        error.__cause__ = reason
        return error

    @contextmanager
    def _scope(self) -> Iterator[anyio.CancelScope]:
        import anyio

        with anyio.CancelScope() as scope:
            self._waiting.add(scope)
            try:
                yield scope
            finally:
                self._waiting.discard(scope)


CURRENT_STOP: ContextVar[StopSwitch | None] = ContextVar("amili_async_stop", default=None)


async def interruptible(wait: Callable[[], Awaitable[T]], *, may_stop: bool = True) -> T:
    """`await wait()`, unless the run of this call stops first (then `NotSentError`).

    `may_stop` is False while a write of the call may have reached Amili: its fate must be settled first.
    """
    switch = CURRENT_STOP.get()
    if switch is None or not may_stop:
        return await wait()
    if switch.reason is not None:
        raise switch.not_sent()
    with switch._scope() as scope:
        result = await wait()
    if scope.cancel_called:
        raise switch.not_sent()
    return result


def stop_probe(connection: Any) -> Callable[[bool, float | None], AmiliError | None]:
    """`execute_many`'s probe for a client's `Connection`: why a run cannot succeed now (`bulk.StopOn`): the
    credentials' refusal, or Amili gone for too long; None while neither."""

    def probe(credential_refusal: bool, unreachable_for: float | None) -> AmiliError | None:
        runtime = connection.runtime
        if runtime is None:
            return None
        refusal, last = runtime.tokens.refusal, runtime.tokens.last_error
        if credential_refusal and refusal is not None:
            return refusal  # type: ignore[no-any-return]
        down = runtime.reach.down_for()
        if unreachable_for is not None and down >= unreachable_for:
            detail = f" (last: {last})" if last is not None else ""
            return TransportError(f"Amili could not be reached for {down:.1f} s{detail}")
        return None

    return probe
