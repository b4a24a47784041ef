"""The pytest plugin as a user meets it: test modules using `fake_amili` and `amili_client`, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

AUTO = [
    "-p",
    "no:cacheprovider",
    "-o",
    "asyncio_mode=auto",
    "-o",
    "asyncio_default_fixture_loop_scope=function",
]
STRICT = [
    "-p",
    "no:cacheprovider",
    "-o",
    "asyncio_mode=strict",
    "-o",
    "asyncio_default_fixture_loop_scope=function",
]

HEADER = """
from datetime import datetime, timezone
from decimal import Decimal

from pathlib import Path

import pytest

from amili_async import AsyncAmiliClient, OutcomeUnknownError
from amili_async.testing import FakeAmili

PAID_ON = datetime(2025, 10, 7, tzinfo=timezone.utc)
"""


def test_a_users_payment_test_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user=HEADER
        + """
async def test_registers_a_payment(fake_amili, amili_client):
    case_id = fake_amili.new_case(capital=Decimal("500.00"))
    receipt = await amili_client.creditor_payments.create(
        creditor=fake_amili.creditor_id, case=case_id, amount=Decimal("200.00"), currency="SEK",
        bank_transaction_date=PAID_ON, creditor_payment_reference="PAY-1",
    )
    assert receipt.status == "completed"
    [payment] = fake_amili.payments_for(case_id)
    assert payment["_id"] == receipt.id
    assert payment["amount"] == Decimal("200.00")
    assert payment["creditor_payment_reference"] == "PAY-1"
    assert fake_amili.get_case(case_id)["local_remaining_capital_amount"] == Decimal("300.00")


def test_the_fixtures_fit_together(fake_amili, amili_client):
    assert isinstance(fake_amili, FakeAmili)
    assert isinstance(amili_client, AsyncAmiliClient)
    assert fake_amili.seed == 0
    assert fake_amili.creditor.id == fake_amili.creditor_id
    assert len(fake_amili.new_cases(3)) == 3
"""
    )
    result = pytester.runpytest_inprocess(*AUTO)
    result.assert_outcomes(passed=2)


def test_fault_injection_example(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_faults=HEADER
        + """
async def test_a_lost_answer_is_reconciled_by_reference(fake_amili, amili_client):
    case_id = fake_amili.new_case()
    # Amili applies the next payment, then the connection drops before the answer arrives.
    fake_amili.fail("drop_after_commit", path="/creditor--payments", method="POST")
    receipt = await amili_client.creditor_payments.create(
        creditor=fake_amili.creditor_id, case=case_id, amount=Decimal("100.00"), currency="SEK",
        bank_transaction_date=PAID_ON, creditor_payment_reference="PAY-LOST-1",
    )
    # The SDK looked the payment up by its reference instead of sending it twice.
    [payment] = fake_amili.payments_for(case_id)
    assert receipt.id == payment["_id"]
    assert [r.fault for r in fake_amili.requests if r.method == "POST"] == ["drop_after_commit"]


async def test_without_a_reference_the_outcome_is_unknown(fake_amili, amili_client):
    case_id = fake_amili.new_case()
    fake_amili.fail("server_error", path="/creditor--payments", status=502, commit=True)
    with pytest.raises(OutcomeUnknownError):
        await amili_client.creditor_payments.create(
            creditor=fake_amili.creditor_id, case=case_id, amount=Decimal("100.00"), currency="SEK",
            bank_transaction_date=PAID_ON,
        )
    assert len(fake_amili.payments_for(case_id)) == 1  # it was applied: reconcile before sending it again


async def test_rate_limits_are_retried_without_sleeping(fake_amili, amili_client):
    fake_amili.fail("rate_limit", path="/cases", retry_after=30, times=2)
    case = await amili_client.cases.get(fake_amili.new_case())
    assert case.state == "invoice"
    assert [r.status for r in fake_amili.requests if r.path.startswith("/cases")] == [429, 429, 200]
"""
    )
    result = pytester.runpytest_inprocess(*AUTO)
    result.assert_outcomes(passed=3)


def test_strict_mode_needs_the_asyncio_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_strict=HEADER
        + """
@pytest.mark.asyncio
async def test_marked(fake_amili, amili_client):
    case = await amili_client.cases.get(fake_amili.new_case())
    assert case.creditor == fake_amili.creditor_id
"""
    )
    result = pytester.runpytest_inprocess(*STRICT)
    result.assert_outcomes(passed=1)


def test_the_client_is_closed_after_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_close=HEADER
        + """
from amili_async import ClientStateError

seen = []


async def test_uses_the_client(fake_amili, amili_client):
    seen.append((amili_client, fake_amili.new_case()))
    await amili_client.cases.get(seen[0][1])


async def test_then_it_is_closed():
    client, case_id = seen[0]
    with pytest.raises(ClientStateError):
        await client.cases.get(case_id)
"""
    )
    result = pytester.runpytest_inprocess(*AUTO)
    result.assert_outcomes(passed=2)


def test_seed_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_seed="""
def test_seed(fake_amili):
    assert fake_amili.seed == 7
"""
    )
    pytester.runpytest_inprocess(*AUTO, "--amili-seed", "7").assert_outcomes(passed=1)
    pytester.runpytest_inprocess(*AUTO).assert_outcomes(failed=1)


def test_same_seed_same_ids(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_repeat="""
ids = []


def test_first(fake_amili):
    ids.append((fake_amili.creditor_id, fake_amili.new_case()))


def test_second(fake_amili):
    assert (fake_amili.creditor_id, fake_amili.new_case()) == ids[0]
"""
    )
    pytester.runpytest_inprocess(*AUTO).assert_outcomes(passed=2)


def test_option_is_documented_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(*AUTO, "--help")
    result.stdout.fnmatch_lines(["*--amili-seed=SEED*"])


def test_the_example_in_the_testing_guide(pytester: pytest.Pytester) -> None:
    """docs/testing.md shows a pytest module; it is not run by test_docs.py but here, under pytest."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "testing.md").read_text(encoding="utf-8")
    marker = guide.index("<!-- no-run: a pytest module; tests/test_plugin.py runs this block under pytest -->")
    start = guide.index("```python\n", marker) + len("```python\n")
    source = guide[start : guide.index("\n```", start)]
    pytester.makepyfile(test_guide=source)
    pytester.runpytest_inprocess(*AUTO).assert_outcomes(passed=2)
