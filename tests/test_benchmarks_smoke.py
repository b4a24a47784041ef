"""The benchmark scripts run end to end at toy size. Nothing here asserts on timings."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
RAW = ("aiohttp", "httpx", "httpx_aiohttp", "httpx_trio")
SDK = ("sdk", "sdk_httpx", "sdk_trio")


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BENCH.parent,
        check=False,
    )


def _explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"


def test_run_quick_against_the_fixed_server(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    scenarios = ",".join(RAW + SDK)
    proc = _run(
        [str(BENCH / "run.py"), "--quick", "--server", "fixed", "--scenarios", scenarios, "--json", str(out)],
        timeout=50,
    )
    assert proc.returncode == 0, _explain(proc)
    report: dict[str, Any] = json.loads(out.read_text())

    # The raw clients always run; the SDK ones run unless the SDK is not importable yet (then skipped, noted).
    expected = [s for s in RAW + SDK if s not in report["skipped"]]
    assert set(RAW) <= set(expected), report["skipped"]
    medians = {(m["server"], m["scenario"]): m for m in report["medians"]}
    for scenario in expected:
        row = medians[("fixed", scenario)]
        assert row["rounds_ok"] == 1, row
        assert row["req_per_s"] is not None and row["req_per_s"] > 0, row
        assert row["cpu_us_per_req"] is not None, row
    assert medians[("fixed", "aiohttp")]["ratio_to_aiohttp"] == pytest.approx(1.0)
    assert all(run["errors"] == 0 and run["ok"] == run["n"] for run in report["runs"])
    assert report["machine"]["cpu_count"] and report["machine"]["packages"]["httpx"]
    assert "| scenario | c | req/s" in proc.stdout


def test_import_time_script(tmp_path: Path) -> None:
    out = tmp_path / "import.json"
    proc = _run([str(BENCH / "import_time.py"), "--repeat", "1", "--json", str(out)], timeout=30)
    assert proc.returncode == 0, _explain(proc)
    report = json.loads(out.read_text())
    assert report["median_us"]["httpx"] > 0
    assert "amili_async" in report["median_us"] or "amili_async" in report["skipped"]


def test_memory_script(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    proc = _run([str(BENCH / "memory.py"), "--counts", "300", "--json", str(out)], timeout=60)
    assert proc.returncode == 0, _explain(proc)
    if "skipped" in proc.stdout:
        pytest.skip(proc.stdout.strip())
    (result,) = json.loads(out.read_text())["results"]
    assert result["outcomes"] == 300 and result["errors"] == 0
    assert result["peak_rss_mb"] > 0


def test_layer_script_measures_every_opentelemetry_mode(tmp_path: Path) -> None:
    out = tmp_path / "layer.json"
    argv = [str(BENCH / "layer.py"), "--n", "200", "--warmup", "20", "--rounds", "1", "--json", str(out)]
    proc = _run(argv, timeout=120)
    assert proc.returncode == 0, _explain(proc)
    report = json.loads(out.read_text())
    runs = {run["mode"]: run for run in report["runs"]}
    assert set(runs) == {"none", "api", "sdk"}
    assert all(run["us_per_call"] > 0 for run in runs.values())
    assert runs["none"]["opentelemetry_modules"] == 0  # "none" really runs without OpenTelemetry
    assert runs["api"]["opentelemetry_modules"] > 0
    assert all(run["sdk_from"].startswith(str(BENCH.parent / "amili_async")) for run in runs.values())
    assert "| tree | otel | µs/call |" in proc.stdout
    assert runs["none"]["distinct_request_ids"] == 20  # one id per call


def test_layer_script_stubs_the_calls_own_telemetry(tmp_path: Path) -> None:
    out = tmp_path / "layer.json"
    argv = [str(BENCH / "layer.py"), "--n", "100", "--warmup", "20", "--rounds", "1", "--otel", "stubbed"]
    proc = _run([*argv, "--json", str(out)], timeout=120)
    assert proc.returncode == 0, _explain(proc)
    (run,) = json.loads(out.read_text())["runs"]
    assert run["us_per_call"] > 0 and run["opentelemetry_modules"] == 0
    assert run["distinct_request_ids"] == 1  # the stub's constant id: the real one is really gone


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="--instructions needs valgrind")
def test_layer_script_counts_instructions(tmp_path: Path) -> None:
    out = tmp_path / "layer.json"
    argv = [str(BENCH / "layer.py"), "--instructions", "--n", "100", "--warmup", "10", "--otel", "none,stubbed"]
    proc = _run([*argv, "--json", str(out)], timeout=600)
    assert proc.returncode == 0, _explain(proc)
    runs = {run["mode"]: run["instructions_per_call"] for run in json.loads(out.read_text())["runs"]}
    assert runs["stubbed"] < runs["none"]  # the call's own telemetry costs something, and the count sees it
    assert "| tree | otel | instructions/call |" in proc.stdout
