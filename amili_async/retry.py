"""What is safe to retry, how long to wait, and how much retrying a client may do.

The rules (they never duplicate money):

- Reads (`GET`) retry on connect/read errors and timeouts, disconnects, 429, 500, 502, 503 and 504.
- Writes retry by themselves only when the request provably did not reach Amili, or Amili refused it before
  processing: connect error, connect timeout, pool timeout, 429 (and the 401 token replay, handled by the
  client). A TLS certificate failure is never retried.
- After an *ambiguous* write failure (read timeout, disconnect after sending, 5xx) the client reconciles:
  it looks the action up by its business reference and returns the record it finds, or sends again only when
  the record is provably absent. Without a reference there is nothing to look up: `OutcomeUnknownError`.
- Waits are full-jitter exponential (`random(0, min(cap, base * 2**n))`); `Retry-After` (seconds or HTTP date),
  `retry-after-ms` and Eve's `X-RateLimit-Reset` are honoured up to `max_retry_after`, past which the call
  raises `RateLimitError` at once instead of sleeping.
- A call makes at most `max_attempts` attempts within `deadline` seconds, and a per-client `RetryBudget` (a
  token bucket, as in botocore) stops retries altogether during an outage, so failures come back fast instead
  of multiplying the load.

tenacity runs the loop, and only after a first attempt failed: the success path never pays for it.
"""

from __future__ import annotations

import enum
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import attrs
import httpx

from . import serde

__all__ = [
    "Failure",
    "FailureKind",
    "RetryBudget",
    "RetryPolicy",
    "classify_exception",
    "retry_after_seconds",
]

logger = logging.getLogger("amili_async")
T = TypeVar("T")


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

    `RetryPolicy.no_delay()` keeps every rule but never sleeps: use it in tests.
    """

    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_retry_after: float = 60.0
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
        """One attempt, no retries (the 401 token replay still happens)."""
        return cls(max_attempts=1)

    def new_budget(self) -> RetryBudget:
        return RetryBudget(self.budget_capacity, self.budget_retry_cost, self.budget_timeout_cost, self.budget_refund)

    def backoff(self, retry_number: int, failure: Failure) -> float:
        """Seconds to wait before retry `retry_number` (1-based)."""
        import random

        if failure.retry_after is not None:
            return failure.retry_after + random.uniform(0, min(1.0, self.backoff_base))
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (retry_number - 1)))

    async def run(
        self,
        attempt: Callable[[int], Awaitable[T]],
        *,
        budget: RetryBudget,
        describe: str,
        started: float,
    ) -> T:
        """Call `attempt(1)`, and on a `Failure` retry with tenacity under this policy's rules.

        `attempt(n)` either returns, raises a `Failure` (retryable), or raises anything else (final).
        The error of the last failed attempt is re-raised (with `attempts` set) when the policy gives up.
        """
        try:
            result = await attempt(1)
        except Failure as failure:
            first = failure
        else:
            budget.deposit()
            return result
        return await self._retry(attempt, first, budget=budget, describe=describe, started=started)

    async def _retry(
        self,
        attempt: Callable[[int], Awaitable[T]],
        first: Failure,
        *,
        budget: RetryBudget,
        describe: str,
        started: float,
    ) -> T:
        from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

        spent = 0.0
        state = {"number": 1}

        def should_retry(exc: BaseException) -> bool:
            nonlocal spent
            if not isinstance(exc, Failure) or exc.kind is FailureKind.FATAL:
                return False
            if state["number"] >= self.max_attempts:
                return False
            if exc.retry_after is not None and exc.retry_after > self.max_retry_after:
                return False
            wait = self.backoff(state["number"], exc)
            exc.planned_wait = wait  # type: ignore[attr-defined]
            if self.deadline is not None and time.monotonic() - started + wait >= self.deadline:
                return False
            cost = budget.withdraw(exc.kind)
            if not cost:
                logger.info("retry budget spent, not retrying %s", describe)
                return False
            spent += cost
            return True

        def wait(retry_state: RetryCallState) -> float:
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            return float(getattr(exc, "planned_wait", 0.0))

        def before_sleep(retry_state: RetryCallState) -> None:
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            logger.info(
                "retrying %s: attempt %d failed (%s), next in %.2f s",
                describe,
                state["number"],
                exc,
                retry_state.upcoming_sleep,
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception(should_retry),
            wait=wait,
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for round_ in retrying:
                with round_:
                    n = round_.retry_state.attempt_number
                    if n == 1:
                        raise first  # replays the first failure so tenacity schedules the first retry
                    state["number"] = n
                    result = await attempt(n)
            budget.deposit(spent)
            return result
        except Failure as failure:
            error = failure.error
            if hasattr(error, "attempts"):
                error.attempts = state["number"]
            if failure.retry_after is not None and failure.retry_after > self.max_retry_after:
                logger.info("%s: server asked to wait %.0f s, above the cap", describe, failure.retry_after)
            raise error from failure.error.__cause__
