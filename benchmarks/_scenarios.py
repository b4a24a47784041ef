"""One benchmark scenario, run in a fresh process by ``run.py``; prints one JSON result line.

    python benchmarks/_scenarios.py --scenario aiohttp --concurrency 64 --n 5000 --target target.json

``target.json`` describes the server: ``base_url``, ``kind`` ("fixed" or "amili"), ``creditor``,
``cases``, ``amount`` and either ``api_key`` (sent as is) or ``auth`` (api_code / private_key_pem /
algorithm, used to log in). Only the timed phase is measured: imports, client set-up, login and the warm-up
that opens the connections come before it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from _util import fetch_access_token, peak_rss_mb

PATH = "/creditor--payments"
BANK_DATE = "Tue, 07 Oct 2025 08:15:30 GMT"
BANK_DATETIME = datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc)

ASYNCIO_SCENARIOS = ("aiohttp", "httpx", "httpx_aiohttp", "transport", "sdk", "sdk_httpx")
TRIO_SCENARIOS = ("sdk_trio", "httpx_trio")
SCENARIOS = ASYNCIO_SCENARIOS + TRIO_SCENARIOS
SDK_SCENARIOS = ("sdk", "sdk_httpx", "sdk_trio")

# A sender takes the request number and returns the HTTP status (201 expected) or raises.
Send = Callable[[int], Awaitable[int]]


@dataclass
class Target:
    base_url: str
    kind: str
    creditor: str
    cases: list[str]
    amount: str
    tag: str  # makes payment references unique per run where the server remembers them
    api_key: str | None = None
    auth: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str) -> Target:
        with open(path) as fh:
            raw = json.load(fh)
        return cls(**raw)

    def resolve_api_key(self) -> None:
        """Raw clients send ``X-API-Key`` themselves: log in once, before anything is timed."""
        if self.api_key is None and self.auth is not None:
            self.api_key = fetch_access_token(
                self.base_url, self.auth["api_code"], self.auth["private_key_pem"], self.auth["algorithm"]
            )

    def case_for(self, i: int) -> str:
        return self.cases[i % len(self.cases)]

    def reference(self, i: int) -> str:
        return f"PAY-{self.tag}{i}"

    def body(self, i: int) -> dict[str, Any]:
        return {
            "creditor": self.creditor,
            "case": self.case_for(i),
            "amount": float(self.amount),
            "currency": "SEK",
            "bank_transaction_date": BANK_DATE,
            "origin": "creditor_system",
            "creditor_payment_reference": self.reference(i),
        }


@dataclass
class Tally:
    ok: int = 0
    errors: int = 0
    first_error: str | None = None

    def record(self, status: int | BaseException) -> None:
        if status == 201:
            self.ok += 1
            return
        self.errors += 1
        if self.first_error is None:
            self.first_error = _describe(status)


def _describe(outcome: object) -> str:
    if isinstance(outcome, BaseException):
        return f"{type(outcome).__module__}.{type(outcome).__qualname__}: {outcome}"[:500]
    return f"HTTP status {outcome}"


# --- the drivers: N calls of `send`, at most `concurrency` at a time --------------------------------------


async def drive_asyncio(send: Send, start: int, n: int, concurrency: int, tally: Tally) -> None:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with semaphore:
            return await send(i)

    outcomes = await asyncio.gather(*(one(i) for i in range(start, start + n)), return_exceptions=True)
    for outcome in outcomes:
        tally.record(outcome)


async def drive_trio(send: Send, start: int, n: int, concurrency: int, tally: Tally) -> None:
    import trio

    limiter = trio.CapacityLimiter(concurrency)

    async def one(i: int) -> None:
        async with limiter:
            try:
                outcome: int | BaseException = await send(i)
            except Exception as exc:
                outcome = exc
        tally.record(outcome)

    async with trio.open_nursery() as nursery:
        for i in range(start, start + n):
            nursery.start_soon(one, i)


# --- the scenarios: each opens its client and yields a sender for the client's lifetime --------------------


def _pool_size(concurrency: int) -> int:
    return max(concurrency, 100)


def _raw_headers(target: Target) -> dict[str, str]:
    assert target.api_key is not None, "raw clients need an API key (resolved before the loop starts)"
    return {"Content-Type": "application/json", "X-API-Key": target.api_key}


@asynccontextmanager
async def open_aiohttp(target: Target, concurrency: int) -> AsyncIterator[Send]:
    """Raw ``aiohttp.ClientSession``: the reference every ratio is taken against."""
    import aiohttp
    import orjson

    url = target.base_url.rstrip("/") + PATH
    headers = _raw_headers(target)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=_pool_size(concurrency)))

    async def send(i: int) -> int:
        async with session.post(url, data=orjson.dumps(target.body(i)), headers=headers) as resp:
            await resp.read()
            return resp.status

    try:
        yield send
    finally:
        await session.close()


@asynccontextmanager
async def _raw_httpx(target: Target, client: Any) -> AsyncIterator[Send]:
    import orjson

    url = target.base_url.rstrip("/") + PATH
    headers = _raw_headers(target)

    async def send(i: int) -> int:
        response = await client.post(url, content=orjson.dumps(target.body(i)), headers=headers)
        return int(response.status_code)

    try:
        yield send
    finally:
        await client.aclose()


def open_httpx(target: Target, concurrency: int) -> AbstractAsyncContextManager[Send]:
    """Raw ``httpx.AsyncClient()`` with default settings, on httpx's own transport (httpcore's pool)."""
    import httpx

    return _raw_httpx(target, httpx.AsyncClient())


def open_httpx_aiohttp(target: Target, concurrency: int) -> AbstractAsyncContextManager[Send]:
    """``httpx.AsyncClient`` over ``httpx_aiohttp.AiohttpTransport``."""
    import httpx
    import httpx_aiohttp

    limits = httpx.Limits(max_connections=_pool_size(concurrency))
    return _raw_httpx(target, httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport(limits=limits)))


def open_httpx_trio(target: Target, concurrency: int) -> AbstractAsyncContextManager[Send]:
    """Raw ``httpx.AsyncClient`` under trio, with the same pool size the SDK scenarios get."""
    import httpx

    return _raw_httpx(target, httpx.AsyncClient(limits=httpx.Limits(max_connections=_pool_size(concurrency))))


@asynccontextmanager
async def open_transport(target: Target, concurrency: int) -> AsyncIterator[Send]:
    """The SDK's default transport called raw (no SDK layer): `sdk` minus this is what the SDK costs."""
    import httpx
    import orjson

    from amili_async.transports import AmiliAiohttpTransport, exchange_for

    url = target.base_url.rstrip("/") + PATH
    headers = list(_raw_headers(target).items())
    transport = AmiliAiohttpTransport(limits=httpx.Limits(max_connections=_pool_size(concurrency)))
    exchange = exchange_for(transport)
    timeout = httpx.Timeout(30.0).as_dict()

    async def send(i: int) -> int:
        status, _, _ = await exchange("POST", url, headers, orjson.dumps(target.body(i)), timeout)
        return status

    try:
        yield send
    finally:
        await transport.aclose()


