"""``python -m amili_async.testing serve``: the fake on a loopback port, seeded, for demos and benchmarks.

It prints one JSON line (base URL, credentials, case ids), then serves until SIGTERM or SIGINT; with
``--stats`` it prints a second line on the way out (token requests, answers by status, payments stored).
uvloop is used when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections import Counter
from collections.abc import Coroutine, Sequence
from decimal import Decimal
from typing import Any

import orjson

from ._limits import RateLimit
from .fake import FakeAmili
from .server import start_server


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m amili_async.testing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the in-memory Amili over HTTP/1.1")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port (see base_url)")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--cases", type=int, default=100, help="cases to seed for the creditor")
    serve.add_argument("--token-lifetime", type=float, default=3600.0, help="seconds")
    serve.add_argument(
        "--single-active-token", action="store_true", help="a new login revokes the account's older tokens"
    )
    serve.add_argument(
        "--rate-limit", type=int, default=None, metavar="N", help="N requests per second per account (default: none)"
    )
    serve.add_argument(
        "--rate-limit-style", choices=["eve", "retry-after"], default="eve", help="how a refusal reads (see _limits)"
    )
    serve.add_argument(
        "--stats", action="store_true", help="on shutdown, print a second JSON line: token requests, statuses, ..."
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeAmili(
        seed=args.seed,
        token_lifetime=args.token_lifetime,
        record_requests=False,
        single_active_token=args.single_active_token,
    )
    if args.rate_limit is not None:
        fake.rate_limit(RateLimit(args.rate_limit, args.rate_limit_style))
    creditor = fake.add_creditor(name="Benchmark Creditor AB")
    cases = [fake.add_case(creditor.id, capital=Decimal("10000.00")) for _ in range(args.cases)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    async with await start_server(fake, args.host, args.port) as server:
        line = {
            "base_url": server.base_url,
            "creditor": creditor.id,
            "account": creditor.account,
            "api_code": creditor.api_code,
            "private_key_pem": creditor.private_key_pem,
            "algorithm": creditor.algorithm,
            "cases": cases,
        }
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()
        await stop.wait()
    if args.stats:
        sys.stdout.write(orjson.dumps(_stats(fake)).decode() + "\n")
        sys.stdout.flush()


def _stats(fake: FakeAmili) -> dict[str, Any]:
    """What the server saw: logins, answers by status, payments stored and references stored twice."""
    references = Counter(p.get("creditor_payment_reference") for p in fake.payments)
    references.pop(None, None)
    return {
        "token_requests": fake.token_requests,
        "tokens_issued": fake.tokens_issued,
        "statuses": {str(status): n for status, n in sorted(fake.statuses.items())},
        "payments": len(fake.payments),
        "references": len(references),
        "duplicate_references": sum(1 for n in references.values() if n > 1),
    }


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
