"""Import cost of the SDK next to httpx: ``python -X importtime -c "import <module>"``.

    python benchmarks/import_time.py [--repeat 5] [--modules amili_async,httpx] [--json PATH]

For each module, the cumulative microseconds reported for the top-level package, in ``--repeat`` fresh
interpreters (taken in alternation, after one untimed import each so that bytecode caches are warm); the
median is reported, and the ratio of every module to httpx.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from _util import REPO_ROOT, RESULTS_DIR, child_env, machine_info, parse_name_list, write_json  # noqa: E402

DEFAULT_MODULES = ("amili_async", "httpx")
BASELINE = "httpx"
DEFAULT_JSON = RESULTS_DIR / "import_time.json"


class ImportFailed(RuntimeError):
    pass


def cumulative_us(module: str) -> int:
    """One fresh interpreter: the cumulative import time of ``module`` as ``-X importtime`` reports it."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise ImportFailed(f"import {module} failed: {tail[0]}")
    # Lines look like "import time:   self [us] | cumulative | imported package"; nesting is shown by
    # indenting the package name, and each module is listed once, when its import finishes.
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) == 3 and parts[2].strip() == module:
            return int(parts[1])
    raise ImportFailed(f"-X importtime did not list {module} (already imported at start-up?)")


def measure(modules: list[str], repeat: int) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {m: [] for m in modules}
    for m in modules:
        cumulative_us(m)  # untimed: compile and cache bytecode
    for _ in range(repeat):
        for m in modules:
            samples[m].append(cumulative_us(m))
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="fresh interpreters per module (default 5)")
    parser.add_argument("--modules", type=parse_name_list, default=list(DEFAULT_MODULES), help="comma list")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    args = parser.parse_args(argv)
    modules: list[str] = list(dict.fromkeys([*args.modules, BASELINE]))

    available: list[str] = []
    skipped: dict[str, str] = {}
    for m in modules:
        try:
            cumulative_us(m)
        except ImportFailed as exc:
            skipped[m] = str(exc)
            print(f"note: {m} skipped: {exc}")
        else:
            available.append(m)
    samples = measure(available, args.repeat)
    medians = {m: statistics.median(v) for m, v in samples.items()}
    base = medians.get(BASELINE)

    print(f"import time, median of {args.repeat} fresh interpreters (cumulative, top-level package)")
    print("")
    print("| module | median ms | min ms | max ms | ratio to httpx |")
    print("|---|--:|--:|--:|--:|")
    for m in available:
        ratio = f"{medians[m] / base:.2f}" if base else "—"
        print(
            f"| {m} | {medians[m] / 1000:.1f} | {min(samples[m]) / 1000:.1f} | {max(samples[m]) / 1000:.1f} | {ratio} |"
        )
    report: dict[str, Any] = {
        "machine": machine_info(),
        "repeat": args.repeat,
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
