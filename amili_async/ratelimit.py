"""Client-side flow control: pace the sends of a client to what Amili allows, so a rate limit costs time.

Every send of a client passes `RateLimiter.acquire()` (wait for a slot) and every answer is shown to
`RateLimiter.observe()`. The default, `AdaptiveRateLimiter`, learns the server's limit as it goes:

- It **starts open**: the first requests never wait. (AWS's adaptive mode starts with an empty bucket and
  blocks the first request; its users complain.)
- **With `X-RateLimit-Remaining` / `X-RateLimit-Reset` / `X-RateLimit-Limit`** (Eve's limiter sends them on
  every answer it lets through) it knows the quota of the current window: it spreads what remains over the
  time left (the sends close to the end of a quota go out slower, so few are in flight when it runs out), a
  `Remaining` of 0 holds new sends until `Reset`, and the next window starts with `Limit` sends. Eve's own
  429 carries no header at all; a bare 429 when the quota is nearly used up is read as "the quota is used up".
- **Without them** (or on a 429 the headers do not explain) it cuts its send rate and probes back up, the
  way TCP CUBIC (and botocore's adaptive mode) do: the rate drops to `beta` x what the server accepted over
  the last second, then grows along a cubic curve back to that rate and beyond, until the next 429. One cut
  per congestion event: the 429s of requests already in flight when it cut do not cut again.
- `Retry-After` / `retry-after-ms` mark a 503 as throttling (a cut, like a 429). The wait they ask for is
  honoured by the call that got them (`RetryPolicy`), not by every other call of the client.

It is written on anyio only (asyncio and trio alike) and holds no lock: a send reserves its slot in one
synchronous step, then sleeps until it. `acquire()` does not suspend at all while the limiter is open.
A `RateLimiter` is anything with the same two methods (a limiter shared between processes, say), and
`NoRateLimit` switches pacing off.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, runtime_checkable

__all__ = ["AdaptiveRateLimiter", "Guarded", "NoRateLimit", "RateLimiter", "asks_to_wait"]

logger = logging.getLogger("amili_async")

_HORIZON = 1.0  # seconds: a quota is spread over at most this much of the time left in its window
_QUIET = 1.0  # seconds after a cut in which 429s of earlier sends do not cut again


@runtime_checkable
class RateLimiter(Protocol):
    """Paces the sends of a client. One instance is shared by every call of the client (and its views)."""

    async def acquire(self) -> float:
        """Wait until one send may go out; return the seconds waited."""
        ...

    async def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Learn from an answer (every answer, 429 and 503 included); headers are looked up in lower case."""
        ...


class NoRateLimit:
    """No pacing (`AsyncAmiliClient(rate_limiter=False)`). A throttled call still waits what Amili asks."""

    def __repr__(self) -> str:
        return "NoRateLimit()"

    async def acquire(self) -> float:
        return 0.0

    async def observe(self, status: int, headers: Mapping[str, str]) -> None:
        return None


class Guarded:
    """A client's limiter, whose failures (a shared one whose backend is down) are logged once and ignored: a
    broken limiter never stops a call."""

    __slots__ = ("_local", "_warned", "limiter")

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self._warned = False
        # The default limiter (not a subclass: it may await) is asked without a coroutine per call.
        self._local = limiter if type(limiter) is AdaptiveRateLimiter else None

    def acquire_now(self) -> bool:
        """Take a send at once if the limiter has no wait to impose (True); else take nothing (False)."""
        local = self._local
        return local is not None and local.acquire_now()

    def observe_now(self, status: int, headers: Mapping[str, str]) -> bool:
        """Show the answer to the limiter without awaiting, if it can be (True); else do nothing (False)."""
        local = self._local
        if local is None:
            return False
        local.note(status, headers)
        return True

    async def acquire(self) -> float:
        try:
            return await self.limiter.acquire()
        except Exception as exc:
            self._failed(exc)
            return 0.0

    async def observe(self, status: int, headers: Mapping[str, str]) -> None:
        try:
            await self.limiter.observe(status, headers)
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        logger.log(level, "rate limiter failed (%s); sending without it", type(exc).__name__)


def asks_to_wait(headers: Mapping[str, str]) -> bool:
    """The answer says when to come back (`Retry-After` or `retry-after-ms`)."""
    return "retry-after" in headers or "retry-after-ms" in headers


def _anyio_sleep(seconds: float) -> Awaitable[None]:
    import anyio

    return anyio.sleep(seconds)


def _recent(times: deque[float], now: float) -> deque[float]:
    """`times`, without those more than a second before `now`."""
    while times and now - times[0] > _HORIZON:
        times.popleft()
    return times


def _rate(times: deque[float], now: float) -> float:
    """Events per second over the recent `times` (their own span when shorter than a second)."""
    if len(times) < 2:
        return float(len(times))
    return len(times) / max(now - times[0], 0.05)


