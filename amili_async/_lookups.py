"""What a client has learned about looking writes up by reference: once refused, not asked again.

After an ambiguous write (the request went out, the answer was lost) the pipeline looks the record up by its
reference, with a `where` filter on the action's list (`GET /creditor--payments?where=...`). Amili does not
document that its lists accept such filters (see docs/assumptions.md). If it refuses one with a 400, every
later lookup on that list would be refused too: each one costs a request, and the answer the caller gets
("looking the write up failed too") hides the reason. So the first refusal is remembered, per client and per
list, and later ambiguous writes on that list go straight to `OutcomeUnknownError` with a message that says
why. `amili doctor` checks the same thing up front, read-only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from ._telemetry import log as logger  # adds the running call's structured fields to every record
from .errors import AmiliError

__all__ = ["LookupSupport"]

REFUSED_STATUS = 400  # Eve answers a filter it cannot run (an unknown operator, a field it refuses) with 400


@attrs.define
class LookupSupport:
    """Per client: the lists (by path) whose reference lookup Amili refused, and how."""

    _refused: dict[str, int] = attrs.field(factory=dict)

    def note_failure(self, path: str, status_code: int | None) -> None:
        """A lookup on `path` failed with `status_code`; a 400 means the filter itself is refused."""
        if status_code == REFUSED_STATUS and path not in self._refused:
            self._refused[path] = status_code
            logger.warning(
                "%s: Amili refused a lookup by reference (%d on the where filter); ambiguous writes on this "
                "list will be reported as OutcomeUnknownError without looking them up again",
                path,
                status_code,
            )

    def refusal(self, path: str) -> str | None:
        """Why a lookup on `path` is not tried any more, or None while it is still worth trying."""
        status = self._refused.get(path)
        if status is None:
            return None
        return (
            f"Amili refused an earlier lookup by reference on {path} ({status} on the where filter), so this "
            "client cannot check whether the write was applied (run `amili doctor` to see what the server supports)"
        )

    async def run(self, path: str, lookup: Callable[[], Awaitable[Any]]) -> Any:
        """Run a reference lookup on `path`, unless Amili refused one there before (then say so, send nothing)."""
        refused = self.refusal(path)
        if refused is not None:
            raise AmiliError(refused, path=path)
        try:
            return await lookup()
        except AmiliError as exc:
            self.note_failure(path, exc.status_code)
            raise
