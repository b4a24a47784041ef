"""`AsyncAmiliClient`: configuration, lifecycle, and the one request pipeline every call goes through.

validate input -> serialise -> get token (shared cache) -> send (httpx transport) -> classify (retry policy)
-> decode, or raise. Resources build requests and decode answers; they never talk to httpx themselves.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar, overload
from urllib.parse import urlencode

import attrs
import httpx
import sniffio

from . import serde
from ._version import __version__
from .auth import ApiCodeJwtAuth, Auth, Token, TokenCache
from .bulk import Outcome, run_many
from .errors import (
    AmiliError,
    APIStatusError,
    ClientStateError,
    ConfigurationError,
    OutcomeUnknownError,
    RespiteNotAllowedError,
    ResponseDecodeError,
    TimeoutError,
    TransportError,
    error_for_status,
    excerpt,
    normalise_issues,
)
from .models.actions import (
    RECEIPT_FOR,
    Action,
    CreditorCancellation,
    CreditorCrediting,
    CreditorPayment,
    RespiteGrant,
)
from .models.receipts import CancellationReceipt, CreditingReceipt, PaymentReceipt, Receipt, RespiteReceipt
from .resources import Cases, CreditorCancellations, CreditorCreditings, CreditorPayments, Respite
from .resources._base import ApiResponse
from .retry import Failure, FailureKind, RetryBudget, RetryPolicy, classify_exception, retry_after_seconds
from .transports import (
    Exchange,
    build_default_transport,
    exchange_for,
    httpx_exchange,
)

__all__ = ["DEFAULT_LIMITS", "DEFAULT_TIMEOUT", "SANDBOX_URL", "AsyncAmiliClient"]

logger = logging.getLogger("amili_async")

SANDBOX_URL = "https://api-sandbox.amili.se"
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=10.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=15.0)
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
T = TypeVar("T")
ActionT = TypeVar("ActionT", CreditorPayment, CreditorCrediting, CreditorCancellation, RespiteGrant, Action)


def _python_version() -> str:
    v = sys.version_info
    return f"{v.major}.{v.minor}.{v.micro}"


def _user_agent() -> str:
    return f"amili-async/{__version__} python/{_python_version()} httpx/{httpx.__version__}"


def _check_base_url(raw: str) -> str:
    url = httpx.URL(raw)
    if url.scheme not in ("https", "http"):
        raise ConfigurationError(
            f"base_url must start with https:// (or http://localhost, http://127.0.0.1 for a local server), got {raw!r}"
        )
    if url.scheme == "http" and url.host not in _LOCAL_HOSTS:
        raise ConfigurationError(
            "base_url must use https:// (plain http only for a local server: http://localhost, http://127.0.0.1)"
        )
    if url.userinfo:
        raise ConfigurationError("base_url must not contain a user name or password")
    if url.query or url.fragment:
        raise ConfigurationError("base_url must not contain a query string or fragment")
    return str(url).rstrip("/")


def _auth_from_env() -> Auth:
    api_code = os.environ.get("AMILI_API_CODE")
    key = os.environ.get("AMILI_PRIVATE_KEY")
    key_file = os.environ.get("AMILI_PRIVATE_KEY_FILE")
    missing = []
    if not api_code:
        missing.append("AMILI_API_CODE")
    if not key and not key_file:
        missing.append("AMILI_PRIVATE_KEY or AMILI_PRIVATE_KEY_FILE")
    if missing:
        raise ConfigurationError(
            "no credentials: pass auth=... or set " + " and ".join(missing) + " in the environment"
        )
    if not key:
        assert key_file
        try:
            with open(key_file, encoding="ascii") as fh:
                key = fh.read()
        except OSError as exc:
            raise ConfigurationError(f"AMILI_PRIVATE_KEY_FILE could not be read: {exc.strerror}") from None
    algorithm = os.environ.get("AMILI_JWT_ALGORITHM", "ES256")
    return ApiCodeJwtAuth(api_code=api_code, private_key=key, algorithm=algorithm)


def _configure_logging_from_env() -> None:
    level = os.environ.get("AMILI_LOG", "").strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING"):
        return
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)


def _loop_key() -> tuple[str, object]:
    # The loop object itself, not its id(): a runtime holding the key keeps its loop alive, so a later loop
    # can never be mistaken for it (ids of freed loops are reused, and the check then passed by chance).
    loop = asyncio._get_running_loop()  # the cheap check, on every call; None under trio
    if loop is not None:
        return "asyncio", loop
    library = sniffio.current_async_library()
    if library == "trio":
        import trio

        return library, trio.lowlevel.current_trio_token()
    return library, 0


class _Runtime:
    """Everything bound to one event loop and one process: the transport, the token cache, the budget."""

    def __init__(self, client: AsyncAmiliClient, loop: tuple[str, object]) -> None:
        self.loop = loop
        self.pid = os.getpid()
        self.own_transport = client._transport is None and client._http_client is None
        self.transport: httpx.AsyncBaseTransport | None = None
        if client._http_client is not None:
            self.exchange: Exchange = httpx_exchange(client._http_client)
        else:
            self.transport = client._transport or build_default_transport(
                loop[0], limits=client._limits, verify=client._verify, trust_env=client._trust_env
            )
            self.exchange = exchange_for(self.transport)
        self.tokens = TokenCache(
            client._auth,
            client._send_token_request,
            timeout=client._token_timeout,
            assumed_lifetime=client._assumed_token_lifetime,
        )
        self.budget: RetryBudget = client._retry.new_budget()


@attrs.frozen
class _Call:
    """One logical request: what to send and how to treat its failures."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    body: bytes | None = None
    write: bool = False
    reconcile: Callable[[], Awaitable[Any]] | None = None
    ok: tuple[int, ...] = (200, 201)
    needs_body: bool = True


