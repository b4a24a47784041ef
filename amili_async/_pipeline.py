"""The one request pipeline every call goes through.

bind (to the running loop and process) -> get token (shared cache) -> send (the transport's exchange) ->
classify the answer (retry policy) -> reconcile an ambiguous write (the rule of evidence) -> answer or raise.

Resources hold a `Pipeline` and never talk to httpx themselves. A `Pipeline` is its `Settings` (what a view of
the client may change: timeout, retry policy) plus the `Connection` it shares with every other view of the
same client (credentials, transport, and the per-loop `Runtime` built from them).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import attrs
import httpx
import sniffio

from . import serde
from ._lookups import LookupSupport
from .auth import Auth, Token, TokenCache, TokenEndpoint
from .errors import (
    AmiliError,
    ClientStateError,
    OutcomeUnknownError,
    ResponseDecodeError,
    TimeoutError,
    TransportError,
    error_for_status,
    excerpt,
)
from .retry import Failure, FailureKind, RetryBudget, RetryPolicy, classify_exception, retry_after_seconds
from .transports import Exchange, build_default_transport, exchange_for, httpx_exchange

__all__ = ["ApiResponse", "Call", "Connection", "Pipeline", "Runtime", "Settings"]

logger = logging.getLogger("amili_async")


class ApiResponse:
    """An answer read in full: status, headers, raw body, and the decoded JSON once the pipeline decoded it."""

    __slots__ = ("headers", "payload", "raw", "status")

    def __init__(self, status: int, headers: Mapping[str, str], raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw
        self.payload: Any = None

    def json_or_none(self) -> Any:
        if self.payload is not None:
            return self.payload
        if not self.raw:
            return None
        try:
            return serde.loads(self.raw)
        except ValueError:
            return None


@attrs.frozen
class Call:
    """One logical request: what to send and how to treat its failures."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    body: bytes | None = None
    write: bool = False
    reconcile: Callable[[], Awaitable[Any]] | None = None
    ok: tuple[int, ...] = (200, 201)
    needs_body: bool = True


@attrs.frozen
class Settings:
    """What a view of a client may change; everything else is shared through the `Connection`."""

    base_url: str
    headers: tuple[tuple[str, str], ...]
    timeout: httpx.Timeout
    retry: RetryPolicy
    timeout_ext: dict[str, float | None] = attrs.field(init=False, eq=False)

    @timeout_ext.default
    def _timeout_ext(self) -> dict[str, float | None]:
        return self.timeout.as_dict()


def _loop_key() -> tuple[str, object]:
    # The loop object itself, not its id(): a runtime holding the key keeps its loop alive, so a later loop
    # can never be mistaken for it (ids of freed loops are reused, and the check then passed by chance).
    try:
        loop: object = asyncio.get_running_loop()  # the cheap check, on every call
    except RuntimeError:
        loop = None  # trio, or no loop at all
    if loop is not None:
        return "asyncio", loop
    library = sniffio.current_async_library()
    if library == "trio":
        import trio

        return library, trio.lowlevel.current_trio_token()
    return library, 0


class Runtime:
    """Everything bound to one event loop and one process: the transport, the token cache, the budget."""

    def __init__(self, connection: Connection, settings: Settings, loop: tuple[str, object]) -> None:
        self.loop = loop
        self.pid = os.getpid()
        self.own_transport = connection.transport is None and connection.http_client is None
        self.transport: httpx.AsyncBaseTransport | None = None
        if connection.http_client is not None:
            self.exchange: Exchange = httpx_exchange(connection.http_client)
        else:
            self.transport = connection.transport or build_default_transport(
                loop[0], limits=connection.limits, verify=connection.verify, trust_env=connection.trust_env
            )
            self.exchange = exchange_for(self.transport)
        endpoint = TokenEndpoint(self.exchange, settings.base_url, settings.headers, settings.timeout_ext)
        self.tokens = TokenCache(
            connection.auth,
            endpoint,
            timeout=connection.token_timeout,
            assumed_lifetime=connection.assumed_token_lifetime,
        )
        self.budget: RetryBudget = settings.retry.new_budget()


