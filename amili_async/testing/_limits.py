"""An Eve-style rate limiter for the fake (opt-in): fixed windows aligned to the clock, headers on every answer.

Eve's limiter (`RATE_LIMIT_<METHOD> = (limit, period)`) counts requests in windows of `period` seconds, puts
`X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (epoch seconds) on every answer, and
refuses a request over the limit with 429 *without* `Retry-After`. Amili does not document a rate limit;
this is what it would look like if it turned Eve's on — which is what `amili doctor` looks for.
"""

from __future__ import annotations

import attrs

__all__ = ["FixedWindowLimit"]


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
