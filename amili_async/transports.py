"""Building the httpx transport: the only I/O seam of the SDK.

Any `httpx.AsyncBaseTransport` plugs in (`transport=`), including `amili_async.testing.FakeAmili().transport()`.
Without one, the client picks on first use:

- on asyncio, `AmiliAiohttpTransport`: httpx-aiohttp's transport with the error mapping a money API needs.
  Under concurrency httpx's own pool costs ten times the CPU per request (see `benchmarks/`);
- on trio (or when aiohttp cannot be imported), httpx's own `AsyncHTTPTransport`.

Both get the same limits, the same timeouts (read from each request's `timeout` extension) and the same TLS
settings (verification always on). Redirects are never followed: the SDK drives the transport directly.

Under respx (tests): while a respx router is active, every request goes through httpx's own machinery, which
is what respx patches; see "respx" below.

Why a subclass of httpx-aiohttp's transport: its error map turns every `aiohttp.ClientConnectionError` into
`httpx.ConnectTimeout`, which would tell the retry policy that a POST cut off *after* it was sent had never left
the machine. Ours keeps the difference: connector errors and connect timeouts mean "not sent"; a disconnect, a
reset or a read timeout after sending means "maybe applied". The httpx error it raises carries the aiohttp
error's class name and a message without URL query strings, and is not chained to it: an aiohttp
`ClientResponseError` holds `request_info.headers`, that is the `X-API-Key` (only a TLS certificate failure
stays attached, for the retry policy, and it holds no request).

Every answer is read with a cap (`max_response_bytes` of the client, 16 MiB by default), whatever its framing:
`Content-Length`, chunked or close-delimited, compressed or not. The read stops at the cap and raises
`httpx.ReadError`, so a hostile or broken server cannot make the SDK hold more than that in memory.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx

from ._wire import MAX_BODY

__all__ = [
    "AmiliAiohttpTransport",
    "Exchange",
    "build_default_transport",
    "exchange_for",
    "httpx_exchange",
    "respx_active",
]

_URL_QUERY = re.compile(r"\?[^\s'\"<>)]*")


def build_default_transport(
    backend: str, *, limits: httpx.Limits, verify: ssl.SSLContext | bool = True, trust_env: bool = True
) -> httpx.AsyncBaseTransport:
    if backend == "asyncio":
        try:
            return AmiliAiohttpTransport(limits=limits, verify=verify, trust_env=trust_env)
        except ImportError:  # pragma: no cover - aiohttp is a default dependency
            pass
    return httpx.AsyncHTTPTransport(limits=limits, verify=verify, trust_env=trust_env)


def _too_large(max_body: int) -> httpx.ReadError:
    return httpx.ReadError(f"the answer is larger than the {max_body}-byte cap (max_response_bytes)")


def _safe_message(exc: BaseException) -> str:
    """The class name and a message without URL queries: never `request_info`, headers or a URL's values."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientResponseError):  # its str() holds the URL with its query string
        text = f"{exc.status}, {exc.message}" if exc.status else str(exc.message)
    elif isinstance(exc, aiohttp.InvalidURL):
        text = "invalid URL"
    else:
        text = str(exc)
    text = _URL_QUERY.sub("?…", text)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _certificate_error(exc: BaseException) -> BaseException | None:
    """The TLS certificate failure behind `exc`, if any: the retry policy must see it to never retry."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        cause = getattr(cause, "certificate_error", None) or cause.__cause__ or cause.__context__
    return None


def _map_aiohttp_error(exc: BaseException) -> httpx.TransportError:
    import aiohttp

    message = _safe_message(exc)
    # Order matters: the aiohttp classes nest (ClientConnectorError is a ClientOSError, ...).
    if isinstance(exc, aiohttp.ClientConnectorError):  # DNS, refused, TLS handshake: nothing was sent
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # waiting for a pooled or new connection
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ClientOSError, aiohttp.ClientConnectionError)):
        return httpx.ReadError(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(message)
    return httpx.ReadError(message)


@functools.cache
def _transport_class() -> type[httpx.AsyncBaseTransport]:
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    class _Transport(AiohttpTransport):
        """One request, read in full: `exchange` is the fast path the client uses, `handle_async_request`
        the httpx interface for everyone else. Both share the same code and the same error map."""

        async def exchange(
            self,
            method: str,
            url: str,
            headers: Sequence[tuple[str, str]],
            body: bytes | None,
            timeout: Mapping[str, float | None],
            max_body: int = MAX_BODY,
        ) -> tuple[int, Mapping[str, str], bytes]:
            # respx (begin): one dict lookup while respx is not even imported, i.e. outside tests.
            if _RESPX_MOCKS in sys.modules and respx_active():
                return await self._respx_exchange()(method, url, headers, body, timeout)
            # respx (end)
            session = self.client
            if not isinstance(session, aiohttp.ClientSession):
                session = self.client = self.get_client()
            if session.closed:  # aiohttp would raise a bare RuntimeError
                raise httpx.ConnectError("the transport is closed")
            client_timeout = aiohttp.ClientTimeout(
                sock_connect=timeout.get("connect"),
                sock_read=timeout.get("read"),
                connect=timeout.get("pool"),
            )
            try:
                async with session.request(
                    method, url, headers=headers, data=body, allow_redirects=False, timeout=client_timeout
                ) as response:
                    length = response.content_length
                    if length is not None and length <= max_body and "Content-Encoding" not in response.headers:
                        return response.status, response.headers, await response.read()  # stops at the length
                    return response.status, response.headers, await _read_capped(response, max_body)
            except httpx.TransportError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = _map_aiohttp_error(exc)
                error.__cause__ = _certificate_error(exc)
            except asyncio.CancelledError:
                # Closing the session cancels the requests still waiting for a pooled or new connection: a
                # CancelledError in a task nobody cancelled. Those never left; don't leak the cancellation.
                task = asyncio.current_task()
                if task is None or not hasattr(task, "cancelling") or task.cancelling():  # cancelling: 3.11+
                    raise
                raise httpx.ConnectError("the transport was closed before the request was sent") from None
            raise error  # outside the `except`: the aiohttp error (and the request it holds) is not kept

        # respx (begin) ----------------------------------------------------------------------------------
        _httpx_transport: httpx.AsyncHTTPTransport | None = None
        _respx_exchange_fn: Exchange | None = None

        def _respx_exchange(self) -> Exchange:
            """The exchange under respx: through an `httpx.AsyncClient` over this transport (see respx_active)."""
            if self._respx_exchange_fn is None:
                self._respx_exchange_fn = _client_exchange(self)
            return self._respx_exchange_fn

        async def aclose(self) -> None:
            inner, self._httpx_transport = self._httpx_transport, None
            try:
                await super().aclose()
            finally:
                if inner is not None:
                    await inner.aclose()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if _RESPX_MOCKS in sys.modules and respx_active():
                # httpx's own transport, same settings: respx's default mocker patches the httpcore pool under it.
                if self._httpx_transport is None:
                    self._httpx_transport = httpx.AsyncHTTPTransport(
                        verify=self.ssl_context, limits=self.limits, proxy=self.proxy
                    )
                return await self._httpx_transport.handle_async_request(request)
            # respx (end) ------------------------------------------------------------------------------------
            status, headers, content = await self.exchange(
                request.method,
                str(request.url),
                list(request.headers.multi_items()),
                request.content or None,
                request.extensions.get("timeout", {}),
            )
            return httpx.Response(
                status_code=status,
                headers=list(headers.items()),
                content=content,
                request=request,
                extensions={"http_version": b"HTTP/1.1"},
            )

    return _Transport


async def _read_capped(response: Any, max_body: int) -> bytes:
    """The whole body of an aiohttp response, or `httpx.ReadError` as soon as it passes `max_body` bytes."""
    length = response.content_length
    if length is not None and length > max_body:
        raise _too_large(max_body)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():  # chunked, close-delimited or decompressed: count it
        size += len(chunk)
        if size > max_body:
            raise _too_large(max_body)
        chunks.append(chunk)
    return b"".join(chunks)


def AmiliAiohttpTransport(**kwargs: Any) -> httpx.AsyncBaseTransport:
    """httpx-aiohttp's transport with a "sent or not sent" error map and eager, size-capped body reads."""
    return _transport_class()(**kwargs)


