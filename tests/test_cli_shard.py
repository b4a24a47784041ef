"""`amili bulk --shard K/N` (one input over N workers, each with its own results file) and `--merge`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_support import CSV_HEADER, Served, amili, assert_clean_error, records, results, serve

SHARDS = 3


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path, cases=40) as running:
        yield running


def mixed(served: Served) -> list[str]:
    c, creditor = served.cases, served.creditor
    rows = [f"payment,{creditor},{c[n % 10]},,1.00,,2025-10-07,PAY-{n},," for n in range(30)]
    rows += [f"crediting,,{c[10 + n % 5]},,2.00,,,,CRED-{n}," for n in range(10)]
    rows += [f"cancellation,{creditor},{c[20 + n]},,,,,,," for n in range(5)]
    rows += [f"respite,,{c[30 + n]},,,,,,,7" for n in range(5)]
    return rows


def shard(served: Served, source: Path, k: int, out: Path) -> str:
    done = amili("bulk", source, "--out", out, "--shard", f"{k}/{SHARDS}", "--quiet", env=served.env)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_shards_split_the_input_and_merge_puts_it_together(served: Served, tmp_path: Path) -> None:
    rows = mixed(served)
    source = tmp_path / "all.csv"
    source.write_text(CSV_HEADER + "".join(r + "\n" for r in rows))
    outs = [tmp_path / f"shard{k}.jsonl" for k in range(1, SHARDS + 1)]
    for k, out in enumerate(outs, 1):
        shard(served, source, k, out)
    per_shard = [sorted(r["line"] for r in results(out)) for out in outs]
    assert all(per_shard), "every shard got some lines"
    assert sorted(line for lines in per_shard for line in lines) == list(range(2, len(rows) + 2))  # disjoint, whole
    stored = served.stored()
    assert len(stored.payments) == 30 and len(stored.creditings) == 10 and len(stored.cancellations) == 5
    assert sum(len(v) for v in stored.respites().values()) == 5

    merged = tmp_path / "merged.jsonl"
    done = amili("bulk", source, "--merge", *outs, "--out", merged)
    assert done.returncode == 0, done.stderr
    assert f"{len(rows)} lines" in done.stderr and f"{len(rows)} applied" in done.stderr
    assert "0 no outcome" in done.stderr
    got = records(merged)
    assert [r["line"] for r in got] == list(range(2, len(rows) + 2))  # one per input line, in input order
    assert {r["source"] for r in got} == {str(o) for o in outs}
    assert all(r["ok"] for r in got)
    # A merged report is not a results file to resume from.
    assert_clean_error(amili("bulk", source, "--out", merged, env=served.env), 2, "merged report")


def test_merge_names_the_lines_without_an_outcome(served: Served, tmp_path: Path) -> None:
    rows = mixed(served)
    source = tmp_path / "all.csv"
    source.write_text(CSV_HEADER + "".join(r + "\n" for r in rows))
    outs = [tmp_path / f"shard{k}.jsonl" for k in range(1, SHARDS + 1)]
    for k, out in enumerate(outs[:2], 1):  # the third worker never ran
        shard(served, source, k, out)
    missing = len(rows) - sum(len(results(out)) for out in outs[:2])
    done = amili("bulk", source, "--merge", *outs[:2])
    assert done.returncode == 1
    assert f"{missing} no outcome" in done.stderr and f"{missing} lines have no outcome: line " in done.stderr
    # The second worker stopped with one line in flight: its `sending` record has no result.
    kept = outs[1].read_text().splitlines(keepends=True)
    last = max(i for i, text in enumerate(kept) if '"record":"result"' in text)
    outs[1].write_text("".join(kept[:last]))
    done = amili("bulk", source, "--merge", *outs[:2])
    assert done.returncode == 1 and f"{missing + 1} no outcome" in done.stderr
    assert "(in flight when its shard stopped)" in done.stderr


def test_a_line_stays_in_its_shard_when_the_input_is_reordered(served: Served, tmp_path: Path) -> None:
    rows = mixed(served)
    source = tmp_path / "all.csv"
    source.write_text(CSV_HEADER + "".join(r + "\n" for r in rows))
    out = tmp_path / "shard1.jsonl"
    shard(served, source, 1, out)
    first = Counter(r["digest"] for r in results(out))
    source.write_text(CSV_HEADER + "".join(r + "\n" for r in reversed(rows)))
    said = shard(served, source, 1, out)
    assert "0 lines processed" in said and f"{sum(first.values())} already in" in said
    assert_clean_error(amili("bulk", source, "--out", out, "--shard", "2/3", env=served.env), 2, "shard 1/3", "not 2/3")
    assert_clean_error(amili("bulk", source, "--out", out, "--shard", "4/3", env=served.env), 2, "--shard")


def test_merge_refuses_results_of_other_input(served: Served, tmp_path: Path) -> None:
    rows = mixed(served)
    day1, day2 = tmp_path / "day1.csv", tmp_path / "day2.csv"
    day1.write_text(CSV_HEADER + "".join(r + "\n" for r in rows[:10]))
    day2.write_text(CSV_HEADER + "".join(r + "\n" for r in rows[10:20]))
    out = tmp_path / "day1.jsonl"
    assert amili("bulk", day1, "--out", out, env=served.env).returncode == 0
    assert_clean_error(amili("bulk", day2, "--merge", out), 2, "holds results for other input")