@attrs.define(eq=False)
class Connection:
    """What a client and all its views share: credentials, transport choice, and the bound `Runtime`.

    A runtime belongs to the event loop it was first used on and to the process it was made in: after
    `fork()` the child builds fresh connections instead of reusing the parent's sockets.
    """

    auth: Auth
    transport: httpx.AsyncBaseTransport | None
    http_client: httpx.AsyncClient | None
    limits: httpx.Limits
    verify: Any
    trust_env: bool
    token_timeout: float
    assumed_token_lifetime: float
    runtime: Runtime | None = None
    closed: bool = False
    lookups: LookupSupport = attrs.field(factory=LookupSupport)  # the lists whose reference lookup Amili refused

    def bind(self, settings: Settings) -> Runtime:
        if self.closed:
            raise ClientStateError("the client is closed")
        runtime = self.runtime
        if runtime is not None and runtime.pid == os.getpid():
            if runtime.loop != _loop_key():
                raise ClientStateError(
                    "this client was opened on another event loop; create one client per event loop "
                    "(for example inside your asyncio.run(...) / trio.run(...) entry point)"
                )
            return runtime
        # First use, or a child process after fork(): the parent's sockets are not ours to use or close.
        self.runtime = runtime = Runtime(self, settings, _loop_key())
        return runtime

    async def aclose(self) -> None:
        self.closed = True
        runtime, self.runtime = self.runtime, None
        if runtime is not None and runtime.own_transport and runtime.transport is not None:
            import anyio

            with anyio.CancelScope(shield=True):
                await runtime.transport.aclose()


