"""The `amili` command, run as a user runs it: the installed command, its exit code, stdout, stderr and files.

Single actions and reads here (against `--fake` and the in-memory Amili served on loopback), and the basics of
`amili bulk`; resume, retry, reconciliation and shards have their own files (`test_cli_*.py`).
"""

from __future__ import annotations

import json
import resource
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from test_cli_support import CSV_HEADER, Served, amili, assert_clean_error, clean_env, final, results, serve

SECRET_KEY_TEXT = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"


def as_json(text: str) -> dict[str, object]:
    found: dict[str, object] = json.loads(text, parse_float=Decimal)
    return found


# -- single actions ----------------------------------------------------------------------------------


def test_pay_fake_json_prints_the_receipt_with_exact_money() -> None:
    done = amili("pay", "--fake", "--amount", "250.00", "--reference", "PAY-1", "--json")
    assert done.returncode == 0, done.stderr
    assert '"settled_amount": 250.00' in done.stdout  # an exact JSON number, as Amili writes money
    out = as_json(done.stdout)
    assert out["ok"] is True and out["kind"] == "payment"
    receipt = out["receipt"]
    assert isinstance(receipt, dict)
    assert receipt["settled_amount"] == Decimal("250.00")
    assert receipt["status"] == "completed" and receipt["payment_status"] == "completed"
    assert len(receipt["id"]) == 24
    assert receipt["created"].endswith(" GMT")  # RFC 1123, like Amili's own dates


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


def test_bad_currency_reads_well() -> None:
    done = amili("pay", "--fake", "--amount", "1", "--currency", "sek")
    assert_clean_error(done, 2, "--currency", "three upper-case letters")
    assert "---" not in done.stderr


def test_bad_date_and_bad_ids() -> None:
    assert_clean_error(amili("pay", "--fake", "--amount", "1", "--date", "2025-10-07T10:00"), 2, "--date", "offset")
    assert_clean_error(amili("pay", "--fake", "--amount", "1", "--date", "yesterday"), 2, "--date")
    bad_creditor = amili("pay", "--creditor", "nope", "--case", "68e4c40d93ee14723d28fa95", "--amount", "1")
    assert_clean_error(bad_creditor, 2, "--creditor")
    assert_clean_error(amili("respite", "check", "xyz"), 2, "CASE")
    assert_clean_error(amili("respite", "grant", "--fake", "--days", "0"), 2, "--days")
    assert_clean_error(amili("pay", "--case", "68e4c40d93ee14723d28fa95", "--amount", "1"), 2, "--creditor")


def test_missing_credentials_exit_2_without_secrets() -> None:
    env = clean_env(AMILI_PRIVATE_KEY=SECRET_KEY_TEXT)
    args = ("pay", "--creditor", "674dbeb208847b9501cc9138", "--case", "68e4c40d93ee14723d28fa95")
    done = amili(*args, "--amount", "250.00", env=env)
    assert_clean_error(done, 2, "AMILI_API_CODE")
    assert "TOPSECRET" not in done.stderr + done.stdout
    broken = amili(*args, "--amount", "250.00", env=clean_env(AMILI_API_CODE="code", AMILI_PRIVATE_KEY=SECRET_KEY_TEXT))
    assert_clean_error(broken, 2)
    assert "TOPSECRET" not in broken.stderr + broken.stdout


@pytest.mark.parametrize("url", ["ftp://amili.example", "http://amili.example", "localhost:8000"])
def test_a_bad_base_url_says_local_http_is_allowed(url: str, tmp_path: Path) -> None:
    with serve(tmp_path) as served:  # real credentials: only the URL is wrong
        args = ("case", "get", served.cases[0], "--base-url", url)
        assert_clean_error(amili(*args, env=served.env), 2, "base_url", "http://localhost")


