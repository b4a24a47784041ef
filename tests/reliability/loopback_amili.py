"""A small Eve-like payments server on raw asyncio streams (127.0.0.1), written to misbehave like real
infrastructure does, and to tell afterwards what it STORED.

It speaks HTTP/1.1 with keep-alive and `Content-Length` bodies, and serves what the SDK uses for payments:
`POST /creditor--payments`, `GET /creditor--payments?where=...&max_results=N`, `GET /creditor--payments/<id>`.
Authentication is a fixed token (use `StaticTokenAuth(TOKEN)`). Knobs, each one a real failure:

- `commit_delay`: a busy backend commits a POST that many seconds after it arrived, and only then answers;
- `gateway_after`: a proxy in front answers 504 (an HTML page) after that many seconds while the backend goes
  on and commits at `commit_delay`;
- `drop`: the first POST's connection closes without an answer: "before" committing it, or "after";
- `truncate`: commits, then sends the 201's head and half its body and closes (a cut answer);
- `throttle_first`: the first POST gets a 429 (nothing applied); `refuse`: every POST gets that 4xx status;
- `hang_first`: the first POST is never answered; it commits when the next POST arrives (a commit landing just
  before the resend, deterministically);
- `read_lag`: reads are served by a replica that misses records younger than that many seconds;
- `ignore_where`: lists are served without their filter (every record, first page);
- `answer`: the 201 body: "record" (Eve's), "no_id" (`{"_status": "OK"}` with a `Location`), "no_id_no_location",
  "not_json" (an HTML page, no `Location`);
- `unique`: a stored reference refuses a new POST with 422 `value '...' is not unique` (or 409 when set to 409);
- `records`: records stored before the test (a reused reference, say).

It is bounded: it serves at most `max_requests` requests and closes itself after `lifetime` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import httpx

from amili_async import AsyncAmiliClient, CreditorPayment, RetryPolicy, StaticTokenAuth

TOKEN = "loopback-token-0123456789"
PAYMENTS = "/creditor--payments"
CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68e4c40d93ee14723d28fa95"
OTHER_CASE = "68e4c40d93ee14723d28fa96"


class LoopbackAmili:
    def __init__(
        self,
        *,
        commit_delay: float = 0.0,
        gateway_after: float | None = None,
        drop: Literal["before", "after"] | None = None,
        truncate: bool = False,
        throttle_first: bool = False,
        refuse: int | None = None,
        hang_first: bool = False,
        read_lag: float = 0.0,
        ignore_where: bool = False,
        answer: Literal["record", "no_id", "no_id_no_location", "not_json"] = "record",
        unique: int | None = None,
        records: list[dict[str, Any]] | None = None,
        max_requests: int = 60,
        lifetime: float = 30.0,
        port: int = 0,
    ) -> None:
        self.port = port
        self.truncate = truncate
        self.throttle_first = throttle_first
        self.refuse = refuse
        self.commit_delay = commit_delay
        self.gateway_after = gateway_after
        self.drop = drop
        self.hang_first = hang_first
        self.read_lag = read_lag
        self.ignore_where = ignore_where
        self.answer = answer
        self.unique = unique
        self.records: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self._committed: dict[str, float] = {}
        self._ids = itertools.count(0x100)
        self._backend: set[asyncio.Task[dict[str, Any]]] = set()
        self._closing = asyncio.Event()
        self._held: list[dict[str, Any]] = []  # hang_first: the first POST, waiting for the next one
        self._max_requests = max_requests
        self._lifetime = lifetime
        self._server: asyncio.Server | None = None
        self._watchdog: asyncio.Task[None] | None = None
        for record in records or []:
            self._store(dict(record), at=-1e9)

    # -- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> LoopbackAmili:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self._watchdog = asyncio.get_running_loop().create_task(self._expire())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.settled()
        self._closing.set()  # a request left unanswered on purpose: its connection closes now
        assert self._server is not None and self._watchdog is not None
        self._watchdog.cancel()
        self._server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _expire(self) -> None:
        await asyncio.sleep(self._lifetime)
        if self._server is not None:
            self._server.close()

    async def settled(self) -> None:
        """Wait for every write the backend is still processing (what the server will have stored)."""
        while self._backend:
            await asyncio.gather(*self._backend, return_exceptions=True)
        for held in self._held:  # a held first POST that never saw a resend commits in the end
            self._store(held)
        self._held.clear()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def stored(self, reference: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("creditor_payment_reference") == reference]

    def posts(self) -> int:
        return sum(method == "POST" for method, _ in self.requests)

    def lookups(self) -> int:
        return sum(method == "GET" and "where=" in target for method, target in self.requests)

    # -- HTTP -------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while len(self.requests) < self._max_requests:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((method, target))
                reply = await self._handle(method, target, headers, body)
                if reply is None:  # no answer: close (drop) the connection
                    break
                status, extra, content = reply
                head_out = [f"HTTP/1.1 {status} X", f"Content-Length: {len(content)}", *extra, "", ""]
                cut = self.truncate and method == "POST" and status == 201
                writer.write("\r\n".join(head_out).encode("latin-1") + content[: len(content) // 2 if cut else None])
                await writer.drain()
                if cut:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[str], bytes] | None:
        if headers.get("x-api-key") != TOKEN:
            return _json(
                401, {"_status": "ERR", "_error": {"code": 401, "message": "Please provide proper credentials"}}
            )
        url = urlsplit(target)
        if method == "GET" and url.path == PAYMENTS:
            return self._list(dict(parse_qsl(url.query)))
        if method == "GET" and url.path.startswith(PAYMENTS + "/"):
            record = self._visible_by_id(url.path.rsplit("/", 1)[-1])
            if record is None:
                return _json(404, {"_status": "ERR", "_error": {"code": 404, "message": "Not found."}})
            return _json(200, record)
        if method == "POST" and url.path == PAYMENTS:
            return await self._post(json.loads(body, parse_float=Decimal))
        return _json(405, {"_status": "ERR", "_error": {"code": 405, "message": "Method not allowed."}})

    async def _post(self, doc: dict[str, Any]) -> tuple[int, list[str], bytes] | None:
        for held in self._held:  # the earlier request's commit lands just before this one is processed
            self._store(held)
        self._held.clear()
        if self.throttle_first and self.posts() == 1:
            return _json(429, {"_status": "ERR", "_error": {"code": 429, "message": "Rate limit exceeded"}})
        if self.refuse is not None:
            issues = {"amount": "must be positive"} if self.refuse == 422 else None
            return _json(
                self.refuse, {"_status": "ERR", "_issues": issues, "_error": {"code": self.refuse, "message": "no"}}
            )
        reference = doc.get("creditor_payment_reference")
        if self.unique and reference is not None and self.stored(reference):
            if self.unique == 409:
                return _json(409, {"_status": "ERR", "_error": {"code": 409, "message": "duplicate key"}})
            issues = {"creditor_payment_reference": f"value '{reference}' is not unique"}
            error = {"code": 422, "message": "Insertion failure: 1 document(s) contain(s) error(s)"}
            return _json(422, {"_status": "ERR", "_issues": issues, "_error": error})
        if self.drop == "before" and self.posts() == 1:
            return None
        if self.hang_first and self.posts() == 1:
            self._held.append(doc)
            await self._closing.wait()  # never answered (the client's read timeout ends its wait)
            return None
        backend = asyncio.get_running_loop().create_task(self._commit_later(doc))
        self._backend.add(backend)
        backend.add_done_callback(self._backend.discard)
        if self.gateway_after is not None:
            await asyncio.sleep(self.gateway_after)
            page = b"<html><head><title>504 Gateway Time-out</title></head><body>nginx</body></html>"
            return 504, ["Content-Type: text/html"], page
        await backend
        if self.drop == "after" and self.posts() == 1:
            return None
        return self._created(backend.result())

    async def _commit_later(self, doc: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(self.commit_delay)
        self._store(doc)
        return doc

    def _store(self, doc: dict[str, Any], at: float | None = None) -> None:
        doc.setdefault("_id", f"68e4cb120da90297b3be{next(self._ids):04x}")
        doc.setdefault("_created", "Tue, 07 Oct 2025 08:15:31 GMT")
        doc.setdefault("_etag", f"etag-{doc['_id']}")
        self.records.append(doc)
        self._committed[doc["_id"]] = asyncio.get_running_loop().time() if at is None else at

    def _created(self, record: dict[str, Any]) -> tuple[int, list[str], bytes]:
        location = f"Location: {self.base_url}{PAYMENTS}/{record['_id']}"
        if self.answer == "record":
            meta = {k: record[k] for k in ("_id", "_created", "_etag")}
            return _json(201, {**meta, "_status": "OK", "_payment_status": "completed"}, [location])
        if self.answer == "no_id":
            return _json(201, {"_status": "OK"}, [location])
        if self.answer == "no_id_no_location":
            return _json(201, {"_status": "OK"})
        return 201, ["Content-Type: text/html"], b"<html><body>Created</body></html>"

    # -- reads ------------------------------------------------------------------------------------

    def _fresh_enough(self, record: dict[str, Any]) -> bool:
        now = asyncio.get_running_loop().time()
        return now - self._committed[record["_id"]] >= self.read_lag

    def _visible_by_id(self, record_id: str) -> dict[str, Any] | None:
        for record in self.records:
            if record["_id"] == record_id and self._fresh_enough(record):
                return record
        return None

    def _list(self, query: dict[str, str]) -> tuple[int, list[str], bytes]:
        where = {} if self.ignore_where else json.loads(query.get("where", "{}"))
        page = int(query.get("max_results", "25"))
        found = [r for r in self.records if self._fresh_enough(r) and all(r.get(k) == v for k, v in where.items())]
        meta = {"page": 1, "max_results": page, "total": len(found)}
        return _json(200, {"_items": found[:page], "_meta": meta})


def _json(status: int, body: Any, extra: list[str] | None = None) -> tuple[int, list[str], bytes]:
    content = json.dumps(body, default=float).encode()  # amounts (Decimal) as JSON numbers, as Eve sends them
    return status, ["Content-Type: application/json", *(extra or [])], content


def record(reference: str, *, case: str = CASE, amount: str = "250.00", record_id: str | None = None) -> dict[str, Any]:
    """A payment as the server would hold it (for `records=`)."""
    doc: dict[str, Any] = {
        "creditor": CREDITOR,
        "case": case,
        "amount": Decimal(amount),
        "currency": "SEK",
        "bank_transaction_date": "Tue, 07 Oct 2025 08:15:30 GMT",
        "creditor_payment_reference": reference,
        "origin": "creditor_system",
    }
    if record_id is not None:
        doc["_id"] = record_id
    return doc


def payment(reference: str | None = "PAY-LOOP-1", *, case: str = CASE, amount: str = "250.00") -> CreditorPayment:
    """The payment the tests send (it matches `record(reference)` field for field)."""
    return CreditorPayment(
        creditor=CREDITOR,
        case=case,
        amount=Decimal(amount),
        currency="SEK",
        bank_transaction_date=datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc),
        creditor_payment_reference=reference,
    )


def client(server: LoopbackAmili, *, read: float = 5.0, **policy: Any) -> AsyncAmiliClient:
    """An SDK client on the loopback server: its default (aiohttp) transport, short waits, a short settle window."""
    policy.setdefault("backoff_base", 0.001)
    policy.setdefault("settle_window", 0.05)
    return AsyncAmiliClient(
        auth=StaticTokenAuth(TOKEN),
        base_url=server.base_url,
        timeout=httpx.Timeout(5.0, read=read),
        retry=RetryPolicy(**policy),
    )
