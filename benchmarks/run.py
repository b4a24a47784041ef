"""Throughput and client cost of many small JSON POSTs: raw HTTP clients vs the amili-async SDK.

    python benchmarks/run.py [--n 5000] [--rounds 5] [--concurrency 1,64,256] [--scenarios a,b,...]
                             [--server fixed,amili] [--json benchmarks/results/latest.json] [--quick]

Servers run in their own processes on 127.0.0.1; every measurement is a fresh client process. Rounds
alternate: round r runs every scenario once per server and concurrency, in an order rotated by r, so that
ratios compare runs taken side by side on a noisy machine. The report is a markdown table on stdout (progress
goes to stderr) and a JSON file with every run, the medians and the machine facts.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # so that ``run`` is importable from outside the benchmarks directory too
    sys.path.insert(0, str(_HERE))

from _scenarios import SCENARIOS, SDK_SCENARIOS, TRIO_SCENARIOS  # noqa: E402
from _servers import (  # noqa: E402
    ServerProcess,
    ServerStartError,
    amili_module_available,
    start_amili,
    start_fixed,
)
from _util import (  # noqa: E402
    BENCH_DIR,
    REPO_ROOT,
    RESULTS_DIR,
    child_env,
    last_json_line,
    machine_info,
    median,
    parse_int_list,
    parse_name_list,
    probe,
    sdk_available,
    write_json,
)

SERVERS = ("fixed", "amili")
DEFAULT_JSON = RESULTS_DIR / "latest.json"
REFERENCE_SCENARIO = "aiohttp"
# (n, rounds, concurrency levels) when not given: the full run, and --quick for smoke tests
FULL = (5000, 5, (1, 64, 256))
QUICK = (200, 1, (4,))

# What the fixed server is sent (it answers the same receipt to anything).
FIXED_CREDITOR = "674dbeb208847b9501cc9138"
FIXED_CASES = ["68e4c40d93ee14723d28fa95", "68e4c40d93ee14723d28fa96", "68e4c40d93ee14723d28fa97"]
# Against the in-memory Amili: tiny payments spread over the seeded cases, so no case is paid off.
AMILI_AMOUNT = "0.01"

Printer = Callable[[str], None]


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _as_id(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("_id", "id"):
            if isinstance(value.get(key), str):
                return str(value[key])
        raise ValueError(f"no id in {value!r}")
    return str(value)


def _target_for(server: ServerProcess) -> dict[str, Any]:
    info = server.info
    if server.name == "fixed":
        return {
            "base_url": info["base_url"],
            "kind": "fixed",
            "creditor": FIXED_CREDITOR,
            "cases": FIXED_CASES,
            "amount": "250.00",
            "tag": "",
            "api_key": "bench-token",
        }
    cases = [_as_id(case) for case in info.get("cases") or []]
    if not cases:
        raise ServerStartError("the amili server announced no cases")
    return {
        "base_url": info["base_url"],
        "kind": "amili",
        "creditor": _as_id(info["creditor"]),
        "cases": cases,
        "amount": AMILI_AMOUNT,
        "tag": "",
        "auth": {
            "api_code": info["api_code"],
            "private_key_pem": info["private_key_pem"],
            "algorithm": info.get("algorithm") or "ES256",
        },
    }


def _rotated(items: Sequence[str], by: int) -> list[str]:
    if not items:
        return []
    k = by % len(items)
    return [*items[k:], *items[:k]]


def _schedule(
    rounds: int, servers: Sequence[str], concurrency: Sequence[int], scenarios: Sequence[str]
) -> Iterator[tuple[int, str, int, int, str]]:
    """(round, server, concurrency, position, scenario) in run order: every round runs each scenario once
    per server and concurrency, in an order rotated by the round number."""
    for r in range(rounds):
        for server in servers:
            for c in concurrency:
                for position, scenario in enumerate(_rotated(scenarios, r)):
                    yield r, server, c, position, scenario


def _run_one(
    *,
    scenario: str,
    server: ServerProcess,
    target_file: Path,
    concurrency: int,
    n: int,
    warmup: int | None,
    tag: str,
    use_uvloop: bool,
    timeout: float,
) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(BENCH_DIR / "_scenarios.py"),
        "--scenario",
        scenario,
        "--target",
        str(target_file),
        "--concurrency",
        str(concurrency),
        "--n",
        str(n),
        "--tag",
        tag,
    ]
    if warmup is not None:
        argv += ["--warmup", str(warmup)]
    if use_uvloop:
        argv.append("--uvloop")
    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=child_env(),
            cwd=REPO_ROOT,
            timeout=timeout,
            check=False,
            start_new_session=True,  # a terminal Ctrl-C reaches the runner only; run() kills the child
        )
    except subprocess.TimeoutExpired:
        return {"errors": n, "ok": 0, "first_error": f"timed out after {timeout:.0f} s", "returncode": None}
    cpu_after = server.cpu_seconds()
    result = last_json_line(proc.stdout)
    if result is None:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        result = {"errors": n, "ok": 0, "first_error": f"no result line (exit {proc.returncode}): {tail}"}
    result["returncode"] = proc.returncode
    result["process_s"] = round(time.perf_counter() - started, 3)
    if cpu_before is not None and cpu_after is not None and result.get("ok"):
        handled = n + int(result.get("warmup", 0))
        result["server_cpu_us_per_req"] = (cpu_after - cpu_before) / handled * 1e6
    return result


def _succeeded(result: dict[str, Any]) -> bool:
    return (
        result.get("returncode") == 0
        and result.get("errors") == 0
        and not result.get("warmup_errors")
        and result.get("req_per_s") is not None
    )


def summarise(runs: list[dict[str, Any]], reference: str = REFERENCE_SCENARIO) -> list[dict[str, Any]]:
    """Medians per (server, scenario, concurrency), plus the throughput ratio to ``reference``: the median
    of per-round ratios (each pair measured back to back) and the ratio of the medians."""
    good = [r for r in runs if _succeeded(r)]
    keys: list[tuple[str, str, int]] = []
    for r in runs:
        key = (r["server"], r["scenario"], r["concurrency"])
        if key not in keys:
            keys.append(key)
    reference_by_round = {
        (r["server"], r["concurrency"], r["round"]): r["req_per_s"] for r in good if r["scenario"] == reference
    }
    rows: list[dict[str, Any]] = []
    for server, scenario, concurrency in keys:
        mine = [r for r in good if (r["server"], r["scenario"], r["concurrency"]) == (server, scenario, concurrency)]
        attempted = sum(
            1 for r in runs if (r["server"], r["scenario"], r["concurrency"]) == (server, scenario, concurrency)
        )
        row: dict[str, Any] = {
            "server": server,
            "scenario": scenario,
            "concurrency": concurrency,
            "rounds_ok": len(mine),
            "rounds_run": attempted,
            "req_per_s": median(r["req_per_s"] for r in mine),
            "cpu_us_per_req": median(r["cpu_us_per_req"] for r in mine),
            "peak_rss_mb": max((r["rss_mb"] for r in mine), default=None),
            "server_cpu_us_per_req": median(
                r["server_cpu_us_per_req"] for r in mine if r.get("server_cpu_us_per_req") is not None
            ),
        }
        paired = [
            r["req_per_s"] / reference_by_round[(server, concurrency, r["round"])]
            for r in mine
            if (server, concurrency, r["round"]) in reference_by_round
        ]
        row["ratio_to_aiohttp"] = median(paired)
        ref_median = median(v for (s, c, _), v in reference_by_round.items() if (s, c) == (server, concurrency))
        row["ratio_of_medians_to_aiohttp"] = (
            row["req_per_s"] / ref_median if row["req_per_s"] is not None and ref_median else None
        )
        rows.append(row)
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def render_table(rows: list[dict[str, Any]], servers: dict[str, dict[str, Any]], settings: dict[str, Any]) -> str:
    lines: list[str] = []
    for server in dict.fromkeys(row["server"] for row in rows):
        described = servers.get(server, {}).get("base_url", "")
        lines.append(
            f"### server `{server}` ({described}): N={settings['n']:,}, {settings['rounds']} round(s), "
            f"asyncio loop: {'uvloop' if settings['uvloop'] else 'asyncio'}"
        )
        lines.append("")
        lines.append(
            "| scenario | c | req/s | client CPU µs/req | peak RSS MB | server CPU µs/req | vs aiohttp | rounds ok |"
        )
        lines.append("|---|--:|--:|--:|--:|--:|--:|--:|")
        mine = sorted(
            (row for row in rows if row["server"] == server),
            key=lambda row: (row["concurrency"], settings["scenarios"].index(row["scenario"])),
        )
        for row in mine:
            lines.append(
                f"| {row['scenario']} | {row['concurrency']} | {_fmt(row['req_per_s'], ',.0f')} "
                f"| {_fmt(row['cpu_us_per_req'], ',.0f')} | {_fmt(row['peak_rss_mb'], '.1f')} "
                f"| {_fmt(row['server_cpu_us_per_req'], ',.0f')} | {_fmt(row['ratio_to_aiohttp'], '.2f')} "
                f"| {row['rounds_ok']}/{row['rounds_run']} |"
            )
        lines.append("")
    return "\n".join(lines)


@contextmanager
def _servers(
    names: Sequence[str], amili_cases: int, notes: list[str], errors: list[str], out: Printer
) -> Iterator[dict[str, ServerProcess]]:
    """Start the requested servers; stop every one of them on the way out, whatever happens."""
    with ExitStack() as stack:
        started: dict[str, ServerProcess] = {}
        for name in names:
            if name == "amili":
                ok, why = amili_module_available()
                if not ok:
                    notes.append(f"server `amili` skipped, `python -m amili_async.testing` is not there yet: {why}")
                    out(f"note: {notes[-1]}")
                    continue
            try:
                server = start_fixed() if name == "fixed" else start_amili(cases=amili_cases)
            except ServerStartError as exc:
                errors.append(f"server `{name}` did not start: {exc}")
                out(f"error: {errors[-1]}")
                continue
            stack.callback(server.stop)
            started[name] = server
        yield started


def run(
    *,
    n: int | None = None,
    rounds: int | None = None,
    concurrency: Sequence[int] | None = None,
    scenarios: Sequence[str] | None = None,
    servers: Sequence[str] = SERVERS,
    json_path: Path | str | None = DEFAULT_JSON,
    quick: bool = False,
    use_uvloop: bool = False,
    warmup: int | None = None,
    timeout: float | None = None,
    amili_cases: int = 1000,
    out: Printer = print,
    progress: Printer = _progress,
) -> dict[str, Any]:
    """Run the benchmark and return the report (also written to ``json_path`` unless it is None).

    ``report["failures"]`` lists runs or servers that failed; ``report["interrupted"]`` is True after a
    Ctrl-C, in which case the report holds whatever was measured before it.
    """
    default_n, default_rounds, default_concurrency = QUICK if quick else FULL
    n = n if n is not None else default_n
    rounds = rounds if rounds is not None else default_rounds
    concurrency = list(concurrency if concurrency is not None else default_concurrency)
    requested = list(scenarios) if scenarios is not None else list(SCENARIOS)
    for name in requested:
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    for name in servers:
        if name not in SERVERS:
            raise ValueError(f"unknown server {name!r}; known: {', '.join(SERVERS)}")
    timeout = timeout if timeout is not None else 120.0 + n / 20.0

    notes: list[str] = []
    failures: list[str] = []
    skipped: dict[str, str] = {}
    if any(s in SDK_SCENARIOS for s in requested):
        ok, why = sdk_available()
        if not ok:
            for s in requested:
                if s in SDK_SCENARIOS:
                    skipped[s] = f"amili_async is not usable yet: {why}"
    if any(s in TRIO_SCENARIOS and s not in skipped for s in requested):
        ok, why = probe("import trio")
        if not ok:
            for s in requested:
                if s in TRIO_SCENARIOS:
                    skipped.setdefault(s, f"trio is not importable: {why}")
    for s, why in skipped.items():
        notes.append(f"scenario `{s}` skipped: {why}")
    active = [s for s in requested if s not in skipped]

    settings = {
        "n": n,
        "rounds": rounds,
        "concurrency": concurrency,
        "scenarios": requested,
        "servers": list(servers),
        "uvloop": use_uvloop,
        "warmup": warmup if warmup is not None else "max(2 x concurrency, 20)",
        "timeout_s": timeout,
        "quick": quick,
        "amili_amount": AMILI_AMOUNT,
    }
    report: dict[str, Any] = {
        "machine": machine_info(),
        "settings": settings,
        "skipped": skipped,
        "notes": notes,
        "servers": {},
        "runs": [],
        "medians": [],
        "failures": failures,
        "interrupted": False,
    }
    runs: list[dict[str, Any]] = report["runs"]
    for note in notes:
        out(f"note: {note}")

    try:
        with (
            tempfile.TemporaryDirectory(prefix="amili-bench-") as tmp,
            _servers(servers, amili_cases, notes, failures, out) as started,
        ):
            targets: dict[str, Path] = {}
            for name, server in started.items():
                try:
                    target = _target_for(server)
                except (KeyError, ValueError, ServerStartError) as exc:
                    failures.append(f"server `{name}` announced something unusable: {exc!r}")
                    out(f"error: {failures[-1]}")
                    continue
                path = Path(tmp) / f"{name}.json"
                path.write_text(json.dumps(target))
                targets[name] = path
                report["servers"][name] = {"base_url": server.info.get("base_url"), "pid": server.proc.pid}
            plan = list(_schedule(rounds, list(targets), concurrency, active))
            for done, (r, name, c, position, scenario) in enumerate(plan, start=1):
                server = started[name]
                if server.alive():
                    result = _run_one(
                        scenario=scenario,
                        server=server,
                        target_file=targets[name],
                        concurrency=c,
                        n=n,
                        warmup=warmup,
                        tag=f"r{r}{scenario}c{c}-" if name == "amili" else "",
                        use_uvloop=use_uvloop,
                        timeout=timeout,
                    )
                else:
                    result = {"errors": n, "ok": 0, "first_error": f"the {name} server is not running"}
                result.update(round=r, position=position, server=name, scenario=scenario, concurrency=c)
                result.setdefault("n", n)
                runs.append(result)
                where = f"[{done}/{len(plan)}] round {r + 1} {name} c={c} {scenario}"
                if _succeeded(result):
                    progress(f"{where}: {result['req_per_s']:,.0f} req/s, {result['cpu_us_per_req']:,.0f} µs CPU/req")
                else:
                    first = result.get("first_error") or result.get("warmup_first_error")
                    failures.append(f"{where}: {result.get('errors')} errors, first: {first}")
                    progress(f"FAILED {failures[-1]}")
    except KeyboardInterrupt:
        report["interrupted"] = True
        out("interrupted: reporting what was measured so far")

    report["medians"] = summarise(runs)
    if report["medians"]:
        out("")
        out(render_table(report["medians"], report["servers"], settings))
    if failures:
        out(f"{len(failures)} failure(s):")
        for line in failures:
            out(f"  - {line}")
    if json_path is not None:
        write_json(Path(json_path), report)
        out(f"raw results, medians and machine facts: {json_path}")
    return report


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="requests per timed run (default 5000; quick 200)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 5; quick 1)")
    parser.add_argument(
        "--concurrency", type=parse_int_list, default=None, help="comma list (default 1,64,256; quick 4)"
    )
    parser.add_argument(
        "--scenarios",
        type=parse_name_list,
        default=None,
        help=f"comma list of: {','.join(SCENARIOS)} (default all)",
    )
    parser.add_argument(
        "--server", type=parse_name_list, default=list(SERVERS), help="comma list (default fixed,amili)"
    )
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"where to write results (default {DEFAULT_JSON})"
    )
    parser.add_argument("--quick", action="store_true", help="smoke-test size: N=200, 1 round, concurrency 4")
    parser.add_argument("--uvloop", action="store_true", help="run the asyncio scenarios on uvloop")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests (default max(2c, 20))")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run (default 120 + n/20)")
    parser.add_argument("--amili-cases", type=int, default=1000, help="cases seeded in the amili server")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        report = run(
            n=args.n,
            rounds=args.rounds,
            concurrency=args.concurrency,
            scenarios=args.scenarios,
            servers=args.server,
            json_path=args.json,
            quick=args.quick,
            use_uvloop=args.uvloop,
            warmup=args.warmup,
            timeout=args.timeout,
            amili_cases=args.amili_cases,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if report["interrupted"]:
        return 130
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
