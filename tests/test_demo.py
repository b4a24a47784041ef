"""`python -m amili_async demo`: the README's quick start, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMILI_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amili_async", "demo", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def summary() -> dict[str, Any]:
    done = demo("--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_every_action_has_exactly_one_outcome(summary: dict[str, Any]) -> None:
    assert summary["cases"] == 1000
    assert summary["actions"] > 2000
    assert summary["outcomes"] == summary["actions"]
    assert summary["one_outcome_per_action"] is True
    assert sum(row["total"] for row in summary["by_kind"].values()) == summary["actions"]
    for kind, row in summary["by_kind"].items():
        parts = row["ok"] + row["warning"] + row["business_error"] + row["refused"]
        assert parts == row["total"], kind
        assert sum(row["refused_by"].values()) == row["refused"], kind


def test_one_token_for_the_whole_run(summary: dict[str, Any]) -> None:
    assert summary["token_requests"] == 1
    assert summary["tokens_issued"] == 1


def test_the_mix_is_realistic(summary: dict[str, Any]) -> None:
    kinds = summary["by_kind"]
    assert set(kinds) == {"payment", "crediting", "cancellation", "respite", "respite check"}
    assert all(row["total"] > 0 for row in kinds.values())
    assert kinds["payment"]["ok"] > kinds["payment"]["total"] / 2  # most payments simply go through
    assert kinds["payment"]["warning"] > 0  # overpayments
    assert kinds["payment"]["business_error"] > 0  # payments on closed cases
    assert summary["payments_by_invoice_number"] > 0
    assert kinds["respite"]["ok"] > 0
    refused_by = kinds["respite"]["refused_by"]  # a 422 refusal: a RespiteValidationError (a RespiteNotAllowedError)
    assert refused_by.get("RespiteNotAllowedError", 0) + refused_by.get("RespiteValidationError", 0) > 0
    reasons = summary["reasons"]
    assert reasons.get("creditor_payment.overpayment", 0) > 0
    assert reasons.get("respite.debt_collection_started", 0) > 0
    assert reasons.get("respite.max_per_customer_reached", 0) > 0
    assert any(reason.startswith("days:") for reason in reasons)
    assert summary["elapsed_seconds"] > 0 and summary["throughput_per_second"] > 0


def test_table_and_progress() -> None:
    done = demo("--cases", "150", "--seed", "7", "--concurrency", "8")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "150 cases" in out and "concurrency 8" in out and "seed 7" in out
    for heading in ("kind", "ok", "warning", "business error", "refused", "respite check"):
        assert heading in out
    assert "every action produced exactly one outcome: yes" in out
    assert "token requests: client 1, in-memory Amili issued 1" in out
    assert "actions/s" in out
    # Not a terminal: no redraws, one final progress line with the count and the rate.
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "\r" not in done.stderr
    assert "100%" in lines[0] and "/s" in lines[0]


def test_quiet_and_bad_options() -> None:
    done = demo("--cases", "20", "--quiet", "--json")
    assert done.returncode == 0
    assert done.stderr == ""
    assert json.loads(done.stdout)["cases"] == 20
    bad = demo("--cases", "0")
    assert bad.returncode == 2
    assert "--cases" in bad.stderr and "Traceback" not in bad.stderr
