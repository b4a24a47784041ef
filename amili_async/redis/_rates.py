"""`RedisRateLimiter`: one rate budget for every process that sends with the same credentials.

The budget is a GCRA ("generic cell rate algorithm", the leaky bucket as a single timestamp) kept in Redis
and advanced by one Lua script per send: the script reserves the next free slot on Redis's clock and answers
how long to wait for it, so a send costs one round trip and the processes never poll. Three keys, one hash slot:

- `...:rate:tat`: the theoretical arrival time of the next send (microseconds, Redis clock);
- `...:rate:hold`: present while the server asked everybody to stop (`Retry-After`, or `X-RateLimit-Remaining: 0`
  until `X-RateLimit-Reset`); no slot is handed out before it expires;
- `...:rate:state`: the shared rate, its ceiling, when it last changed, and a per-second count of the answers
  the server accepted (each process reports its own with its next call: no extra round trip).

Every process feeds it what the server said. `X-RateLimit-Limit` with `X-RateLimit-Reset` teaches the rate
(limit per window; the window is the gap between two resets of a fixed-window limiter such as Eve's, or at
first the time left until the reset), paced at `headroom` of it. A 429 sets the hold and cuts the shared rate
(to 70 %, at most once a second for all processes together; without any known rate, to 70 % of what the
server accepted from all processes in the last second); the rate then grows back by `growth` of its ceiling
per second.

Redis unreachable: the limiter logs once and paces this process alone with its local fallback (by default
`AdaptiveRateLimiter`), which is fed the same answers all along, so it takes over already informed.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..ratelimit import header_number
from ..retry import retry_after_seconds
from ._link import RedisDown, RedisLink, RedisSource
from ._tokens import identity_of, namespace

if TYPE_CHECKING:
    from ..ratelimit import RateLimiter

__all__ = ["RedisRateLimiter"]

# Count the answers the server accepted, per second of Redis's clock (`sec`: this second, `count`: its answers,
# `prev`: the last second's): what a cut without any known rate starts from. `state`, `now_sec`, `delta` given.
_COUNT = """
local function count(state, now_sec, delta)
  local c = redis.call('HMGET', state, 'sec', 'count', 'prev')
  if tonumber(c[1]) == now_sec then
    if delta > 0 then redis.call('HINCRBY', state, 'count', delta) end
    return math.max(tonumber(c[3]) or 0, (tonumber(c[2]) or 0) + delta)
  end
  local prev = 0
  if tonumber(c[1]) == now_sec - 1 then prev = tonumber(c[2]) or 0 end
  redis.call('HSET', state, 'sec', now_sec, 'count', delta, 'prev', prev)
  return math.max(prev, delta)
end
"""

# KEYS: tat, hold, state. ARGV: configured rate (0: none), burst, growth, answers accepted since our last call.
# Returns the wait in microseconds.
_ACQUIRE = (
    _COUNT
    + """
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000000 + tonumber(t[2])
local start = now
local hold = redis.call('PTTL', KEYS[2])
if hold > 0 then start = now + hold * 1000 end
local s = redis.call('HMGET', KEYS[3], 'rate', 'ceiling', 'changed', 'learned')
if tonumber(ARGV[4]) > 0 then count(KEYS[3], sec, tonumber(ARGV[4])) end
redis.call('PEXPIRE', KEYS[3], 3600000)
local rate = tonumber(ARGV[1])
if s[1] then
  rate = tonumber(s[1])
  local ceiling = tonumber(s[2]) or rate
  rate = rate + ceiling * tonumber(ARGV[3]) * (now - (tonumber(s[3]) or now)) / 1000000
  if s[4] == '1' and rate > ceiling then rate = ceiling end
end
if rate <= 0 then return math.floor(start - now) end
local interval = 1000000 / rate
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
if tat < start then tat = start end
local send_at = tat - interval * (tonumber(ARGV[2]) - 1)
if send_at < start then send_at = start end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
return math.floor(send_at - now)
"""
)

# KEYS: state. ARGV: the rate learnt from the server's headers (already with headroom).
_LEARN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('HSET', KEYS[1], 'rate', ARGV[1], 'ceiling', ARGV[1], 'learned', 1, 'changed', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], 3600000)
return 1
"""

