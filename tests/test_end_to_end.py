"""End to end through the public client against the in-memory Amili: real JWT login, real business rules.

Wire shapes are pinned in test_wire.py with scripted transports; here the SDK and the emulator must agree on
everything a creditor's integration does in a day, on asyncio and on trio.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from decimal import Decimal

import anyio
import pytest

from amili_async import (
    CreditorCancellation,
    CreditorCrediting,
    CreditorPayment,
    NotFoundError,
    PermissionDeniedError,
    RespiteGrant,
    RespiteNotAllowedError,
    RetryPolicy,
    UnprocessableEntityError,
)
from amili_async.testing import FakeAmili

WHEN = datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc)


def run_on_both(body: Callable[[], Awaitable[None]]) -> None:
    for backend in ("asyncio", "trio"):
        anyio.run(body, backend=backend)


def test_a_creditors_day_on_both_event_loops() -> None:
    async def day() -> None:
        fake = FakeAmili(seed=3)
        creditor = fake.add_creditor()
        paid = fake.add_case(creditor=creditor.id, capital=Decimal("500.00"), invoice_number="INV-9")
        credited = fake.add_case(creditor=creditor.id, capital=Decimal("300.00"))
        postponed = fake.add_case(creditor=creditor.id, capital=Decimal("100.00"), state="reminder")
        collected = fake.add_case(creditor=creditor.id, capital=Decimal("100.00"), state="debt_collection")
        async with fake.client(creditor, retry=RetryPolicy.no_delay()) as amili:
            first = await amili.creditor_payments.create(
                creditor=creditor.id,
                invoice_number="INV-9",
                amount=Decimal("200.00"),
                currency="SEK",
                bank_transaction_date=WHEN,
                creditor_payment_reference="PAY-1",
            )
            assert first.status == "completed" and first.settled_amount == Decimal("200.00")
            last = await amili.creditor_payments.create(
                creditor=creditor.id,
                case=paid,
                amount=Decimal("350.00"),
                currency="SEK",
                bank_transaction_date=WHEN,
                creditor_payment_reference="PAY-2",
            )
            assert last.status == "warning"  # 50.00 more than what remained
            assert last.settled_amount == Decimal("300.00")
            case = await amili.cases.get(paid)
            assert case.closed is True and case.remaining == 0

            crediting = await amili.creditor_creditings.create(
                case=credited, amount=Decimal("100.00"), currency="SEK", creditor_reference="CR-1"
            )
            assert crediting.crediting_status == "completed"
            assert (await amili.cases.get(credited)).local_remaining_capital_amount == Decimal("200.00")

            assert (await amili.respite.check(postponed)).allowed
            before = (await amili.cases.get(postponed)).due_date
            await amili.respite.grant(postponed, days=14)
            after = (await amili.cases.get(postponed)).due_date
            assert before is not None and after is not None and (after - before).days == 14
            again = await amili.respite.check(postponed)
            assert not again.allowed and again.issues  # the per-case limit is one
            with pytest.raises(RespiteNotAllowedError) as refused:
                await amili.respite.grant(collected, days=7)
            assert refused.value.issues

            cancelled = await amili.creditor_cancellations.create(creditor=creditor.id, case=credited)
            assert cancelled.status == "completed"
            twice = await amili.creditor_cancellations.create(creditor=creditor.id, case=credited)
            assert twice.status == "warning"

            refs = [p.creditor_payment_reference async for p in amili.creditor_payments.list(sort="_created")]
            assert refs == ["PAY-1", "PAY-2"]
            found = [p.id async for p in amili.creditor_payments.list(where={"creditor_payment_reference": "PAY-2"})]
            assert found == [last.id]
            assert (await amili.creditor_payments.get(last.id)).amount == Decimal("350.00")
            assert amili.token_requests == 1
        assert len(fake.payments) == 2 and fake.tokens_issued == 1

    run_on_both(day)


def test_execute_many_over_every_action_kind() -> None:
    async def batch() -> None:
        fake = FakeAmili(seed=4)
        creditor = fake.add_creditor()
        cases = [fake.add_case(creditor=creditor.id, capital=Decimal("1000.00")) for _ in range(40)]
        actions = []
        for n, case in enumerate(cases):
            kind = n % 4
            if kind == 0:
                actions.append(
                    CreditorPayment(
                        creditor=creditor.id,
                        case=case,
                        amount=Decimal("10.00"),
                        currency="SEK",
                        bank_transaction_date=WHEN,
                        creditor_payment_reference=f"P{n}",
                    )
                )
            elif kind == 1:
                actions.append(CreditorCrediting(case=case, amount=Decimal("5.00"), currency="SEK"))
            elif kind == 2:
                actions.append(CreditorCancellation(creditor=creditor.id, case=case))
            else:
                actions.append(RespiteGrant(case=case, days=10))
        async with fake.client(creditor, retry=RetryPolicy.no_delay()) as amili:
            outcomes = [o async for o in amili.execute_many(actions, concurrency=8)]
        assert sorted(o.index for o in outcomes) == list(range(40))
        assert all(o.ok for o in outcomes), [o.error for o in outcomes if o.error]
        assert len(fake.payments) == 10 and len(fake.creditings) == 10 and len(fake.cancellations) == 10

    run_on_both(batch)


async def test_errors_amili_gives_map_to_the_tree() -> None:
    fake = FakeAmili(seed=5)
    mine = fake.add_creditor()
    theirs = fake.add_creditor(name="Other AB")
    their_case = fake.add_case(creditor=theirs.id)
    async with fake.client(mine, retry=RetryPolicy.no_delay()) as amili:
        with pytest.raises(PermissionDeniedError):
            await amili.cases.get(their_case)
        with pytest.raises(NotFoundError):
            await amili.cases.get("0" * 24)
        with pytest.raises(UnprocessableEntityError) as unknown:
            await amili.creditor_payments.create(
                creditor=mine.id,
                invoice_number="NO-SUCH-INVOICE",
                amount=Decimal("1.00"),
                currency="SEK",
                bank_transaction_date=WHEN,
            )
        assert unknown.value.issues and unknown.value.attempts == 1
    assert fake.payments == []
