"""The server's clock, as its `Date` headers show it.

A login JWT's `exp` is read by Amili on Amili's clock. Signed to live 10 minutes on *our* clock, it is already
expired for a server whose clock is more than 10 minutes ahead, and may live too long for one that is behind
(and checks a maximum). Absolute expiry times in a token answer are on the server's clock too. Every answer of
the token endpoint, a refusal included, carries a `Date` header; beyond `CLOCK_TOLERANCE` (more than the
header's one-second precision plus a slow answer) the difference is used instead of ignored.

`amili doctor` reports the same offset (docs/assumptions.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timezone
from email.utils import parsedate_to_datetime

import attrs

__all__ = ["CLOCK_TOLERANCE", "DATE_PRECISION", "ServerClock", "server_clock_offset", "server_now"]

CLOCK_TOLERANCE = 5.0
DATE_PRECISION = 2.0  # a Date header is truncated to the second, and was stamped before it travelled


def server_clock_offset(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server's clock (its `Date` header) is ahead of ours at `now`; None without a readable header."""
    value = headers.get("Date") or headers.get("date")
    if not value:
        return None
    try:
        stamp = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    server = (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()
    # Truncated to the second: on average the server's clock read half a second more than the header says.
    return server + 0.5 - (time.time() if now is None else now)


def server_now(headers: Mapping[str, str]) -> float:
    """The server's "now" (epoch seconds) when its `Date` header is far from our clock, else our clock."""
    offset = server_clock_offset(headers)
    return time.time() + (offset if offset is not None and abs(offset) > CLOCK_TOLERANCE else 0.0)


@attrs.define
class ServerClock:
    """What a set of credentials learned about the server's clock: its offset from ours, 0 when close."""

    offset: float = 0.0

    def learn(self, headers: Mapping[str, str]) -> bool:
        """Take the offset from an answer's `Date` header; True when it changed enough to matter."""
        seen = server_clock_offset(headers)
        if seen is None:
            return False
        learned = seen if abs(seen) > CLOCK_TOLERANCE else 0.0
        changed = abs(learned - self.offset) > CLOCK_TOLERANCE
        self.offset = learned
        return changed

    def expiry(self, lifetime: float) -> int:
        """An `exp` `lifetime` seconds ahead on the server's clock; shortened by the header's precision when
        the server's clock is not ours."""
        exp = time.time() + lifetime
        if self.offset:
            exp += self.offset - DATE_PRECISION
        return int(exp)
