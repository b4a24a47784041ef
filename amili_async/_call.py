"""What one request is while the pipeline (`_pipeline.py`) carries it: the `Call` to send, the `ApiResponse` read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import _telemetry, serde
from ._evidence import Identity

__all__ = ["ApiResponse", "Call"]


class ApiResponse:
    """An answer read in full: status, headers, raw body, and the decoded JSON once the pipeline decoded it.

    `provenance` is "answer" for Amili's own answer, "fetched" or "found" for a write's record read back after
    its answer was lost or unreadable (see `_reconcile.py`).
    """

    __slots__ = ("headers", "payload", "provenance", "raw", "status")

    def __init__(self, status: int, headers: Mapping[str, str], raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw
        self.payload: Any = None
        self.provenance = "answer"

    def json_or_none(self) -> Any:
        if self.payload is not None:
            return self.payload
        if not self.raw:
            return None
        try:
            return serde.loads(self.raw)
        except ValueError:
            return None


class Call(_telemetry.Operation):
    """One logical request: what to send, how to treat its failures, and (as an `Operation`) what the outside
    sees of it: request id, attempts, outcome. `with call:` runs it as an operation; `Pipeline.run` sends it.

    Not an attrs class: one is built per call, and a frozen attrs instance costs a microsecond more to build.
    """

    __slots__ = ("_identified", "_identity", "action", "body", "needs_body", "ok", "params")

    def __init__(
        self,
        telemetry: _telemetry.Telemetry,
        name: str,  # the operation's name in spans and logs (`amili.creditor_payments.create`): never an id
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        write: bool | None = None,  # default: anything but GET
        action: Any = None,
        ok: tuple[int, ...] = (200, 201),
        needs_body: bool = True,
        kind: str | None = None,
        parent: _telemetry.Operation | None = None,  # the write whose lost answer this lookup settles
    ) -> None:
        self.params = params
        self.body = body
        self.action = action  # the payment, crediting or cancellation a write sends
        self._identity: Identity | None = None
        self._identified = action is None  # the identity is worked out (or there is none to work out)
        self.ok = ok
        self.needs_body = needs_body
        _telemetry.Operation.__init__(self, telemetry, name, method, path, write, kind, parent)

    @property
    def identity(self) -> Identity | None:
        """How to find the write's record again (None: it has no reference). Worked out the first time a
        failure needs it: most calls never do."""
        if not self._identified:
            self._identity, self._identified = Identity.of(self.action), True
        return self._identity
