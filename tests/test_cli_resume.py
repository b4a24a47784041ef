"""`amili bulk` resumed: results bound to their input by content, `--retry-failed`, lines in flight reconciled.

Every scenario runs the installed command against the in-memory Amili served on loopback, and checks what that
Amili stored (through its API) besides what the command said: a refused results file sends nothing, a resumed
run sends only what was never applied.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_support import CSV_HEADER, Served, amili, assert_clean_error, final, records, results, serve


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path, cases=20) as running:
        yield running


def payment_rows(served: Served, refs: range, *, amount: str = "1.00") -> list[str]:
    return [f"payment,{served.creditor},{served.cases[n % 10]},,{amount},SEK,2025-10-07,PAY-{n},," for n in refs]


def write(path: Path, rows: list[str]) -> Path:
    path.write_text(CSV_HEADER + "".join(row + "\n" for row in rows))
    return path


def run(served: Served, source: Path, out: Path, *extra: str) -> tuple[int, str]:
    done = amili("bulk", source, "--out", out, "--settle", "0", *extra, env=served.env)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stderr


def references(served: Served) -> list[str]:
    return sorted(p.creditor_payment_reference for p in served.stored().payments)


# -- bound to the input ---------------------------------------------------------------------------------


def test_reordered_input_is_matched_by_content(served: Served, tmp_path: Path) -> None:
    rows = payment_rows(served, range(12))
    source, out = write(tmp_path / "day.csv", rows), tmp_path / "r.jsonl"
    assert run(served, source, out)[0] == 0
    write(source, rows[::-1])
    code, said = run(served, source, out)
    assert code == 0, said
    assert "0 lines processed" in said and "12 already in" in said and "changed since the last run" in said
    assert references(served) == sorted(f"PAY-{n}" for n in range(12))


def test_appended_lines_are_the_only_ones_sent(served: Served, tmp_path: Path) -> None:
    rows = payment_rows(served, range(10))
    source, out = write(tmp_path / "day.csv", rows), tmp_path / "r.jsonl"
    assert run(served, source, out)[0] == 0
    write(source, [*rows[:5], *payment_rows(served, range(10, 13)), *rows[5:]])  # new lines in the middle
    code, said = run(served, source, out)
    assert code == 0 and "3 lines processed" in said and "10 already in" in said, said
    assert references(served) == sorted(f"PAY-{n}" for n in range(13))
    assert [r["outcome"] for r in results(out)] == ["applied"] * 13


@pytest.mark.parametrize("change", ["swap", "edit", "truncate"])
def test_a_results_file_of_other_input_is_refused_and_nothing_is_sent(
    served: Served, tmp_path: Path, change: str
) -> None:
    day1 = payment_rows(served, range(8))
    source, out = write(tmp_path / "day1.csv", day1), tmp_path / "r.jsonl"
    assert run(served, source, out)[0] == 0
    before = out.read_bytes()
    if change == "swap":  # yesterday's --out, today's file (the issue's `day1.csv` / `day2.csv`)
        source = write(tmp_path / "day2.csv", payment_rows(served, range(100, 108)))
    elif change == "edit":  # an applied payment's amount changed after it was sent
        write(source, [day1[0].replace(",1.00,", ",2.00,"), *day1[1:]])
    else:
        write(source, day1[:5])
    done = amili("bulk", source, "--out", out, env=served.env)
    assert_clean_error(done, 2, "holds results for other input", "match no line of", "PAY-")
    assert out.read_bytes() == before  # not even a run record
    assert references(served) == sorted(f"PAY-{n}" for n in range(8))


def test_an_edited_line_that_had_failed_is_simply_a_new_line(served: Served, tmp_path: Path) -> None:
    rows = payment_rows(served, range(4))
    broken = rows[2].replace(",1.00,", ",1.005,")
    source, out = write(tmp_path / "day.csv", [*rows[:2], broken, rows[3]]), tmp_path / "r.jsonl"
    code, said = run(served, source, out)
    assert code == 1 and "1 lines failed, nothing applied" in said
    write(source, rows)  # fixed
    code, said = run(served, source, out)
    assert code == 0, said
    assert "1 lines processed" in said and "match no line of the input any more" in said
    assert references(served) == ["PAY-0", "PAY-1", "PAY-2", "PAY-3"]


def test_identical_lines_each_get_their_own_outcome(served: Served, tmp_path: Path) -> None:
    same = f"payment,{served.creditor},{served.cases[0]},,5.00,SEK,2025-10-07,,,"  # no reference: twice is meant
    source, out = write(tmp_path / "day.csv", [same, same]), tmp_path / "r.jsonl"
    assert run(served, source, out)[0] == 0
    assert run(served, source, out)[1].count("2 already in") == 1
    write(source, [same, same, same])
    code, said = run(served, source, out)
    assert code == 0 and "1 lines processed" in said, said
    assert len(served.stored().payments) == 3


def test_an_old_results_file_is_refused(served: Served, tmp_path: Path) -> None:
    source, out = write(tmp_path / "day.csv", payment_rows(served, range(2))), tmp_path / "r.jsonl"
    out.write_text(json.dumps({"line": 2, "ok": True, "kind": "payment", "receipt": {}}) + "\n")
    assert_clean_error(amili("bulk", source, "--out", out, env=served.env), 2, "earlier amili bulk")
    assert references(served) == []


# -- --retry-failed ----------------------------------------------------------------------------------------


def test_retry_failed_sends_again_what_failed_with_nothing_applied(served: Served, tmp_path: Path) -> None:
    source, out = write(tmp_path / "day.csv", payment_rows(served, range(6))), tmp_path / "r.jsonl"
    wrong = dict(served.env, AMILI_API_CODE="wrong-code")  # the "wrong key"
    done = amili("bulk", source, "--out", out, "--concurrency", "2", env=wrong)
    assert done.returncode == 1 and "stopped: Amili refused the credentials" in done.stderr, done.stderr
    refused = final(out)
    assert 1 <= len(refused) <= 2  # the lines in flight when the refusal came; no further line was started
    assert {r["error"]["type"] for r in refused.values()} == {"AuthenticationError"}
    code, said = run(served, source, out)  # the key fixed, no --retry-failed: the refused lines are not resent
    assert code == 1 and f"{len(refused)} already in" in said and "--retry-failed" in said, said
    assert len(references(served)) == 6 - len(refused)
    code, said = run(served, source, out, "--retry-failed")
    assert code == 0 and f"{len(refused)} lines processed ({len(refused)} ok" in said, said
    assert references(served) == sorted(f"PAY-{n}" for n in range(6))
    code, said = run(served, source, out, "--retry-failed")  # applied lines are never sent again
    assert code == 0 and "0 lines processed" in said
    assert len(served.stored().payments) == 6


def test_retry_failed_leaves_actions_amili_recorded_as_errors(served: Served, tmp_path: Path) -> None:
    case = served.cases[11]
    rows = [
        f"cancellation,{served.creditor},{case},,,,,,,",
        f"payment,{served.creditor},{case},,1.00,,2025-10-07,LATE,,",  # after the cancellation: Amili records an error
    ]
    source, out = write(tmp_path / "day.csv", rows[:1]), tmp_path / "r.jsonl"
    assert run(served, source, out)[0] == 0
    write(source, rows)  # a payment on the case just cancelled: Amili records it, with status error
    assert run(served, source, out)[0] == 1
    assert final(out)[3]["outcome"] == "error_recorded"
    code, said = run(served, source, out, "--retry-failed")
    assert code == 1 and "0 lines processed" in said
    assert references(served) == ["LATE"]


# -- lines in flight when a run stopped -------------------------------------------------------------------


def drop_results(out: Path, lines: set[int]) -> None:
    """As if the run had been killed after sending these lines and before writing their results."""
    kept = [r for r in records(out) if not (r["record"] == "result" and r["line"] in lines)]
    out.write_text("".join(json.dumps(r, default=str) + "\n" for r in kept))


def test_every_kind_in_flight_is_reconciled_never_sent_twice(served: Served, tmp_path: Path) -> None:
    c, creditor = served.cases, served.creditor
    rows = [
        f"payment,{creditor},{c[0]},,10.00,,2025-10-07,PAY-F,,",  # line 2
        f"crediting,,{c[1]},,20.00,,,,CRED-F,",  # line 3
        f"cancellation,{creditor},{c[2]},,,,,,,",  # line 4
        f"cancellation,{creditor},,INV-3,,,,,,",  # line 5: by invoice number
        f"respite,,{c[4]},,,,,,,14",  # line 6
    ]
    source, out = write(tmp_path / "day.csv", rows), tmp_path / "r.jsonl"
    assert run(served, source, out)[0] == 0
    drop_results(out, {2, 3, 4, 5, 6})
    code, said = run(served, source, out)
    assert code == 0, said
    assert "5 lines looked up in Amili first (5 had been applied)" in said
    assert all(r["reconciled"] and r["ok"] for r in final(out).values())
    stored = served.stored()
    assert [p.creditor_payment_reference for p in stored.payments] == ["PAY-F"]
    assert [x.creditor_reference for x in stored.creditings] == ["CRED-F"]
    assert sorted(x.case for x in stored.cancellations) == sorted([c[2], c[3]])
    assert [e["days"] for e in stored.respites()[c[4]]] == [14]


def test_a_line_sent_but_never_applied_is_sent_again_once(served: Served, tmp_path: Path) -> None:
    c = served.cases
    rows = [f"respite,,{c[5]},,,,,,,7", f"payment,{served.creditor},{c[6]},,3.00,,2025-10-07,PAY-N,,"]
    source, out = write(tmp_path / "day.csv", rows), tmp_path / "r.jsonl"
    # A journal whose run stopped after writing `sending` for both lines, before either request left.
    assert run(served, write(tmp_path / "empty.csv", []), tmp_path / "probe.jsonl")[0] == 0
    evidence = json.loads(amili("case", "get", c[5], "--json", env=served.env).stdout)["case"]
    lines = [
        {"record": "run", "amili_bulk": 2, "input": str(source), "input_sha256": "x", "input_lines": 2, "shard": None},
        {"record": "sending", "slot": 0, "line": 2, "digest": _digest_of(served, source, out, 2), "kind": "respite",
         "evidence": {"due_date": evidence["due_date"], "respites": 0}},
        {"record": "sending", "slot": 1, "line": 3, "digest": _digest_of(served, source, out, 3), "kind": "payment"},
    ]  # fmt: skip
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    code, said = run(served, source, out)
    assert code == 0, said
    assert "2 lines looked up in Amili first (0 had been applied)" in said
    stored = served.stored()
    assert [p.creditor_payment_reference for p in stored.payments] == ["PAY-N"]
    assert [e["days"] for e in stored.respites()[c[5]]] == [7]


def _digest_of(served: Served, source: Path, out: Path, line: int) -> str:
    """The digest amili gives a line, learnt from a scratch run on the in-memory Amili of `--fake`."""
    scratch = out.with_suffix(".scratch")
    probe = amili("bulk", source, "--out", scratch, "--fake", "--quiet")
    assert probe.returncode in (0, 1), probe.stderr
    digest: str = next(r["digest"] for r in records(scratch) if r["record"] == "result" and r["line"] == line)
    scratch.unlink()
    return digest


def test_an_unprovable_line_is_listed_and_never_sent_again(served: Served, tmp_path: Path) -> None:
    rows = [f"payment,{served.creditor},{served.cases[7]},,4.00,,2025-10-07,,,"]  # no reference to look up
    source, out = write(tmp_path / "day.csv", rows), tmp_path / "r.jsonl"
    assert run(served, source, out)[0] == 0
    drop_results(out, {2})
    code, said = run(served, source, out)
    assert code == 1
    assert f"1 outcomes need checking in Amili: line 2 (payment {served.cases[7]})" in said
    assert final(out)[2]["outcome"] == "unknown" and "no reference" in final(out)[2]["error"]["message"]
    code, said = run(served, source, out)
    assert code == 1 and "0 lines processed" in said and "need checking" in said
    code, said = run(served, source, out, "--retry-failed")  # checked again, still unprovable: still not sent
    assert code == 1 and "need checking" in said
    assert len(served.stored().payments) == 1


def test_resume_waits_for_the_settle_window(served: Served, tmp_path: Path) -> None:
    source, out = write(tmp_path / "day.csv", payment_rows(served, range(2))), tmp_path / "r.jsonl"
    assert run(served, source, out)[0] == 0
    drop_results(out, {2})
    done = amili("bulk", source, "--out", out, "--settle", "1", env=served.env)
    assert done.returncode == 0, done.stderr
    assert "s before looking up 1 lines the interrupted run may have sent" in done.stderr
    assert len(served.stored().payments) == 2
