"""`AsyncAmiliClient`: configuration, lifecycle, the resources, and typed `execute` / `execute_many`.

Every call goes through the one request pipeline in `_pipeline.py`; the resources own their requests and
answers. The client wires them together and owns nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import httpx

from ._config import DEFAULT_LIMITS, DEFAULT_TIMEOUT, SANDBOX_URL, auth_from_env, base_url_from
from ._config import user_agent as default_user_agent
from ._wire import MAX_BODY
from .errors import ConfigurationError
from .models.actions import (
    Action,
    CreditorCancellation,
    CreditorCrediting,
    CreditorPayment,
    RespiteGrant,
    not_an_action,
)

if TYPE_CHECKING:  # the rest is imported when a client is built: `import amili_async` stays light
    from ._pipeline import Pipeline, Runtime
    from .auth import Auth, TokenStore
    from .bulk import Outcome, StopOn
    from .models.receipts import CancellationReceipt, CreditingReceipt, PaymentReceipt, Receipt, RespiteReceipt
    from .ratelimit import RateLimiter
    from .retry import RetryPolicy

__all__ = ["DEFAULT_LIMITS", "DEFAULT_TIMEOUT", "SANDBOX_URL", "AsyncAmiliClient"]

ActionT = TypeVar("ActionT", CreditorPayment, CreditorCrediting, CreditorCancellation, RespiteGrant, Action)


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

    Flow control (docs/rate-limits.md): `rate_limiter` paces every send of the client (None: an
    `AdaptiveRateLimiter` of its own; False: no pacing; or any `RateLimiter`), and `token_store` shares one
    login between processes (a `TokenStore`; None: this process only).
    """

    _pipeline: Pipeline

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
        max_response_bytes: int = MAX_BODY,
        rate_limiter: RateLimiter | Literal[False] | None = None,
        token_store: TokenStore | None = None,
        _share: AsyncAmiliClient | None = None,
    ) -> None:
        from ._pipeline import Connection, Pipeline, Settings
        from ._redact import Redactor, secrets_of
        from ._telemetry import Telemetry
        from .ratelimit import NoRateLimit
        from .resources import Cases, CreditorCancellations, CreditorCreditings, CreditorPayments, Respite
        from .retry import RetryPolicy

        if transport is not None and http_client is not None:
            raise ConfigurationError("pass transport= or http_client=, not both")
        if verify is False:
            raise ConfigurationError("TLS verification cannot be turned off; pass an ssl.SSLContext for a private CA")
        if isinstance(max_response_bytes, bool) or not isinstance(max_response_bytes, int) or max_response_bytes < 1:
            raise ConfigurationError("max_response_bytes must be a positive int")
        base = base_url_from(base_url)
        if _share is not None:  # a view: same connection (credentials, transport, runtime), own settings
            connection = _share._pipeline.connection
        else:
            auth = auth if auth is not None else auth_from_env()
            connection = Connection(
                auth=auth,
                transport=transport,
                http_client=http_client,
                limits=limits,
                verify=verify,
                trust_env=trust_env,
                token_timeout=token_timeout,
                assumed_token_lifetime=assumed_token_lifetime,
                max_response_bytes=max_response_bytes,
                redactor=Redactor(secrets_of(auth)),  # issue 11: the client's one redaction point
                telemetry=Telemetry.for_base_url(base),
                # Flow control (docs/rate-limits.md): None is a default AdaptiveRateLimiter, False none at all.
                rate_limiter=NoRateLimit() if rate_limiter is False else rate_limiter,
                token_store=token_store,
            )
        self._user_agent = user_agent
        settings = Settings(
            base_url=base,
            headers=(("User-Agent", user_agent or default_user_agent()), ("Accept", "application/json")),
            timeout=_timeout(timeout),
            retry=retry or RetryPolicy(),
        )
        self._pipeline = Pipeline(settings, connection)
        self.creditor_payments = CreditorPayments(self._pipeline)
        self.creditor_creditings = CreditorCreditings(self._pipeline)
        self.creditor_cancellations = CreditorCancellations(self._pipeline)
        self.respite = Respite(self._pipeline)
        self.cases = Cases(self._pipeline)
        self._executors: dict[type[Any], Callable[[Any, None, str], Awaitable[Any]]] = {
            CreditorPayment: self.creditor_payments._execute,
            CreditorCrediting: self.creditor_creditings._execute,
            CreditorCancellation: self.creditor_cancellations._execute,
            RespiteGrant: self.respite._execute,
        }

    def __repr__(self) -> str:
        return f"AsyncAmiliClient(base_url={self.base_url!r}, auth={self._auth!r})"

    @property
    def base_url(self) -> str:
        return self._pipeline.settings.base_url

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._pipeline.settings.retry

    @property
    def _auth(self) -> Auth:
        return self._pipeline.connection.auth

    @property
    def _runtime(self) -> Runtime | None:
        return self._pipeline.connection.runtime

    @property
    def token_requests(self) -> int:
        """How many token requests this client has sent (one per token lifetime, at any concurrency)."""
        runtime = self._runtime
        return runtime.tokens.requests if runtime else 0

    def with_options(
        self, *, timeout: httpx.Timeout | float | None = None, retry: RetryPolicy | None = None
    ) -> AsyncAmiliClient:
        """A view of this client with another timeout or retry policy; it shares connections and tokens."""
        settings = self._pipeline.settings
        return type(self)(
            base_url=settings.base_url,
            timeout=settings.timeout if timeout is None else timeout,
            retry=retry or settings.retry,
            user_agent=self._user_agent,
            _share=self,
        )

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncAmiliClient:
        self._bind()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections this client opened. Safe to call twice."""
        await self._pipeline.connection.aclose()

    def _bind(self) -> Runtime:
        return self._pipeline.bind()

    # -- requests and actions ------------------------------------------------------------------------------

    async def request(self, method: str, path: str, **options: Any) -> Any:
        """Send one logical request through the pipeline (`options`: those of `Pipeline.call`); the answer, read
        in full."""
        pipeline = self._pipeline
        return await pipeline.send(pipeline.call(method, path, **options))

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
        run = self._executors.get(type(action))
        if run is None:  # issue 11: bad input is a ValidationError, raised before anything is sent
            raise not_an_action(action)
        result: Receipt | RespiteReceipt = await run(action, None, "amili.execute")  # its name in spans and logs
        return result

    def execute_many(
        self,
        actions: Iterable[ActionT] | AsyncIterable[ActionT],
        *,
        concurrency: int = 16,
        stop_on: StopOn | None = None,
    ) -> AsyncIterator[Outcome[ActionT]]:
        """Run many actions, at most `concurrency` at once; one `Outcome` per action, in completion order.

        Memory stays proportional to `concurrency`: actions are pulled from the iterable only as workers
        free up. Consume it to the end, or close it (`async with aclosing(...)`) to stop early. With
        `stop_on=StopOn()` the run stops sending once it cannot succeed (credentials refused, Amili
        unreachable) and gives every action it did not send a `NotSentError` outcome.
        """
        from ._flow import stop_probe
        from .bulk import run_many

        probe = stop_probe(self._pipeline.connection) if stop_on is not None else None
        return run_many(self.execute, actions, concurrency=concurrency, stop_on=stop_on, probe=probe)


def _timeout(value: httpx.Timeout | float | None) -> httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    return DEFAULT_TIMEOUT if value is None else httpx.Timeout(value)
