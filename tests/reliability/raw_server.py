"""A raw HTTP/1.1 loopback server for hostile-server tests: asyncio streams, 127.0.0.1, nothing else.

It parses each request (request line, headers, `Content-Length` body), stores it in `requests`, and hands it
to a handler coroutine that writes whatever answer the test wants straight onto the socket: a normal answer,
a 50 MB chunked body, an endless close-delimited one, an echo of the credentials. The handler returns True
to keep the connection open for the next request. Every read has a timeout and `async with` closes the
server and every connection it accepted, so a test can never leave it running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

from amili_async.serde import dumps


@attrs.define
class Seen:
    """One request as the server stored it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.target).query).items()}


Handler = Callable[[Seen, asyncio.StreamWriter], Awaitable[bool]]


class RawServer:
    """`async with RawServer(handler) as server:` ... `server.base_url`, `server.requests`."""

    def __init__(self, handler: Handler, *, read_timeout: float = 10.0) -> None:
        self._handler = handler
        self._read_timeout = read_timeout
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.requests: list[Seen] = []
        self.base_url = ""

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line = await asyncio.wait_for(reader.readline(), self._read_timeout)
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    header = await asyncio.wait_for(reader.readline(), self._read_timeout)
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                size = int(headers.get("content-length", "0"))
                body = await asyncio.wait_for(reader.readexactly(size), self._read_timeout) if size else b""
                seen = Seen(method, target, headers, body)
                self.requests.append(seen)
                if not await self._handler(seen, writer):
                    return
        except (ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


REASONS = {200: "OK", 201: "Created", 401: "Unauthorized", 404: "Not Found", 422: "Unprocessable Entity"}


async def respond(
    writer: asyncio.StreamWriter, status: int, body: Any = b"", *, headers: dict[str, str] | None = None
) -> bool:
    """Write one complete answer (JSON-encoded unless `body` is bytes); True: keep the connection."""
    raw = body if isinstance(body, bytes) else dumps(body)
    head = {"Content-Type": "application/json", "Content-Length": str(len(raw)), **(headers or {})}
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", *(f"{k}: {v}" for k, v in head.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + raw)
    await writer.drain()
    return True


def token_answer(token: str) -> bytes:
    return json.dumps({"token": token, "expires_in": 3600}).encode()