def header_number(headers: Mapping[str, str], name: str) -> float | None:
    """A finite number from a header (`X-RateLimit-*`), or None when it is absent or not one."""
    value = headers.get(name)
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class AdaptiveRateLimiter:
    """The default `RateLimiter`: open at first, then as fast as the server's answers say it may go.

    `beta` is what a cut keeps of the rate the server could not take (0.7, as TCP CUBIC), `keep` the least a
    cut keeps of the rate the server accepted over the last second (0.9), `recovery` the seconds the rate takes
    to grow back after a full `beta` cut (CUBIC's K; the curve scales with the rate, so 2 req/s and 2000 req/s
    recover alike), `min_rate` the floor in sends per second, `max_rate` an optional ceiling that holds even
    while the limiter is open. `window_guard` is added to every `X-RateLimit-Reset` so a clock a few
    milliseconds apart from the server's never starts a window early. `clock` (monotonic), `wall_clock`
    (epoch seconds, to read `X-RateLimit-Reset`) and `sleep` are injectable; the client's default limiter
    shares the client's clock, so `RetryPolicy.no_delay()` makes its waits instant too.
    """

    def __init__(
        self,
        *,
        beta: float = 0.7,
        keep: float = 0.9,
        recovery: float = 1.0,
        min_rate: float = 0.5,
        max_rate: float | None = None,
        window_guard: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if not 0 < beta < 1 or not 0 < keep < 1:
            raise ValueError("beta and keep must be between 0 and 1")
        if min_rate <= 0 or (max_rate is not None and max_rate < min_rate):
            raise ValueError("rates must be positive, and max_rate at least min_rate")
        self._beta = beta
        self._keep = keep
        self._recovery = recovery
        self._scale = 0.0  # CUBIC's C for the current W_max (set by each cut)
        self._min_rate = min_rate
        self._max_rate = max_rate
        self._guard = window_guard
        self._clock = clock
        self._wall = wall_clock
        self._sleep = sleep or _anyio_sleep
        self._next = 0.0  # the earliest time the next send may go out
        # Bumped when earlier reservations became too early: a cut (all of them), a hold (those in the window).
        self._cuts = 0
        self._holds = 0
        # CUBIC: no rate until the first unexplained 429
        self._w_max: float | None = None
        self._k = 0.0
        self._cut_at = 0.0
        self._sent = 0
        self._answered = 0
        self._quiet_until_answered = 0
        self._accepted: deque[float] = deque()  # times of the answers of the last second that were not throttled
        self._sends: deque[float] = deque()  # times of the sends of the last second
        # the quota window announced by X-RateLimit-* (None: no window known)
        self._end: float | None = None
        self._quota = 0.0
        self._limit: float | None = None
        self._period = _HORIZON
        self._spill = 0  # sends reserved for the window after the current one
        self._last_slot = 0.0  # the latest send reserved inside the current window

    def __repr__(self) -> str:
        rate = self.rate
        return f"AdaptiveRateLimiter(rate={'open' if rate is None else format(rate, '.1f')})"

    @property
    def rate(self) -> float | None:
        """The send rate the limiter paces to right now (sends per second), or None while it is open."""
        now = self._clock()
        rates = [r for r in (self._cubic_rate(now), self._max_rate) if r is not None]
        if self._end is not None and now < self._end and self._quota > 0:
            rates.append(self._quota / min(self._end - now, _HORIZON))
        return min(rates) if rates else None

    # -- the two methods of the protocol --------------------------------------------------------------

    def acquire_now(self) -> bool:
        """`acquire()` for the open limiter, which never waits: True and the send is counted; else False."""
        if self._w_max is None and self._end is None and self._max_rate is None:
            self._sent += 1
            now = self._clock()
            _recent(self._sends, now).append(now)
            return True
        return False

    async def acquire(self) -> float:
        if self.acquire_now():  # open: no wait, no suspension
            return 0.0
        self._sent += 1
        now = self._clock()
        slot, spilled = self._reserve(now)
        _recent(self._sends, slot).append(slot)
        waited = 0.0
        while slot > now:
            cuts, holds = self._cuts, self._holds
            try:
                await self._sleep(slot - now)
            except BaseException:
                if spilled:  # cancelled (a deadline): the next window does not owe this send
                    self._spill = max(0, self._spill - 1)
                raise
            waited += slot - now
            now = self._clock()
            if cuts == self._cuts and (spilled or holds == self._holds):
                break
            if spilled:
                self._spill = max(0, self._spill - 1)
            slot, spilled = self._reserve(now)  # a cut or a hold came while we slept: queue again
        return waited

    async def observe(self, status: int, headers: Mapping[str, str]) -> None:
        self.note(status, headers)

    def note(self, status: int, headers: Mapping[str, str]) -> None:
        """`observe()` without the coroutine: learning from an answer never waits."""
        now = self._clock()
        self._answered += 1
        remaining = header_number(headers, "x-ratelimit-remaining")
        if remaining is not None:
            self._window(now, remaining, headers)
        if status < 429 or 429 < status < 500:
            _recent(self._accepted, now).append(now)
        elif status == 429 or status == 503:
            hinted = asks_to_wait(headers)
            if status == 429 or hinted:
                self._throttled(now, hinted, remaining)

    # -- reservations -----------------------------------------------------------------------------------

    def _reserve(self, now: float) -> tuple[float, bool]:
        """Take the next slot (when this send may go out) and move the pacing pointer past it."""
        self._roll(now)
        slot = max(now, self._next)
        rate = self._cubic_rate(slot)
        if self._max_rate is not None:
            rate = self._max_rate if rate is None else min(rate, self._max_rate)
        interval = 0.0 if rate is None else 1.0 / rate
        spilled = False
        end = self._end
        if end is not None:
            # A send of this window must arrive before the server's window ends: stop `2 x guard` before ours.
            last = end - 2 * self._guard
            if slot < last and self._quota >= 1:
                self._quota -= 1
                self._last_slot = slot
                interval = max(interval, min(last - slot, _HORIZON) / (self._quota + 1))
            else:  # the quota is used up: this send belongs to the next window
                slot = max(slot, end)
                spilled = True
                self._spill += 1
                if self._limit:
                    interval = max(interval, self._period / self._limit)
        self._next = slot + interval
        return slot, spilled

    def _roll(self, now: float) -> None:
        """Past the end of the known window: the next one starts with `Limit` sends, or unknown without it."""
        end = self._end
        if end is None or now < end:
            return
        if not self._limit:
            self._end = None
            self._spill = 0
            return
        self._end = end + self._period * (math.floor((now - end) / self._period) + 1)
        self._quota = max(0.0, self._limit - self._spill)
        self._spill = 0

    # -- what the answers say ---------------------------------------------------------------------------

    def _window(self, now: float, remaining: float, headers: Mapping[str, str]) -> None:
        reset = header_number(headers, "x-ratelimit-reset")
        if reset is None:
            return
        self._roll(now)
        # Eve sends epoch seconds; a small number is a delta. A reset in the past or a day away is a clock
        # we cannot trust: no window then (the 429s still steer the rate).
        delta = reset - self._wall() if reset > 1e9 else reset
        if not 0 <= delta <= 86400:
            return
        limit = header_number(headers, "x-ratelimit-limit")
        if limit is not None and limit > 0:
            self._limit = limit
        end = now + delta + self._guard
        current = self._end
        had_quota = current is None or self._quota >= 1
        if current is not None and self._limit and current + self._period / 2 < end < current + 1.5 * self._period:
            # The next window, begun at the server before our guard let us in: move into it now.
            self._end, self._quota, self._spill = end, max(0.0, self._limit - self._spill), 0
            self._quota = min(self._quota, remaining)
        elif current is None or end > current + self._period / 2:  # a window we know nothing about yet
            if current is not None and end - current < 2 * self._period:
                self._period = end - current  # consecutive windows: their distance is the period
            self._period = max(self._period, delta)
            self._end, self._quota, self._spill = end, max(0.0, remaining - self._spill), 0
        elif end > current - self._period / 2:  # the same window: answers may come back out of order
            self._quota = min(self._quota, remaining)
        else:
            return  # an answer from an older window
        if self._quota < 1 and (had_quota or (remaining < 1 and self._last_slot > now)):
            # A hold begins (or the server has nothing left for sends still queued in this window, somebody else
            # used it): those move to the next window.
            self._holds += 1

    def _throttled(self, now: float, hinted: bool, remaining: float | None) -> None:
        self._roll(now)
        end = self._end
        if end is not None and now < end:
            nearly_out = self._quota <= max(2.0, 0.1 * (self._limit or 0.0))
            if remaining == 0 or (not hinted and remaining is None and nearly_out):
                if self._quota >= 1 or self._last_slot > now:
                    self._quota = 0.0
                    self._holds += 1
                return  # the window explains the 429: wait for the next one, no cut
        if self._answered <= self._quiet_until_answered and now - self._cut_at < _QUIET:
            return  # a request sent before the last cut: that cut already answered it
        # CUBIC's multiplicative decrease. `w_max`, the rate the server could not take, is what it accepted over
        # the last second, or `beta` x the rate we sent at (measured, on the first cut), whichever is more. The
        # new rate is `beta` x that, but not below `keep` x what the server accepted: a limiter refuses at once,
        # there is no queue to drain, so going far below what it demonstrably takes only wastes time, and a
        # fixed window that refuses everything until it rolls over cannot drive the rate to nothing.
        accepted = len(_recent(self._accepted, now)) / _HORIZON
        current = self._cubic_rate(now)
        sent_at = _rate(_recent(self._sends, now), now) if current is None else current
        w_max = max(accepted, self._beta * sent_at)
        rate = max(self._beta * w_max, self._keep * accepted, self._min_rate)
        if current is not None:
            rate = min(rate, current)  # a cut never raises the rate
        self._w_max = max(w_max, rate)
        self._scale = self._w_max * (1 - self._beta) / self._recovery**3
        self._k = ((self._w_max - rate) / self._scale) ** (1 / 3)
        self._cut_at = now
        self._quiet_until_answered = self._sent
        self._next = min(self._next, now)  # queued sends are re-reserved at the new rate
        self._cuts += 1

    def _cubic_rate(self, now: float) -> float | None:
        if self._w_max is None:
            return None
        t = now - self._cut_at - self._k
        return max(self._min_rate, self._scale * t * t * t + self._w_max)