def test_respite_grant_refused_exits_1() -> None:
    too_long = amili("respite", "grant", "--fake", "--days", "60", "--json")
    assert too_long.returncode == 1
    # A 422 refusal is a RespiteValidationError: a RespiteNotAllowedError that is also a ValidationError.
    assert "RespiteValidationError" in too_long.stderr and "Traceback" not in too_long.stderr
    out = as_json(too_long.stdout)
    assert out["ok"] is False and out["error"]["type"] == "RespiteValidationError"  # type: ignore[index]
    assert "days" in out["error"]["issues"]  # type: ignore[index]
    late = amili("respite", "grant", "--fake", "--fake-state", "debt_collection", "--days", "14")
    assert_clean_error(late, 1, "RespiteValidationError", "respite.debt_collection_started")


def test_respite_check_grant_case_get_cancel_credit() -> None:
    check = amili("respite", "check", "--fake", "--json")
    assert check.returncode == 0 and as_json(check.stdout)["allowed"] is True
    refused = amili("respite", "check", "--fake", "--fake-state", "debt_collection")
    assert refused.returncode == 0 and "not allowed" in refused.stdout
    grant = amili("respite", "grant", "--fake", "--days", "14")
    assert grant.returncode == 0 and "postponed by 14 days" in grant.stdout
    cancel = amili("cancel", "--fake")
    assert cancel.returncode == 0 and "cancellation registered" in cancel.stdout
    credit = amili("credit", "--fake", "--amount", "100", "--reference", "CRED-1", "--json")
    assert credit.returncode == 0
    assert as_json(credit.stdout)["receipt"]["settled_amount"] == Decimal("100.00")  # type: ignore[index]


def test_case_get_json_writes_money_exactly_never_as_floats() -> None:
    case = amili("case", "get", "--fake", "--fake-capital", "1234.50", "--json")
    assert case.returncode == 0, case.stderr
    assert "1234.5," not in case.stdout and "1234.5\n" not in case.stdout  # the float spelling of 1234.50
    record = as_json(case.stdout)["case"]
    assert isinstance(record, dict)
    assert record["local_remaining_transaction_amount"] == Decimal("1234.50")
    assert '"local_remaining_transaction_amount": 1234.50' in case.stdout
    assert '"initial_capital": 1234.50' in case.stdout  # inside `debt`, raw JSON the SDK does not model
    assert record["state"] == "invoice" and record["closed"] is False


def test_placeholders_need_fake_and_help_works() -> None:
    done = amili("pay", "--creditor", "@", "--case", "@0", "--amount", "1")
    assert_clean_error(done, 2, "--fake")
    assert amili("--help").returncode == 0
    assert "--retry-failed" in amili("bulk", "--help").stdout
    assert_clean_error(amili(), 2, "COMMAND")


def test_python_m_amili_async_is_the_same_command() -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "amili_async", "--version"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.startswith("amili-async ")


# -- single actions against the in-memory Amili served on loopback ------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path, cases=5) as running:
        yield running


def test_real_http_single_actions_and_no_secrets(served: Served) -> None:
    env, case = served.env, served.cases[0]
    args = ("--creditor", served.creditor, "--case", case, "--amount", "100.00", "--reference", "HTTP-1", "--json")
    pay = amili("pay", *args, env=env)
    assert pay.returncode == 0, pay.stderr
    assert as_json(pay.stdout)["receipt"]["settled_amount"] == Decimal("100.00")  # type: ignore[index]
    got = amili("case", "get", case, "--json", env=env)
    assert as_json(got.stdout)["case"]["local_remaining_transaction_amount"] == Decimal("9900.00")  # type: ignore[index]
    unknown = amili("pay", "--creditor", served.creditor, "--invoice-number", "NOPE", "--amount", "1", env=env)
    assert_clean_error(unknown, 1, "422", "invoice_number")
    by_invoice = amili("pay", "--creditor", served.creditor, "--invoice-number", "INV-0", "--amount", "1", env=env)
    assert by_invoice.returncode == 0 and "invoice INV-0" in by_invoice.stdout, by_invoice.stderr
    # Served, as with --fake, invoice INV-i is case i.
    assert [p.case for p in served.stored().payments] == [served.cases[0], served.cases[0]]
    for done in (pay, got, unknown):
        text = done.stdout + done.stderr
        assert served.info["api_code"] not in text
        assert "PRIVATE KEY" not in text


