"""Register every payment of a bank export (CSV) with `execute_many`, and print a summary.

    python examples/bulk_payments.py                                  # examples/payments.csv, in-memory Amili
    python examples/bulk_payments.py FILE.csv --concurrency 32
    python examples/bulk_payments.py FILE.csv --live --creditor ID    # credentials from AMILI_* variables

The CSV has a header and the columns `invoice_number, amount, currency, bank_transaction_date, reference`
(dates as 2025-10-07, taken as UTC). The `reference` (the bank transaction id, say) becomes the payment's
`creditor_payment_reference`: the SDK uses it to settle a lost answer by looking the payment up, so a payment
is never registered twice. A row that cannot become a valid payment is reported and not sent.

Against the in-memory Amili every invoice number of the file gets a case of 1000.00 SEK, and the answer of
one payment is dropped after Amili applied it, to show the reconciliation at work.

For resumable runs with a results file, use the `amili bulk` command (docs/bulk.md).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

from amili_async import AmiliError, AsyncAmiliClient, CreditorPayment, PaymentReceipt

HERE = Path(__file__).resolve().parent


class Rejected:
    """Rows that never became a payment: (line number, why)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str]] = []


def read_payments(path: Path, creditor: str, rejected: Rejected) -> Iterator[CreditorPayment]:
    """One `CreditorPayment` per valid row, read lazily (the file is never held in memory)."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            try:
                yield CreditorPayment(
                    creditor=creditor,
                    invoice_number=row["invoice_number"].strip(),
                    amount=Decimal(row["amount"].strip()),
                    currency=row.get("currency", "").strip() or "SEK",
                    bank_transaction_date=datetime.strptime(row["bank_transaction_date"].strip(), "%Y-%m-%d").replace(
                        tzinfo=timezone.utc
                    ),
                    creditor_payment_reference=row["reference"].strip(),
                )
            except (AmiliError, InvalidOperation, KeyError, ValueError, AttributeError) as exc:
                reason = exc.message if isinstance(exc, AmiliError) else f"{type(exc).__name__}: {exc}"
                rejected.rows.append((reader.line_num, reason))


async def run(amili: AsyncAmiliClient, path: Path, creditor: str, concurrency: int) -> dict[str, object]:
    rejected = Rejected()
    statuses: Counter[str] = Counter()
    failures: list[tuple[int, str, str]] = []
    warnings: list[tuple[str, str]] = []
    settled = Decimal("0.00")
    started = time.perf_counter()
    async for outcome in amili.execute_many(read_payments(path, creditor, rejected), concurrency=concurrency):
        reference = outcome.action.reference or "-"
        if outcome.error is not None:
            statuses["failed"] += 1
            failures.append((outcome.index, reference, f"{type(outcome.error).__name__}: {outcome.error}"))
            continue
        receipt: PaymentReceipt = outcome.receipt
        statuses[receipt.status or "unknown"] += 1
        settled += receipt.settled_amount or 0
        if receipt.status != "completed":
            warnings.append((reference, f"{receipt.status}: {receipt.status_reason_locale}"))
    elapsed = time.perf_counter() - started

    sent = sum(statuses.values())
    print(f"{path.name}: {sent} payments sent in {elapsed:.2f} s")
    print(f"  rejected   {len(rejected.rows)} (invalid rows, not sent)")
    for status in ("completed", "warning", "error", "failed"):
        print(f"  {status:<10} {statuses.get(status, 0)}")
    print(f"  settled    {settled:.2f} SEK")
    for reference, what in sorted(warnings):
        print(f"  ! {reference}: {what}")
    for _, reference, what in sorted(failures):
        print(f"  x {reference}: {what}")
    for line, why in rejected.rows:
        print(f"  - line {line} not sent: {why}")
    return {"sent": sent, "statuses": dict(statuses), "rejected": len(rejected.rows), "settled": settled}


def invoice_numbers(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return sorted({row["invoice_number"].strip() for row in csv.DictReader(fh) if row.get("invoice_number")})


async def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="?", type=Path, default=HERE / "payments.csv", help="the payments file")
    parser.add_argument("--concurrency", type=int, default=16, help="payments in flight at once (default 16)")
    parser.add_argument("--live", action="store_true", help="use the real Amili (AMILI_* variables)")
    parser.add_argument("--creditor", help="your creditor id (with --live)")
    args = parser.parse_args(argv)

    if args.live:
        if not args.creditor:
            parser.error("--live needs --creditor")
        async with AsyncAmiliClient() as amili:
            return await run(amili, args.csv, args.creditor, args.concurrency)

    from amili_async.testing import FakeAmili, Fault

    fake = FakeAmili(seed=0)
    creditor = fake.add_creditor()
    for number in invoice_numbers(args.csv):
        fake.add_case(creditor=creditor.id, capital=Decimal("1000.00"), invoice_number=number)
    fake.inject(Fault("drop_after_commit", path="/creditor--payments", method="POST", times=1))
    async with fake.client(creditor) as amili:
        summary = await run(amili, args.csv, creditor.id, args.concurrency)
    print(f"in-memory Amili recorded {len(fake.payments)} payments (one answer was dropped and reconciled)")
    return summary


if __name__ == "__main__":
    asyncio.run(main())