# (method, url, headers, body, timeout extension) -> (status, headers, body), read in full.
Exchange = Callable[
    [str, str, Sequence[tuple[str, str]], "bytes | None", Mapping[str, "float | None"]],
    Awaitable[tuple[int, Mapping[str, str], bytes]],
]


def exchange_for(transport: httpx.AsyncBaseTransport, max_body: int = MAX_BODY) -> Exchange:
    """The cheapest way to do one request on `transport`, reading at most `max_body` bytes of an answer.

    Our aiohttp transport is called directly: building `httpx.Request`/`httpx.Response` objects costs more
    CPU than all of the SDK's own work (see `benchmarks/README.md`). Any other transport gets real httpx
    objects through its public `handle_async_request`.
    """
    if isinstance(transport, _transport_class()):
        own = transport.exchange  # type: ignore[attr-defined]
        return own if max_body == MAX_BODY else functools.partial(own, max_body=max_body)
    # respx (begin)
    direct = _httpx_objects_exchange(httpx.Request, transport.handle_async_request, max_body)
    under_respx: list[Exchange] = []  # built on first use under respx

    async def exchange(
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        timeout: Mapping[str, float | None],
    ) -> tuple[int, Mapping[str, str], bytes]:
        if _RESPX_MOCKS in sys.modules and respx_active():
            if not under_respx:
                under_respx.append(_client_exchange(transport, max_body))
            return await under_respx[0](method, url, headers, body, timeout)
        return await direct(method, url, headers, body, timeout)

    return exchange
    # respx (end)


