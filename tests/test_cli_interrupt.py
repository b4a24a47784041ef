"""Ctrl-C at random points of a 5,000-line mixed file, then resume — over and over, as a finance team would.

The installed `amili bulk` runs against the in-memory Amili served on loopback, whose writes commit at once but
answer 20 ms later (so every interruption leaves lines whose write went through and whose answer never came).
The file mixes all four kinds; each line is designed to succeed. After ≥ 20 interruptions at random points
(during start-up, while reconciling, while sending) and a last run to the end, what the served Amili stored is
read back through its API: every line has exactly one outcome, every one of them applied, and nothing was
applied twice — one payment and one crediting per reference, one cancellation per case, one respite per case,
and every case's balance exactly what its lines say.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from test_cli_support import CSV_HEADER, Served, amili, final, results, serve, start_amili

pytestmark = pytest.mark.soak

LINES = 5_000
ROUNDS = 20
CAPITAL = Decimal("10000.00")


def write_mixed_file(path: Path, served: Served, rng: random.Random) -> dict[str, object]:
    """500 cancellations, 750 respites (one per case), 2,500 payments and 1,250 creditings over 350 cases."""
    cases = served.cases
    cancel_cases, respite_cases, money_cases = cases[:500], cases[500:1250], list(range(1250, 1600))
    rows: list[str] = []
    expected_left = {cases[i]: CAPITAL for i in money_cases}
    days: dict[str, int] = {}
    for case in cancel_cases:
        rows.append(f"cancellation,{served.creditor},{case},,,,,,,")
    for case in respite_cases:
        days[case] = rng.choice((7, 10, 14, 21, 30))
        rows.append(f"respite,,{case},,,,,,,{days[case]}")
    for n in range(2_500):
        i = rng.choice(money_cases)
        amount = Decimal(rng.randint(100, 999)).scaleb(-2)
        expected_left[cases[i]] -= amount
        where = f",INV-{i}" if rng.random() < 0.2 else f"{cases[i]},"
        rows.append(f"payment,{served.creditor},{where},{amount},SEK,2025-10-07,PAY-{n},,")
    for n in range(1_250):
        i = rng.choice(money_cases)
        amount = Decimal(rng.randint(100, 999)).scaleb(-2)
        expected_left[cases[i]] -= amount
        creditor = served.creditor if rng.random() < 0.5 else ""
        rows.append(f"crediting,{creditor},{cases[i]},,{amount},,,,CRED-{n},")
    rng.shuffle(rows)
    assert len(rows) == LINES
    path.write_text(CSV_HEADER + "\n".join(rows) + "\n")
    return {"left": expected_left, "days": days, "cancelled": set(cancel_cases)}


def _records_in(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))
    except FileNotFoundError:
        return 0


def interrupt(
    args: list[str | Path], served: Served, out: Path, rng: random.Random
) -> subprocess.CompletedProcess[str]:
    """Start `amili bulk`, press Ctrl-C at a random point (a moment into start-up, or after a random number of
    new records in the results file), and wait for it to stop."""
    before = _records_in(out)
    proc = start_amili(*args, env=served.env)
    if rng.random() < 0.15:
        time.sleep(rng.uniform(0.05, 0.6))  # while starting up: reading, binding, logging in
    else:
        target = before + rng.randint(1, 700)
        while proc.poll() is None and _records_in(out) < target:
            time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_ctrl_c_at_random_points_then_resume_applies_every_line_once(tmp_path: Path) -> None:
    rng = random.Random(20251007)
    with serve(tmp_path, cases=1_600, latency=0.02) as served:
        source = tmp_path / "mixed.csv"
        expected = write_mixed_file(source, served, rng)
        out = tmp_path / "results.jsonl"
        args: list[str | Path] = ["bulk", source, "--out", out, "--concurrency", "32", "--settle", "0", "--quiet"]
        interrupted = 0
        for _ in range(ROUNDS * 2):
            done = interrupt(args, served, out, rng)
            if done.returncode == 0:
                break  # it finished before the Ctrl-C landed
            if done.returncode == -signal.SIGINT:
                # Ctrl-C while Python was still importing the package, before `amili` itself ran: Python's own
                # traceback, and nothing touched.
                assert done.stderr.rstrip().endswith("KeyboardInterrupt"), done.stderr
            else:
                assert done.returncode == 130, done.stderr
                assert "Traceback" not in done.stderr, done.stderr
                assert "interrupted; rerun the same command to resume" in done.stderr
            interrupted += 1
            if interrupted >= ROUNDS:
                break
        assert interrupted >= ROUNDS
        last = amili(*args, env=served.env)
        assert last.returncode == 0, last.stderr[-2000:]
        assert "need checking" not in last.stderr and "failed, nothing applied" not in last.stderr

        # Every line: exactly one outcome, applied (no false failure, nothing unknown).
        outcomes = final(out)
        # The interruptions did leave lines of every kind in flight, applied, for the resumed runs to prove.
        recovered = Counter(r["kind"] for r in results(out) if r.get("reconciled") and r["outcome"] == "applied")
        assert set(recovered) == {"payment", "crediting", "cancellation", "respite"}, recovered
        assert sorted(outcomes) == list(range(2, LINES + 2))
        assert Counter(r["outcome"] for r in outcomes.values()) == {"applied": LINES}
        merged = amili("bulk", source, "--merge", out, env=served.env)
        assert merged.returncode == 0 and f"{LINES:,} applied" in merged.stderr, merged.stderr

        # Nothing applied twice, nothing lost: what the served Amili stored, read through its API.
        stored = served.stored()
        assert Counter(p.creditor_payment_reference for p in stored.payments) == {f"PAY-{n}": 1 for n in range(2_500)}
        assert Counter(c.creditor_reference for c in stored.creditings) == {f"CRED-{n}": 1 for n in range(1_250)}
        assert Counter(c.case for c in stored.cancellations) == dict.fromkeys(expected["cancelled"], 1)  # type: ignore[call-overload]
        respites = stored.respites()
        assert {case: [e["days"] for e in entries] for case, entries in respites.items()} == {
            case: [days]
            for case, days in expected["days"].items()  # type: ignore[attr-defined]
        }
        for case, left in expected["left"].items():  # type: ignore[attr-defined]
            assert stored.cases[case].local_remaining_transaction_amount == left, case