@asynccontextmanager
async def _sdk(target: Target, client_kwargs: dict[str, Any]) -> AsyncIterator[Send]:
    from amili_async import ApiCodeJwtAuth, AsyncAmiliClient, StaticTokenAuth

    auth: Any
    if target.auth is not None:
        auth = ApiCodeJwtAuth(
            api_code=target.auth["api_code"],
            private_key=target.auth["private_key_pem"],
            algorithm=target.auth["algorithm"],
        )
    else:
        auth = StaticTokenAuth(target.api_key or "bench-token")
    amount = Decimal(target.amount)

    async with AsyncAmiliClient(auth=auth, base_url=target.base_url, **client_kwargs) as amili:
        payments = amili.creditor_payments

        async def send(i: int) -> int:
            receipt = await payments.create(
                creditor=target.creditor,
                case=target.case_for(i),
                amount=amount,
                currency="SEK",
                bank_transaction_date=BANK_DATETIME,
                creditor_payment_reference=target.reference(i),
            )
            if not receipt.id:
                raise AssertionError(f"receipt without an id: {receipt!r}")
            return 201

        yield send


def open_sdk(target: Target, concurrency: int) -> AbstractAsyncContextManager[Send]:
    """The SDK on its default transport (aiohttp-backed on asyncio, httpx's own on trio)."""
    import httpx

    return _sdk(target, {"limits": httpx.Limits(max_connections=_pool_size(concurrency))})