# KEYS: hold, state. ARGV: hold ms (0: none), cut (1/0), factor, growth, floor, configured rate, answers accepted
# since our last call. Holds only ever lengthen; one cut per second for all processes together.
_THROTTLED = (
    _COUNT
    + """
if tonumber(ARGV[1]) > 0 and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], 1, 'PX', ARGV[1])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local accepted = count(KEYS[2], tonumber(t[1]), tonumber(ARGV[7]))
if ARGV[2] ~= '1' then return 0 end
local s = redis.call('HMGET', KEYS[2], 'rate', 'ceiling', 'changed', 'learned', 'cut')
if now - (tonumber(s[5]) or 0) < 1000000 then return 0 end
local changed = tonumber(s[3]) or now
local rate = tonumber(s[1])
if rate then
  local ceiling = tonumber(s[2]) or rate
  rate = rate + ceiling * tonumber(ARGV[4]) * (now - changed) / 1000000
  if s[4] == '1' and rate > ceiling then rate = ceiling end
else  -- nothing learnt yet: cut what was configured, else what the server accepted in the last second
  rate = tonumber(ARGV[6])
  if rate <= 0 then rate = accepted end
  redis.call('HSET', KEYS[2], 'ceiling', rate)
end
if rate <= 0 then return 0 end
rate = math.max(tonumber(ARGV[5]), rate * tonumber(ARGV[3]))
redis.call('HSET', KEYS[2], 'rate', rate, 'changed', string.format('%.0f', now), 'cut', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[2], 3600000)
return 1
"""
)


