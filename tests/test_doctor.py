"""`amili doctor`: passes against the in-memory Amili, and names each broken assumption of a raw server.

The raw servers (tests/amili_like.py) each break one assumption: no `where` support, a filter that is
ignored, another token shape, a token without a lifetime, a clock 20 minutes ahead, no rate-limit headers,
duplicate references accepted. Each run goes through the real `amili` command (`cli.main`), credentials from
the environment, and the tests look at the exit code, the row that must say what broke, and at what the
server stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from amili_like import CASE, AmiliLike, Behaviour

from amili_async import ApiCodeJwtAuth, ConfigurationError
from amili_async.cli import main
from amili_async.doctor import EXIT_DIFFERS, EXIT_OK, EXIT_UNSAFE, Report, diagnose
from amili_async.testing import FakeAmili
from amili_async.testing.server import start_server

API_CODE = "api-code-SECRET-doctor"
KeyPair = Any  # tests/conftest.py's key pair (private_pem, public_pem)


@pytest.fixture
def env(ec_keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> KeyPair:
    for name in [n for n in os.environ if n.startswith("AMILI_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AMILI_API_CODE", API_CODE)
    monkeypatch.setenv("AMILI_PRIVATE_KEY", ec_keys.private_pem)
    return ec_keys


@pytest.fixture
def server_for(env: KeyPair) -> Iterator[Any]:
    servers: list[AmiliLike] = []

    def start(**behaviour: Any) -> AmiliLike:
        server = AmiliLike(API_CODE, env.public_pem, Behaviour(**behaviour)).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["doctor", "--json", *args])
    out = json.loads(capsys.readouterr().out)
    assert out["exit_code"] == code
    return code, {row["check"]: row for row in out["checks"]}


def verdicts(rows: dict[str, Any]) -> dict[str, str]:
    return {name: row["verdict"] for name, row in rows.items()}


def test_passes_against_the_in_memory_amili_served_on_loopback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    command = [sys.executable, "-m", "amili_async.testing", "serve", "--cases", "2", "--rate-limit", "1000"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as serving:
        try:
            assert serving.stdout is not None
            seeded = json.loads(serving.stdout.readline())
            for name in [n for n in os.environ if n.startswith("AMILI_")]:
                monkeypatch.delenv(name)
            monkeypatch.setenv("AMILI_API_CODE", seeded["api_code"])
            monkeypatch.setenv("AMILI_PRIVATE_KEY", seeded["private_key_pem"])
            code, rows = doctor(capsys, "--base-url", seeded["base_url"])
        finally:
            serving.terminate()
    assert code == EXIT_OK, rows
    assert {v for name, v in verdicts(rows).items() if name != "duplicate reference"} == {"ok"}
    assert rows["duplicate reference"]["verdict"] == "not checked"  # it writes: only with --write-test


def test_a_well_behaved_server_passes_the_write_test_and_keeps_one_payment(
    server_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    server = server_for()
    code, rows = doctor(capsys, "--base-url", server.base_url, "--write-test", CASE)
    assert code == EXIT_OK, rows
    assert rows["duplicate reference"]["verdict"] == "ok"
    assert "409" in rows["duplicate reference"]["observed"]
    assert len(server.payments) == 1  # the second was refused: one test payment stored
    reference = server.payments[0]["creditor_payment_reference"]
    assert reference.startswith("amili-doctor-dup-")


def test_no_where_support_is_broken_lookups(server_for: Any, capsys: pytest.CaptureFixture[str]) -> None:
    server = server_for(where="refuse")
    code, rows = doctor(capsys, "--base-url", server.base_url)
    assert code == EXIT_UNSAFE
    for kind in ("payments", "creditings", "cancellations"):
        row = rows[f"lookup {kind}"]
        assert row["verdict"] == "broken" and "400" in row["observed"]
        assert "OutcomeUnknownError" in row["consequence"]
    assert verdicts(rows)["read cases"] == "ok"  # only the filter is refused
    assert server.payments == []  # read-only: nothing was written
    assert {r.method for r in server.requests} == {"GET"}


def test_an_ignored_filter_is_broken(server_for: Any, capsys: pytest.CaptureFixture[str]) -> None:
    server = server_for(where="ignore")
    server.payments.append({"_id": "1" * 24, "creditor_payment_reference": "SOMEONE-ELSES"})
    code, rows = doctor(capsys, "--base-url", server.base_url)
    assert code == EXIT_UNSAFE
    assert rows["lookup payments"]["verdict"] == "broken"
    assert "ignored" in rows["lookup payments"]["observed"]


def test_another_token_shape_is_reported_without_the_token(server_for: Any, capsys: pytest.CaptureFixture[str]) -> None:
    server = server_for(token_shape="nested")
    code = main(["doctor", "--base-url", server.base_url])
    table = capsys.readouterr().out
    code_json, rows = doctor(capsys, "--base-url", server.base_url)
    assert code == code_json == EXIT_UNSAFE
    assert rows["token_answer"]["verdict"] == "broken"
    assert rows["token_answer"]["observed"] == "a JSON object with data (object)"
    assert rows["login"]["verdict"] == "broken"
    assert "BROKEN" in table and "token_answer" in table
    for secret in [*server.tokens, *server.jwts, API_CODE]:
        assert secret not in table and secret not in json.dumps(rows)


def test_a_token_without_a_lifetime_differs(server_for: Any, capsys: pytest.CaptureFixture[str]) -> None:
    server = server_for(token_shape="token only")
    code, rows = doctor(capsys, "--base-url", server.base_url)
    assert code == EXIT_DIFFERS
    assert rows["token_lifetime"]["verdict"] == "differs"
    assert "assumes 300 s" in rows["token_lifetime"]["consequence"]
    assert {v for v in verdicts(rows).values()} <= {"ok", "differs", "not checked"}


def test_a_clock_20_minutes_ahead_is_reported_and_logins_still_work(
    server_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    server = server_for(clock_offset=1200.0)
    code, rows = doctor(capsys, "--base-url", server.base_url)
    assert code == EXIT_DIFFERS
    clock = rows["clock"]
    assert clock["verdict"] == "differs"
    assert "ahead of ours" in clock["observed"]
    seconds = int(clock["observed"].split(" s ")[0].rsplit(" ", 1)[1])
    assert 1195 <= seconds <= 1205
    assert "server's clock" in clock["consequence"]
    assert rows["login"]["verdict"] == "ok" and rows["login"]["observed"].startswith("answered 401, then 200")
    assert len(server.jwts) == 2 and len(server.tokens) == 1  # refused once, then accepted


def test_no_rate_limit_headers_differs(server_for: Any, capsys: pytest.CaptureFixture[str]) -> None:
    server = server_for(rate_limit_headers=False)
    code, rows = doctor(capsys, "--base-url", server.base_url)
    assert code == EXIT_DIFFERS
    assert rows["rate_limit_headers"]["verdict"] == "differs"
    assert "429" in rows["rate_limit_headers"]["consequence"]


def test_duplicates_accepted_is_broken_and_both_are_stored(server_for: Any, capsys: pytest.CaptureFixture[str]) -> None:
    server = server_for(unique_references=False)
    code, rows = doctor(capsys, "--base-url", server.base_url, "--write-test", CASE)
    assert code == EXIT_UNSAFE
    row = rows["duplicate reference"]
    assert row["verdict"] == "broken"
    references = {p["creditor_payment_reference"] for p in server.payments}
    assert len(server.payments) == 2 and len(references) == 1  # what the row says happened, happened
    assert references.pop() in row["observed"]
    assert all(p["_id"] in row["observed"] for p in server.payments)


def test_the_write_test_is_refused_away_from_the_sandbox_and_loopback(
    env: KeyPair, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["doctor", "--base-url", "https://api.amili.se", "--write-test", CASE])
    assert code == 2
    assert "sandbox or loopback" in capsys.readouterr().err


async def test_nothing_is_sent_when_the_write_test_is_refused(env: KeyPair) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    with pytest.raises(ConfigurationError, match="sandbox or loopback"):
        await diagnose(base_url="https://api.amili.se", write_test=CASE, transport=httpx.MockTransport(handler))
    assert sent == []


def test_bad_ids_are_a_usage_error(env: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--base-url", "http://127.0.0.1:9", "--case", "not-an-id"]) == 2
    assert "case" in capsys.readouterr().err


def test_refused_credentials_stop_the_checks(server_for: Any, capsys: pytest.CaptureFixture[str]) -> None:
    server = server_for()
    server.api_code = "somebody-else"
    code, rows = doctor(capsys, "--base-url", server.base_url)
    assert code == EXIT_UNSAFE
    assert rows["login"]["verdict"] == "broken" and rows["login"]["observed"] == "answered 401"
    assert rows["everything else"]["verdict"] == "not checked"
    assert len(server.jwts) == 1  # a clock close to ours: no second try


def test_the_table_shows_every_column_within_its_width() -> None:
    from amili_async.doctor import Finding, Verdict

    report = Report(
        "http://127.0.0.1:1",
        (
            Finding("login", Verdict.OK, "assumed " * 12, "seen " * 12, "does " * 12),
            Finding("lookup payments", Verdict.BROKEN, "a", "refused: 400 (BadRequestError)", "b"),
        ),
    )
    table = report.render(width=100)
    assert all(len(line) <= 100 for line in table.splitlines())
    assert "RESULT" in table and "THE SDK WILL" in table and "BROKEN" in table
    assert table.count("assumed") == 12 and table.count("does") == 12  # wrapped, nothing cut
    assert report.exit_code == EXIT_UNSAFE and "Exit code 1" in table


async def test_the_in_memory_amili_without_a_limiter_differs_only_in_rate_limit_headers() -> None:
    fake = FakeAmili(seed=3)
    creditor = fake.add_creditor()
    case = fake.add_case(creditor.id)
    auth = ApiCodeJwtAuth(api_code=creditor.api_code, private_key=creditor.private_key_pem)
    report = await diagnose(auth=auth, base_url=fake.BASE_URL, transport=fake.transport(), case=case)
    assert report.exit_code == EXIT_DIFFERS
    rows = {f.check: f.verdict.value for f in report.findings}
    assert [name for name, verdict in rows.items() if verdict == "differs"] == ["rate_limit_headers"]
    assert rows["read case"] == rows["read respite check"] == "ok"
    assert fake.payments == [] and fake.creditings == [] and fake.cancellations == []  # read-only


async def test_the_write_test_against_the_in_memory_amili_reports_what_it_stored() -> None:
    fake = FakeAmili(seed=4, rate_limit=(1000, 1.0))
    creditor = fake.add_creditor()
    case = fake.add_case(creditor.id)
    auth = ApiCodeJwtAuth(api_code=creditor.api_code, private_key=creditor.private_key_pem)
    async with await start_server(fake) as server:
        report = await diagnose(auth=auth, base_url=server.base_url, write_test=case)
    row = next(f for f in report.findings if f.check == "duplicate reference")
    assert report.exit_code == EXIT_UNSAFE and row.verdict.value == "broken"  # the fake accepts duplicates
    stored = [p for p in fake.payments if p["case"] == case]
    assert len(stored) == 2 and stored[0]["creditor_payment_reference"] == stored[1]["creditor_payment_reference"]
    assert all(p["_id"] in row.observed for p in stored)
