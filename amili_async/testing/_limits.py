"""Server-side rate limits for the in-memory Amili: test your own code against the limiters Amili may run behind.

```python
fake = FakeAmili(rate_limit=RateLimit.eve(150))   # Eve's own limiter: 150 requests a second per account
fake.set_rate_limit(RateLimit.retry_after(200))   # a gateway's: 429 with Retry-After
fake.set_rate_limit(None)                         # no limit (the default)
fake = FakeAmili(rate_limit=(150, 1.0))           # one Eve-style limiter for the whole fake (`amili doctor`)
```

Every limiter counts API requests in fixed windows aligned to the fake's clock (`FixedWindowLimit`); the token
endpoint is not limited. A request over the limit is refused with 429 before anything else happens, so nothing
is applied. What they say:

- ``RateLimit.eve``: Eve's `RateLimit` with a period of one second, per account (all creditors of one API user
  share it). Answers inside the limit carry `X-RateLimit-Remaining`, `-Limit` and `-Reset` (the window's end,
  epoch seconds); the 429 itself is Eve's bare error envelope, without any header (Eve's decorator aborts before
  it stores the numbers the headers are written from) and without `Retry-After`.
- ``RateLimit.retry_after``: per account, a 429 with `Retry-After` (whole seconds until the window ends, at
  least 1), no other header.
- ``(limit, period)``: one `FixedWindowLimit` for the whole fake; its headers are on every answer, the 429 too.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs

from ._store import Store
from ._wire import Reply, WireRequest, error_reply

__all__ = ["FixedWindowLimit", "RateLimit", "RateLimits"]


@attrs.define
class FixedWindowLimit:
    """`limit` requests per `period` seconds for the whole fake (Eve keys by client; one client is the norm)."""

    limit: int
    period: float = 1.0
    _window: int = attrs.field(default=-1, init=False)
    _count: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        if self.limit < 1 or self.period <= 0:
            raise ValueError("a rate limit needs limit >= 1 and period > 0")

    def admit(self, now: float) -> tuple[bool, list[tuple[str, str]]]:
        """Count one request at `now` (epoch seconds): whether it is allowed, and the headers to answer with."""
        window = int(now // self.period)
        if window != self._window:
            self._window, self._count = window, 0
        self._count += 1
        headers = [
            ("X-RateLimit-Limit", str(self.limit)),
            ("X-RateLimit-Remaining", str(max(self.limit - self._count, 0))),
            ("X-RateLimit-Reset", str(int((window + 1) * self.period))),
        ]
        return self._count <= self.limit, headers


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
    """A `RateLimit` at work: one `FixedWindowLimit` per account."""

    def __init__(self, rule: RateLimit, store: Store) -> None:
        self.rule = rule
        self._store = store
        self._windows: dict[str, FixedWindowLimit] = {}
        self.refused = 0  # requests answered 429

    def admit(self, req: WireRequest) -> tuple[Reply | None, list[tuple[str, str]]]:
        """(the 429 to answer, or None when the request may pass; the headers for an answer that passes)."""
        rule, now = self.rule, self._store.now()
        key = self._store.token_account(req.headers.get("x-api-key")) or "anonymous"
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = FixedWindowLimit(rule.limit, rule.window)
        allowed, headers = window.admit(now)
        if allowed:
            return None, headers if rule.style == "eve" else []
        self.refused += 1
        extra = []
        if rule.style == "retry-after":
            reset = float(dict(headers)["X-RateLimit-Reset"])
            extra.append(("Retry-After", str(max(1, math.ceil(reset - now)))))
        return error_reply(429, "Rate limit exceeded", headers=extra), []