class AsyncAmiliClient:
    """The async client for Amili's creditor API. Open it once, share it, close it (`async with`).

    ```python
    async with AsyncAmiliClient(auth=ApiCodeJwtAuth(api_code=..., private_key=pem)) as amili:
        receipt = await amili.creditor_payments.create(...)
    ```

    With no `auth`, credentials come from `AMILI_API_CODE` and `AMILI_PRIVATE_KEY` (or
    `AMILI_PRIVATE_KEY_FILE`); `base_url` defaults to `AMILI_BASE_URL`, then to the sandbox.
    A client belongs to the event loop it is first used on and to the process it was made in: after
    `fork()` the child builds fresh connections instead of reusing the parent's sockets.
    """

    def __init__(
        self,
        auth: Auth | None = None,
        *,
        base_url: str | None = None,
        timeout: httpx.Timeout | float | None = None,
        limits: httpx.Limits = DEFAULT_LIMITS,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        token_timeout: float = 10.0,
        assumed_token_lifetime: float = 300.0,
        verify: Any = True,
        trust_env: bool = True,
        user_agent: str | None = None,
    ) -> None:
        if transport is not None and http_client is not None:
            raise ConfigurationError("pass transport= or http_client=, not both")
        if verify is False:
            raise ConfigurationError("TLS verification cannot be turned off; pass an ssl.SSLContext for a private CA")
        _configure_logging_from_env()
        self._auth: Auth = auth if auth is not None else _auth_from_env()
        self._base_url = _check_base_url(base_url or os.environ.get("AMILI_BASE_URL") or SANDBOX_URL)
        self._timeout = (
            timeout
            if isinstance(timeout, httpx.Timeout)
            else (DEFAULT_TIMEOUT if timeout is None else httpx.Timeout(timeout))
        )
        self._timeout_ext = self._timeout.as_dict()
        self._limits = limits
        self._retry = retry or RetryPolicy()
        self._transport = transport
        self._http_client = http_client
        self._token_timeout = token_timeout
        self._assumed_token_lifetime = assumed_token_lifetime
        self._verify = verify
        self._trust_env = trust_env
        self._headers = [("User-Agent", user_agent or _user_agent()), ("Accept", "application/json")]
        self._runtime: _Runtime | None = None
        self._closed = False
        self._owner = self  # the client that owns runtime and closed state; views point at it
        self._make_resources()

    def _make_resources(self) -> None:
        self.creditor_payments = CreditorPayments(self)
        self.creditor_creditings = CreditorCreditings(self)
        self.creditor_cancellations = CreditorCancellations(self)
        self.respite = Respite(self)
        self.cases = Cases(self)

    def __repr__(self) -> str:
        return f"AsyncAmiliClient(base_url={self._base_url!r}, auth={self._auth!r})"

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry

    @property
    def token_requests(self) -> int:
        """How many token requests this client has sent (one per token lifetime, at any concurrency)."""
        runtime = self._owner._runtime
        return runtime.tokens.requests if runtime else 0

    def with_options(
        self, *, timeout: httpx.Timeout | float | None = None, retry: RetryPolicy | None = None
    ) -> AsyncAmiliClient:
        """A view of this client with another timeout or retry policy; it shares connections and tokens."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        if timeout is not None:
            view._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
            view._timeout_ext = view._timeout.as_dict()
        if retry is not None:
            view._retry = retry
        view._make_resources()
        # Always the real client, never another view: a view of a view (`client.with_options(...)` and then a
        # per-call `timeout=`) must share the client's runtime and closed state, not a stale copy of them.
        view._owner = self._owner
        return view

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncAmiliClient:
        self._bind()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections this client opened. Safe to call twice."""
        owner = self._owner
        owner._closed = True
        runtime, owner._runtime = owner._runtime, None
        if runtime is not None and runtime.own_transport and runtime.transport is not None:
            import anyio

            with anyio.CancelScope(shield=True):
                await runtime.transport.aclose()

    def _bind(self) -> _Runtime:
        owner = self._owner
        if owner._closed:
            raise ClientStateError("the client is closed")
        runtime = owner._runtime
        if runtime is not None and runtime.pid == os.getpid():
            loop = _loop_key()
            if runtime.loop != loop:
                raise ClientStateError(
                    "this client was opened on another event loop; create one client per event loop "
                    "(for example inside your asyncio.run(...) / trio.run(...) entry point)"
                )
            return runtime
        # First use, or a child process after fork(): the parent's sockets are not ours to use or close.
        owner._runtime = runtime = _Runtime(owner, _loop_key())
        return runtime

    # -- the pipeline -----------------------------------------------------------------------------------

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
    ) -> ApiResponse:
        """Send one logical request through the pipeline (token, retries, reconciliation, errors).

        `write` defaults to True for anything but GET. `reconcile`, for a write, is called after an
        ambiguous failure: it returns the record that exists (which then becomes the answer) or None when
        the write is provably absent (the write is then sent again).
        """
        body = None if json is None else serde.dumps(json)
        call = _Call(method, path, params, body, method != "GET" if write is None else write, reconcile, ok)
        return await self._run(call)

    async def _run(self, call: _Call) -> ApiResponse:
        runtime = self._bind()
        policy = self._retry
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

    async def _attempt(self, runtime: _Runtime, call: _Call, number: int) -> ApiResponse:
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

    async def _send(self, runtime: _Runtime, call: _Call, token: Token, number: int) -> ApiResponse:
        headers = [*self._headers, ("X-API-Key", token.value)]
        if call.body is not None:
            headers.append(("Content-Type", "application/json"))
        url = self._base_url + call.path
        if call.params:
            url += "?" + urlencode(call.params)
        started = time.monotonic()
        try:
            status, response_headers, raw = await runtime.exchange(
                call.method, url, headers, call.body, self._timeout_ext
            )
        except httpx.TransportError as exc:
            self._log(call, None, number, started, exc)
            raise self._transport_failure(call, exc, number) from exc
        self._log(call, status, number, started)
        return ApiResponse(status, response_headers, raw)

    def _log(
        self, call: _Call, status: int | None, number: int, started: float, exc: BaseException | None = None
    ) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            elapsed = (time.monotonic() - started) * 1000
            outcome = status if exc is None else type(exc).__name__
            logger.debug("%s %s -> %s attempt=%d elapsed_ms=%.1f", call.method, call.path, outcome, number, elapsed)

    def _transport_failure(self, call: _Call, exc: httpx.TransportError, number: int) -> Exception:
        kind = classify_exception(exc)
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if kind is FailureKind.AMBIGUOUS and call.write:
            return _Ambiguous(f"{text} (after the request was sent)")
        is_timeout = isinstance(exc, httpx.TimeoutException)
        error = (TimeoutError if is_timeout else TransportError)(
            text, method=call.method, path=call.path, attempts=number
        )
        return error if kind is FailureKind.FATAL else Failure(error, kind)

    def _classify(self, call: _Call, response: ApiResponse, number: int, token: Token) -> ApiResponse:
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

    async def _reconcile(self, call: _Call, ambiguous: _Ambiguous, number: int) -> ApiResponse:
        """After a write whose answer was lost: find the record, or prove it absent, or give up honestly."""
        where: dict[str, Any] = dict(method=call.method, path=call.path, attempts=number)
        if call.reconcile is None:
            raise OutcomeUnknownError(
                f"{ambiguous}; the write may or may not have been applied, and it carries no reference to check it by",
                **where,
            ) from ambiguous.error
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
        error = ambiguous.error or TransportError(str(ambiguous), **where)
        error.message = f"{error.message} (verified not applied)"
        raise Failure(error, FailureKind.NOT_SENT)

    async def _send_token_request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """The token endpoint's own door: one attempt, its own timeout (set by the cache), no retry policy."""
        runtime = self._bind()
        # The provider's headers replace the client's defaults of the same name (no doubled Accept).
        own = {name.lower() for name in headers}
        defaults = [(name, value) for name, value in self._headers if name.lower() not in own]
        try:
            status, response_headers, raw = await runtime.exchange(
                method, self._base_url + path, [*defaults, *headers.items()], body, self._timeout_ext
            )
        except httpx.TransportError as exc:
            kind = TimeoutError if isinstance(exc, httpx.TimeoutException) else TransportError
            raise kind(f"could not reach the token endpoint: {type(exc).__name__}", method=method, path=path) from None
        return status, response_headers, raw

    # -- actions ---------------------------------------------------------------------------------------

    @overload
    async def execute(self, action: CreditorPayment) -> PaymentReceipt: ...
    @overload
    async def execute(self, action: CreditorCrediting) -> CreditingReceipt: ...
    @overload
    async def execute(self, action: CreditorCancellation) -> CancellationReceipt: ...
    @overload
    async def execute(self, action: RespiteGrant) -> RespiteReceipt: ...

    async def execute(self, action: Action) -> Receipt | RespiteReceipt:
        """Run one action. Raises an `AmiliError` whose `action` and `reference` say which one failed."""
        try:
            if isinstance(action, RespiteGrant):
                return await self._grant_respite(action)
            lookup = action.lookup_filter()
            reconcile = None
            if lookup is not None:

                async def reconcile() -> Any:
                    return await self._find_one(action.path, lookup)

            body = serde.dumps(serde.converter().unstructure(action))
            call = _Call("POST", action.path, None, body, True, reconcile)
            response = await self._run(call)
            receipt: Receipt = serde.structure_document(response.payload, RECEIPT_FOR[type(action)])
            return receipt
        except AmiliError as exc:
            exc.action = action
            exc.reference = action.reference
            raise

    async def _grant_respite(self, action: RespiteGrant) -> RespiteReceipt:
        body = serde.dumps(serde.converter().unstructure(action))
        call = _Call("POST", action.path, None, body, True, None, (200, 201, 204), needs_body=False)
        try:
            response = await self._run(call)
        except APIStatusError as exc:
            if exc.status_code in (400, 409, 422) and exc.issues:
                raise RespiteNotAllowedError(
                    exc.message,
                    status_code=exc.status_code,
                    issues=exc.issues,
                    method=exc.method,
                    path=exc.path,
                    body=exc.body,
                    attempts=exc.attempts,
                ) from exc
            raise
        if response.status == 206:
            payload = response.json_or_none()
            issues = normalise_issues(payload.get("issues") if isinstance(payload, Mapping) else None)
            raise RespiteNotAllowedError(
                "respite not allowed", status_code=206, issues=issues, method="POST", path=action.path
            )
        return RespiteReceipt(case=action.case, days=action.days)

    async def _find_one(self, path: str, where: Mapping[str, Any]) -> Any:
        """The first document matching `where`, or None when there is none."""
        params = {"where": serde.dumps(where).decode(), "max_results": "2"}
        response = await self._run(_Call("GET", path, params))
        payload = response.payload
        items = payload.get("_items") if isinstance(payload, Mapping) else None
        if not isinstance(items, list):
            raise ResponseDecodeError("a list answer without _items", method="GET", path=path)
        if len(items) > 1:
            logger.warning("%s: more than one record matches a reference; using the first", path)
        return items[0] if items else None

    def execute_many(
        self, actions: Iterable[ActionT] | AsyncIterable[ActionT], *, concurrency: int = 16
    ) -> AsyncIterator[Outcome[ActionT]]:
        """Run many actions, at most `concurrency` at once; one `Outcome` per action, in completion order.

        Memory stays proportional to `concurrency`: actions are pulled from the iterable only as workers
        free up. Consume it to the end, or close it (`async with aclosing(...)`) to stop early.
        """
        return run_many(self.execute, actions, concurrency=concurrency)


class _Ambiguous(Exception):
    """A write that may or may not have been applied; the pipeline reconciles or reports it unknown."""

    def __init__(self, message: str, error: AmiliError | None = None) -> None:
        super().__init__(message)
        self.error = error
