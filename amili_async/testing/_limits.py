"""Server-side rate limits for the in-memory Amili: test your own code against the limiters Amili may run behind.

```python
fake.rate_limit(RateLimit.eve(150))          # Eve's own limiter: 150 requests per second per account
fake.rate_limit(RateLimit.retry_after(200))  # a gateway's: 429 with Retry-After
fake.rate_limit(None)                        # no limit (the default)
```

Both count every API request of one account (all its creditors share one API user) in fixed windows aligned to
the fake's clock; the token endpoint is not limited. A request over the limit is refused with 429 before
anything else happens, so nothing is applied. They differ in what they say:

- ``eve``: Eve's `RateLimit` with a period of one second. Answers inside the limit carry
  `X-RateLimit-Remaining`, `X-RateLimit-Limit` and `X-RateLimit-Reset` (the window's end, epoch seconds); the
  429 itself is Eve's bare error envelope without any header (Eve aborts before it stores the numbers the
  headers are written from) and without `Retry-After`.
- ``retry-after``: a 429 with `Retry-After` (whole seconds until the window ends, at least 1), no other header.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import attrs

from .._wire import TOKEN_PATH
from ._store import Store
from ._wire import Outcome, WireRequest, error_reply

__all__ = ["RateLimit", "RateLimits"]


@attrs.frozen
class RateLimit:
    """`limit` requests per account in every `window` seconds; `style` says how a refusal reads."""

    limit: int = attrs.field(validator=attrs.validators.ge(1))
    style: Literal["eve", "retry-after"] = "eve"
    window: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))

    @classmethod
    def eve(cls, limit: int, window: float = 1.0) -> RateLimit:
        return cls(limit, "eve", window)

    @classmethod
    def retry_after(cls, limit: int, window: float = 1.0) -> RateLimit:
        return cls(limit, "retry-after", window)


class RateLimits:
    """The counters of one fake: per account, the current window's end and how many requests it counted."""

    def __init__(self, rule: RateLimit, store: Store) -> None:
        self.rule = rule
        self._store = store
        self._windows: dict[str, tuple[float, int]] = {}
        self.refused = 0  # requests answered 429

    def handle(self, req: WireRequest, run: Callable[[], Outcome]) -> Outcome:
        """Refuse `req` with 429, or `run()` it and stamp Eve's headers on its answer."""
        if req.path.rstrip("/") == TOKEN_PATH:
            return run()
        store, rule_ = self._store, self.rule
        now = store.now()
        end = (math.floor(now / rule_.window) + 1) * rule_.window
        key = store.token_account(req.headers.get("x-api-key")) or "anonymous"
        window_end, count = self._windows.get(key, (0.0, 0))
        count = count + 1 if window_end == end else 1
        self._windows[key] = (end, count)
        if count > rule_.limit:
            self.refused += 1
            headers = [] if rule_.style == "eve" else [("Retry-After", str(max(1, math.ceil(end - now))))]
            return Outcome("respond", error_reply(429, "Rate limit exceeded", headers=headers))
        outcome = run()
        if rule_.style == "eve" and outcome.reply is not None:
            outcome.reply.headers += [
                ("X-RateLimit-Remaining", str(rule_.limit - count)),
                ("X-RateLimit-Limit", str(rule_.limit)),
                ("X-RateLimit-Reset", str(math.ceil(end))),
            ]
        return outcome
