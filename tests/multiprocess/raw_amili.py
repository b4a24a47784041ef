"""A small raw Amili on loopback, in its own thread (so asyncio and trio tests, and other processes, can use it).

asyncio streams, HTTP/1.1 keep-alive with Content-Length bodies, 127.0.0.1 only. It knows three things:

- `GET|POST /authenticates/api-code`: issues `tok-<n>` living an hour; only the newest token is active (as
  an Amili that keeps one token per API user would). `hang_logins` first logins are read and never answered.
- `POST /creditor--payments`: stores the payment under its reference (what the tests assert on) -> 201.
- `GET /creditor--payments?where=...`: the stored payments with that reference (the SDK's reconciliation).

Anything with a token that is not the active one gets 401.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit


class RawAmili:
    def __init__(self, hang_logins: int = 0) -> None:
        self.hang_logins = hang_logins
        self.logins = 0
        self.active: str | None = None
        self.payments: list[dict[str, Any]] = []  # what was stored, in order
        self.unauthorized = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raw-amili", daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RawAmili:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc_info: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def references(self) -> list[str]:
        with self._lock:
            return [p["creditor_payment_reference"] for p in self.payments]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                answer = self._answer(method, urlsplit(target), headers, body)
                if answer is None:  # a login to hang: read, never answered, until the client goes away
                    await reader.read()
                    return
                status, payload = answer
                raw = json.dumps(payload).encode()
                head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
                writer.write(head.encode() + raw)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _answer(self, method: str, url: Any, headers: dict[str, str], body: bytes) -> tuple[int, Any] | None:
        with self._lock:
            if url.path == "/authenticates/api-code":
                self.logins += 1
                if self.logins <= self.hang_logins:
                    return None
                self.active = f"tok-{self.logins}"
                return 200, {"token": self.active, "expires_in": 3600}
            if headers.get("x-api-key") != self.active or self.active is None:
                self.unauthorized += 1
                return 401, {"_status": "ERR", "_error": {"code": 401, "message": "Please provide proper credentials"}}
            if url.path == "/creditor--payments" and method == "POST":
                doc = json.loads(body)
                doc.update(_id=f"{len(self.payments) + 1:024x}", _status="OK", _payment_status="completed")
                self.payments.append(doc)
                return 201, doc
            if url.path == "/creditor--payments" and method == "GET":
                where = json.loads(parse_qs(url.query)["where"][0])
                ref = where.get("creditor_payment_reference")
                items = [p for p in self.payments if p.get("creditor_payment_reference") == ref]
                return 200, {"_items": items, "_meta": {"page": 1, "max_results": 25, "total": len(items)}}
            return 404, {"_status": "ERR", "_error": {"code": 404, "message": "not found"}}
