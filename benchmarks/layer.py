"""CPU per call of the SDK layer alone, with and without OpenTelemetry: no network, no server.

    python benchmarks/layer.py [--n 20000] [--rounds 7] [--otel none,api,sdk] [--tree PATH ...] [--json PATH]

Each measurement is a fresh process running N sequential `creditor_payments.create(...)` calls on asyncio.
The transport answers a canned 201 receipt from its `exchange` method, the seam the SDK uses for its own
aiohttp transport, so what is timed is the SDK's own work: validation, serialisation, the token cache, the
pipeline, request ids and telemetry, decoding the receipt. `time.process_time()` over the timed calls,
divided by N, is the figure.

`--otel` modes (what the application has done before the client runs):

- `none`: OpenTelemetry cannot be imported (as if the `[otel]` extra were not installed);
- `api`: `opentelemetry.trace` and `opentelemetry.metrics` are imported, no SDK is configured;
- `sdk`: the OpenTelemetry SDK is configured: a `TracerProvider` with one span processor that drops the
  spans, and a `MeterProvider` with an in-memory reader: the cost of building spans and recording metrics.

`--tree PATH` measures the `amili_async` of another source tree too (e.g. `git archive main | tar -x -C
/tmp/main`), for a before/after comparison in the same rounds; the default is this repository. Rounds
alternate over every (tree, mode) pair in an order rotated by the round; the table shows the median µs per
call and, per tree, the difference to its `none` mode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from _util import REPO_ROOT, RESULTS_DIR, last_json_line, machine_info, median, parse_name_list, write_json  # noqa: E402

MODES = ("none", "api", "sdk")
DEFAULT_JSON = RESULTS_DIR / "layer.json"
RECEIPT = (
    b'{"_id":"674dbeb208847b9501cc9999","_etag":"e1","_created":"Tue, 07 Oct 2025 08:15:31 GMT",'
    b'"_updated":"Tue, 07 Oct 2025 08:15:31 GMT","_status":"OK","status":"completed",'
    b'"_payment_status":"completed","settled_amount":250.0,"amount":250.0,"currency":"SEK",'
    b'"creditor_payment_reference":"PAY-1"}'
)


def _prepare(mode: str) -> None:
    """Put the process in the state `mode` describes, before amili_async is imported."""
    if mode == "none":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]  # `import opentelemetry` raises
    elif mode == "api":
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
    elif mode == "sdk":
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SpanProcessor())  # receives every span, keeps none
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    else:
        raise ValueError(f"unknown mode {mode!r}")


async def _measure(n: int, warmup: int) -> dict[str, Any]:
    from datetime import datetime, timezone
    from decimal import Decimal

    from amili_async import AsyncAmiliClient, StaticTokenAuth
    from amili_async.transports import _transport_class

    headers = {"Content-Type": "application/json"}

    class Canned(_transport_class()):  # type: ignore[misc]
        async def exchange(self, method: str, url: str, headers_: Any, body: Any, timeout: Any) -> Any:
            return 201, headers, RECEIPT

    paid = datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc)
    amount = Decimal("250.00")
    async with AsyncAmiliClient(
        auth=StaticTokenAuth("bench-token"), base_url="https://api.amili.test", transport=Canned()
    ) as amili:
        create = amili.creditor_payments.create

        async def calls(count: int) -> None:
            for i in range(count):
                await create(
                    creditor="674dbeb208847b9501cc9138",
                    case="68e4c40d93ee14723d28fa95",
                    amount=amount,
                    currency="SEK",
                    bank_transaction_date=paid,
                    creditor_payment_reference=f"PAY-{i}",
                )

        await calls(warmup)
        cpu = time.process_time()
        await calls(n)
        cpu = time.process_time() - cpu
    import amili_async

    loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m] is not None)
    return {"us_per_call": cpu / n * 1e6, "opentelemetry_modules": len(loaded), "sdk_from": amili_async.__file__}


def child(mode: str, n: int, warmup: int) -> None:
    _prepare(mode)
    result = asyncio.run(_measure(n, warmup))
    print(json.dumps({"mode": mode, **result}), flush=True)


def _run_child(tree: Path, mode: str, n: int, warmup: int) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONHASHSEED"] = "0"  # the same dict layouts in every run: less noise between processes
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--n", str(n), "--warmup", str(warmup)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tree, timeout=600, check=False)
    result = last_json_line(done.stdout)
    if done.returncode != 0 or result is None:
        return {"error": (done.stderr or done.stdout).strip()[-1500:]}
    return result


def run(*, n: int, rounds: int, modes: list[str], trees: list[Path], warmup: int, out: Any = print) -> dict[str, Any]:
    pairs = [(tree, mode) for tree in trees for mode in modes]
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        k = r % len(pairs)
        for tree, mode in pairs[k:] + pairs[:k]:
            result = _run_child(tree, mode, n, warmup)
            runs.append({"round": r, "tree": str(tree), "mode": mode, **result})
            shown = f"{result['us_per_call']:.1f} µs" if "us_per_call" in result else f"failed: {result['error']}"
            print(f"round {r + 1}/{rounds} {tree.name or tree} {mode}: {shown}", file=sys.stderr, flush=True)
    rows = []
    for tree, mode in pairs:
        mine = [x["us_per_call"] for x in runs if x["tree"] == str(tree) and x["mode"] == mode and "us_per_call" in x]
        rows.append({"tree": str(tree), "mode": mode, "us_per_call": median(mine), "runs": len(mine)})
    for row in rows:
        base = next((b for b in rows if b["tree"] == row["tree"] and b["mode"] == "none"), None)
        ok = base and base["us_per_call"] is not None and row["us_per_call"] is not None
        row["vs_none_us"] = row["us_per_call"] - base["us_per_call"] if ok else None  # type: ignore[index]
    out(f"N={n:,} sequential calls per run, {rounds} round(s), median µs of SDK-layer CPU per call\n")
    out("| tree | otel | µs/call | vs none | runs |")
    out("|---|---|--:|--:|--:|")
    for row in rows:
        us = "—" if row["us_per_call"] is None else f"{row['us_per_call']:.1f}"
        delta = "—" if row["vs_none_us"] is None else f"{row['vs_none_us']:+.1f}"
        out(f"| {row['tree']} | {row['mode']} | {us} | {delta} | {row['runs']}/{rounds} |")
    return {
        "machine": machine_info(),
        "settings": {"n": n, "rounds": rounds, "warmup": warmup},
        "runs": runs,
        "medians": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="timed calls per run (default 20000)")
    parser.add_argument("--warmup", type=int, default=2_000, help="untimed calls first (default 2000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds over every (tree, mode) (default 7)")
    parser.add_argument("--otel", type=parse_name_list, default=list(MODES), help="comma list of none,api,sdk")
    parser.add_argument("--tree", type=Path, action="append", help="source tree(s) to measure (default: this one)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.n, args.warmup)
        return 0
    unknown = [m for m in args.otel if m not in MODES]
    if unknown:
        parser.error(f"unknown --otel mode(s) {unknown}; known: {', '.join(MODES)}")
    trees = [t.resolve() for t in (args.tree or [REPO_ROOT])]
    report = run(n=args.n, rounds=args.rounds, modes=args.otel, trees=trees, warmup=args.warmup)
    write_json(args.json, report)
    failed = [x for x in report["runs"] if "error" in x]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
