"""`benchmarks/flow_control.py` keeps working: a quick run against its limiter servers, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_flow_control_benchmark_quick_run_stores_every_payment_once(tmp_path: Path) -> None:
    out = tmp_path / "flow.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "flow_control.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "eve" in done.stdout and "retry-after" in done.stdout
    runs = json.loads(out.read_text())["runs"]
    assert {r["scenario"] for r in runs} == {"eve", "retry-after"}
    assert all(r["failed"] == 0 and r["duplicates"] == 0 and r["stored"] == r["n"] for r in runs)
