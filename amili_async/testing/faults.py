"""Fault injection: the failures a client of Amili must survive, on demand and reproducibly.

A `Fault` matches requests by path prefix and method, and optionally by the fields of the JSON body (`body`:
every given field must have that value, e.g. `{"creditor_payment_reference": "PAY-7"}`) and by rank (`nth`: only
the n-th request that matches the rest, counting from 1). For each request the armed faults are tried in the
order they were injected; a matching fault fires with its `probability` (drawn from the `FakeAmili`'s own
`random.Random(seed)`, so a seeded run repeats exactly) until it has fired `times` times. At most one
fault fires per request.

Kinds and their parameters:

- ``latency`` (`seconds`): the request is handled (a write commits), then the answer is late.
- ``rate_limit`` (`retry_after` -> ``Retry-After``, `reset_after` -> ``X-RateLimit-Reset`` epoch seconds,
  `limit` -> ``X-RateLimit-Limit``): 429 before anything is applied.
- ``server_error`` (`status` 500/502/503/504, `commit`): an HTML error page; the write is applied first only
  when `commit` is true.
- ``drop_before_commit`` / ``drop_after_commit``: the connection closes without an answer, before or after
  the write is applied.
- ``connect_error``: the request never reaches the server (nothing is applied).
- ``stall_body``: the write is applied, the headers and part of the body are sent, then nothing.
- ``malformed_json`` / ``empty_body``: the write is applied; the real status comes back with a truncated
  or an empty body.
- ``revoke_token``: every token is revoked, then the request proceeds (and gets 401). It never matches the
  token endpoint itself.
- ``token_endpoint_down`` (`status`, `refuse`): only matches the token endpoint; an HTML 503 (or `status`),
  or a refused connection when `refuse` is true.
- ``late_commit`` (`seconds`, `gateway`, `status`): a busy backend. The write is accepted for processing and
  commits `seconds` after it arrived (on the fake's clock), whatever happens to the answer: with `gateway`
  false no answer ever comes (the client's read timeout ends the wait); with `gateway` true a proxy answers an
  HTML `status` page (set 504) at once. `FakeAmili.commit_pending()` lands every write still in progress.
- ``read_lag`` (`seconds`, GET only): the read is served by a lagging replica; it misses every record
  committed less than `seconds` ago (lists leave them out, an item read answers 404).
- ``ignore_where`` (GET only): the list is served as if the query had no `where` (a proxy or a server that
  drops the filter): the first page of every record.

Delays and header values are in seconds; header values keep up to three decimals so short test waits work.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, Literal, get_args

import attrs

from .._wire import TOKEN_PATH

FaultKind = Literal[
    "latency",
    "rate_limit",
    "server_error",
    "drop_before_commit",
    "drop_after_commit",
    "connect_error",
    "stall_body",
    "malformed_json",
    "empty_body",
    "revoke_token",
    "token_endpoint_down",
    "late_commit",
    "read_lag",
    "ignore_where",
]
_READS_ONLY = frozenset({"read_lag", "ignore_where"})
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))


def _check_kind(_: object, __: object, value: str) -> None:
    if value not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {value!r}; expected one of {sorted(FAULT_KINDS)}")


def _check_probability(_: object, __: object, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError("probability must be between 0 and 1")


def _check_status(_: object, __: object, value: int) -> None:
    if not 500 <= value <= 599:
        raise ValueError("status must be a 5xx code")


def _upper(method: str | None) -> str | None:
    return method.upper() if method else None


@attrs.frozen
class Fault:
    """A failure to inject with `FakeAmili.inject`. See the module docstring for the kinds."""

    kind: FaultKind = attrs.field(validator=_check_kind)
    path: str | None = None
    method: str | None = attrs.field(default=None, converter=_upper)
    probability: float = attrs.field(default=1.0, validator=_check_probability)
    times: int | None = None
    seconds: float = 0.0
    status: int = attrs.field(default=503, validator=_check_status)
    commit: bool = False
    retry_after: float | None = None
    reset_after: float | None = None
    limit: int = 60
    refuse: bool = False
    gateway: bool = False
    body: Mapping[str, Any] | None = attrs.field(default=None, hash=False)
    nth: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(1)))

    def matches(self, method: str, path: str, body: Any = None) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.kind in _READS_ONLY and method != "GET":
            return False
        if self.body is not None and not (
            isinstance(body, Mapping) and all(k in body and body[k] == v for k, v in self.body.items())
        ):
            return False
        is_token = path.startswith(TOKEN_PATH)
        if self.kind == "token_endpoint_down" and not is_token:
            return False
        if self.kind == "revoke_token" and is_token:
            return False
        return self.path is None or path.startswith(self.path)


@attrs.define
class _Armed:
    fault: Fault
    fired: int = 0
    seen: int = 0  # requests that matched (for `nth`)


class FaultBook:
    """The armed faults of one fake, with their firing counts."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._armed: list[_Armed] = []

    def add(self, fault: Fault) -> None:
        self._armed.append(_Armed(fault))

    def clear(self) -> None:
        self._armed.clear()

    def pick(self, method: str, path: str, body: Any = None) -> Fault | None:
        """The fault that fires for this request, if any (consumes one random draw per uncertain match)."""
        for armed in self._armed:
            fault = armed.fault
            if fault.times is not None and armed.fired >= fault.times:
                continue
            if not fault.matches(method, path, body):
                continue
            armed.seen += 1
            if fault.nth is not None and armed.seen != fault.nth:
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue
            armed.fired += 1
            return fault
        return None


def seconds_header(value: float) -> str:
    """Seconds for a header: integral values as integers, else up to three decimals."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"
