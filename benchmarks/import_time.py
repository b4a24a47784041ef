"""Import cost of the SDK next to httpx: whole fresh interpreters, CPU time as the OS accounts it.

    python benchmarks/import_time.py [--repeat 7] [--json PATH]

Each statement runs as `python -c STATEMENT` in a fresh interpreter, alternating statement by statement
after one untimed run each (bytecode caches warm); the CPU time (user + system) of every run comes from
`getrusage(RUSAGE_CHILDREN)`. The figure is the median, and its ratio to `import httpx` in the same rounds:

- `httpx`: `import httpx`, the baseline;
- `amili_async`: `from amili_async import AsyncAmiliClient, CreditorPayment, ApiCodeJwtAuth`, the import a
  program really does (issue 12's target: at most 1.3x httpx);
- `amili_async (bare)`: `import amili_async`;
- `amili_async + client`: the realistic import plus building one client: what is loaded on first use (the
  pipeline, the resources, the token cache) is paid here.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from _util import REPO_ROOT, RESULTS_DIR, child_env, machine_info, write_json  # noqa: E402

BASELINE = "httpx"
STATEMENTS = {
    "httpx": "import httpx",
    "amili_async": "from amili_async import AsyncAmiliClient, CreditorPayment, ApiCodeJwtAuth",
    "amili_async (bare)": "import amili_async",
    "amili_async + client": (
        "from amili_async import AsyncAmiliClient, CreditorPayment, ApiCodeJwtAuth, StaticTokenAuth; "
        "AsyncAmiliClient(auth=StaticTokenAuth('t'), base_url='https://api.amili.test')"
    ),
}
DEFAULT_JSON = RESULTS_DIR / "import_time.json"


class ImportFailed(RuntimeError):
    pass


def cpu_us(statement: str) -> int:
    """One fresh interpreter running `statement`: its CPU time in microseconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-c", statement],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise ImportFailed(f"{statement!r} failed: {tail[0]}")
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return round(spent * 1e6)


def measure(names: list[str], repeat: int) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {name: [] for name in names}
    for r in range(repeat):
        order = names[r % len(names) :] + names[: r % len(names)]  # each takes every place in turn
        for name in order:
            samples[name].append(cpu_us(STATEMENTS[name]))
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7, help="fresh interpreters per statement (default 7)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    args = parser.parse_args(argv)

    available: list[str] = []
    skipped: dict[str, str] = {}
    for name, statement in STATEMENTS.items():
        try:
            cpu_us(statement)  # untimed: compile and cache bytecode
        except ImportFailed as exc:
            skipped[name] = str(exc)
            print(f"note: {name} skipped: {exc}")
        else:
            available.append(name)
    samples = measure(available, args.repeat)
    medians = {m: statistics.median(v) for m, v in samples.items()}
    base = medians.get(BASELINE)

    print(f"import cost, median CPU of {args.repeat} fresh interpreters per statement (alternating)")
    print("")
    print("| statement | median ms | min ms | max ms | ratio to httpx |")
    print("|---|--:|--:|--:|--:|")
    for m in available:
        ratio = f"{medians[m] / base:.2f}" if base else "—"
        print(
            f"| {m} | {medians[m] / 1000:.1f} | {min(samples[m]) / 1000:.1f} | {max(samples[m]) / 1000:.1f} | {ratio} |"
        )
    report: dict[str, Any] = {
        "machine": machine_info(),
        "repeat": args.repeat,
        "statements": STATEMENTS,
        "samples_us": samples,
        "median_us": medians,
        "ratio_to_httpx": {m: medians[m] / base for m in available} if base else {},
        "skipped": skipped,
    }
    write_json(args.json, report)
    print(f"\nJSON: {args.json}")
    return 1 if BASELINE in skipped else 0


if __name__ == "__main__":
    sys.exit(main())