def open_sdk_httpx(target: Target, concurrency: int) -> AbstractAsyncContextManager[Send]:
    """The SDK handed httpx's own transport."""
    import httpx

    limits = httpx.Limits(max_connections=_pool_size(concurrency))
    return _sdk(target, {"transport": httpx.AsyncHTTPTransport(limits=limits)})


OPENERS: dict[str, Callable[[Target, int], AbstractAsyncContextManager[Send]]] = {
    "aiohttp": open_aiohttp,
    "httpx": open_httpx,
    "httpx_aiohttp": open_httpx_aiohttp,
    "transport": open_transport,
    "sdk": open_sdk,
    "sdk_httpx": open_sdk_httpx,
    "sdk_trio": open_sdk,
    "httpx_trio": open_httpx_trio,
}


async def measure(name: str, target: Target, concurrency: int, n: int, warmup: int, trio_mode: bool) -> dict[str, Any]:
    drive = drive_trio if trio_mode else drive_asyncio
    warm = Tally()
    tally = Tally()
    async with OPENERS[name](target, concurrency) as send:
        # Warm-up: enough concurrent requests to open the connections the timed phase will use.
        await drive(send, 0, warmup, concurrency, warm)
        wall0 = time.perf_counter()
        cpu0 = time.process_time()
        await drive(send, warmup, n, concurrency, tally)
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "req_per_s": n / wall if wall > 0 else None,
        "cpu_us_per_req": cpu / n * 1e6,
        "ok": tally.ok,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "warmup_errors": warm.errors,
        "warmup_first_error": warm.first_error,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", required=True, choices=SCENARIOS)
    parser.add_argument("--target", required=True, help="path of the target JSON written by run.py")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=None, help="default: max(2 x concurrency, 20)")
    parser.add_argument("--uvloop", action="store_true", help="run asyncio scenarios on uvloop")
    parser.add_argument("--tag", default=None, help="prefix for payment references (unique per run)")
    args = parser.parse_args(argv)

    target = Target.load(args.target)
    if args.tag is not None:
        target.tag = args.tag
    warmup = args.warmup if args.warmup is not None else max(2 * args.concurrency, 20)
    trio_mode = args.scenario in TRIO_SCENARIOS
    result: dict[str, Any] = {
        "scenario": args.scenario,
        "server": target.kind,
        "concurrency": args.concurrency,
        "n": args.n,
        "warmup": warmup,
        "loop": "trio" if trio_mode else ("uvloop" if args.uvloop else "asyncio"),
    }
    coro_args = (args.scenario, target, args.concurrency, args.n, warmup, trio_mode)
    try:
        if args.scenario not in SDK_SCENARIOS:
            target.resolve_api_key()
        if trio_mode:
            import trio

            measured = trio.run(measure, *coro_args)
        elif args.uvloop:
            import uvloop

            measured = uvloop.run(measure(*coro_args))
        else:
            measured = asyncio.run(measure(*coro_args))
    except Exception as exc:
        result.update(errors=args.n, ok=0, first_error=_describe(exc), rss_mb=peak_rss_mb())
        print(json.dumps(result), flush=True)
        return 1
    result.update(measured)
    result["rss_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)
    return 0 if result["errors"] == 0 and result["warmup_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
