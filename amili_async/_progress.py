"""A tiny progress bar for the `amili` command: count, rate and ETA on stderr, no dependency.

On a terminal it redraws one line in place, at most every `interval` seconds. Anywhere else (a pipe, a CI
log) it stays silent while running and prints one final line, so logs are not flooded with redraws.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "format_duration"]

_BAR_WIDTH = 24


def format_duration(seconds: float) -> str:
    """`0:07`, `12:30`, `1:02:03`."""
    total = max(0, int(seconds + 0.5))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _rate_text(rate: float) -> str:
    return f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.1f}/s"


class Progress:
    """Count finished items; `close()` prints the final line.

    `total` may be None (unknown): the bar then shows the count and the rate, without percentage or ETA.
    """

    def __init__(
        self,
        total: int | None,
        *,
        label: str = "",
        unit: str = "items",
        stream: TextIO | None = None,
        enabled: bool = True,
        interval: float = 0.5,
    ) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.done = 0
        self.failed = 0
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        try:
            self._tty = enabled and self._stream.isatty()
        except (AttributeError, ValueError):
            self._tty = False
        self._interval = interval
        self._started = time.monotonic()
        self._last_draw = self._started  # the first draw after one interval: early rates mislead
        self._width = 0
        self._closed = False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def advance(self, n: int = 1, *, failed: int = 0) -> None:
        self.done += n
        self.failed += failed
        if self._tty:
            now = time.monotonic()
            if now - self._last_draw >= self._interval:
                self._last_draw = now
                self._draw(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [self.label] if self.label else []
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            filled = int(fraction * _BAR_WIDTH)
            parts.append("[" + "#" * filled + "-" * (_BAR_WIDTH - filled) + "]")
            parts.append(f"{self.done:,}/{self.total:,} {self.unit} {fraction:4.0%}")
        else:
            parts.append(f"{self.done:,} {self.unit}")
        parts.append(_rate_text(rate))
        if self.failed:
            parts.append(f"{self.failed:,} failed")
        if self.total and not self._closed and rate > 0 and self.done < self.total:
            parts.append(f"ETA {format_duration((self.total - self.done) / rate)}")
        else:
            parts.append(format_duration(elapsed))
        return "  ".join(parts)

    def _draw(self, text: str) -> None:
        pad = " " * max(0, self._width - len(text))
        self._width = len(text)
        self._stream.write("\r" + text + pad)
        self._stream.flush()

    def close(self) -> None:
        """Print the final state (once): redraw and end the line on a terminal, one plain line elsewhere."""
        if self._closed:
            return
        self._closed = True
        if not self._enabled:
            return
        text = self.line()
        if self._tty:
            self._draw(text)
            self._stream.write("\n")
        else:
            self._stream.write(text + "\n")
        self._stream.flush()
