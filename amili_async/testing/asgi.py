"""The fake as an ASGI 3 application (mount it in a test server or drive it with `httpx.ASGITransport`).

Faults: drops and refused connections raise `SimulatedDisconnect` out of the app (an ASGI app cannot
close a socket itself); latency sleeps before answering; a stalled body sends the headers and part of the
body, then waits forever; a request never answered (a late commit) waits forever.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import anyio

from ._wire import Handler, WireRequest

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class SimulatedDisconnect(ConnectionError):
    """Raised by the ASGI app where a real server would drop or refuse the connection."""


class AsgiApp:
    def __init__(self, fake: Handler) -> None:
        self._fake = fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise ValueError(f"unsupported ASGI scope type {scope['type']!r}")
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host") or "fake.amili.test"
        wire = WireRequest(
            method=scope["method"],
            path=scope["path"],
            query=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)),
            headers=headers,
            body=b"".join(chunks),
            base_url=f"{scope.get('scheme', 'http')}://{host}",
        )
        outcome = self._fake.handle(wire)
        if outcome.action in ("drop", "connect_error"):
            raise SimulatedDisconnect(f"simulated {outcome.action.replace('_', ' ')}")
        if outcome.action == "hang":  # never answered: the client gives up
            await anyio.sleep_forever()
        reply = outcome.reply
        assert reply is not None
        if outcome.delay > 0:
            await anyio.sleep(outcome.delay)
        raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        raw_headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": raw_headers})
        if outcome.action == "stall":
            await send({"type": "http.response.body", "body": reply.body[: outcome.stall_at], "more_body": True})
            await anyio.sleep_forever()
        await send({"type": "http.response.body", "body": reply.body})

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