def test_pay_refuses_a_reference_amili_already_has(served: Served) -> None:
    env, case = served.env, served.cases[1]
    args = ("pay", "--creditor", served.creditor, "--case", case, "--amount", "10.00", "--reference", "PAY-ONCE")
    first = amili(*args, env=env)
    assert first.returncode == 0, first.stderr
    payment_id = first.stdout.split("registered: ")[1].split(",")[0]
    again = amili(*args, env=env)
    assert_clean_error(again, 1, "PAY-ONCE", "already in Amili", payment_id, "amount 10.00 SEK", "--allow-existing")
    as_data = amili(*args, "--json", env=env)
    assert as_data.returncode == 1
    shown = as_json(as_data.stdout)
    assert shown["ok"] is False and shown["existing"]["id"] == payment_id  # type: ignore[index]
    assert len(served.stored().payments) == 1
    meant = amili(*args, "--allow-existing-reference", env=env)
    assert meant.returncode == 0, meant.stderr
    assert [p.creditor_payment_reference for p in served.stored().payments] == ["PAY-ONCE", "PAY-ONCE"]


def test_credit_refuses_a_reference_amili_already_has(served: Served) -> None:
    env, case = served.env, served.cases[2]
    args = ("credit", "--case", case, "--amount", "5", "--reference", "CRED-ONCE")
    assert amili(*args, env=env).returncode == 0
    assert_clean_error(amili(*args, env=env), 1, "CRED-ONCE", "already in Amili")
    assert len(served.stored().creditings) == 1


# -- bulk basics -------------------------------------------------------------------------------------------


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
    got = final(out)
    assert sorted(got) == [2, 3, 4, 5, 6, 7, 8]
    assert got[5]["outcome"] == "failed" and got[5]["ok"] is False
    assert got[5]["error"]["type"] == "ValidationError" and "amount" in got[5]["error"]["message"]
    assert all(got[n]["outcome"] == "applied" for n in (2, 3, 4, 6, 7, 8))
    assert got[2]["receipt"]["settled_amount"] == Decimal("250.00")
    assert got[3]["receipt"]["case_invoice_number"] == "INV-1"
    assert got[8]["kind"] == "respite" and got[8]["receipt"]["days"] == 14
    assert "1 lines failed, nothing applied" in done.stderr and "--retry-failed" in done.stderr


def test_bulk_jsonl_with_a_malformed_line(tmp_path: Path) -> None:
    rows: list[str] = [
        json.dumps({"kind": "payment", "creditor": "@", "case": "@0", "amount": "25.00",
                    "bank_transaction_date": "2025-10-07", "creditor_payment_reference": "P-1"}),
        '{"kind": "payment", "creditor": "@", "case": "@1", "amount": 12.5, "bank_',  # cut short
        json.dumps({"kind": "crediting", "case": "@2", "amount": 5, "creditor_reference": "C-1"}),
        json.dumps({"kind": "refund", "case": "@3"}),
        json.dumps({"kind": "payment", "creditor": "@", "case": "@4", "amount": "1"}),  # no date
        json.dumps({"kind": "respite", "case": "@5", "days": 7}),
    ]  # fmt: skip
    source = tmp_path / "actions.jsonl"
    source.write_text("\n".join(rows) + "\n")
    out = tmp_path / "results.jsonl"
    done = amili("bulk", source, "--fake", "--out", out)
    assert done.returncode == 1, done.stderr
    got = final(out)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    assert {n for n, r in got.items() if not r["ok"]} == {2, 4, 5}
    assert "not valid JSON" in got[2]["error"]["message"]
    assert "kind" in got[4]["error"]["message"]
    assert "bank_transaction_date" in got[5]["error"]["message"] and got[5]["kind"] == "payment"
    assert got[1]["receipt"]["settled_amount"] == Decimal("25.00")


