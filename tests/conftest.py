"""Shared fixtures for the core SDK tests.

- `ec_keys` / `rsa_keys` / `key_for`: PEM key pairs (session-scoped: key generation is the slow part);
- `ScriptedTransport` (via `make_transport`): an httpx transport that records every request and answers it
  from a handler (sync or async; it may also raise httpx errors). The token endpoint is answered by its own
  handler, by default with `{"token": "tok-<n>", "expires_in": 3600}`, so tests count token requests apart;
- `make_client`: an `AsyncAmiliClient` on a `ScriptedTransport` with `RetryPolicy.no_delay()`.

Nothing here talks to a network, and no `AMILI_*` variable of the environment leaks into a test.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from amili_async import ApiCodeJwtAuth, AsyncAmiliClient, RetryPolicy

TOKEN_PATH = "/authenticates/api-code"
API_CODE = "api-code-SECRET-7d1e"

Handler = Callable[[httpx.Request], "httpx.Response | Awaitable[httpx.Response]"]


class KeyPair(NamedTuple):
    private_pem: str
    public_pem: str


def _pem_pair(key: Any) -> KeyPair:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return KeyPair(private, public)


@pytest.fixture(scope="session")
def ec_keys() -> KeyPair:
    """An EC P-256 key pair (what Amili's guide generates), for ES256."""
    return _pem_pair(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="session")
def rsa_keys() -> KeyPair:
    return _pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def key_for(ec_keys: KeyPair, rsa_keys: KeyPair) -> Callable[[str], KeyPair]:
    """The key pair an algorithm needs: P-256/P-384/P-521 for ES256/384/512, RSA for RS*."""
    cache: dict[str, KeyPair] = {"ES256": ec_keys}
    curves = {"ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}

    def get(algorithm: str) -> KeyPair:
        if algorithm.startswith("RS"):
            return rsa_keys
        if algorithm not in cache:
            cache[algorithm] = _pem_pair(ec.generate_private_key(curves[algorithm]))
        return cache[algorithm]

    return get


def default_token_handler() -> Callable[[httpx.Request], httpx.Response]:
    """Answers every token request with a new token: tok-1, tok-2, ... living an hour."""
    issued = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal issued
        issued += 1
        return httpx.Response(200, json={"token": f"tok-{issued}", "expires_in": 3600})

    return handler


class ScriptedTransport(httpx.AsyncBaseTransport):
    """Records every request (body read) and answers it from `handler` (token requests: `token_handler`)."""

    def __init__(self, handler: Handler | None = None, *, token_handler: Handler | None = None) -> None:
        self.handler = handler
        self.token_handler: Handler = token_handler or default_token_handler()
        self.requests: list[httpx.Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    @property
    def token_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith(TOKEN_PATH)]

    @property
    def api_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if not r.url.path.endswith(TOKEN_PATH)]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        is_token = request.url.path.endswith(TOKEN_PATH)
        if is_token:
            handler = self.token_handler
        else:
            if self.handler is None:
                raise AssertionError(f"unexpected request: {request.method} {request.url}")
            handler = self.handler
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            result = handler(request)
            if inspect.isawaitable(result):
                result = await result
            assert isinstance(result, httpx.Response)
            return result
        finally:
            if not is_token:
                self.in_flight -= 1

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def make_transport() -> Callable[..., ScriptedTransport]:
    return ScriptedTransport


ClientFactory = Callable[..., "tuple[AsyncAmiliClient, ScriptedTransport]"]


@pytest.fixture
def make_client(ec_keys: KeyPair) -> ClientFactory:
    """`make_client(handler, **client_kwargs) -> (client, transport)`; JWT auth, no retry delays."""

    def factory(
        handler: Handler | None = None,
        *,
        transport: ScriptedTransport | None = None,
        token_handler: Handler | None = None,
        auth: Any = None,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> tuple[AsyncAmiliClient, ScriptedTransport]:
        transport = transport or ScriptedTransport(handler, token_handler=token_handler)
        auth = auth or ApiCodeJwtAuth(api_code=API_CODE, private_key=ec_keys.private_pem)
        client = AsyncAmiliClient(auth=auth, transport=transport, retry=retry or RetryPolicy.no_delay(), **kwargs)
        return client, transport

    return factory


@pytest.fixture(autouse=True)
def _clean_amili_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AMILI_BASE_URL",
        "AMILI_API_CODE",
        "AMILI_PRIVATE_KEY",
        "AMILI_PRIVATE_KEY_FILE",
        "AMILI_JWT_ALGORITHM",
        "AMILI_LOG",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fresh_otel_globals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset OpenTelemetry's global tracer and meter providers for one test, and put them back afterwards.

    They can be set once per process; this lets a test (or a docs page) set its own, as an application does
    at start-up (the same trick as opentelemetry-test-utils). Nothing happens when OpenTelemetry is absent.
    """
    try:
        from opentelemetry import trace
        from opentelemetry.metrics import _internal as metrics_internal
        from opentelemetry.util._once import Once
    except ImportError:
        return
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(metrics_internal, "_METER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(metrics_internal, "_METER_PROVIDER", None)
