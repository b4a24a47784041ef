"""What is safe to retry, how long to wait, and how much retrying a client may do.

The rules (they never duplicate money):

- Reads (`GET`) retry on connect/read errors and timeouts, disconnects, 429, 500, 502, 503 and 504.
- Writes retry by themselves only when the request provably did not reach Amili, or Amili refused it before
  processing: connect error, connect timeout, pool timeout, 429 (and the 401 token replay, handled by the
  client). A TLS certificate failure is never retried.
- After an *ambiguous* write failure (read timeout, disconnect after sending, 5xx) the client reconciles:
  it looks the action up by its business reference and returns the record it finds, or sends again only when
  the record is provably absent. Without a reference there is nothing to look up: `OutcomeUnknownError`.
- **Throttling is waiting, not failing.** A 429, and a 503 with `Retry-After`, wait what the server asked
  (`Retry-After` in seconds or as an HTTP date, `retry-after-ms`, Eve's `X-RateLimit-Reset`), or a short
  full-jitter backoff when it said nothing, and try again, reads and writes alike (a write after a 503 is
  looked up first). Such waits spend neither an attempt nor the budget: the call's `deadline` bounds them, and a
  wait that would end past it raises `RateLimitError` at once instead of sleeping in vain.
- Other failures wait full-jitter exponential backoff (`random(0, min(cap, base * 2**n))`); a call makes at
  most `max_attempts` attempts, and a per-client `RetryBudget` (a token bucket, as in botocore) stops those
  retries altogether during an outage, so failures come back fast instead of multiplying the load.

The loop is a plain `while`: a throttled attempt that does not count, a budget withdrawn only once the
deadline allows the wait, and the error of the last attempt raised as is do not fit tenacity's
retry/stop/wait objects without state kept on the side (the previous version kept the attempt number in a
dict and the planned wait on the exception). tenacity stays where it fits as meant: `TokenCache` polls a
shared `TokenStore` with `retry_if_result` / `wait_exponential` / `stop_after_delay`.
"""

from __future__ import annotations

import enum
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import attrs
import httpx

from . import _telemetry, serde
from ._telemetry import log as logger  # adds the running call's structured fields to every record

