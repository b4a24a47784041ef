"""A raw loopback API that rate-limits like real servers do and keeps what it stored (tests and benchmarks).

Not the in-memory Amili: a few dozen lines of asyncio streams, HTTP/1.1 keep-alive, 127.0.0.1 only.

Limits (one counter per caller for every API request, as Eve's limiter keys on the user, not the method):

- ``eve``: Eve's `RateLimit` with a period of one second: windows aligned to the clock (`int(time) + 1`),
  `limit` requests each. An answer inside the limit carries `X-RateLimit-Remaining/-Limit/-Reset` (epoch
  seconds); the 429 is Eve's bare envelope with no header at all (Eve's decorator aborts before it stores the
  limit the headers are written from).
- ``retry-after``: a token bucket, `limit` per second with a burst of `burst`, and a 429 with `Retry-After: 1`
  and nothing else (a gateway's limiter).
- ``none``: no limit.

Faults: `outage_after=N` revokes every token once N payments are stored and answers the token endpoint with an
HTML 503 for `outage` seconds. `refuse_tokens` answers 401 to every token the endpoint issues.

What it stored: `payments` (reference -> times stored), counters by status in `stats`. As a script
(`python limiter_server.py --mode eve --limit 150`) it prints `{"port": N}`, serves until its stdin closes,
and answers `GET /_stats` (never limited) with its counters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN_PATH = "/authenticates/api-code"
PAYMENTS = "/creditor--payments"
EVE_429 = {"_status": "ERR", "_error": {"code": 429, "message": "Rate limit exceeded"}}
EVE_401 = {"_status": "ERR", "_error": {"code": 401, "message": "Please provide proper credentials"}}


class LimiterServer:
    def __init__(
        self,
        mode: str = "eve",
        limit: int = 150,
        *,
        burst: int = 20,
        token_lifetime: int = 3600,
        outage_after: int | None = None,
        outage: float = 1.5,
        refuse_tokens: bool = False,
        lifetime: float = 600.0,
    ) -> None:
        self.mode, self.limit, self.burst = mode, limit, burst
        self.token_lifetime = token_lifetime
        self.outage_after, self.outage, self.refuse_tokens = outage_after, outage, refuse_tokens
        self.lifetime = lifetime
        self.tokens: set[str] = set()
        self.payments: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.windows: dict[int, int] = {}  # eve: requests counted in each window (by its reset)
        self.outage_until = 0.0
        self._window = (0, 0)  # (window end in epoch seconds, requests counted in it)
        self._bucket = (float(burst), time.monotonic())
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> LimiterServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        asyncio.get_running_loop().call_later(self.lifetime, self._server.close)  # stops by itself
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def summary(self) -> dict[str, Any]:
        return {
            "stored": sum(self.payments.values()),
            "references": len(self.payments),
            "duplicates": sum(n - 1 for n in self.payments.values() if n > 1),
            "windows": sorted(self.windows.values()),
            **self.stats,
        }

    # -- HTTP -----------------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, extra, payload = self.handle(method, target, headers, body)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                kind = "text/html" if isinstance(payload, bytes) else "application/json"
                head_out = f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {len(raw)}\r\n"
                head_out += "".join(f"{k}: {v}\r\n" for k, v in extra)
                writer.write(head_out.encode() + b"\r\n" + raw)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, list, Any]:
        url = urlsplit(target)
        if url.path == "/_stats":
            return 200, [], self.summary()
        if url.path == TOKEN_PATH:
            self.stats["token_requests"] += 1
            if time.monotonic() < self.outage_until:
                return 503, [], b"<html><body><h1>503 Service Unavailable</h1></body></html>"
            token = f"tok-{self.stats['token_requests']}"
            self.tokens.add(token)
            return 200, [], {"token": token, "expires_in": self.token_lifetime}
        if headers.get("x-api-key") not in self.tokens or self.refuse_tokens:
            self.stats["401"] += 1
            return 401, [("WWW-Authenticate", 'Basic realm="eve"')], EVE_401
        limited, extra = self._limit()
        if limited is not None:
            self.stats["429"] += 1
            return 429, limited, EVE_429
        if method == "POST" and url.path == PAYMENTS:
            return self._store(json.loads(body), extra)
        if method == "GET" and url.path == PAYMENTS:  # a reconciliation look-up by reference
            where = json.loads(parse_qs(url.query)["where"][0])
            ref = where.get("creditor_payment_reference")
            items = [self._receipt(ref)] if ref in self.payments else []
            return 200, extra, {"_items": items, "_meta": {"page": 1, "max_results": 2, "total": len(items)}}
        return 404, [], {"_status": "ERR", "_error": {"code": 404, "message": "Not Found"}}

    # -- the limit, the store, the outage -------------------------------------------------------------------

    def _limit(self) -> tuple[list[tuple[str, str]] | None, list[tuple[str, str]]]:
        """(headers of a 429, or None when the request may pass; headers for an answer that passes)."""
        if self.mode == "eve":
            reset = int(time.time()) + 1
            end, count = self._window
            count = count + 1 if end == reset else 1
            self._window = (reset, count)
            self.windows[reset] = count
            if count > self.limit:
                return [], []
            return None, [
                ("X-RateLimit-Remaining", str(self.limit - count)),
                ("X-RateLimit-Limit", str(self.limit)),
                ("X-RateLimit-Reset", str(reset)),
            ]
        if self.mode == "retry-after":
            level, then = self._bucket
            now = time.monotonic()
            level = min(float(self.burst), level + (now - then) * self.limit)
            if level < 1:
                self._bucket = (level, now)
                return [("Retry-After", "1")], []
            self._bucket = (level - 1, now)
        return None, []

    def _store(self, doc: dict[str, Any], extra: list[tuple[str, str]]) -> tuple[int, list, Any]:
        ref = doc["creditor_payment_reference"]
        self.payments[ref] += 1
        self.stats["201"] += 1
        if self.outage_after is not None and sum(self.payments.values()) == self.outage_after:
            self.tokens.clear()  # tokens revoked mid-batch, and the endpoint that renews them is down
            self.outage_until = time.monotonic() + self.outage
        return 201, extra, self._receipt(ref)

    @staticmethod
    def _receipt(ref: str) -> dict[str, Any]:
        oid = f"{abs(hash(ref)) % 16**24:024x}"
        return {"_id": oid, "_status": "OK", "_payment_status": "completed", "creditor_payment_reference": ref}


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="eve", choices=["eve", "retry-after", "none"])
    parser.add_argument("--limit", type=int, default=150)
    parser.add_argument("--burst", type=int, default=20)
    args = parser.parse_args()

    async def serve() -> None:
        server = await LimiterServer(args.mode, args.limit, burst=args.burst, lifetime=3600).start()
        print(json.dumps({"port": server.port}), flush=True)
        # Serve until the parent goes away (stdin closes).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(serve())


if __name__ == "__main__":
    _main()
