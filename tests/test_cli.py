"""The `amili` command, run as a user runs it: a subprocess, its exit code, its stdout, stderr and files."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

SECRET_KEY_TEXT = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMILI_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def amili(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amili_async", *map(str, args)],
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=120,
        check=False,
    )


def results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_line(path: Path) -> dict[int, dict[str, Any]]:
    found = results(path)
    lines = [r["line"] for r in found]
    assert len(lines) == len(set(lines)), "one result per input line, never two"
    return {r["line"]: r for r in found}


def assert_clean_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, done.stderr
    for word in words:
        assert word in errors[0], done.stderr


# -- single actions ----------------------------------------------------------------------------------


def test_pay_fake_json_prints_the_receipt() -> None:
    done = amili("pay", "--fake", "--amount", "250.00", "--reference", "PAY-1", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is True and out["kind"] == "payment"
    receipt = out["receipt"]
    assert receipt["settled_amount"] == "250.00"
    assert Decimal(receipt["settled_amount"]) == Decimal("250.00")
    assert receipt["status"] == "completed" and receipt["payment_status"] == "completed"
    assert len(receipt["id"]) == 24
    assert receipt["created"].endswith("+00:00")  # ISO 8601


def test_pay_fake_human_line_and_invoice_number() -> None:
    done = amili("pay", "--fake", "--invoice-number", "INV-0", "--amount", "1200", "--date", "2025-10-07")
    assert done.returncode == 0, done.stderr
    assert "settled 1000.00 of 1200.00 SEK" in done.stdout
    assert "creditor_payment.overpayment" in done.stdout


@pytest.mark.parametrize("amount", ["1.005", "abc", "1,50", "0", "-5", "NaN", "1e3"])
def test_bad_amount_is_a_one_line_error_naming_the_field(amount: str) -> None:
    done = amili("pay", "--fake", "--amount", amount)
    assert_clean_error(done, 2, "--amount")
    assert done.stdout == ""


def test_bad_date_and_bad_ids() -> None:
    assert_clean_error(amili("pay", "--fake", "--amount", "1", "--date", "2025-10-07T10:00"), 2, "--date")
    assert_clean_error(amili("pay", "--fake", "--amount", "1", "--date", "yesterday"), 2, "--date")
    bad_creditor = amili("pay", "--creditor", "nope", "--case", "68e4c40d93ee14723d28fa95", "--amount", "1")
    assert_clean_error(bad_creditor, 2, "--creditor")
    assert_clean_error(amili("respite", "check", "xyz"), 2, "CASE")
    assert_clean_error(amili("respite", "grant", "--fake", "--days", "0"), 2, "--days")


def test_missing_credentials_exit_2_without_secrets() -> None:
    env = _env(AMILI_PRIVATE_KEY=SECRET_KEY_TEXT)
    args = ("pay", "--creditor", "674dbeb208847b9501cc9138", "--case", "68e4c40d93ee14723d28fa95")
    done = amili(*args, "--amount", "250.00", env=env)
    assert_clean_error(done, 2, "AMILI_API_CODE")
    assert "TOPSECRET" not in done.stderr + done.stdout
    broken = amili(*args, "--amount", "250.00", env=_env(AMILI_API_CODE="code", AMILI_PRIVATE_KEY=SECRET_KEY_TEXT))
    assert_clean_error(broken, 2)
    assert "TOPSECRET" not in broken.stderr + broken.stdout


def test_respite_grant_refused_exits_1() -> None:
    too_long = amili("respite", "grant", "--fake", "--days", "60", "--json")
    assert too_long.returncode == 1
    # A 422 refusal is a RespiteValidationError: a RespiteNotAllowedError that is also a ValidationError.
    assert "RespiteValidationError" in too_long.stderr and "Traceback" not in too_long.stderr
    out = json.loads(too_long.stdout)
    assert out["ok"] is False and out["error"]["type"] == "RespiteValidationError"
    assert "days" in out["error"]["issues"]
    late = amili("respite", "grant", "--fake", "--fake-state", "debt_collection", "--days", "14")
    assert_clean_error(late, 1, "RespiteValidationError", "respite.debt_collection_started")


def test_respite_check_grant_case_get_cancel_credit() -> None:
    check = amili("respite", "check", "--fake", "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["allowed"] is True
    refused = amili("respite", "check", "--fake", "--fake-state", "debt_collection")
    assert refused.returncode == 0 and "not allowed" in refused.stdout
    grant = amili("respite", "grant", "--fake", "--days", "14")
    assert grant.returncode == 0 and "postponed by 14 days" in grant.stdout
    case = amili("case", "get", "--fake", "--fake-capital", "1234.50", "--json")
    assert case.returncode == 0
    record = json.loads(case.stdout)["case"]
    assert record["local_remaining_transaction_amount"] == "1234.50"
    assert record["state"] == "invoice" and record["closed"] is False
    cancel = amili("cancel", "--fake")
    assert cancel.returncode == 0 and "cancellation registered" in cancel.stdout
    credit = amili("credit", "--fake", "--amount", "100", "--reference", "CRED-1", "--json")
    assert credit.returncode == 0
    assert json.loads(credit.stdout)["receipt"]["settled_amount"] == "100.00"


def test_placeholders_need_fake_and_help_works() -> None:
    done = amili("pay", "--creditor", "@", "--case", "@0", "--amount", "1")
    assert_clean_error(done, 2, "--fake")
    assert amili("--help").returncode == 0
    assert amili("bulk", "--help").returncode == 0
    assert_clean_error(amili(), 2, "COMMAND")


# -- bulk --------------------------------------------------------------------------------------------

CSV_HEADER = "kind,creditor,case,invoice_number,amount,currency,bank_transaction_date,creditor_payment_reference,"
CSV_HEADER += "creditor_reference,days\n"


def test_bulk_csv_with_a_malformed_row(tmp_path: Path) -> None:
    source = tmp_path / "actions.csv"
    source.write_text(
        CSV_HEADER
        + "payment,@,@0,,250.00,SEK,2025-10-07,PAY-1,,\n"  # line 2
        + "payment,@,,INV-1,100,,2025-10-07T08:15:30Z,PAY-2,,\n"  # line 3
        + "crediting,,@2,,50.00,,,,CRED-1,\n"  # line 4
        + "payment,@,@3,,1.005,SEK,2025-10-07,PAY-3,,\n"  # line 5: three decimals
        + "cancellation,@,@4,,,,,,,\n"  # line 6
        + 'payment,@,@5,,10,,"Tue, 07 Oct 2025 08:15:30 GMT",PAY-4,,\n'  # line 7
        + "respite,,@6,,,,,,,14\n"  # line 8
    )
    out = tmp_path / "results.jsonl"
    done = amili("bulk", source, "--fake", "--out", out, "--concurrency", "4")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    got = by_line(out)
    assert sorted(got) == [2, 3, 4, 5, 6, 7, 8]
    assert got[5]["ok"] is False
    assert got[5]["error"]["type"] == "ValidationError" and "amount" in got[5]["error"]["message"]
    assert all(got[n]["ok"] for n in (2, 3, 4, 6, 7, 8))
    assert got[2]["receipt"]["settled_amount"] == "250.00"
    assert got[3]["receipt"]["case_invoice_number"] == "INV-1"
    assert got[8]["kind"] == "respite" and got[8]["receipt"]["days"] == 14


def test_bulk_jsonl_with_a_malformed_line(tmp_path: Path) -> None:
    rows: list[str] = [
        json.dumps(
            {
                "kind": "payment",
                "creditor": "@",
                "case": "@0",
                "amount": "25.00",
                "bank_transaction_date": "2025-10-07",
                "creditor_payment_reference": "P-1",
            }
        ),
        '{"kind": "payment", "creditor": "@", "case": "@1", "amount": 12.5, "bank_',  # cut short
        json.dumps({"kind": "crediting", "case": "@2", "amount": 5, "creditor_reference": "C-1"}),
        json.dumps({"kind": "refund", "case": "@3"}),
        json.dumps({"kind": "payment", "creditor": "@", "case": "@4", "amount": "1"}),  # no date
        json.dumps({"kind": "respite", "case": "@5", "days": 7}),
    ]
    source = tmp_path / "actions.jsonl"
    source.write_text("\n".join(rows) + "\n")
    out = tmp_path / "results.jsonl"
    done = amili("bulk", source, "--fake", "--out", out)
    assert done.returncode == 1, done.stderr
    got = by_line(out)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    assert {n for n, r in got.items() if not r["ok"]} == {2, 4, 5}
    assert "not valid JSON" in got[2]["error"]["message"]
    assert "kind" in got[4]["error"]["message"]
    assert "bank_transaction_date" in got[5]["error"]["message"] and got[5]["kind"] == "payment"
    assert got[1]["receipt"]["settled_amount"] == "25.00"


def test_bulk_all_good_exits_0_and_bad_header_exits_2(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(CSV_HEADER + "payment,@,@0,,1.00,,2025-10-07,G-1,,\npayment,@,@1,,2.00,,2025-10-07,G-2,,\n")
    done = amili("bulk", good, "--fake", "--out", tmp_path / "good.out")
    assert done.returncode == 0, done.stderr
    assert len(results(tmp_path / "good.out")) == 2
    header = tmp_path / "header.csv"
    header.write_text("kind,amout\npayment,1\n")
    assert_clean_error(amili("bulk", header, "--fake", "--out", tmp_path / "h.out"), 2, "amout")
    assert_clean_error(amili("bulk", tmp_path / "missing.csv", "--out", tmp_path / "m.out"), 2, "no such file")


def _payments_jsonl(path: Path, n: int, *, creditor: str = "@", cases: list[str] | None = None) -> None:
    with path.open("w") as fh:
        for i in range(n):
            case = cases[i % len(cases)] if cases else f"@{i % 100}"
            row = {
                "kind": "payment",
                "creditor": creditor,
                "case": case,
                "amount": "1.00",
                "bank_transaction_date": "2025-10-07",
                "creditor_payment_reference": f"R-{i}",
            }
            fh.write(json.dumps(row) + "\n")


def test_bulk_resume_processes_only_the_missing_lines(tmp_path: Path) -> None:
    source = tmp_path / "payments.jsonl"
    _payments_jsonl(source, 60)
    out = tmp_path / "results.jsonl"
    first = amili("bulk", source, "--fake", "--out", out, "--concurrency", "8")
    assert first.returncode == 0, first.stderr
    kept = out.read_text().splitlines(keepends=True)
    removed = {json.loads(line)["line"] for line in kept[-3:]}
    # The last 3 results are lost, and the run died in the middle of writing another one.
    out.write_text("".join(kept[:-3]) + '{"line": 9')
    again = amili("bulk", source, "--fake", "--out", out, "--concurrency", "8")
    assert again.returncode == 0, again.stderr
    assert "3 lines processed" in again.stderr
    assert "57 already in" in again.stderr
    got = by_line(out)
    assert sorted(got) == list(range(1, 61))
    appended = [r["line"] for r in results(out)[57:]]
    assert set(appended) == removed
    # Nothing left to do: a third run processes nothing and still reports success.
    third = amili("bulk", source, "--fake", "--out", out)
    assert third.returncode == 0 and "0 lines processed" in third.stderr
    assert len(results(out)) == 60


def test_bulk_20000_lines_streams(tmp_path: Path) -> None:
    source = tmp_path / "big.jsonl"
    _payments_jsonl(source, 20_000)
    out = tmp_path / "big.out"
    done = amili("bulk", source, "--fake", "--out", out, "--concurrency", "64")
    assert done.returncode == 0, done.stderr[-500:]
    count = 0
    seen = bytearray(20_001)
    with out.open() as fh:
        for line in fh:
            record = json.loads(line)
            assert record["ok"] is True
            seen[record["line"]] += 1
            count += 1
    assert count == 20_000 and seen[1:] == b"\x01" * 20_000
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kilobytes on Linux
    assert peak_kb < 400 * 1024


# -- against a loopback Amili over real HTTP, credentials from the environment --------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    server = subprocess.Popen(
        [sys.executable, "-m", "amili_async.testing", "serve", "--cases", "5"],
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


def test_real_http_single_actions_and_no_secrets(served: dict[str, Any]) -> None:
    env = served["env"]
    case = served["cases"][0]
    pay = amili(
        "pay",
        "--creditor",
        served["creditor"],
        "--case",
        case,
        "--amount",
        "100.00",
        "--reference",
        "HTTP-1",
        "--json",
        env=env,
    )
    assert pay.returncode == 0, pay.stderr
    assert json.loads(pay.stdout)["receipt"]["settled_amount"] == "100.00"
    got = amili("case", "get", case, "--json", env=env)
    assert json.loads(got.stdout)["case"]["local_remaining_transaction_amount"] == "9900.00"
    unknown = amili("pay", "--creditor", served["creditor"], "--invoice-number", "NOPE", "--amount", "1", env=env)
    assert_clean_error(unknown, 1, "422", "invoice_number")
    for done in (pay, got, unknown):
        text = done.stdout + done.stderr
        assert served["api_code"] not in text
        assert "PRIVATE KEY" not in text


def test_real_http_resume_never_pays_twice(served: dict[str, Any], tmp_path: Path) -> None:
    env = served["env"]
    source = tmp_path / "payments.jsonl"
    _payments_jsonl(source, 50, creditor=served["creditor"], cases=served["cases"])
    out = tmp_path / "results.jsonl"
    assert amili("bulk", source, "--out", out, env=env).returncode == 0
    kept = out.read_text().splitlines(keepends=True)
    out.write_text("".join(kept[:-3]))  # their payments were made, but the results were lost
    again = amili("bulk", source, "--out", out, env=env)
    assert again.returncode == 0, again.stderr
    got = by_line(out)
    assert sorted(got) == list(range(1, 51))
    assert sum(1 for r in got.values() if r.get("reconciled")) == 3
    # 50 payments of 1.00 over 5 cases of 10000.00: 10 each, none paid twice.
    for case in served["cases"]:
        record = json.loads(amili("case", "get", case, "--json", env=env).stdout)["case"]
        assert record["local_remaining_transaction_amount"] == "9990.00"