__all__ = [
    "Attempts",
    "Failure",
    "FailureKind",
    "RetryBudget",
    "RetryPolicy",
    "classify_exception",
    "retry_after_seconds",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Attempts(Protocol[T_co]):
    """One call, as `RetryPolicy.run` drives it."""

    @property
    def describe(self) -> str: ...  # "METHOD /path", for the log

    async def attempt(self, number: int) -> T_co: ...  # send once more; raise `Failure` when that may be retried

    def elapsed(self) -> float: ...  # seconds the call has spent (its planned waits included)

    async def pause(self, seconds: float) -> None: ...  # wait before the next attempt


class FailureKind(enum.Enum):
    NOT_SENT = "not sent"  # provably never reached the server: safe to resend anything
    THROTTLED = "throttled"  # 429: refused before processing
    AMBIGUOUS = "ambiguous"  # may have been processed
    FATAL = "fatal"  # never retry (TLS certificate, protocol misuse)


def classify_exception(exc: BaseException) -> FailureKind:
    """Where an httpx error leaves a request: never sent, maybe processed, or not worth retrying."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return FailureKind.FATAL
            cause = cause.__cause__ or cause.__context__
        return FailureKind.NOT_SENT
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.ProxyError)):
        return FailureKind.FATAL
    return FailureKind.AMBIGUOUS


def _summary(exc: BaseException | None) -> str:
    error = exc.error if isinstance(exc, Failure) else exc
    status = getattr(error, "status_code", None)
    return f"{type(error).__name__}{f' {status}' if status is not None else ''}"


class Failure(Exception):
    """A failed attempt the policy may retry. `error` is what the caller gets if retries run out."""

    def __init__(self, error: Exception, kind: FailureKind, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.kind = kind
        self.retry_after = retry_after


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a server asked for: `retry-after-ms`, `Retry-After` (seconds or HTTP date), `X-RateLimit-Reset`."""
    now = time.time() if now is None else now
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = serde.parse_datetime(value.strip())
                return max(0.0, when.timestamp() - now)
            except (ValueError, KeyError, IndexError):
                pass
    value = headers.get("x-ratelimit-reset")
    if value:
        try:
            reset = float(value)
        except ValueError:
            return None
        # Eve sends epoch seconds; a small number is a delta.
        return max(0.0, reset - now) if reset > 1e9 else max(0.0, reset)
    return None


class RetryBudget:
    """A per-client token bucket: every retry costs tokens, successes pay a little back.

    When the bucket is empty, calls stop retrying and fail with their first error, so an outage does not
    turn each call into `max_attempts` calls.
    """

    def __init__(self, capacity: float, retry_cost: float, timeout_cost: float, refund: float) -> None:
        self.capacity = capacity
        self.level = capacity
        self._retry_cost = retry_cost
        self._timeout_cost = timeout_cost
        self._refund = refund

    def __repr__(self) -> str:
        return f"RetryBudget(level={self.level:g}/{self.capacity:g})"

    def withdraw(self, kind: FailureKind) -> float:
        """Take the cost of one retry; 0 means the budget is spent and the call must not retry."""
        # A retry after a timeout or disconnect costs more: it is the failure an outage produces.
        cost = self._timeout_cost if kind is FailureKind.AMBIGUOUS else self._retry_cost
        if self.level < cost:
            return 0.0
        self.level -= cost
        return cost

    def deposit(self, amount: float | None = None) -> None:
        self.level = min(self.capacity, self.level + (self._refund if amount is None else amount))


def _default_sleep(seconds: float) -> Awaitable[None]:
    import anyio

    return anyio.sleep(seconds)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a client retries. One instance per client; `client.with_options(retry=...)` overrides it per call.

    `RetryPolicy.no_delay()` keeps every rule but never sleeps: use it in tests. The time a call has spent
    counts its planned waits even when `sleep` skips them, so a test's throttled call still meets its deadline.
    """

    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_retry_after: float | None = None
    deadline: float | None = 120.0
    budget_capacity: float = 500.0
    budget_retry_cost: float = 5.0
    budget_timeout_cost: float = 10.0
    budget_refund: float = 1.0
    # -- settle window (issue 9): how long an empty lookup must wait before it may count as absence ------
    # 15 s = a commit landing up to 10 s after the client gave up, seen through list reads lagging writes by
    # up to 5 s. Measured from the moment the ambiguous attempt ended; see docs/errors-and-retries.md.
    settle_window: float = 15.0
    sleep: Callable[[float], Awaitable[None]] = attrs.field(default=_default_sleep, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError("deadline must be positive (or None for no deadline)")
        if not self.settle_window >= 0:  # also refuses NaN
            raise ValueError("settle_window must be zero or more seconds")

    @classmethod
    def no_delay(cls, **changes: Any) -> RetryPolicy:
        async def no_sleep(_: float) -> None:
            import anyio.lowlevel

            await anyio.lowlevel.checkpoint()

        changes.setdefault("sleep", no_sleep)
        return cls(**changes)

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """One attempt, no retries after failures (the 401 token replay and throttle waits still happen)."""
        return cls(max_attempts=1)

    def new_budget(self) -> RetryBudget:
        return RetryBudget(self.budget_capacity, self.budget_retry_cost, self.budget_timeout_cost, self.budget_refund)

    def backoff(self, retry_number: int, failure: Failure) -> float:
        """Seconds to wait before retry `retry_number` (1-based) of a failure or of a throttled attempt."""
        import random

        if failure.retry_after is not None:
            # The server said how long: that, and a little jitter on top (a tenth of it, at most `backoff_base`).
            # The rate limiter spreads the retries of many calls; the jitter only keeps them off one instant.
            return failure.retry_after + random.uniform(0, min(0.1 * failure.retry_after, self.backoff_base))
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (retry_number - 1)))

    async def run(self, call: Attempts[T], *, budget: RetryBudget) -> T:
        """Call `call.attempt(n)` (n: the how-manieth send of the call) until it returns or the policy gives up.

        An attempt returns, raises a `Failure` (maybe retried), or raises anything else (final). A throttled
        failure (429, a 503 with `Retry-After`) waits and tries again without spending an attempt or the
        budget; the call's deadline is its only bound. Other failures spend both. When the policy gives up,
        the error of the last attempt is raised with `attempts` set.
        """
        sent = failures = throttles = 0
        spent = 0.0
        while True:
            sent += 1
            try:
                result = await call.attempt(sent)
            except Failure as failure:
                throttled = failure.kind is FailureKind.THROTTLED
                if throttled:
                    throttles += 1
                    wait = self.backoff(throttles, failure)
                elif failure.kind is FailureKind.FATAL or failures + 1 >= self.max_attempts:
                    raise _given_up(failure, sent) from failure.error.__cause__
                else:
                    failures += 1
                    wait = self.backoff(failures, failure)
                if not self._may_wait(failure, wait, call.elapsed):
                    logger.info("%s: not retrying, a wait of %.1f s would pass the deadline", call.describe, wait)
                    raise _given_up(failure, sent) from failure.error.__cause__
                if not throttled:
                    cost = budget.withdraw(failure.kind)
                    if not cost:
                        logger.info("retry budget spent, not retrying %s", call.describe)
                        raise _given_up(failure, sent) from failure.error.__cause__
                    spent += cost
                _telemetry.waited(failure.kind.name.lower(), wait)  # telemetry: one call per wait
                logger.info(
                    "retrying %s: attempt %d failed (%s), next in %.2f s",
                    call.describe,
                    sent,
                    _summary(failure),  # the error's class and status: its message may quote ids
                    wait,
                )
                await call.pause(wait)
            else:
                budget.deposit(spent or None)
                return result

    def _may_wait(self, failure: Failure, wait: float, elapsed: Callable[[], float]) -> bool:
        cap = self.max_retry_after
        if cap is not None and failure.retry_after is not None and failure.retry_after > cap:
            return False
        return self.deadline is None or elapsed() + wait < self.deadline


def _given_up(failure: Failure, sent: int) -> Exception:
    error = failure.error
    if hasattr(error, "attempts"):
        error.attempts = sent
    return error
