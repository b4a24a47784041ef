"""A small Amili-like HTTP/1.1 server on 127.0.0.1 whose behaviour can break one assumption at a time.

Raw asyncio streams, one request per connection (`Connection: close`, like Eve's development server), in a
thread of its own so that synchronous code (the `amili` command, `asyncio.run`) and async tests alike can
talk to it. It verifies the login JWT with the registered public key against *its own* clock, issues a
token, answers Eve lists with `where` filtering, and stores payments. Bounded: at most `max_requests`
requests and `lifetime` seconds, then it stops by itself.

What can be changed (`Behaviour`): `where` support (`"yes"`, `"refuse"` with 400, `"ignore"`), the token
answer's shape, the server clock's offset, rate-limit headers, whether a duplicate payment reference is
refused, and whether the connection drops after a payment is stored (an ambiguous write).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
from decimal import Decimal
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import jwt

TOKEN_PATH = "/authenticates/api-code"
CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68e4c40d93ee14723d28fa95"
LISTS = ("/cases", "/creditor--payments", "/creditor--creditings", "/creditor--cancellations")


@attrs.define
class Behaviour:
    where: str = "yes"  # "yes", "refuse" (400, as Eve answers a filter it will not run), "ignore"
    token_shape: str = "token+expires"  # "token+expires", "token only", "nested"
    clock_offset: float = 0.0  # seconds this server's clock is ahead of the real one
    rate_limit_headers: bool = True
    unique_references: bool = True  # a second payment with the same reference: 409
    drop_after_post: bool = False  # store the payment, then close the connection without an answer
    jwt_max_ahead: float = 605.0  # a JWT whose exp is further ahead than this (server clock) is refused


@attrs.define
class Seen:
    method: str
    path: str
    query: dict[str, str]
    status: int | None


class AmiliLike:
    def __init__(self, api_code: str, public_pem: str, behaviour: Behaviour | None = None) -> None:
        self.api_code = api_code
        self.public_pem = public_pem
        self.behaviour = behaviour or Behaviour()
        self.tokens: list[str] = []  # issued: secrets the output must never show
        self.jwts: list[str] = []  # received at the token endpoint
        self.requests: list[Seen] = []
        self.payments: list[dict[str, Any]] = []
        self.cases = [{"_id": CASE, "creditor": CREDITOR, "state": "invoice", "closed": False, "currency": "SEK"}]
        self.max_requests = 300
        self.lifetime = 60.0
        self.port = 0
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> AmiliLike:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        assert self._thread is not None
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            with contextlib.suppress(asyncio.TimeoutError):  # stops by itself after `lifetime` seconds
                await asyncio.wait_for(self._stop.wait(), self.lifetime)

    # -- HTTP ---------------------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.behaviour.clock_offset

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            split = urlsplit(target)
            seen = Seen(method, split.path, dict(parse_qsl(split.query)), None)
            self.requests.append(seen)
            if len(self.requests) > self.max_requests:
                return
            answer = self._answer(method, split.path, seen.query, headers, body)
            if answer is None:  # the write is stored; the answer is lost on the way back
                return
            seen.status = answer[0]
            writer.write(self._encode(*answer))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def _encode(self, status: int, payload: Any) -> bytes:
        body = json.dumps(payload, default=str).encode()
        head = [
            f"HTTP/1.1 {status} X",
            f"Date: {formatdate(self.now(), usegmt=True)}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        if self.behaviour.rate_limit_headers:
            head += [
                "X-RateLimit-Limit: 300",
                "X-RateLimit-Remaining: 299",
                f"X-RateLimit-Reset: {int(self.now()) + 1}",
            ]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    @staticmethod
    def _error(status: int, message: str) -> tuple[int, Any]:
        return status, {"_status": "ERR", "_error": {"code": status, "message": message}}

    def _answer(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any] | None:
        key = headers.get("x-api-key", "")
        if path == TOKEN_PATH and method == "GET":
            return self._login(key)
        if key not in self.tokens:
            return self._error(401, "Please provide proper credentials")
        if method == "GET" and path in LISTS:
            return self._list(path, query)
        if method == "GET" and path == f"/cases/{CASE}":
            return 200, self.cases[0]
        if method == "GET" and path == f"/domain-actions/cases/respite/{CASE}":
            return 200, {}
        if method == "POST" and path == "/creditor--payments":
            return self._pay(json.loads(body, parse_float=Decimal))
        return self._error(404, "Not found.")

    def _login(self, signed: str) -> tuple[int, Any]:
        self.jwts.append(signed)
        try:
            claims = jwt.decode(signed, self.public_pem, algorithms=["ES256"], options={"verify_exp": False})
        except jwt.PyJWTError:
            return self._error(401, "Please provide proper credentials")
        exp, now = claims.get("exp"), self.now()
        ahead = self.behaviour.jwt_max_ahead
        if claims.get("api_code") != self.api_code or not isinstance(exp, int) or not now < exp <= now + ahead:
            return self._error(401, "Please provide proper credentials")
        token = f"tok-{secrets.token_hex(16)}"
        self.tokens.append(token)
        shape = self.behaviour.token_shape
        if shape == "nested":
            return 200, {"data": {"key": token, "valid_for": 3600}}
        if shape == "token only":
            return 200, {"token": token}
        return 200, {"token": token, "expires": formatdate(now + 3600, usegmt=True)}

    def _list(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        docs = self.cases if path == "/cases" else self.payments if path == "/creditor--payments" else []
        if "where" in query:
            if self.behaviour.where == "refuse":
                return self._error(400, "The browser (or proxy) sent a request that this server could not understand.")
            if self.behaviour.where == "yes":
                where = json.loads(query["where"])
                docs = [d for d in docs if all(d.get(k) == v for k, v in where.items())]
        size = int(query.get("max_results", "25"))
        return 200, {"_items": docs[:size], "_meta": {"page": 1, "max_results": size, "total": len(docs)}}

    def _pay(self, doc: dict[str, Any]) -> tuple[int, Any] | None:
        reference = doc.get("creditor_payment_reference")
        taken = any(p.get("creditor_payment_reference") == reference for p in self.payments)
        if reference is not None and taken and self.behaviour.unique_references:
            return self._error(409, "Conflict")
        stamp = formatdate(self.now(), usegmt=True)
        meta = {"_id": secrets.token_hex(12), "_created": stamp, "_updated": stamp, "_etag": secrets.token_hex(20)}
        self.payments.append({**doc, **meta})
        if self.behaviour.drop_after_post:
            return None
        return 201, {**meta, "_status": "OK", "_payment_status": "completed", "status": "completed"}
