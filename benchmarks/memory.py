"""Does ``execute_many`` run in flat memory? M payments from a generator against the in-memory Amili.

    python benchmarks/memory.py [--counts 10000,100000,1000000] [--concurrency 64] [--json PATH]

Each M runs in a fresh process (the in-memory Amili in the same process, no sockets) and reports its peak
RSS, its RSS just before the run, RSS at ten checkpoints during it, and throughput. If memory is flat, the
peak barely moves from M=10^4 to M=10^6.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from _util import (  # noqa: E402
    REPO_ROOT,
    RESULTS_DIR,
    child_env,
    current_rss_mb,
    last_json_line,
    machine_info,
    parse_int_list,
    peak_rss_mb,
    probe,
    write_json,
)

DEFAULT_COUNTS = (10_000, 100_000, 1_000_000)
DEFAULT_JSON = RESULTS_DIR / "memory.json"
CASES = 64
# Ask the fake not to remember requests or documents, so that what grows (if anything) is the SDK's.
FAKE_FLAGS = {"record_requests": False, "keep_documents": False}
NEEDED = (
    "from amili_async.testing import FakeAmili\n"
    "from amili_async import CreditorPayment, AsyncAmiliClient\n"
    "assert hasattr(AsyncAmiliClient, 'execute_many'), 'AsyncAmiliClient has no execute_many'\n"
)


def _make_fake() -> tuple[Any, dict[str, bool]]:
    from amili_async.testing import FakeAmili

    accepted = inspect.signature(FakeAmili).parameters
    flags = {name: value for name, value in FAKE_FLAGS.items() if name in accepted}
    fake_kwargs: dict[str, Any] = dict(flags)
    return FakeAmili(seed=0, **fake_kwargs), flags


async def work(count: int, concurrency: int) -> dict[str, Any]:
    from amili_async import CreditorPayment

    fake, flags = _make_fake()
    creditor = fake.add_creditor()
    case_ids = [fake.add_case(creditor=creditor.id, capital=Decimal("1e9")) for _ in range(CASES)]
    when = datetime(2025, 10, 7, tzinfo=timezone.utc)
    amount = Decimal("1.00")

    def actions() -> Any:
        for i in range(count):
            yield CreditorPayment(
                creditor=creditor.id,
                case=case_ids[i % CASES],
                amount=amount,
                currency="SEK",
                bank_transaction_date=when,
                creditor_payment_reference=f"PAY-{i}",
            )

    done = errors = 0
    first_error: str | None = None
    checkpoints: list[float | None] = []
    every = max(count // 10, 1)
    async with fake.client(creditor) as amili:
        rss_before = current_rss_mb()
        wall0 = time.perf_counter()
        cpu0 = time.process_time()
        async for outcome in amili.execute_many(actions(), concurrency=concurrency):
            done += 1
            if outcome.error is not None:
                errors += 1
                if first_error is None:
                    first_error = f"{type(outcome.error).__name__}: {outcome.error}"[:500]
            if done % every == 0:
                checkpoints.append(current_rss_mb())
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
    return {
        "count": count,
        "concurrency": concurrency,
        "outcomes": done,
        "errors": errors,
        "first_error": first_error,
        "wall_s": wall,
        "cpu_s": cpu,
        "actions_per_s": done / wall if wall > 0 else None,
        "rss_before_mb": rss_before,
        "rss_checkpoints_mb": checkpoints,
        "peak_rss_mb": peak_rss_mb(),
        "fake_flags": flags,
    }


def run_worker(count: int, concurrency: int) -> int:
    try:
        result = asyncio.run(work(count, concurrency))
    except Exception as exc:
        print(json.dumps({"count": count, "error": f"{type(exc).__name__}: {exc}"[:1000]}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    ok = result["outcomes"] == count and result["errors"] == 0
    return 0 if ok else 1


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=parse_int_list, default=list(DEFAULT_COUNTS), help="comma list of M")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per M (default 600 + M/100)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return run_worker(args.worker, args.concurrency)

    ok, why = probe(NEEDED)
    if not ok:
        print(f"note: memory benchmark skipped, the SDK or its in-memory Amili is not there yet: {why}")
        return 0

    results: list[dict[str, Any]] = []
    failures: list[str] = []
    warned = False
    for count in args.counts:
        timeout = args.timeout if args.timeout is not None else 600.0 + count / 100.0
        argv_child = [sys.executable, str(Path(__file__).resolve()), "--worker", str(count)]
        argv_child += ["--concurrency", str(args.concurrency)]
        try:
            proc = subprocess.run(
                argv_child,
                capture_output=True,
                text=True,
                env=child_env(),
                cwd=REPO_ROOT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            failures.append(f"M={count}: timed out after {timeout:.0f} s")
            print(f"M={count:,}: FAILED, timed out", file=sys.stderr)
            continue
        result = last_json_line(proc.stdout) or {"count": count, "error": proc.stderr.strip()[-1000:]}
        result["returncode"] = proc.returncode
        results.append(result)
        if proc.returncode != 0:
            failures.append(
                f"M={count}: {result.get('error') or result.get('first_error')} "
                f"({result.get('errors', '?')} errors, {result.get('outcomes', '?')} outcomes)"
            )
        print(
            f"M={count:,}: peak {_fmt(result.get('peak_rss_mb'), '.1f')} MB, "
            f"{_fmt(result.get('actions_per_s'), ',.0f')} actions/s",
            file=sys.stderr,
        )
        missing = sorted(set(FAKE_FLAGS) - set(result.get("fake_flags") or FAKE_FLAGS))
        if missing and not warned:
            warned = True
            print(f"note: FakeAmili does not take {', '.join(missing)} yet: its own storage is in the numbers")

    print(f"\nexecute_many over a generator, concurrency {args.concurrency}, in-memory Amili in process\n")
    print("| M | peak RSS MB | RSS before run MB | actions/s | errors |")
    print("|--:|--:|--:|--:|--:|")
    for r in results:
        print(
            f"| {r['count']:,} | {_fmt(r.get('peak_rss_mb'), '.1f')} | {_fmt(r.get('rss_before_mb'), '.1f')} "
            f"| {_fmt(r.get('actions_per_s'), ',.0f')} | {r.get('errors', '—')} |"
        )
    for line in failures:
        print(f"FAILED {line}")
    write_json(args.json, {"machine": machine_info(), "concurrency": args.concurrency, "results": results})
    print(f"\nJSON: {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
