"""A minimal keep-alive HTTP/1.1 server that answers every request with the same 201 JSON receipt.

It is the upper bound of the client benchmarks: a raw ``asyncio.Protocol`` (on uvloop when importable) that
parses just enough of each request to find where it ends (headers, then a ``Content-Length`` body), so
pipelined requests on one connection get their answers in order, in one write per read.

    python benchmarks/fixed_server.py [--host 127.0.0.1] [--port 0] [--no-uvloop]

When listening it prints its port as one line on stdout. It stops on SIGINT/SIGTERM, and also when its
stdin reaches end-of-file (if stdin is a pipe), so it cannot outlive a benchmark runner that died hard.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Final, cast

RECEIPT: Final = {
    "_updated": "Tue, 07 Oct 2025 08:15:30 GMT",
    "_created": "Tue, 07 Oct 2025 08:15:30 GMT",
    "_etag": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0",
    "_id": "68e4cb120da90297b3be0e01",
    "_status": "OK",
    "_payment_status": "completed",
    "status": "completed",
    "settled_amount": 250.0,
}
BODY: Final = json.dumps(RECEIPT, separators=(",", ":")).encode()
RESPONSE: Final = (
    b"HTTP/1.1 201 Created\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n" + BODY
)
CLOSING_RESPONSE: Final = RESPONSE.replace(b"Connection: keep-alive", b"Connection: close")


def _error_response(status: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


NOT_IMPLEMENTED: Final = _error_response(b"501 Not Implemented")
BAD_REQUEST: Final = _error_response(b"400 Bad Request")
HEADERS_TOO_LARGE: Final = _error_response(b"431 Request Header Fields Too Large")
MAX_HEAD: Final = 64 * 1024
MAX_BODY: Final = 16 * 1024 * 1024


def _wants_close(head: bytes) -> bool:
    """Whether the client asked for the connection to end after this answer (``head`` is lower-cased)."""
    line_end = head.find(b"\r\n")
    http10 = (head if line_end < 0 else head[:line_end]).endswith(b"http/1.0")
    at = head.find(b"\r\nconnection:")
    if at < 0:
        return http10
    value_end = head.find(b"\r\n", at + 13)
    value = head[at + 13 : value_end if value_end >= 0 else len(head)]
    if b"close" in value:
        return True
    return http10 and b"keep-alive" not in value


class FixedReceiptProtocol(asyncio.Protocol):
    """One instance per connection. ``_buffer`` holds the bytes of a request that is not complete yet."""

    __slots__ = ("_buffer", "_transport")

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self._transport = cast("asyncio.Transport", transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        buf = self._buffer + data if self._buffer else data
        replies: list[bytes] = []
        pos = 0
        close_after = False
        while True:
            head_end = buf.find(b"\r\n\r\n", pos)
            if head_end < 0:
                if len(buf) - pos > MAX_HEAD:
                    replies.append(HEADERS_TOO_LARGE)
                    close_after = True
                break
            # Header names are case-insensitive; every header line starts after a CRLF because the
            # request line comes first, so searching for "\r\nname:" cannot match inside a value.
            head = buf[pos:head_end].lower()
            if b"\r\ntransfer-encoding:" in head:
                replies.append(NOT_IMPLEMENTED)  # chunked request bodies: not needed by any scenario
                close_after = True
                break
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                value_end = head.find(b"\r\n", at + 17)
                raw = head[at + 17 : value_end if value_end >= 0 else len(head)].strip()
                if not raw.isdigit() or int(raw) > MAX_BODY:
                    replies.append(BAD_REQUEST)
                    close_after = True
                    break
                length = int(raw)
            request_end = head_end + 4 + length
            if request_end > len(buf):
                break  # the body has not fully arrived yet
            pos = request_end
            if _wants_close(head):
                replies.append(CLOSING_RESPONSE)
                close_after = True
                break
            replies.append(RESPONSE)
        self._buffer = b"" if close_after else buf[pos:]
        if replies:
            transport.write(replies[0] if len(replies) == 1 else b"".join(replies))
        if close_after:
            transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FixedReceiptProtocol, host, port, backlog=2048, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # non-Unix loops
            loop.add_signal_handler(sig, stop.set)
    _watch_stdin(loop, stop)
    bound_port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{bound_port}\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Stop when the parent closes our stdin (it exited, however it died). Only for pipes, not terminals."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return
    if os.isatty(fd):
        return

    def on_readable() -> None:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            loop.remove_reader(fd)
            stop.set()

    try:
        loop.add_reader(fd, on_readable)
    except (NotImplementedError, OSError, ValueError):  # e.g. stdin is a regular file
        return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default) picks a free port")
    parser.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    args = parser.parse_args(argv)
    coro = serve(args.host, args.port)
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(coro)
            return 0
    asyncio.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
