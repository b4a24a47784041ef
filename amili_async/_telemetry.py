"""Seen from the outside: request ids, structured log fields, and OpenTelemetry spans and metrics.

The pipeline reports what happens through a handful of hooks, and this module turns that into what people
operating a payment service look at:

    with Operation(telemetry, name, method, path) as op:   an SDK operation (`amili.creditor_payments.create`,
        ...                                                ...); leaving the block records its outcome
    attempt(op, number, started, status, headers)          one HTTP exchange of it finished (answered or failed)
    waited(reason, seconds)                                the retry policy waits before the next attempt
    token_request(...)                                     the token endpoint was asked for a token

Every call the pipeline sends is an operation (`_call.Call` extends `Operation` with what to send), so no
object is made for telemetry alone: its request id goes on every attempt, and a lookup run while a write is
reconciled is a child call of that write (same request id, its own span).
Records logged where the operation is not at hand (the retry policy, reconciliation, lookups) find it in a
context variable, set from the first failed exchange on (or from the start when OpenTelemetry is on):
setting one costs allocations that make the garbage collector run three times as often, which a call that
succeeds at once, the common case, has no reason to pay.

Costs: without OpenTelemetry nothing of it is imported, ever; we look at `sys.modules` for it, so an
application that never imported OpenTelemetry pays one dictionary look-up per operation. With the API
imported but no SDK configured (the global providers are still the API's proxies), we stop there as well.
Only a configured provider makes us import `_otel`, which builds spans and records metrics.

Nothing here ever records an id of Amili's (case, creditor, payment), a query value, an amount or a secret:
paths are reduced to templates (`/cases/{id}`), errors to their class names.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import random
import re
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from .errors import AmiliError, OutcomeUnknownError

if TYPE_CHECKING:
    from ._otel import Otel

__all__ = [
    "REQUEST_ID_HEADER",
    "Operation",
    "Telemetry",
    "attempt",
    "current",
    "log",
    "path_template",
    "token_request",
    "waited",
]

REQUEST_ID_HEADER = "X-Request-ID"
_ID_SEGMENT = re.compile(r"/[^/]*\d[^/]*")  # a path segment with a digit in it is an id, never a route name

_CURRENT: contextvars.ContextVar[Operation | None] = contextvars.ContextVar("amili_async_operation", default=None)
_MODULES = sys.modules
_random_bits = random.getrandbits
_monotonic = time.monotonic

# Outcomes of an operation (`amili.outcome` on its span and log records).
APPLIED = "applied"  # a write Amili answered 2xx
RECOVERED = "recovered_by_reference"  # a write whose answer was lost, found again by its reference
RESENT = "resent_after_proof"  # a write proven absent after a lost answer, sent again and applied
UNKNOWN = "unknown"  # OutcomeUnknownError: it may or may not have been applied
OK = "ok"  # a read that was answered
ERROR = "error"  # any other error; `error.type` names it
CANCELLED = "cancelled"


Op = TypeVar("Op", bound="Operation")


@functools.lru_cache(maxsize=512)  # a write's path is the same every call; a read's may carry an id
def path_template(path: str) -> str:
    """`/cases/68e4c40d93ee14723d28fa95` -> `/cases/{id}`: the route without the ids it carries."""
    return _ID_SEGMENT.sub("/{id}", path)


def error_type(error: BaseException) -> str:
    """`httpx.ReadTimeout`, `amili_async.OutcomeUnknownError`: a class name, never a message."""
    cls = type(error)
    package = cls.__module__.partition(".")[0]
    return cls.__qualname__ if package == "builtins" else f"{package}.{cls.__qualname__}"


class Telemetry:
    """One client's view of OpenTelemetry: the tracer and instruments of the providers currently set.

    Looked up on every operation, so a provider configured after the client was built is picked up; rebuilt
    only when the global providers change.
    """

    __slots__ = ("_from_env", "_otel", "server_address", "server_port")

    def __init__(self, server_address: str | None, server_port: int | None) -> None:
        self.server_address = server_address
        self.server_port = server_port
        self._otel: Otel | None = None
        # Providers named in the environment are loaded by the API's getters on first use: then always ask them.
        self._from_env = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ or "OTEL_PYTHON_METER_PROVIDER" in os.environ

    @classmethod
    def for_base_url(cls, base_url: str) -> Telemetry:
        """For a client of `base_url`: its host and port are `server.address` and `server.port`."""
        parts = urlsplit(base_url)
        return cls(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))

    def otel(self) -> Otel | None:
        """The spans and metrics to produce, or None when no OpenTelemetry provider is configured."""
        modules = sys.modules
        trace = modules.get("opentelemetry.trace")
        metrics = modules.get("opentelemetry.metrics._internal")
        if trace is None and metrics is None:  # never imported: nobody can have configured anything
            return None
        tracer_provider = _provider(trace, "_TRACER_PROVIDER", "get_tracer_provider", self._from_env)
        meter_provider = _provider(metrics, "_METER_PROVIDER", "get_meter_provider", self._from_env)
        otel = self._otel
        if otel is None or otel.tracer_provider is not tracer_provider or otel.meter_provider is not meter_provider:
            from ._otel import Otel

            self._otel = otel = Otel(tracer_provider, meter_provider, self.server_address, self.server_port)
        return otel if otel.active else None


_UNSET = object()


def _provider(module: Any, variable: str, getter: str, from_env: bool) -> Any:
    """The global provider the application set, or None when it set none.

    The API's public getters check `os.environ` on every call while no provider is set, which costs about
    1.7 µs each; the module variable they read is the same answer for a dictionary look-up. Should a later
    API version rename it, the public getter answers instead (slower, never wrong).
    """
    if module is None:
        return None
    provider = getattr(module, variable, _UNSET)
    if provider is _UNSET or (provider is None and from_env):
        return getattr(module, getter)()
    return provider


class Operation:
    """One SDK call as the outside sees it: its name, request id, attempts and, at the end, its outcome.

    `with op:` runs it; leaving the block records its outcome. A `_call.Call` is an operation with what to send.
    What every operation sets lives in slots; what most never change is a class default, and the instance
    dictionary for it is made only by the few that change one (a failed exchange, OpenTelemetry, a lookup).
    """

    __slots__ = (
        "__dict__",
        "attempt",
        "debug",
        "kind",
        "method",
        "name",
        "path",
        "request_id",
        "sends",
        "server_request_id",
        "started",
        "status",
        "write",
    )

    looked_up = False  # a reconciliation lookup (a child operation) ran
    resent = False  # an exchange was sent after such a lookup
    outcome: str | None = None  # set when it ends, if anything records it
    otel: Otel | None = None
    span: Any = None
    otel_token: Any = None
    token: contextvars.Token[Operation | None] | None = None  # while it is the context's current operation
    _template: str | None = None

    def __init__(
        self,
        telemetry: Telemetry,
        name: str,
        method: str,
        path: str,
        write: bool | None = None,
        kind: str | None = None,
        parent: Operation | None = None,
    ) -> None:
        """`parent` is the write whose lost answer this lookup settles: one logical call, one request id."""
        self.name = name
        self.method = method
        self.path = path
        self.write = method != "GET" if write is None else write
        self.kind = kind
        if parent is None:
            # 32 random hex digits. From `random` (reseeded in a forked child), not `os.urandom`: an id needs no
            # secrecy, and a system call per SDK call costs microseconds on a virtual machine.
            self.request_id = _random_bits(128).to_bytes(16, "big").hex()
        else:
            self.request_id = parent.request_id
            parent.looked_up = True
        self.attempt = 0  # the retry policy's attempt number of the last exchange
        self.sends = 0  # HTTP exchanges, a 401 replay included
        self.status: int | None = None  # the status of the last exchange (None: no answer)
        self.server_request_id: str | None = None
        self.started = _monotonic()
        self.debug = _logger.isEnabledFor(logging.DEBUG)  # asked once per operation, not once per record
        if _MODULES.get("opentelemetry") is not None:  # never imported: nobody can have configured it (common, free)
            self.otel = telemetry.otel()

    def make_current(self) -> None:
        """From now until it ends, log records and retry waits in this context belong to this operation."""
        if self.token is None:
            self.token = _CURRENT.set(self)

    def __enter__(self: Op) -> Op:
        otel = self.otel
        if otel is not None:
            self.make_current()  # waits, token requests and lookups find their span through it
            otel.begin(self)
        return self

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        """The operation finished (with `error`, or not): record its outcome."""
        if isinstance(error, AmiliError) and error.request_id is None:
            error.request_id = self.request_id
            error.server_request_id = self.server_request_id
        if self.token is None and self.otel is None and not self.debug:
            return  # the common case: nothing records the outcome
        self.outcome = outcome = self._outcome(error)
        try:
            if self.debug:
                kind = "" if error is None else f" ({error_type(error)})"
                fields = self.log_fields()
                message = "%s: %s after %d attempt(s), %.1f ms%s"
                log.debug(message, self.name, outcome, self.attempt, fields["amili.elapsed_ms"], kind, extra=fields)
            if self.otel is not None:
                self.otel.end(self, None if error is None else error_type(error))
        finally:
            if self.token is not None:
                _reset(self.token)

    def _outcome(self, error: BaseException | None) -> str:
        if error is not None:
            return _error_outcome(error)
        if not self.write:
            return OK
        if self.status is not None and 200 <= self.status < 300:
            return RESENT if self.resent else APPLIED
        return RECOVERED  # the answer came from a lookup, not from the write's own exchange

    @property
    def template(self) -> str:
        if self._template is None:
            self._template = path_template(self.path)
        return self._template

    def elapsed_ms(self) -> float:
        return round((_monotonic() - self.started) * 1000, 3)

    def log_fields(self) -> dict[str, Any]:
        return {
            "amili.operation": self.name,
            "amili.path_template": self.template,
            "amili.attempt": self.attempt,
            "amili.outcome": self.outcome,
            "amili.request_id": self.request_id,
            "amili.elapsed_ms": self.elapsed_ms(),
        }


current = _CURRENT.get  # () -> Operation | None: the operation records in this context belong to, if any


def attempt(
    op: Operation,
    number: int,
    started: float,
    status: int | None,
    headers: Mapping[str, str] | None,
    error: BaseException | None = None,
) -> None:
    """One HTTP exchange of `op` finished: `status` and `headers` of the answer, or the `error` instead.

    `started` is the `time.monotonic()` taken just before sending.
    """
    op.attempt = number
    op.sends += 1
    op.status = status
    if op.looked_up:
        op.resent = True
    if headers is not None:
        server_id = headers.get("x-request-id")  # header look-ups ignore case
        if server_id:
            op.server_request_id = server_id[:128]
    if status is None or status >= 300:
        op.make_current()  # what follows (retries, reconciliation) logs in this operation's name
    if op.debug:
        result = str(status) if error is None else type(error).__name__
        elapsed = (time.monotonic() - started) * 1000
        fields = op.log_fields()
        fields["amili.outcome"] = result
        log.debug("%s %s -> %s (attempt %d, %.1f ms)", op.method, op.template, result, number, elapsed, extra=fields)
    if op.otel is not None:
        op.otel.attempt(op, started, status, None if error is None else error_type(error))


def waited(reason: str, seconds: float) -> None:
    """The retry policy waits `seconds` before the next attempt; `reason` is "throttled" for a 429."""
    op = _CURRENT.get()
    if op is not None and op.otel is not None:
        op.otel.waited(op, reason, seconds)


def token_request(
    telemetry: Telemetry | None, method: str, path: str, started: float, status: int | None, error: BaseException | None
) -> None:
    """The token endpoint was asked for a token (one request per token lifetime, shared by all calls)."""
    if _logger.isEnabledFor(logging.DEBUG):
        result = str(status) if error is None else type(error).__name__
        elapsed = (time.monotonic() - started) * 1000
        log.debug("%s %s -> %s (token, %.1f ms)", method, path_template(path), result, elapsed)  # fields: current
    otel = telemetry.otel() if telemetry is not None else None
    if otel is not None:
        kind = None if error is None else error_type(error)
        otel.token_request(_CURRENT.get(), method, path_template(path), started, status, kind)


def _error_outcome(error: BaseException) -> str:
    if isinstance(error, OutcomeUnknownError):
        return UNKNOWN
    if isinstance(error, AmiliError):
        return ERROR
    return CANCELLED if _is_cancellation(error) else ERROR


def _reset(token: contextvars.Token[Operation | None]) -> None:
    with contextlib.suppress(ValueError):  # set in another context (a task the operation did not start in)
        _CURRENT.reset(token)


def _is_cancellation(error: BaseException) -> bool:
    import asyncio

    if isinstance(error, asyncio.CancelledError):
        return True
    trio = sys.modules.get("trio")
    return trio is not None and isinstance(error, trio.Cancelled)


class _SdkLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The `amili_async` logger, adding the running operation's fields to every record as `extra`.

    The fields are always there (None outside an operation), so a JSON log pipeline can rely on them:
    `amili.operation`, `amili.path_template`, `amili.attempt`, `amili.outcome`, `amili.request_id`,
    `amili.elapsed_ms`. Work happens only for records that pass the level check.
    """

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        op = _CURRENT.get()
        fields = op.log_fields() if op is not None else dict.fromkeys(_FIELDS)
        extra = kwargs.get("extra")
        if extra:
            fields.update(extra)
        kwargs["extra"] = fields
        return msg, kwargs


_FIELDS = (
    "amili.operation",
    "amili.path_template",
    "amili.attempt",
    "amili.outcome",
    "amili.request_id",
    "amili.elapsed_ms",
)
_logger = logging.getLogger("amili_async")
log = _SdkLogger(_logger, {})
