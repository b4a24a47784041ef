"""The one request pipeline every call goes through.

bind (to the running loop and process) -> get token (shared cache) -> wait for a slot (rate limiter) -> send
(the transport's exchange) -> show the answer to the limiter -> classify it (retry policy) -> reconcile an
ambiguous write (the rule of evidence) -> answer or raise. A `_CallState` per call drives the attempts and
keeps what they proved (which also decides whether a stopping bulk run may end the call: `_flow.py`).

Resources hold a `Pipeline` and never talk to httpx themselves. A `Pipeline` is its `Settings` (what a view of
the client may change: timeout, retry policy) plus the `Connection` it shares with every other view of the
same client (credentials, transport, and the per-loop `Runtime` built from them).
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import attrs
import httpx

from . import _telemetry, serde
from ._call import ApiResponse, Call
from ._evidence import (
    Ambiguous,
    Proof,
    Taken,
    Unreadable,
    deadline_error,
    judge_failure,
    judge_refusal,
    of_answer,
    of_failure,
)
from ._flow import CURRENT_STOP, Clock, Deadlines, Reachability, interruptible, watched
from ._lookups import LookupSupport
from ._reconcile import Reconciler
from ._redact import Redactor, describe_query, named
from ._telemetry import REQUEST_ID_HEADER, Telemetry, path_template
from ._tokens import Auth, Token, TokenCache, TokenStore
from ._wire import MAX_BODY, is_object_id
from .auth import TokenEndpoint
from .errors import (
    AmiliError,
    ClientStateError,
    ResponseDecodeError,
    error_for_status,
)
from .ratelimit import AdaptiveRateLimiter, Guarded, RateLimiter, asks_to_wait
from .retry import Failure, FailureKind, RetryBudget, RetryPolicy, retry_after_seconds
from .transports import Exchange, build_default_transport, exchange_for, httpx_exchange

__all__ = ["ApiResponse", "Call", "Connection", "Pipeline", "Runtime", "Settings"]  # ApiResponse, Call: from _call


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
    asyncio = sys.modules.get("asyncio")  # not imported: no asyncio loop can be running (and none is imported)
    if asyncio is not None:
        try:
            return "asyncio", asyncio.get_running_loop()  # the cheap check, on every call
        except RuntimeError:
            pass  # trio, or no loop at all
    import sniffio

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
            self.exchange: Exchange = httpx_exchange(connection.http_client, connection.max_response_bytes)
        else:
            self.transport = connection.transport or build_default_transport(
                loop[0], limits=connection.limits, verify=connection.verify, trust_env=connection.trust_env
            )
            self.exchange = exchange_for(self.transport, connection.max_response_bytes)
        self.reach = Reachability()  # told by `Pipeline._send` and, through `watched`, by the token endpoint
        endpoint = TokenEndpoint(
            watched(self.exchange, self.reach),
            settings.base_url,
            settings.headers,
            settings.timeout_ext,
            connection.redactor,
            connection.telemetry,
        )
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
        self.limiter = Guarded(
            connection.rate_limiter or AdaptiveRateLimiter(clock=self.clock.now, sleep=self.clock.sleep)
        )
        self.budget: RetryBudget = settings.retry.new_budget()
        self.deadlines = Deadlines() if sys.version_info >= (3, 11) and loop[0] == "asyncio" else None


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
    max_response_bytes: int = MAX_BODY  # every answer is read up to this, whatever its framing
    redactor: Redactor = attrs.field(factory=Redactor)  # the one redaction point of the client
    telemetry: Telemetry = attrs.field(factory=lambda: Telemetry(None, None))  # request ids, logs, spans, metrics
    rate_limiter: RateLimiter | None = None  # issue 10: None is a default `AdaptiveRateLimiter` per runtime
    token_store: TokenStore | None = None  # issue 10: one login shared by several processes

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

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        write: bool | None = None,
        action: Any = None,
        ok: tuple[int, ...] = (200, 201),
        needs_body: bool = True,
        operation: str | None = None,
        kind: str | None = None,
    ) -> Call:
        """One logical request, to `send` (or to run as `with call: await pipeline.run(call)`, when more than
        the exchange belongs to the operation: a write's receipt).

        `write` defaults to True for anything but GET. `action` is the payment, crediting or cancellation a write
        sends: with a reference, its `Identity` says how to find its record again and how to tell it is this
        write's, and an ambiguous attempt is reconciled (`_reconcile.py`); without, an ambiguous attempt is an
        `OutcomeUnknownError`. `operation` names it in spans and logs (never with ids in it; default
        `amili.request`), `kind` is the action's kind there.
        """
        body = None if json is None else serde.dumps(json)
        name = operation or "amili.request"
        telemetry = self.connection.telemetry
        return Call(telemetry, name, method, path, params, body, write, action, ok, needs_body, kind)

    async def send(self, call: Call) -> ApiResponse:
        """Send `call` as an operation of its own: `pipeline.send(pipeline.call("GET", path, ...))`."""
        with call:
            return await self.run(call)

    async def _get(self, path: str, params: Mapping[str, str] | None, parent: Call) -> Any:
        """A read through this pipeline (reconciliation's lookups and fetches), as a child of the write."""
        call = Call(self.connection.telemetry, "amili.reconcile", "GET", path, params, parent=parent)
        return (await self.send(call)).payload

    async def run(self, call: Call) -> ApiResponse:
        runtime = self.connection.bind(self.settings)
        policy = self.settings.retry
        # One object per call carries what its attempts, waits and deadline error need (no closures: every
        # object a call allocates is work for the garbage collector at high concurrency).
        state = _CallState(self, runtime, call)
        if policy.deadline is None:
            return await policy.run(state, budget=runtime.budget)
        deadlines = runtime.deadlines
        if deadlines is not None:  # asyncio 3.11+: one timer for all calls, not one per call (`_flow.Deadlines`)
            entry = deadlines.start(policy.deadline)
            try:
                result = await policy.run(state, budget=runtime.budget)
            except BaseException as exc:
                if not deadlines.end(entry, exc):
                    raise
            else:
                deadlines.end(entry, None)
                return result
        else:
            import anyio

            with anyio.move_on_after(policy.deadline):
                return await policy.run(state, budget=runtime.budget)
        last = runtime.tokens.last_error
        if state.waiting and last is not None:
            raise copy.copy(last)  # the token endpoint was down the whole time: say so, as the first caller heard
        if isinstance(state.throttled, AmiliError) and state.proof is not Proof.NOTHING:
            raise state.throttled  # still throttled when time ran out (a 429 proves nothing was applied)
        raise deadline_error(
            f"no answer within the {policy.deadline:g} s deadline",
            state.proof if call.write else None,
            **named(call, state.tried),
        )

    async def _token(self, tokens: TokenCache, state: _CallState) -> Token:
        """Wait for a token as long as the call's deadline allows (an outage of the token endpoint)."""
        deadline = self.settings.retry.deadline
        wait = math.inf if deadline is None else max(0.0, deadline - state.elapsed())
        state.waiting = True
        token = await interruptible(lambda: tokens.get(wait), may_stop=state.may_stop)
        state.waiting = False
        return token

    async def _send(self, runtime: Runtime, call: Call, token: Token, number: int, state: _CallState) -> ApiResponse:
        settings = self.settings
        headers = [*settings.headers, ("X-API-Key", token.value), (REQUEST_ID_HEADER, call.request_id)]
        if call.body is not None:
            headers.append(("Content-Type", "application/json"))
        url = settings.base_url + call.path
        if call.params:
            url += "?" + urlencode(call.params)
        limiter = runtime.limiter
        stop = CURRENT_STOP.get()  # a bulk run's stop switch, if this call belongs to a run
        if (stop is None or stop.reason is None) and limiter.acquire_now():
            pass  # the limiter is open: no wait, so nothing a stopping run could interrupt
        else:
            await interruptible(limiter.acquire, may_stop=state.may_stop)
        started = time.monotonic()
        if call.write:
            state.proof = Proof.NOTHING  # from here until an answer (or its absence) proves otherwise
        try:
            status, response_headers, raw = await runtime.exchange(
                call.method, url, headers, call.body, settings.timeout_ext
            )
        except httpx.TransportError as exc:
            runtime.reach.failed()
            _telemetry.attempt(call, number, started, None, None, exc)  # telemetry: one call per exchange
            if call.write:
                state.proof = of_failure(exc).proves
            text = self.connection.redactor.transport_error(exc, token.value, call.params)  # `exc` is not kept
            failure = judge_failure(exc, text, write=call.write, **named(call, number))
        else:
            _telemetry.attempt(call, number, started, status, response_headers)  # telemetry: one call per exchange
            if call.write:
                state.proof = of_answer(status).proves
            if not limiter.observe_now(status, response_headers):
                await limiter.observe(status, response_headers)
            runtime.reach.saw(status, response_headers)
            if status < 500 and status not in (401, 429):
                runtime.tokens.accepted(token)
            return ApiResponse(status, response_headers, raw)
        raise failure  # outside the `except`: an httpx exception holds the request and its X-API-Key

    def _classify(self, call: Call, response: ApiResponse, number: int, token: Token) -> ApiResponse:
        status = response.status
        if status in call.ok or 200 <= status < 300:
            if not call.needs_body or (
                # An empty read is an answer only where the status says it all (204; the respite check's
                # 200, the one read that also accepts 206). Anywhere else it is a cut answer: retried below.
                not call.write and not response.raw.strip() and (status == 204 or 206 in call.ok)
            ):
                return response
            decoded, response.payload = serde.try_loads_document(response.raw)  # money exact, scale kept
            if not decoded:
                redactor = self.connection.redactor
                shown = redactor.unreadable(response.raw, token.value, call.params)
                message = f"answered {status} but the body is not JSON: {shown!r}"
                if call.write:  # a 2xx: applied, whatever the body says
                    raw = redactor.answer(response.raw, token.value, call.params)
                    raise Unreadable(message, status, response.headers, raw)
                raise Failure(
                    ResponseDecodeError(message, status_code=status, **named(call, number)), FailureKind.AMBIGUOUS
                )
            if call.write and not (isinstance(response.payload, Mapping) and is_object_id(response.payload.get("_id"))):
                message = f"answered {status} without the record's _id"
                raise Unreadable(message, status, response.headers, response.raw)
            return response
        raw = self.connection.redactor.answer(response.raw, token.value, call.params)  # no echo survives
        response = ApiResponse(status, response.headers, raw)
        payload = response.json_or_none()
        retry_after = retry_after_seconds(response.headers) if status in (429, 503) else None
        error = error_for_status(
            status,
            payload,
            response.raw,
            retry_after=retry_after,
            **named(call, number),
        )
        key = call.identity.key if call.identity else None
        raise judge_refusal(error, retry_after, write=call.write, key=key, says_when=asks_to_wait(response.headers))

    async def _reconcile(
        self, call: Call, signal: Ambiguous | Taken | Unreadable, number: int, state: _CallState
    ) -> ApiResponse:
        """Prove what became of the write (see `_reconcile.py`): its record, a resend, or an honest error."""
        if isinstance(signal, Taken):
            state.proof = Proof.NOTHING  # an earlier attempt (or an earlier run) may hold the reference
        policy = self.settings.retry
        wait = signal.wait if isinstance(signal, Ambiguous) and call.identity is not None else None
        if wait is not None and (policy.deadline is None or state.elapsed() + wait < policy.deadline):
            await state.runtime.clock.sleep(wait, policy.sleep)  # the server asked for it (a 503 with Retry-After)

        def get(path: str, params: Mapping[str, str] | None) -> Any:
            return self._get(path, params, call)  # telemetry: lookups are children of the write's operation

        reconciler = Reconciler(
            get, policy, state.deadline_at, call.method, call.path, call.identity, self.connection.lookups
        )
        recovered = await reconciler.settle(signal, number)
        if recovered is None:  # proven absent: the write may be sent again
            state.proof = Proof.NOT_APPLIED
            if wait is not None:  # throttling, already waited: send again at once, spending no attempt
                raise Failure(reconciler.absent_error(signal, number), FailureKind.THROTTLED, 0.0)
            raise Failure(reconciler.absent_error(signal, number), FailureKind.NOT_SENT)
        response = ApiResponse(200, {}, b"")
        response.payload, response.provenance = recovered.record, recovered.provenance
        return response


class _CallState:
    """One call: its attempts for the retry policy (`retry.Attempts`), and what they proved so far. Every
    resend happens only after the attempts before it proved not applied."""

    __slots__ = ("call", "deadline_at", "pipeline", "proof", "runtime", "started", "throttled", "tried", "waiting")

    def __init__(self, pipeline: Pipeline, runtime: Runtime, call: Call) -> None:
        self.pipeline = pipeline
        self.runtime = runtime
        self.call = call
        self.started = runtime.clock.now()
        deadline = pipeline.settings.retry.deadline
        self.deadline_at = None if deadline is None else call.started + deadline  # `_reconcile`'s clock (monotonic)
        self.proof: Proof | None = None  # what the write's attempts prove so far (None: nothing sent yet)
        self.tried = 0  # attempts started
        self.waiting = False  # for a token
        self.throttled: Exception | None = None  # the last attempt was throttled: this says how

    @property
    def describe(self) -> str:
        call = self.call
        return f"{call.method} {path_template(call.path)}{describe_query(call.params)}"  # no ids, no values

    @property
    def may_stop(self) -> bool:
        """A stopping bulk run may end the call now: nothing of it may have reached Amili unproven."""
        return self.proof is None or self.proof is Proof.NOT_APPLIED

    async def attempt(self, number: int) -> ApiResponse:
        """One attempt: a token, the exchange (a refused token renewed and replayed once), the answer judged;
        a write's ambiguous attempt reconciled."""
        self.tried = number
        pipeline, runtime, call = self.pipeline, self.runtime, self.call
        tokens = runtime.tokens
        try:
            try:
                token = tokens.fresh() or await pipeline._token(tokens, self)
                response = await pipeline._send(runtime, call, token, number, self)
                if response.status == 401 and await tokens.refused(token):
                    # Renew once (unless another call already did) and replay once: a 401 is refused before any
                    # processing, so replaying a write is safe. A second 401 is final.
                    token = await pipeline._token(tokens, self)
                    response = await pipeline._send(runtime, call, token, number, self)
                    if response.status == 401:
                        await tokens.refused(token)  # two fresh tokens refused in a row: the credentials are refused
                return pipeline._classify(call, response, number, token)
            except (Ambiguous, Taken, Unreadable) as signal:
                return await pipeline._reconcile(call, signal, number, self)
        except Failure as failure:
            self.throttled = failure.error if failure.kind is FailureKind.THROTTLED else None
            raise

    async def pause(self, seconds: float) -> None:
        sleep = self.pipeline.settings.retry.sleep
        await interruptible(lambda: self.runtime.clock.sleep(seconds, sleep), may_stop=self.may_stop)

    def elapsed(self) -> float:
        """Seconds since the call started, on the client's clock (waits a test's sleep skipped included)."""
        return self.runtime.clock.now() - self.started
