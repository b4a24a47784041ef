"""CPU per call of the SDK layer alone, with and without OpenTelemetry: no network, no server.

    python benchmarks/layer.py [--n 20000] [--rounds 7] [--otel none,api,sdk] [--tree PATH ...] [--json PATH]
    python benchmarks/layer.py --instructions [--otel none,stubbed] [--tree PATH ...]

Each measurement is a fresh process running N sequential `creditor_payments.create(...)` calls on asyncio.
The transport answers a canned 201 receipt from its `exchange` method, the seam the SDK uses for its own
aiohttp transport, so what is timed is the SDK's own work: validation, serialisation, the token cache, the
pipeline, request ids and telemetry, decoding the receipt. `time.process_time()` over the timed calls,
divided by N, is the figure.

`--otel` modes (what the application has done before the client runs):

- `none`: OpenTelemetry cannot be imported (as if the `[otel]` extra were not installed);
- `api`: `opentelemetry.trace` and `opentelemetry.metrics` are imported, no SDK is configured;
- `sdk`: the OpenTelemetry SDK is configured: a `TracerProvider` with one span processor that drops the
  spans, and a `MeterProvider` with an in-memory reader: the cost of building spans and recording metrics;
- `stubbed`: as `none`, and the call's own telemetry (its request id, its operation record, the hooks the
  pipeline calls) replaced by no-ops: what a call would cost without them (this tree's `_telemetry` only).

`--instructions` counts CPU instructions instead of timing (`valgrind --tool=callgrind`, which must be
installed): each (tree, mode) runs twice, with N/5 and N calls, and the difference of the two counts divided
by the difference of the calls is the figure. The count does not move with the machine's load, so one round
says what many timed rounds only approach: use it for differences of a few percent.

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
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from _util import REPO_ROOT, RESULTS_DIR, last_json_line, machine_info, median, parse_name_list, write_json  # noqa: E402

MODES = ("none", "api", "sdk", "stubbed")
DEFAULT_JSON = RESULTS_DIR / "layer.json"
RECEIPT = (
    b'{"_id":"674dbeb208847b9501cc9999","_etag":"e1","_created":"Tue, 07 Oct 2025 08:15:31 GMT",'
    b'"_updated":"Tue, 07 Oct 2025 08:15:31 GMT","_status":"OK","status":"completed",'
    b'"_payment_status":"completed","settled_amount":250.0,"amount":250.0,"currency":"SEK",'
    b'"creditor_payment_reference":"PAY-1"}'
)


def _prepare(mode: str) -> None:
    """Put the process in the state `mode` describes, before amili_async is imported."""
    if mode in ("none", "stubbed"):
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]  # `import opentelemetry` raises
        if mode == "stubbed":
            _stub_telemetry()
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


def _stub_telemetry() -> None:
    """Every call's own telemetry as no-ops: a constant request id, no operation record, no hooks' work."""
    from amili_async import _telemetry

    def start(op: Any, telemetry: Any, name: str, method: str, path: str, write: Any = None, *_: Any) -> None:
        op.name, op.method, op.path, op.kind, op.debug = name, method, path, None, False
        op.write = method != "GET" if write is None else write
        op.request_id, op.server_request_id, op.attempt, op.sends, op.status = "0" * 32, None, 0, 0, None
        op.started = time.monotonic()  # the call's deadline is counted from it

    _telemetry.Operation.__init__ = start  # type: ignore[method-assign]
    _telemetry.Operation.__enter__ = lambda op: op  # type: ignore[method-assign]
    _telemetry.Operation.__exit__ = lambda op, *exc: None  # type: ignore[method-assign]
    _telemetry.attempt = lambda *args, **kwargs: None


async def _measure(n: int, warmup: int) -> dict[str, Any]:
    from datetime import datetime, timezone
    from decimal import Decimal

    from amili_async import AsyncAmiliClient, StaticTokenAuth
    from amili_async.transports import _transport_class

    headers = {"Content-Type": "application/json"}

    ids: set[str | None] | None = set()  # the X-Request-IDs sent during the warm-up (not timed)

    class Canned(_transport_class()):  # type: ignore[misc]
        async def exchange(self, method: str, url: str, headers_: Any, body: Any, timeout: Any) -> Any:
            if ids is not None:
                ids.add(dict(headers_).get("X-Request-ID"))
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
        request_ids, ids = len(ids), None
        cpu = time.process_time()
        await calls(n)
        cpu = time.process_time() - cpu
    import amili_async

    loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m] is not None)
    return {
        "us_per_call": cpu / n * 1e6,
        "opentelemetry_modules": len(loaded),
        "sdk_from": amili_async.__file__,
        "distinct_request_ids": request_ids,  # in the warm-up: one per call, or 1 when stubbed
    }


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


def _count_child(tree: Path, mode: str, n: int, warmup: int) -> dict[str, Any]:
    """Instructions per call: two runs under callgrind (N/5 and N calls); the difference per extra call."""
    counts = []
    small = max(1, n // 5)
    for calls in (small, n):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONHASHSEED"] = "0"
        script = str(Path(__file__).resolve())
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, script]
        argv += ["--child", mode, "--n", str(calls), "--warmup", str(warmup)]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tree, timeout=1800, check=False)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or found is None:
            return {"error": (done.stderr or done.stdout).strip()[-1500:]}
        counts.append(int(found.group(1)))
    return {"instructions_per_call": (counts[1] - counts[0]) / (n - small)}


def count(*, n: int, modes: list[str], trees: list[Path], warmup: int, out: Any = print) -> dict[str, Any]:
    """`--instructions`: one count per (tree, mode), deterministic enough that one round is the figure."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (e.g. apt-get install valgrind)")
    rows = []
    for tree in trees:
        for mode in modes:
            result = _count_child(tree, mode, n, warmup)
            rows.append({"tree": str(tree), "mode": mode, **result})
            shown = result.get("instructions_per_call", result.get("error"))
            print(f"{tree.name or tree} {mode}: {shown}", file=sys.stderr, flush=True)
    first = rows[0].get("instructions_per_call")
    out(f"instructions per call (valgrind --tool=callgrind; {n // 5:,} and {n:,} calls per count)\n")
    out("| tree | otel | instructions/call | vs first row |")
    out("|---|---|--:|--:|")
    for row in rows:
        mine = row.get("instructions_per_call")
        if mine is None:
            out(f"| {row['tree']} | {row['mode']} | failed | |")
            continue
        delta = f"{(mine / first - 1) * 100:+.1f}%" if first else ""
        out(f"| {row['tree']} | {row['mode']} | {mine / 1000:,.1f}k | {delta} |")
    return {"machine": machine_info(), "settings": {"n": n, "warmup": warmup, "count": "instructions"}, "runs": rows}


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
    modes_help = "comma list of none,api,sdk,stubbed (default none,api,sdk)"
    parser.add_argument("--otel", type=parse_name_list, default=["none", "api", "sdk"], help=modes_help)
    parser.add_argument("--tree", type=Path, action="append", help="source tree(s) to measure (default: this one)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    parser.add_argument("--instructions", action="store_true", help="count instructions with callgrind instead")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.n, args.warmup)
        return 0
    unknown = [m for m in args.otel if m not in MODES]
    if unknown:
        parser.error(f"unknown --otel mode(s) {unknown}; known: {', '.join(MODES)}")
    trees = [t.resolve() for t in (args.tree or [REPO_ROOT])]
    if args.instructions:
        report = count(n=args.n, modes=args.otel, trees=trees, warmup=args.warmup)
    else:
        report = run(n=args.n, rounds=args.rounds, modes=args.otel, trees=trees, warmup=args.warmup)
    write_json(args.json, report)
    failed = [x for x in report["runs"] if "error" in x]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
