"""The one request pipeline every call goes through.

bind (to the running loop and process) -> get token (shared cache) -> wait for a slot (rate limiter) -> send
(the transport's exchange) -> show the answer to the limiter -> classify it (retry policy) -> reconcile an
ambiguous write (the rule of evidence) -> answer or raise.

A call keeps a small `_CallState`: how many sends, how long it waited, and whether a write of it may have
reached Amili without proof either way. That decides what the deadline's error says (a write that never went
out is a `TimeoutError`, never "outcome unknown") and whether a stopping bulk run may end it (`_flow.py`).

Resources hold a `Pipeline` and never talk to httpx themselves. A `Pipeline` is its `Settings` (what a view of
the client may change: timeout, retry policy) plus the `Connection` it shares with every other view of the
same client (credentials, transport, and the per-loop `Runtime` built from them).
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import logging
import math
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
from ._flow import Clock, Reachability, interruptible, watched
from .auth import Auth, Token, TokenCache, TokenEndpoint, TokenStore
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
from .ratelimit import AdaptiveRateLimiter, RateLimiter
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
    """Everything bound to one event loop and one process: transport, token cache, rate limiter, budget."""

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
        self.reach = Reachability()
        self.exchange = watched(self.exchange, self.reach)
        endpoint = TokenEndpoint(self.exchange, settings.base_url, settings.headers, settings.timeout_ext)
        # One clock for the calls, the token cache and the default limiter; it sleeps the way the retry policy
        # does, so `RetryPolicy.no_delay()` keeps tests instant and their deadlines still pass (`_flow.Clock`).
        self.clock = Clock(settings.retry.sleep)
        self.tokens = TokenCache(
            connection.auth,
            endpoint,
            timeout=connection.token_timeout,
            assumed_lifetime=connection.assumed_token_lifetime,
            store=connection.token_store,
            clock=self.clock.now,
            sleep=self.clock.sleep,
        )
        self.limiter: RateLimiter = connection.rate_limiter or AdaptiveRateLimiter(
            clock=self.clock.now, sleep=self.clock.sleep
        )
        self.budget: RetryBudget = settings.retry.new_budget()
        self._limiter_warned = False

    async def acquire(self) -> float:
        """Wait for a send slot. A limiter that fails (a shared one whose backend is down) never stops a call."""
        try:
            return await self.limiter.acquire()
        except Exception as exc:
            self._limiter_failed(exc)
            return 0.0

    async def observe(self, status: int, headers: Mapping[str, str]) -> None:
        try:
            await self.limiter.observe(status, headers)
        except Exception as exc:
            self._limiter_failed(exc)

    def _limiter_failed(self, exc: Exception) -> None:
        level = logging.DEBUG if self._limiter_warned else logging.WARNING
        self._limiter_warned = True
        logger.log(level, "rate limiter failed (%s); sending without it", type(exc).__name__)


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
    rate_limiter: RateLimiter | None = None  # None: a default `AdaptiveRateLimiter` per runtime
    token_store: TokenStore | None = None
    runtime: Runtime | None = None
    closed: bool = False

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

    def stop_reason(self, credential_refusal: bool, unreachable_for: float | None) -> AmiliError | None:
        """Why a bulk run of this client cannot succeed now (see `StopOn`), or None."""
        runtime = self.connection.runtime
        if runtime is None:
            return None
        refusal = runtime.tokens.refusal
        if credential_refusal and refusal is not None:
            return refusal
        down = runtime.reach.down_for()
        if unreachable_for is not None and down >= unreachable_for:
            cause = runtime.tokens.last_error
            detail = f" (last: {cause})" if cause is not None else ""
            return TransportError(f"Amili could not be reached for {down:.1f} s{detail}")
        return None

    async def run(self, call: Call) -> ApiResponse:
        runtime = self.bind()
        policy = self.settings.retry
        clock = runtime.clock
        state = _CallState(clock)
        describe = f"{call.method} {call.path}"

        async def attempt(number: int) -> ApiResponse:
            state.attempts = number
            try:
                return await self._attempt(runtime, call, state)
            except Failure as failure:
                state.throttled = failure.error if failure.kind is FailureKind.THROTTLED else None
                raise

        async def pause(seconds: float) -> None:
            await interruptible(lambda: clock.sleep(seconds, policy.sleep), may_stop=not state.unproven)

        def retrying() -> Awaitable[ApiResponse]:
            return policy.run(attempt, budget=runtime.budget, describe=describe, elapsed=state.elapsed, pause=pause)

        if policy.deadline is None:
            return await retrying()
        if sys.version_info >= (3, 11) and runtime.loop[0] == "asyncio":
            # asyncio's own timeout costs half of an anyio cancel scope per call (benchmarks/README.md).
            deadline = asyncio.timeout(policy.deadline)
            try:
                async with deadline:
                    return await retrying()
            except builtins.TimeoutError:
                if not deadline.expired():
                    raise
        else:
            import anyio

            with anyio.move_on_after(policy.deadline):
                return await retrying()
        raise _deadline_error(call, state, policy.deadline, runtime.tokens)

    async def _attempt(self, runtime: Runtime, call: Call, state: _CallState) -> ApiResponse:
        tokens = runtime.tokens
        try:
            token = tokens.fresh() or await self._token(tokens, state)
            response = await self._send(runtime, call, token, state)
            if response.status == 401 and await tokens.refused(token):
                # Renew once (unless another call already did) and replay once: a 401 is refused before any
                # processing, so replaying a write is safe. A second 401 is final.
                token = await self._token(tokens, state)
                response = await self._send(runtime, call, token, state)
                if response.status == 401:
                    await tokens.refused(token)  # two fresh tokens refused in a row: the credentials are refused
            return self._classify(call, response, state.attempts, token)
        except _Ambiguous as ambiguous:
            return await self._reconcile(call, ambiguous, state, runtime.clock)

    async def _token(self, tokens: TokenCache, state: _CallState) -> Token:
        """Wait for a token as long as the call's deadline allows (an outage of the token endpoint)."""
        deadline = self.settings.retry.deadline
        wait = math.inf if deadline is None else max(0.0, deadline - state.elapsed())
        state.token_wait = True
        token = await interruptible(lambda: tokens.get(wait), may_stop=not state.unproven)
        state.token_wait = False
        return token

    async def _send(self, runtime: Runtime, call: Call, token: Token, state: _CallState) -> ApiResponse:
        settings = self.settings
        headers = [*settings.headers, ("X-API-Key", token.value)]
        if call.body is not None:
            headers.append(("Content-Type", "application/json"))
        url = settings.base_url + call.path
        if call.params:
            url += "?" + urlencode(call.params)
        await interruptible(runtime.acquire, may_stop=not state.unproven)
        state.unproven = call.write
        number = state.attempts
        started = time.monotonic()
        try:
            status, response_headers, raw = await runtime.exchange(
                call.method, url, headers, call.body, settings.timeout_ext
            )
        except httpx.TransportError as exc:
            _log(call, None, number, started, exc)
            failure = _transport_failure(call, exc, number)
            if not isinstance(failure, _Ambiguous):
                state.unproven = False  # never reached Amili (or a read): nothing to settle
            raise failure from exc
        _log(call, status, number, started)
        await runtime.observe(status, response_headers)
        if status in (401, 429):
            state.unproven = False  # refused before any processing
        elif status < 500:
            runtime.tokens.accepted(token)
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
        if status == 503 and _asks_to_wait(response.headers):  # a server that says when: throttling
            if call.write:
                raise _Ambiguous("Amili answered 503 and asked to wait", error, wait=retry_after or 0.0)
            raise Failure(error, FailureKind.THROTTLED, retry_after)
        if status in (500, 502, 503, 504):
            if call.write:
                raise _Ambiguous(f"Amili answered {status}", error)
            raise Failure(error, FailureKind.AMBIGUOUS, retry_after)
        if status == 409 and call.write and call.reconcile is not None:
            raise _Ambiguous("Amili answered 409 Conflict", error)
        raise error

    async def _reconcile(self, call: Call, ambiguous: _Ambiguous, state: _CallState, clock: Clock) -> ApiResponse:
        """After a write whose answer was lost: find the record, or prove it absent, or give up honestly."""
        where: dict[str, Any] = dict(method=call.method, path=call.path, attempts=state.attempts)
        if call.reconcile is None:
            raise OutcomeUnknownError(
                f"{ambiguous}; the write may or may not have been applied, and it carries no reference to check it by",
                **where,
            ) from ambiguous.error
        policy = self.settings.retry
        wait = ambiguous.wait
        if wait is not None and (policy.deadline is None or state.elapsed() + wait < policy.deadline):
            await clock.sleep(wait, policy.sleep)  # the server asked for it; the lookup is the surer for it too
        try:
            found = await call.reconcile()
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
        state.unproven = False
        error = ambiguous.error or TransportError(str(ambiguous), **where)
        error.message = f"{error.message} (verified not applied)"
        if wait is not None:  # already waited: send again at once, without spending an attempt
            raise Failure(error, FailureKind.THROTTLED, 0.0)
        raise Failure(error, FailureKind.NOT_SENT)