class Pipeline:
    """Sends calls for one client (or one view of it): token, retries, reconciliation, errors."""

    def __init__(self, settings: Settings, connection: Connection) -> None:
        self.settings = settings
        self.connection = connection

    def with_options(
        self, *, timeout: httpx.Timeout | float | None = None, retry: RetryPolicy | None = None
    ) -> Pipeline:
        """The same connection with another timeout or retry policy."""
        changes: dict[str, Any] = {}
        if timeout is not None:
            changes["timeout"] = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        if retry is not None:
            changes["retry"] = retry
        return Pipeline(attrs.evolve(self.settings, **changes), self.connection) if changes else self

    def bind(self) -> Runtime:
        return self.connection.bind(self.settings)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        write: bool | None = None,
        reconcile: Callable[[], Awaitable[Any]] | None = None,
        ok: tuple[int, ...] = (200, 201),
        needs_body: bool = True,
    ) -> ApiResponse:
        """Send one logical request (token, retries, reconciliation, errors).

        `write` defaults to True for anything but GET. `reconcile`, for a write, is called after an
        ambiguous failure: it returns the record that exists (which then becomes the answer) or None when
        the write is provably absent (the write is then sent again).
        """
        body = None if json is None else serde.dumps(json)
        is_write = method != "GET" if write is None else write
        return await self.run(Call(method, path, params, body, is_write, reconcile, ok, needs_body))

    async def find_one(self, path: str, where: Mapping[str, Any]) -> Any:
        """The first document matching `where`, or None when there is none."""
        params = {"where": serde.dumps(where).decode(), "max_results": "2"}
        response = await self.run(Call("GET", path, params))
        payload = response.payload
        items = payload.get("_items") if isinstance(payload, Mapping) else None
        if not isinstance(items, list):
            raise ResponseDecodeError("a list answer without _items", method="GET", path=path)
        if len(items) > 1:
            logger.warning("%s: more than one record matches a reference; using the first", path)
        return items[0] if items else None

    async def run(self, call: Call) -> ApiResponse:
        runtime = self.bind()
        policy = self.settings.retry
        started = time.monotonic()
        describe = f"{call.method} {call.path}"

        tried = 0  # attempts started, for the deadline error

        async def attempt(number: int) -> ApiResponse:
            nonlocal tried
            tried = number
            return await self._attempt(runtime, call, number)

        if policy.deadline is None:
            return await policy.run(attempt, budget=runtime.budget, describe=describe, started=started)
        if sys.version_info >= (3, 11) and runtime.loop[0] == "asyncio":
            # asyncio's own timeout costs half of an anyio cancel scope per call (benchmarks/README.md).
            deadline = asyncio.timeout(policy.deadline)
            try:
                async with deadline:
                    return await policy.run(attempt, budget=runtime.budget, describe=describe, started=started)
            except builtins.TimeoutError:
                if not deadline.expired():
                    raise
        else:
            import anyio

            with anyio.move_on_after(policy.deadline):
                return await policy.run(attempt, budget=runtime.budget, describe=describe, started=started)
        message = f"no answer within the {policy.deadline:g} s deadline"
        if call.write:
            raise OutcomeUnknownError(message, method=call.method, path=call.path, attempts=tried)
        raise TimeoutError(message, method=call.method, path=call.path, attempts=tried)

    async def _attempt(self, runtime: Runtime, call: Call, number: int) -> ApiResponse:
        try:
            token = await runtime.tokens.get()
            response = await self._send(runtime, call, token, number)
            if response.status == 401 and await runtime.tokens.invalidate(token.generation):
                # Refresh once (unless another call already did) and replay once: a 401 is refused before
                # any processing, so replaying a write is safe. A second 401 is final.
                token = await runtime.tokens.get()
                response = await self._send(runtime, call, token, number)
            return self._classify(call, response, number, token)
        except _Ambiguous as ambiguous:
            return await self._reconcile(call, ambiguous, number)

    async def _send(self, runtime: Runtime, call: Call, token: Token, number: int) -> ApiResponse:
        settings = self.settings
        headers = [*settings.headers, ("X-API-Key", token.value)]
        if call.body is not None:
            headers.append(("Content-Type", "application/json"))
        url = settings.base_url + call.path
        if call.params:
            url += "?" + urlencode(call.params)
        started = time.monotonic()
        try:
            status, response_headers, raw = await runtime.exchange(
                call.method, url, headers, call.body, settings.timeout_ext
            )
        except httpx.TransportError as exc:
            _log(call, None, number, started, exc)
            raise _transport_failure(call, exc, number) from exc
        _log(call, status, number, started)
        return ApiResponse(status, response_headers, raw)

    def _classify(self, call: Call, response: ApiResponse, number: int, token: Token) -> ApiResponse:
        status = response.status
        if status in call.ok or 200 <= status < 300:
            if not call.needs_body or (
                # An empty read is an answer only where the status says it all (204; the respite check's
                # 200, the one read that also accepts 206). Anywhere else it is a cut answer: retried below.
                not call.write and not response.raw.strip() and (status == 204 or 206 in call.ok)
            ):
                return response
            try:
                response.payload = serde.loads(response.raw)
            except ValueError:
                message = f"answered {status} but the body is not JSON: {excerpt(response.raw)!r}"
                if call.write:
                    raise _Ambiguous(message) from None
                decode_error = ResponseDecodeError(
                    message, status_code=status, method=call.method, path=call.path, attempts=number
                )
                raise Failure(decode_error, FailureKind.AMBIGUOUS) from None
            return response
        secret = token.value.encode()
        if len(secret) >= 8 and secret in response.raw:  # an echoed token must not reach our errors
            response = ApiResponse(status, response.headers, response.raw.replace(secret, b"***"))
        payload = response.json_or_none()
        retry_after = retry_after_seconds(response.headers) if status in (429, 503) else None
        error = error_for_status(
            status,
            payload,
            response.raw,
            method=call.method,
            path=call.path,
            retry_after=retry_after,
            attempts=number,
        )
        if status == 429:
            raise Failure(error, FailureKind.THROTTLED, retry_after)
        if status in (500, 502, 503, 504):
            if call.write:
                raise _Ambiguous(f"Amili answered {status}", error)
            raise Failure(error, FailureKind.AMBIGUOUS, retry_after)
        if status == 409 and call.write and call.reconcile is not None:
            raise _Ambiguous("Amili answered 409 Conflict", error)
        raise error

    async def _reconcile(self, call: Call, ambiguous: _Ambiguous, number: int) -> ApiResponse:
        """After a write whose answer was lost: find the record, or prove it absent, or give up honestly."""
        where: dict[str, Any] = dict(method=call.method, path=call.path, attempts=number)
        if call.reconcile is None:
            raise OutcomeUnknownError(
                f"{ambiguous}; the write may or may not have been applied, and it carries no reference to check it by",
                **where,
            ) from ambiguous.error
        try:
            found = await self.connection.lookups.run(call.path, call.reconcile)  # a refused lookup: not again
        except AmiliError as exc:
            raise OutcomeUnknownError(
                f"{ambiguous}; looking the write up to see whether it was applied failed too ({exc})", **where
            ) from exc
        if found is not None:
            logger.info("%s %s: %s; found the record it created, using it", call.method, call.path, ambiguous)
            response = ApiResponse(200, {}, b"")
            response.payload = found
            return response
        if ambiguous.error is not None and ambiguous.error.status_code == 409:
            raise ambiguous.error
        logger.info("%s %s: %s; verified not applied, safe to send again", call.method, call.path, ambiguous)
        error = ambiguous.error or TransportError(str(ambiguous), **where)
        error.message = f"{error.message} (verified not applied)"
        raise Failure(error, FailureKind.NOT_SENT)


def _log(call: Call, status: int | None, number: int, started: float, exc: BaseException | None = None) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        elapsed = (time.monotonic() - started) * 1000
        outcome = status if exc is None else type(exc).__name__
        logger.debug("%s %s -> %s attempt=%d elapsed_ms=%.1f", call.method, call.path, outcome, number, elapsed)


def _transport_failure(call: Call, exc: httpx.TransportError, number: int) -> Exception:
    kind = classify_exception(exc)
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if kind is FailureKind.AMBIGUOUS and call.write:
        return _Ambiguous(f"{text} (after the request was sent)")
    is_timeout = isinstance(exc, httpx.TimeoutException)
    error = (TimeoutError if is_timeout else TransportError)(text, method=call.method, path=call.path, attempts=number)
    return error if kind is FailureKind.FATAL else Failure(error, kind)


class _Ambiguous(Exception):
    """A write that may or may not have been applied; the pipeline reconciles or reports it unknown."""

    def __init__(self, message: str, error: AmiliError | None = None) -> None:
        super().__init__(message)
        self.error = error
