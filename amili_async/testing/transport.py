"""The fake as an in-process httpx transport, with faults mapped to what a real socket would raise.

- drops: `httpx.RemoteProtocolError`; refused connections: `httpx.ConnectError`;
- latency and stalled bodies honour the request's read timeout like a socket does: when the wait is
  longer than the timeout, sleep only the timeout, then raise `httpx.ReadTimeout`; a request that is never
  answered (a late commit) raises it after the read timeout.

Only `anyio` sleeps are used, so it runs on asyncio and trio alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx

from ._wire import Handler, WireRequest


def _read_timeout(request: httpx.Request) -> float | None:
    timeout = request.extensions.get("timeout") or {}
    value = timeout.get("read")
    return float(value) if value is not None else None


class _StalledStream(httpx.AsyncByteStream):
    """Yields the first bytes of a body, then nothing until the read timeout (or forever)."""

    def __init__(self, head: bytes, request: httpx.Request) -> None:
        self._head = head
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._head:
            yield self._head
        timeout = _read_timeout(self._request)
        if timeout is None:
            await anyio.sleep_forever()
        else:
            await anyio.sleep(timeout)
        raise httpx.ReadTimeout("The read operation timed out", request=self._request)


class FakeTransport(httpx.AsyncBaseTransport):
    def __init__(self, fake: Handler) -> None:
        self._fake = fake

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        url = request.url
        wire = WireRequest(
            method=request.method,
            path=url.path,
            query=dict(url.params.items()),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            base_url=f"{url.scheme}://{url.netloc.decode('ascii')}",
        )
        outcome = self._fake.handle(wire)
        if outcome.action == "connect_error":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if outcome.action == "drop":
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        if outcome.action == "hang":  # no answer, ever: like a socket, give up at the read timeout
            timeout = _read_timeout(request)
            if timeout is None:
                await anyio.sleep_forever()
            await anyio.sleep(timeout or 0)
            raise httpx.ReadTimeout("The read operation timed out", request=request)
        reply = outcome.reply
        assert reply is not None
        if outcome.delay > 0:
            timeout = _read_timeout(request)
            if timeout is not None and outcome.delay > timeout:
                await anyio.sleep(timeout)
                raise httpx.ReadTimeout("The read operation timed out", request=request)
            await anyio.sleep(outcome.delay)
        if outcome.action == "stall":
            headers = [*reply.headers, ("Content-Length", str(len(reply.body)))]
            return httpx.Response(
                reply.status,
                headers=headers,
                stream=_StalledStream(reply.body[: outcome.stall_at], request),
                request=request,
            )
        return httpx.Response(reply.status, headers=reply.headers, content=reply.body, request=request)
