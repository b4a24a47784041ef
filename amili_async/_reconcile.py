"""Reconciliation: what the SDK proves about a write after an attempt that did not say it plainly.

The pipeline classifies every attempt by the rule of evidence (`_evidence.py`) and hands three situations here:

- `Ambiguous`: the attempt was sent and no definite answer came back. Without a reference: unknown. With one,
  the record is looked up. A record that is this action's is the answer (a receipt marked recovered); records
  that hold the reference but are not (or not only) this action's are a `ReferenceConflictError`. An empty
  lookup is *not* proof: it counts as absence only after the settle window — `RetryPolicy.settle_window`
  seconds after the attempt ended, time in which an earlier attempt still being processed can commit and
  lagging replicas catch up — confirmed by a second lookup from a server that honoured the filter. Only then
  may the write be sent again. When the call's deadline falls inside the window: `OutcomeUnknownError`.
- `Taken`: Amili refused the reference as already held (422 `is not unique`, 409): evidence of a record, so
  it is looked up (through the window if need be) and returned when it is this action's.
- `Unreadable`: Amili answered 2xx — the write is applied — but the body is not its record. The record is
  fetched by the id the answer shows (`Location`, or `_id` in a cut body), else found by reference; when
  neither works, `AppliedWithoutReceiptError`, which says the write was applied.

A settle wait gives its `execute_many` concurrency slot back (`_slots.outside_slot`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from . import serde
from ._evidence import Ambiguous, Identity, Sighting, Taken, Unreadable
from ._lookups import LookupSupport
from ._slots import outside_slot
from ._telemetry import log
from .errors import (
    AmiliError,
    AppliedWithoutReceiptError,
    NotFoundError,
    OutcomeUnknownError,
    ReferenceConflictError,
    TransportError,
)
from .retry import RetryPolicy

__all__ = ["Recovered", "Reconciler", "conflict_error", "look"]

logger = log  # the SDK logger, with the running call's structured fields on every record

# Records asked for per lookup: one is the answer; more than one (or records outside the filter) are reported.
LOOKUP_PAGE = 10

Get = Callable[[str, "Mapping[str, str] | None"], Awaitable[Any]]


@attrs.frozen
class Recovered:
    """A write's record, found after its answer was lost: `provenance` is "fetched" (by id) or "found" (by
    reference)."""

    record: Mapping[str, Any]
    provenance: str


class Reconciler:
    """Settles one call's signals. `get(path, params)` sends a read through the pipeline and returns its
    decoded body; `deadline_at` is the call's deadline on the monotonic clock (None: no deadline); `lookups`
    is the client's memory of lists whose lookup Amili refused."""

    def __init__(
        self,
        get: Get,
        policy: RetryPolicy,
        deadline_at: float | None,
        method: str,
        path: str,
        identity: Identity | None,
        lookups: LookupSupport | None = None,
    ) -> None:
        self._get = get
        self._lookups = lookups or LookupSupport()
        self._policy = policy
        self._deadline_at = deadline_at
        self._method = method
        self._path = path
        self._identity = identity

    def _where(self, attempts: int) -> dict[str, Any]:
        return {"method": self._method, "path": self._path, "attempts": attempts}

    # -- the three situations ---------------------------------------------------------------------------

    async def settle(self, signal: Ambiguous | Taken | Unreadable, attempts: int) -> Recovered | None:
        """The write's record; None when it is proven absent (it may be sent again); else an honest error."""
        if isinstance(signal, Unreadable):
            return await self.unreadable(signal, attempts)
        if isinstance(signal, Taken):
            return await self.taken(signal, attempts)
        return await self.ambiguous(signal, attempts)

    def absent_error(self, signal: Ambiguous | Taken | Unreadable, attempts: int) -> AmiliError:
        """The error to report if a write proven absent cannot be sent again (attempts or deadline spent)."""
        error = getattr(signal, "error", None) or TransportError(str(signal), **self._where(attempts))
        error.message = f"{error.message} (verified not applied)"
        return error

    async def ambiguous(self, signal: Ambiguous, attempts: int) -> Recovered | None:
        """The record of a write that may have been applied, or None when it is proven absent (resend)."""
        where = self._where(attempts)
        identity = self._identity
        if identity is None:
            raise OutcomeUnknownError(
                f"{signal}; the write may or may not have been applied, and it carries no reference to check it by",
                **where,
            ) from signal.error
        gave_up = time.monotonic()
        try:
            sighting = await self._look(identity)
            if sighting.found is None and not sighting.conflict:
                if not await self._settle(gave_up):
                    raise OutcomeUnknownError(
                        f"{signal}; not found yet, and the call's deadline leaves no room for the "
                        f"{self._policy.settle_window:g} s settle window in which it could still appear; "
                        "not sent again",
                        **where,
                    ) from signal.error
                sighting = await self._look(identity)
        except AmiliError as exc:
            if isinstance(exc, OutcomeUnknownError):
                raise
            raise OutcomeUnknownError(
                f"{signal}; looking the write up to see whether it was applied failed too ({exc})", **where
            ) from exc
        if sighting.found is not None:
            logger.info("%s %s: %s; found the record it created, using it", self._method, self._path, signal)
            return Recovered(sighting.found, "found")
        if sighting.conflict:
            raise self._conflict(identity, sighting, str(signal), attempts) from signal.error
        if sighting.unfiltered:
            raise OutcomeUnknownError(
                f"{signal}; the lookup by reference answered records outside its filter (the server ignores "
                "`where`), so not finding the write there proves nothing; not sent again",
                **where,
            ) from signal.error
        logger.info(
            "%s %s: %s; not found, twice, %g s apart: verified not applied, safe to send again",
            self._method,
            self._path,
            signal,
            self._policy.settle_window,
        )
        return None

    async def taken(self, signal: Taken, attempts: int) -> Recovered:
        """Amili says the reference is held: the holding record, when it is this action's."""
        identity = self._identity
        assert identity is not None  # only referenced writes are refused for their reference
        where = self._where(attempts)
        seen = f"Amili refused the reference as already held ({signal.error.status_code})"
        try:
            sighting = await self._look(identity)
            if sighting.found is None and not sighting.conflict and await self._settle(time.monotonic()):
                sighting = await self._look(identity)
        except AmiliError as exc:
            raise OutcomeUnknownError(f"{seen}, and looking that record up failed ({exc})", **where) from exc
        if sighting.found is not None:
            logger.info("%s %s: %s; found the record, using it", self._method, self._path, seen)
            return Recovered(sighting.found, "found")
        if sighting.conflict:
            raise self._conflict(identity, sighting, seen, attempts) from signal.error
        raise OutcomeUnknownError(
            f"{seen}, but no record holding it could be read; not sent again", **where
        ) from signal.error

    async def unreadable(self, signal: Unreadable, attempts: int) -> Recovered:
        """The record of a write Amili accepted, read again; `AppliedWithoutReceiptError` when it cannot be."""
        identity = self._identity
        record_id = signal.record_id()
        reason = "no id in the answer and no reference to find it by"
        try:
            if record_id is not None:
                record = await self._fetch(record_id)
                if record is None and await self._settle(time.monotonic()):
                    record = await self._fetch(record_id)
                reason = "fetching it by its id found nothing"
                if record is not None:
                    differs = identity.differences(record) if identity is not None else []
                    if not differs:
                        return Recovered(record, "fetched")
                    reason = f"the record fetched by its id differs on {', '.join(differs)}"
            elif identity is not None:
                sighting = await self._look(identity)
                if sighting.found is None and not sighting.conflict and await self._settle(time.monotonic()):
                    sighting = await self._look(identity)
                if sighting.found is not None:
                    return Recovered(sighting.found, "found")
                reason = "the reference is held by several records" if sighting.conflict else "not found by reference"
        except AmiliError as exc:
            reason = f"reading it back failed ({exc})"
        raise AppliedWithoutReceiptError(
            f"{signal}; the write WAS applied, but its record could not be read: {reason}. Do not send it again",
            record_id=record_id,
            status_code=signal.status,
            **self._where(attempts),
        )

    # -- the steps ----------------------------------------------------------------------------------

    async def _look(self, identity: Identity) -> Sighting:
        # Through the client's memory of refused lookups (`_lookups.py`): once refused, not asked again.
        return await self._lookups.run(identity.path, lambda: look(self._get, identity))  # type: ignore[no-any-return]

    async def _fetch(self, record_id: str) -> Mapping[str, Any] | None:
        try:
            payload = await self._get(f"{self._path}/{record_id}", None)
        except NotFoundError:
            return None  # not visible yet (a lagging replica), or not there
        if isinstance(payload, Mapping) and payload.get("_id") == record_id:
            return payload
        return None

    async def _settle(self, since: float) -> bool:
        """Wait until `settle_window` seconds after `since`, without a concurrency slot; False when the call's
        deadline falls before the window ends (then nothing is waited)."""
        wait = max(0.0, since + self._policy.settle_window - time.monotonic())
        if self._deadline_at is not None and time.monotonic() + wait >= self._deadline_at:
            return False
        if wait > 0:
            async with outside_slot():
                await self._policy.sleep(wait)
        return True

    def _conflict(self, identity: Identity, sighting: Sighting, seen: str, attempts: int) -> ReferenceConflictError:
        return conflict_error(identity, sighting, f"{seen}; ", "; it was not sent again", **self._where(attempts))


async def look(get: Get, identity: Identity) -> Sighting:
    """One lookup by reference, every record checked (`Identity.sort`)."""
    params = {"where": serde.dumps(identity.where).decode(), "max_results": str(LOOKUP_PAGE)}
    payload = await get(identity.path, params)
    try:
        return identity.sort(payload)
    except ValueError as exc:
        from .errors import ResponseDecodeError

        raise ResponseDecodeError(str(exc), method="GET", path=identity.path) from None


def conflict_error(
    identity: Identity, sighting: Sighting, before: str = "", after: str = "", **where: Any
) -> ReferenceConflictError:
    """The error for records that hold the reference but are not (exactly one record) the action's."""
    records = (*sighting.matching, *sighting.different)
    if sighting.different:
        fields = sorted({name for record in sighting.different for name in identity.differences(record)})
        what = f"held by a record that differs from this action on {', '.join(fields)}"
    else:
        what = f"held by {'more than ' if sighting.more else ''}{len(records)} records matching this action"
    return ReferenceConflictError(
        f"{before}its reference is {what}; none was taken as this action's record{after}",
        records=tuple(records),
        expected=identity.wire_fields(),
        **where,
    )