def test_bulk_rows_must_have_as_many_values_as_the_header(served: Served, tmp_path: Path) -> None:
    source = tmp_path / "rows.csv"
    c = served.cases
    source.write_text(
        "kind,creditor,case,amount,bank_transaction_date,creditor_payment_reference\n"
        f"payment,{served.creditor},{c[0]},1.00,2025-10-07,R-1\n"  # line 2: fine
        f"payment,{served.creditor},{c[1]},2.00,2025-10-07\n"  # line 3: the reference is missing
        f"payment,{served.creditor},{c[2]},3.00,2025-10-07,R-3,extra\n"  # line 4: one too many
    )
    out = tmp_path / "out.jsonl"
    done = amili("bulk", source, "--out", out, env=served.env)
    assert done.returncode == 1, done.stderr
    got = final(out)
    assert got[2]["ok"] is True
    assert got[3]["error"]["message"] == "line: has 5 values but the header names 6"
    assert got[4]["error"]["message"] == "line: has 7 values but the header names 6"
    assert [p.creditor_payment_reference for p in served.stored().payments] == ["R-1"]  # neither short row sent


def test_bulk_all_good_exits_0_and_header_errors_leave_no_file(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(CSV_HEADER + "payment,@,@0,,1.00,,2025-10-07,G-1,,\npayment,@,@1,,2.00,,2025-10-07,G-2,,\n")
    done = amili("bulk", good, "--fake", "--out", tmp_path / "good.out")
    assert done.returncode == 0, done.stderr
    assert len(results(tmp_path / "good.out")) == 2
    for header in ("kind,amout\npayment,1\n", "kind,case,case\n", "case,amount\n@0,1\n"):
        bad = tmp_path / "header.csv"
        bad.write_text(header)
        assert_clean_error(amili("bulk", bad, "--fake", "--out", tmp_path / "h.out"), 2, "header")
        assert not (tmp_path / "h.out").exists()
    assert_clean_error(amili("bulk", tmp_path / "missing.csv", "--out", tmp_path / "m.out"), 2, "no such file")
    assert_clean_error(amili("bulk", good, "--fake"), 2, "--out")
    assert not (tmp_path / "m.out").exists()


def test_bulk_reads_stdin(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    line = json.dumps({"kind": "respite", "case": "@0", "days": 7})
    done = amili("bulk", "-", "--format", "jsonl", "--fake", "--out", out, stdin=line + "\n")
    assert done.returncode == 0, done.stderr
    assert final(out)[1]["receipt"]["days"] == 7


def _payments_jsonl(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            row = {"kind": "payment", "creditor": "@", "case": f"@{i % 100}", "amount": "1.00",
                   "bank_transaction_date": "2025-10-07", "creditor_payment_reference": f"R-{i}"}  # fmt: skip
            fh.write(json.dumps(row) + "\n")


def test_bulk_20000_lines_streams_in_bounded_memory(tmp_path: Path) -> None:
    source = tmp_path / "big.jsonl"
    _payments_jsonl(source, 20_000)
    out = tmp_path / "big.out"
    done = amili("bulk", source, "--fake", "--out", out, "--concurrency", "64", "--quiet")
    assert done.returncode == 0, done.stderr[-500:]
    seen = bytearray(20_001)
    with out.open() as fh:
        for text in fh:
            rec = json.loads(text)
            if rec["record"] == "result":
                assert rec["ok"] is True
                seen[rec["line"]] += 1
    assert seen[1:] == b"\x01" * 20_000
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kilobytes on Linux
    assert peak_kb < 400 * 1024