class _CallState:
    """What one call has done so far (see the module docstring)."""

    __slots__ = ("attempts", "clock", "started", "throttled", "token_wait", "unproven")

    def __init__(self, clock: Clock) -> None:
        self.attempts = 0  # sends started
        self.clock = clock
        self.started = clock.now()
        self.unproven = False  # a write of this call may have reached Amili, and nothing proved otherwise yet
        self.token_wait = False
        self.throttled: Exception | None = None  # the last attempt was throttled: this says how

    def elapsed(self) -> float:
        """Seconds since the call started, on the client's clock (waits a test's sleep skipped included)."""
        return self.clock.now() - self.started


def _deadline_error(call: Call, state: _CallState, deadline: float, tokens: TokenCache) -> AmiliError:
    message = f"no answer within the {deadline:g} s deadline"
    where: dict[str, Any] = dict(method=call.method, path=call.path, attempts=state.attempts)
    if call.write and state.unproven:
        return OutcomeUnknownError(message, **where)
    last = tokens.last_error
    if state.token_wait and last is not None:
        return copy.copy(last)  # the token endpoint was down the whole time: say so, as the first caller heard
    if isinstance(state.throttled, AmiliError):
        return state.throttled  # still throttled when time ran out (a 429 proves nothing was applied)
    if call.write:
        message = f"{message}; the write was not applied"  # it never went out, or Amili refused it
    return TimeoutError(message, **where)


def _asks_to_wait(headers: Mapping[str, str]) -> bool:
    return "retry-after" in headers or "retry-after-ms" in headers


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
    """A write that may or may not have been applied; the pipeline reconciles or reports it unknown.

    `wait`: the server asked to wait that long (a 503 with `Retry-After`) before anything is tried again.
    """

    def __init__(self, message: str, error: AmiliError | None = None, *, wait: float | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.wait = wait