class RedisRateLimiter:
    """The rate controller's budget, shared by all processes through Redis (asyncio and trio).

    Args:
        redis: a URL, a ``redis.Redis`` (used from a worker thread) or a ``redis.asyncio.Redis`` (asyncio only).
        base_url: the Amili base URL of the clients that share the budget.
        auth: the clients' credentials (only a hash of the API code names the keys), or
        scope: any string naming the budget instead (for example one per creditor or per source IP).
        rate: the server's limit in requests per second, if you know it before it says (None: unpaced until
            the first answers teach it). Paced, like a learnt one, at `headroom` of it.
        burst: sends that may go out at once.
        headroom: the fraction of a learnt limit to pace at (room for clock jitter at window edges).
        growth: after a cut, the rate grows back by this fraction of its ceiling per second.
        max_hold: the longest hold (seconds) one answer may put on every process.
        fallback: the local controller used while Redis is unreachable (default: ``AdaptiveRateLimiter()``).
        timeout, recheck, prefix: as for `RedisTokenStore`.
    """

    def __init__(
        self,
        redis: RedisSource,
        *,
        base_url: str,
        auth: Any = None,
        scope: str | None = None,
        rate: float | None = None,
        burst: int = 1,
        headroom: float = 0.95,
        growth: float = 0.05,
        max_hold: float = 900.0,
        fallback: RateLimiter | None = None,
        prefix: str = "amili-async",
        timeout: float = 0.25,
        recheck: float = 5.0,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if not 0 < headroom <= 1:
            raise ValueError("headroom must be in (0, 1]")
        space = (
            f"{prefix}:{{{base_url.rstrip('/')}|{scope}}}"
            if scope
            else namespace(prefix, base_url, identity_of(auth, None))
        )
        self._keys = [space + ":rate:tat", space + ":rate:hold", space + ":rate:state"]
        self._link = RedisLink(redis, what="rate budget", timeout=timeout, recheck=recheck)
        self._rate = (rate or 0.0) * headroom
        self._burst = burst
        self._headroom = headroom
        self._growth = growth
        self._max_hold = max_hold
        if fallback is None:
            from ..ratelimit import AdaptiveRateLimiter

            fallback = AdaptiveRateLimiter()
        self._fallback: RateLimiter = fallback
        self._window: float | None = None  # seconds per window of the server's limiter, as far as we know
        self._windows_measured = False
        self._last_reset: float | None = None
        self._published: float | None = None
        self._accepted = 0  # answers not throttled since our last report to Redis
        self._hold_until = 0.0  # monotonic: the end of the last hold this process set

    def __repr__(self) -> str:
        return f"RedisRateLimiter(key={self._keys[0]!r}, learnt={self._published})"

    async def __aenter__(self) -> RedisRateLimiter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._link.aclose()

    # -- the RateLimiter protocol -------------------------------------------------------------------

    async def acquire(self) -> float:
        """Reserve the next shared slot and wait for it; returns the seconds spent.

        A slot is reserved before the wait, so a hold set meanwhile would not stop it: when the slot falls inside
        a hold this process set while we waited, it is given up and a new one reserved (after the hold).
        """
        started = time.monotonic()
        while True:
            accepted, self._accepted = self._accepted, 0
            args = [self._rate, self._burst, self._growth, accepted]
            try:
                wait_us = await self._link.script(_ACQUIRE, self._keys, args)
            except RedisDown:
                await self._fallback.acquire()
                return time.monotonic() - started
            wait = int(wait_us) / 1e6
            if wait > 0:
                import anyio

                await anyio.sleep(wait)
            if time.monotonic() >= self._hold_until:
                return time.monotonic() - started

    async def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Learn from an answer: the limit in its headers, a throttle (429, 503 with `Retry-After`)."""
        await self._fallback.observe(status, headers)
        limit = header_number(headers, "x-ratelimit-limit")
        reset_in = self._reset_in(headers)
        if limit and limit > 0 and reset_in is not None and self._window:
            rate = limit / self._window * self._headroom
            if self._published is None or abs(rate - self._published) > 0.01 * self._published:
                try:
                    await self._link.script(_LEARN, self._keys[2:], [repr(rate)])
                except RedisDown:
                    return
                self._published = rate
        throttled = status == 429 or (status == 503 and "retry-after" in headers)
        if not throttled:
            self._accepted += 1
        hold: float | None = None
        if throttled:
            hold = retry_after_seconds(headers)
            if hold is None:
                hold = self._until_next_window() if status == 429 else 0.0
        elif header_number(headers, "x-ratelimit-remaining") == 0 and reset_in:
            hold = reset_in
        if not throttled and not hold:
            return
        hold_ms = int(min(hold or 0.0, self._max_hold) * 1000)
        cut = 1 if status == 429 else 0
        if hold_ms:
            self._hold_until = max(self._hold_until, time.monotonic() + hold_ms / 1000)
        accepted, self._accepted = self._accepted, 0
        args = [hold_ms, cut, 0.7, self._growth, 0.5, self._rate, accepted]
        with contextlib.suppress(RedisDown):  # it is local now
            await self._link.script(_THROTTLED, self._keys[1:], args)

    def _until_next_window(self) -> float:
        """A bare 429 (Eve's has no header at all): the window's quota is spent; wait for the next one."""
        if self._last_reset is None or not self._window:
            return 1.0
        now = time.time()
        reset = self._last_reset
        if reset <= now:
            reset += math.ceil((now - reset) / self._window) * self._window
        return min(reset - now, self._window) + 0.05  # a little after: the server's clock may lag ours

    def _reset_in(self, headers: Mapping[str, str]) -> float | None:
        """Seconds until `X-RateLimit-Reset`; on the way, measure the server's window length."""
        reset = header_number(headers, "x-ratelimit-reset")
        if reset is None:
            return None
        if reset > 1e9:  # epoch seconds (Eve): two different resets of a fixed window lie whole windows apart
            if self._last_reset is not None and reset != self._last_reset:
                gap = abs(reset - self._last_reset)
                if gap > 0 and (not self._windows_measured or gap < (self._window or math.inf)):
                    self._window = gap
                    self._windows_measured = True
            self._last_reset = reset if self._last_reset is None else max(reset, self._last_reset)
            reset_in = reset - time.time()
        else:
            reset_in = reset
        if reset_in <= 0:
            return None
        if not self._windows_measured:  # until measured: at least the time left, in whole seconds
            self._window = max(self._window or 0.0, float(max(1, math.ceil(reset_in - 0.1))))
        return reset_in
