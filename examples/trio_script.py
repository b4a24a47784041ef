"""Register a payment from a trio program.

    python examples/trio_script.py                                    # against an in-memory Amili
    python examples/trio_script.py --live --creditor ID --case ID     # credentials from AMILI_* variables

The SDK runs on anyio, so the code is the same as under asyncio: only the entry point differs. Under trio
the client uses httpx's own connection pool (the aiohttp-backed default transport is asyncio-only).
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from decimal import Decimal

import trio

from amili_async import AsyncAmiliClient, OutcomeUnknownError


async def register_payment(amili: AsyncAmiliClient, creditor: str, case: str, reference: str) -> None:
    try:
        receipt = await amili.creditor_payments.create(
            creditor=creditor,
            case=case,
            amount=Decimal("250.00"),
            currency="SEK",
            bank_transaction_date=datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc),
            creditor_payment_reference=reference,
        )
    except OutcomeUnknownError as exc:
        # The answer was lost and the SDK could not prove either way: look it up later by its reference.
        print(f"unknown outcome for {exc.reference}: reconcile before sending it again")
        raise
    print(f"payment {receipt.id}: {receipt.status}, settled {receipt.settled_amount or 0:.2f} SEK")
    case_now = await amili.cases.get(case)
    print(f"case {case_now.id}: state {case_now.state}, {case_now.remaining or 0:.2f} SEK left")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", action="store_true", help="use the real Amili (AMILI_* variables)")
    parser.add_argument("--creditor", help="creditor id (with --live)")
    parser.add_argument("--case", help="case id (with --live)")
    parser.add_argument("--reference", default="PAY-TRIO-001", help="your id for the payment")
    args = parser.parse_args(argv)

    if args.live:
        if not (args.creditor and args.case):
            parser.error("--live needs --creditor and --case")
        async with AsyncAmiliClient() as amili:
            await register_payment(amili, args.creditor, args.case, args.reference)
        return

    from amili_async.testing import FakeAmili

    fake = FakeAmili(seed=0)
    creditor = fake.add_creditor()
    case_id = fake.add_case(creditor=creditor.id, capital=Decimal("1000.00"))
    async with fake.client(creditor) as amili:
        await register_payment(amili, creditor.id, case_id, args.reference)
    print(f"in-memory Amili recorded {len(fake.payments)} payment(s)")


if __name__ == "__main__":
    trio.run(main)
