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

from .fake import FakeAmili
from .faults import Fault
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
        "--latency", type=float, default=0.0, help="seconds every write waits for its answer (after it commits)"
    )
    serve.add_argument(
        "--rate-limit",
        type=_rate_limit,
        metavar="LIMIT[/SECONDS]",
        help="an Eve-style limiter: X-RateLimit-* headers on every answer, 429 over LIMIT requests per window",
    )
    serve.add_argument(
        "--stats", action="store_true", help="on shutdown, print a second JSON line: token requests, statuses, ..."
    )
    return parser


def _rate_limit(text: str) -> tuple[int, float]:
    limit, _, period = text.partition("/")
    try:
        parsed = int(limit), float(period or "1")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LIMIT or LIMIT/SECONDS, got {text!r}") from None
    if parsed[0] < 1 or parsed[1] <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive LIMIT and SECONDS, got {text!r}")
    return parsed


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeAmili(
        seed=args.seed,
        token_lifetime=args.token_lifetime,
        record_requests=False,
        rate_limit=args.rate_limit,
        single_active_token=args.single_active_token,
    )
    creditor = fake.add_creditor(name="Benchmark Creditor AB")
    # Case i has invoice number INV-i, as in `amili ... --fake` (where it is case @i).
    cases = [
        fake.add_case(creditor.id, capital=Decimal("10000.00"), invoice_number=f"INV-{i}") for i in range(args.cases)
    ]
    if args.latency > 0:
        fake.inject(Fault("latency", method="POST", seconds=args.latency))
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
