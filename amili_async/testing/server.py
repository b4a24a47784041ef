"""The fake over real sockets: a small, fast HTTP/1.1 server on a raw `asyncio.Protocol` (asyncio only).

It speaks just enough HTTP/1.1 for clients and benchmarks: keep-alive by default (``Connection: close``
and HTTP/1.0 honoured), pipelined requests answered in order, ``Content-Length`` bodies (chunked request
bodies are refused with 501), ``Expect: 100-continue``.

Faults on the wire: a drop closes the socket after reading the request, a refused connection aborts it
(RST), latency delays the answer (later pipelined requests wait their turn), a stalled body sends the
headers and half the body, then nothing more on that connection, and a request that is never answered (a late
commit) leaves its connection silent.

Use it in-process with ``async with await start_server(fake) as server: ... server.base_url``, or run
``await serve(fake, host, port, ready)`` until cancelled.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from types import TracebackType
from typing import cast
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs

from ._wire import Outcome, Reply, WireRequest, error_reply
from .fake import FakeAmili

MAX_HEAD = 64 * 1024


@attrs.define(slots=True)
class _Pending:
    wire: WireRequest | None  # None: answer `reply` (a protocol error) and close
    keep_alive: bool
    reply: Reply | None = None


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


class _Connection(asyncio.Protocol):
    def __init__(self, server: FakeServer) -> None:
        self._server = server
        self._fake = server.fake
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: tuple[str, str, str, dict[str, str]] | None = None  # parsed head waiting for its body
        self._length = 0
        self._queue: deque[_Pending] = deque()
        self._busy = False
        self._closed = False
        self._broken = False  # unreadable input: ignore whatever follows
        self._task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.connections.discard(self)
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closed or self._broken:
            return
        self._buffer += data
        self._parse()
        self._drain()

    # -- parsing ------------------------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buffer
        while not self._closed and not self._broken:
            if self._head is None:
                while buf[:2] == b"\r\n":
                    del buf[:2]
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        self._fail(431)
                    return
                head = bytes(buf[:end]).decode("latin-1")
                del buf[: end + 4]
                if not self._start(head):
                    return
            if len(buf) < self._length:
                return
            body = bytes(buf[: self._length])
            del buf[: self._length]
            self._finish(body)

    def _start(self, head: str) -> bool:
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._fail(400)
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self._fail(400)
                return False
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            self._fail(501)
            return False
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            self._fail(400)
            return False
        self._head = (parts[0], parts[1], parts[2], headers)
        self._length = length
        if length and headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _finish(self, body: bytes) -> None:
        assert self._head is not None
        method, target, version, headers = self._head
        self._head = None
        self._length = 0
        connection = headers.get("connection", "").lower()
        keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
        split = urlsplit(target)
        host = headers.get("host") or f"{self._server.host}:{self._server.port}"
        wire = WireRequest(
            method=method,
            path=unquote(split.path) or "/",
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers=headers,
            body=body,
            base_url=f"http://{host}",
        )
        self._queue.append(_Pending(wire, keep_alive))

    def _fail(self, status: int) -> None:
        """A request we cannot read: answer it (after the ones before it) and close."""
        self._queue.append(_Pending(None, False, error_reply(status)))
        self._buffer.clear()
        self._head = None
        self._broken = True

    def abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    # -- answering ----------------------------------------------------------------------------------

    def _drain(self) -> None:
        while self._queue and not self._busy and not self._closed:
            pending = self._queue.popleft()
            if pending.wire is None:
                assert pending.reply is not None
                self._answer(pending.reply, keep_alive=False)
                return
            outcome = self._fake.handle(pending.wire)
            if not self._dispatch(outcome, pending.keep_alive):
                return

    def _dispatch(self, outcome: Outcome, keep_alive: bool) -> bool:
        """Carry out one outcome; False when the connection cannot go on answering now."""
        transport = self._transport
        assert transport is not None
        if outcome.action == "connect_error":
            self._closed = True
            transport.abort()
            return False
        if outcome.action == "drop":
            self._closed = True
            transport.close()
            return False
        if outcome.action == "hang":
            self._busy = True  # for good: this request is never answered, and nothing after it
            return False
        reply = outcome.reply
        assert reply is not None
        if outcome.action == "stall":
            self._busy = True  # for good: nothing more is sent on this connection
            transport.write(self._encode(reply, keep_alive, reply.body[: outcome.stall_at]))
            return False
        if outcome.delay > 0:
            self._busy = True
            self._task = asyncio.get_running_loop().create_task(self._later(outcome.delay, reply, keep_alive))
            return False
        return self._answer(reply, keep_alive)

    async def _later(self, delay: float, reply: Reply, keep_alive: bool) -> None:
        await asyncio.sleep(delay)
        self._task = None
        self._busy = False
        if not self._closed and self._answer(reply, keep_alive):
            self._drain()

    def _answer(self, reply: Reply, keep_alive: bool) -> bool:
        assert self._transport is not None
        self._transport.write(self._encode(reply, keep_alive, reply.body))
        if not keep_alive:
            self._closed = True
            self._transport.close()
            return False
        return True

    @staticmethod
    def _encode(reply: Reply, keep_alive: bool, body: bytes) -> bytes:
        head = [_status_line(reply.status)]
        for name, value in reply.headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        head.append(f"Content-Length: {len(reply.body)}\r\n".encode())
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        head.append(body)
        return b"".join(head)


@attrs.define(eq=False)
class FakeServer:
    """A running loopback server. `close()` stops listening and drops open connections."""

    fake: FakeAmili
    host: str
    port: int = 0
    connections: set[_Connection] = attrs.field(factory=set)
    _server: asyncio.AbstractServer | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.abort()
        self.connections.clear()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeServer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        await self.wait_closed()


async def start_server(fake: FakeAmili, host: str = "127.0.0.1", port: int = 0) -> FakeServer:
    """Listen on `host:port` (0: an ephemeral port, see `FakeServer.port`) and return at once."""
    server = FakeServer(fake, host)
    loop = asyncio.get_running_loop()
    server._server = await loop.create_server(lambda: _Connection(server), host, port, reuse_address=True)
    server.port = server._server.sockets[0].getsockname()[1]
    return server


async def serve(
    fake: FakeAmili, host: str = "127.0.0.1", port: int = 0, ready: Callable[[int], None] | None = None
) -> None:
    """Serve until cancelled; `ready(port)` is called once listening (useful with port 0)."""
    async with await start_server(fake, host, port) as server:
        if ready is not None:
            ready(server.port)
        await asyncio.Event().wait()
