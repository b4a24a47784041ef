"""Building the httpx transport: the only I/O seam of the SDK.

Any `httpx.AsyncBaseTransport` plugs in (`transport=`), including `amili_async.testing.FakeAmili().transport()`.
Without one, the client picks on first use:

- on asyncio, `AmiliAiohttpTransport`: httpx-aiohttp's transport with the error mapping a money API needs.
  Under concurrency httpx's own pool costs ten times the CPU per request (see `benchmarks/`);
- on trio (or when aiohttp cannot be imported), httpx's own `AsyncHTTPTransport`.

Both get the same limits, the same timeouts (read from each request's `timeout` extension) and the same TLS
settings (verification always on). Redirects are never followed: the SDK drives the transport directly.

Why a subclass of httpx-aiohttp's transport: its error map turns every `aiohttp.ClientConnectionError` into
`httpx.ConnectTimeout`, which would tell the retry policy that a POST cut off *after* it was sent had never left
the machine. Ours keeps the difference: connector errors and connect timeouts mean "not sent"; a disconnect, a
reset or a read timeout after sending means "maybe applied".
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

__all__ = ["AmiliAiohttpTransport", "build_default_transport"]

MAX_BODY = 16 * 1024 * 1024


def build_default_transport(
    backend: str, *, limits: httpx.Limits, verify: ssl.SSLContext | bool = True, trust_env: bool = True
) -> httpx.AsyncBaseTransport:
    if backend == "asyncio":
        try:
            return AmiliAiohttpTransport(limits=limits, verify=verify, trust_env=trust_env)
        except ImportError:  # pragma: no cover - aiohttp is a default dependency
            pass
    return httpx.AsyncHTTPTransport(limits=limits, verify=verify, trust_env=trust_env)


def _map_aiohttp_error(exc: BaseException) -> httpx.TransportError:
    import aiohttp

    message = str(exc) or type(exc).__name__
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


def _transport_class() -> type[httpx.AsyncBaseTransport]:
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    class _Transport(AiohttpTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if not isinstance(self.client, aiohttp.ClientSession):
                self.client = self.get_client()
            timeout = request.extensions.get("timeout", {})
            body = request.content or None
            try:
                async with self.client.request(
                    request.method,
                    str(request.url),
                    headers=request.headers,
                    data=body,
                    allow_redirects=False,
                    auto_decompress=True,
                    timeout=aiohttp.ClientTimeout(
                        sock_connect=timeout.get("connect"),
                        sock_read=timeout.get("read"),
                        connect=timeout.get("pool"),
                    ),
                ) as response:
                    length = response.content_length
                    if length is not None and length > MAX_BODY:
                        raise httpx.ReadError(f"response body too large ({length} bytes)")
                    content = await response.read()
                    return httpx.Response(
                        status_code=response.status,
                        headers=response.raw_headers,
                        content=content,
                        request=request,
                        extensions={"http_version": b"HTTP/1.1"},
                    )
            except httpx.TransportError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise _map_aiohttp_error(exc) from exc

    return _Transport


def AmiliAiohttpTransport(**kwargs: Any) -> httpx.AsyncBaseTransport:  # noqa: N802 - a class factory
    """httpx-aiohttp's transport with a "sent or not sent" error map and eager, size-capped body reads."""
    return _transport_class()(**kwargs)
