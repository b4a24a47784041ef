"""`amili bulk` when the run cannot succeed (issue 10): wrong credentials or a server that is gone end the run
within seconds with a resume hint (the waiting lines fail with nothing applied, the others are never started),
and running the same command again once the cause is fixed sends every line. Run as a user runs it: a
subprocess against a real loopback server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMILI_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def amili(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amili_async", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    server = subprocess.Popen(
        [sys.executable, "-m", "amili_async.testing", "serve", "--cases", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )
    try:
        assert server.stdout is not None
        info: dict[str, Any] = json.loads(server.stdout.readline())
        key = tmp_path / "key.pem"
        key.write_text(info["private_key_pem"])
        info["env"] = _env(
            AMILI_BASE_URL=info["base_url"],
            AMILI_API_CODE=info["api_code"],
            AMILI_PRIVATE_KEY_FILE=str(key),
            AMILI_JWT_ALGORITHM=info["algorithm"],
        )
        yield info
    finally:
        server.terminate()
        server.wait(timeout=10)


def _lines(path: Path, n: int, creditor: str, cases: list[str]) -> None:
    with path.open("w") as fh:
        for i in range(n):
            row = {
                "kind": "payment",
                "creditor": creditor,
                "case": cases[i % len(cases)],
                "amount": "1.00",
                "bank_transaction_date": "2025-10-07",
                "creditor_payment_reference": f"FLOW-{i}",
            }
            fh.write(json.dumps(row) + "\n")


def _results(out: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return [r for r in records if r.get("record") == "result"]


def _assert_stopped_early(done: subprocess.CompletedProcess[str], out: Path, n: int, *hint: str) -> None:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    for words in hint:
        assert words in done.stderr, done.stderr
    assert "changed while it was being run" not in done.stderr
    results = _results(out)
    # Only the lines in flight when the run stopped have a result (failed, nothing applied); every other line
    # was never started, so it has no record at all.
    assert 0 < len(results) <= 64 < n
    assert {r["outcome"] for r in results} == {"failed"}


def _rerun_sends_every_line(served: dict[str, Any], source: Path, out: Path, n: int) -> None:
    again = amili("bulk", source, "--out", out, "--retry-failed", "--quiet", env=served["env"])
    assert again.returncode == 0, again.stderr
    final = {r["line"]: r for r in _results(out)}  # the last result of each line
    assert sorted(final) == list(range(1, n + 1))
    assert all(r["outcome"] == "applied" for r in final.values())


def test_wrong_credentials_end_the_run_at_once_and_the_rerun_sends_every_line(served, tmp_path):
    source = tmp_path / "payments.jsonl"
    _lines(source, 2000, served["creditor"], served["cases"])
    out = tmp_path / "results.jsonl"
    wrong = {**served["env"], "AMILI_API_CODE": "not-the-api-code"}
    done = amili("bulk", source, "--out", out, "--quiet", env=wrong)
    _assert_stopped_early(done, out, 2000, "refused the credentials", "run the same command again")
    _rerun_sends_every_line(served, source, out, 2000)


def test_a_stopped_server_ends_the_run_and_the_rerun_sends_every_line(served, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = tmp_path / "payments.jsonl"
    _lines(source, 500, served["creditor"], served["cases"])
    out = tmp_path / "results.jsonl"
    gone = {**served["env"], "AMILI_BASE_URL": f"http://127.0.0.1:{port}"}
    done = amili("bulk", source, "--out", out, "--quiet", env=gone)
    _assert_stopped_early(done, out, 500, "could not be reached", "run the same command again", "--retry-failed")
    _rerun_sends_every_line(served, source, out, 500)