def httpx_exchange(client: httpx.AsyncClient, max_body: int = MAX_BODY) -> Exchange:
    """Requests through a caller's own `httpx.AsyncClient` (its transport, proxies, event hooks)."""

    async def send(request: httpx.Request) -> httpx.Response:
        return await client.send(request, follow_redirects=False, stream=True)

    return _httpx_objects_exchange(client.build_request, send, max_body)


def _httpx_objects_exchange(
    build: Callable[..., httpx.Request],
    send: Callable[[httpx.Request], Awaitable[httpx.Response]],
    max_body: int,
) -> Exchange:
    async def exchange(
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        timeout: Mapping[str, float | None],
    ) -> tuple[int, Mapping[str, str], bytes]:
        response = await send(build(method, url, headers=headers, content=body, extensions={"timeout": timeout}))
        try:
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > max_body:
                raise _too_large(max_body)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():  # decoded, in whatever framing: counted as it comes
                size += len(chunk)
                if size > max_body:
                    raise _too_large(max_body)
                chunks.append(chunk)
        finally:
            await response.aclose()
        return response.status_code, response.headers, b"".join(chunks)

    return exchange


# -- respx (begin) ----------------------------------------------------------------------------------------------
# respx, the mocking library of httpx users, patches httpx's own machinery: by default the httpcore connection
# pools under `httpx.AsyncHTTPTransport` (`respx.mock(using="httpcore")`), or `httpx.AsyncClient`'s choice of
# transport (`using="httpx"`). The SDK's fast paths go around both (aiohttp, driven directly; transports called
# without a client), so while a respx router is active every exchange goes through an `httpx.AsyncClient` over
# the transport, and our aiohttp transport hands its requests to an `httpx.AsyncHTTPTransport`. Routes then
# match, unmatched requests fail and `pass_through()` reaches the network exactly as respx documents, and
# nothing opens a socket unless a route passes it through. Outside tests respx is not imported: the whole cost
# is one dict lookup per request.

_RESPX_MOCKS = "respx.mocks"


def respx_active() -> bool:
    """Whether a respx router is patching httpx now (`respx.mock` as context manager or decorator, `respx_mock`).

    Read from respx's registry of mockers, each holding its started routers. A respx whose internals we do not
    recognise counts as active: slower, still correct, and never a test that reaches a real server.
    """
    mocks = sys.modules.get(_RESPX_MOCKS)
    if mocks is None:
        return False
    registry = getattr(getattr(mocks, "Mocker", None), "registry", None)
    if registry is None:
        return True
    return any(getattr(mocker, "routers", True) for mocker in registry.values())


def _client_exchange(transport: httpx.AsyncBaseTransport, max_body: int = MAX_BODY) -> Exchange:
    """Requests built as the SDK builds them, sent by an `httpx.AsyncClient` over `transport`.

    The client is only a router (no environment proxies, no default headers, no redirects); closing the
    transport stays its owner's job.
    """
    client = httpx.AsyncClient(transport=transport, trust_env=False)

    async def send(request: httpx.Request) -> httpx.Response:
        return await client.send(request, follow_redirects=False, stream=True)

    return _httpx_objects_exchange(httpx.Request, send, max_body)


# -- respx (end) ------------------------------------------------------------------------------------------------
