"""The demo's world: an in-memory Amili seeded with realistic cases, and the mix of actions run against it.

Cases come in four sizes, in the states invoice, reminder and debt collection (with their fees and interest),
some with an invoice number the creditor knows, some for a few customers with many cases (for the respite
limit per customer), a few already closed. The actions are about 62 % payments (partial, in full, overpaid,
round sums; one in five by invoice number, now and then a mistyped one), 18 % creditings, 4 % cancellations and
16 % respite grants, generated lazily as `execute_many` pulls them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from ..models.actions import Action, CreditorCancellation, CreditorCrediting, CreditorPayment, RespiteGrant

if TYPE_CHECKING:
    from ..testing import FakeAmili

_CENT = Decimal("0.01")


@attrs.frozen
class DemoCase:
    id: str
    total: Decimal  # capital + costs + interest when seeded
    capital: Decimal
    state: str
    invoice_number: str | None  # set when the creditor system knows it
    big_customer: bool


_DEMO_COSTS = {"invoice": Decimal("0"), "reminder": Decimal("60.00"), "debt_collection": Decimal("180.00")}


def _cents(rng: random.Random, low: int, high: int) -> Decimal:
    return Decimal(rng.randrange(low * 100, high * 100)).scaleb(-2)


def seed_demo(fake: FakeAmili, creditor: str, n: int, rng: random.Random) -> list[DemoCase]:
    big_customers = [f"demo-customer-{k}" for k in range(max(2, n // 125))]
    cases: list[DemoCase] = []
    for i in range(n):
        tier = rng.random()
        if tier < 0.40:
            capital = _cents(rng, 200, 2_000)
        elif tier < 0.75:
            capital = _cents(rng, 2_000, 10_000)
        elif tier < 0.95:
            capital = _cents(rng, 10_000, 50_000)
        else:
            capital = _cents(rng, 50_000, 250_000)
        roll = rng.random()
        state = "invoice" if roll < 0.55 else "reminder" if roll < 0.85 else "debt_collection"
        costs = _DEMO_COSTS[state]
        interest = _cents(rng, 10, 400) if state == "debt_collection" else Decimal("0")
        invoice = f"2025-{100000 + i}" if rng.random() < 0.6 else None
        big = rng.random() < 0.2
        case_id = fake.add_case(
            creditor,
            capital=capital,
            costs=costs,
            interest=interest,
            state=state,
            invoice_number=invoice,
            customer_id=rng.choice(big_customers) if big else None,
            closed=rng.random() < 0.03,
        )
        cases.append(DemoCase(case_id, capital + costs + interest, capital, state, invoice, big))
    return cases


class DemoPlan:
    """The action mix, generated lazily (what `execute_many` pulls), and what it generated."""

    def __init__(self, rng: random.Random, cases: list[DemoCase], creditor: str, seed: int) -> None:
        self.rng = rng
        self.cases = cases
        self.by_invoice = [c for c in cases if c.invoice_number is not None]
        self.big = [c for c in cases if c.big_customer] or cases
        self.creditor = creditor
        self.seed = seed
        self.yielded = 0
        self.by_invoice_count = 0
        self.now = datetime.now(timezone.utc).replace(microsecond=0)

    def actions(self, n: int) -> Iterator[Action]:
        for i in range(n):
            roll = self.rng.random()
            if roll < 0.62:
                action: Action = self._payment(i)
            elif roll < 0.80:
                action = self._crediting(i)
            elif roll < 0.84:
                action = self._cancellation()
            else:
                action = self._respite()
            self.yielded += 1
            yield action

    def checks(self, n: int) -> Iterator[str]:
        for _ in range(n):
            yield self.rng.choice(self.big if self.rng.random() < 0.5 else self.cases).id

    def _payment(self, i: int) -> CreditorPayment:
        rng = self.rng
        case = rng.choice(self.cases)
        roll = rng.random()
        if roll < 0.70:  # partial
            amount = max(_CENT, (case.total * Decimal(rng.randint(5, 50)) / 100).quantize(_CENT))
        elif roll < 0.80:  # in full
            amount = case.total
        elif roll < 0.85:  # overpaid
            amount = case.total + _cents(rng, 1, 500)
        else:  # a round sum
            amount = Decimal(rng.choice((100, 200, 250, 500)))
        identity: dict[str, Any] = {"case": case.id}
        if rng.random() < 0.2 and self.by_invoice:
            self.by_invoice_count += 1
            known = rng.choice(self.by_invoice)
            # Now and then an invoice number the creditor mistyped: Amili refuses it (422).
            invoice = known.invoice_number if rng.random() > 0.03 else f"2025-9{rng.randint(0, 99999):05d}"
            identity = {"invoice_number": invoice}
            if known is not case and invoice == known.invoice_number:
                amount = (known.total * Decimal(rng.randint(10, 60)) / 100).quantize(_CENT) or _CENT
        return CreditorPayment(
            creditor=self.creditor,
            amount=amount,
            currency="SEK",
            bank_transaction_date=self.now - timedelta(days=rng.randint(0, 20), minutes=rng.randint(0, 600)),
            creditor_payment_reference=f"DEMO-{self.seed}-PAY-{i:06d}",
            **identity,
        )

    def _crediting(self, i: int) -> CreditorCrediting:
        rng = self.rng
        case = rng.choice(self.cases)
        if rng.random() < 0.05:
            amount = case.capital
        else:
            amount = max(_CENT, (case.capital * Decimal(rng.randint(5, 30)) / 100).quantize(_CENT))
        return CreditorCrediting(
            case=case.id,
            creditor=self.creditor if rng.random() < 0.5 else None,
            amount=amount,
            currency="SEK",
            creditor_reference=f"DEMO-{self.seed}-CRED-{i:06d}",
        )

    def _cancellation(self) -> CreditorCancellation:
        case = self.rng.choice(self.cases)
        if case.invoice_number is not None and self.rng.random() < 0.2:
            return CreditorCancellation(creditor=self.creditor, invoice_number=case.invoice_number)
        return CreditorCancellation(creditor=self.creditor, case=case.id)

    def _respite(self) -> RespiteGrant:
        rng = self.rng
        case = rng.choice(self.big if rng.random() < 0.3 else self.cases)
        days = rng.choice((7, 10, 14, 14, 21, 30)) if rng.random() < 0.9 else rng.choice((45, 60, 90))
        return RespiteGrant(case=case.id, days=days)
