"""One action or one read at a time: `amili pay`, `credit`, `cancel`, `respite check|grant`, `case get`.

The command line becomes a row of fields and goes through `build_action`, like a line of `amili bulk`. A
payment or crediting with `--reference` is looked up first: when Amili already has one with that reference,
it is shown and nothing is sent, unless `--allow-existing-reference` says a second one is meant.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ..client import AsyncAmiliClient
from ..errors import AmiliError, ConfigurationError, ValidationError
from ..models import _validate
from ..models.actions import Action, CreditorCrediting, CreditorPayment, RespiteGrant
from ..models.cases import Case
from ..models.receipts import Receipt, RespiteReceipt
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    PROG,
    Seeded,
    api_problem,
    dumps,
    error_record,
    money_text,
    open_client,
    record,
    say,
    seed_fake,
    write_out,
)
from ._input import build_action

# How the SDK's field names read on the command line, in error messages.
ACTION_OPTIONS = {
    "amount": "--amount",
    "currency": "--currency",
    "creditor": "--creditor",
    "case": "--case",
    "invoice_number": "--invoice-number",
    "bank_transaction_date": "--date",
    "creditor_payment_reference": "--reference",
    "creditor_reference": "--reference",
}
CASE_OPTIONS = {"case": "CASE", "days": "--days"}


def prog(args: argparse.Namespace) -> str:
    """`amili pay`, `amili respite grant`: how error lines start."""
    return " ".join(filter(None, (PROG, args.command, getattr(args, "subcommand", None))))


def _seed(args: argparse.Namespace) -> Seeded | None:
    return seed_fake(1, capital=args.fake_capital, state=args.fake_state) if args.fake else None


def _row(args: argparse.Namespace, seeded: Seeded | None) -> dict[str, Any]:
    """The command line as a row of fields, as a bulk line would give them."""
    if args.kind == "respite":
        case = args.case_id if args.case_id is not None or seeded is None else "@0"
        return {"kind": "respite", "case": case, "days": args.days}
    case = args.case if args.case is not None or args.invoice_number is not None or seeded is None else "@0"
    row: dict[str, Any] = {"kind": args.kind, "creditor": args.creditor, "case": case}
    row["invoice_number"] = args.invoice_number
    if args.kind == "cancellation":
        return row
    row.update(amount=args.amount, currency=args.currency)
    if args.kind == "crediting":
        row["creditor_reference"] = args.reference
    else:
        row["creditor_payment_reference"] = args.reference
        row["bank_transaction_date"] = args.date or datetime.now(timezone.utc).replace(microsecond=0)
    return row


def act(args: argparse.Namespace) -> int:
    """pay, credit, cancel, respite grant."""
    seeded = _seed(args)
    action = build_action(_row(args, seeded), seeded)  # checked here: bad input never reaches the client
    _announce(args, seeded)
    return asyncio.run(_act(args, seeded, action))


async def _act(args: argparse.Namespace, seeded: Seeded | None, action: Action) -> int:
    async with open_client(args, seeded) as client:
        try:
            if isinstance(action, (CreditorPayment, CreditorCrediting)) and action.reference is not None:
                existing = await _existing(client, action)
                if existing is not None and not args.allow_existing_reference:
                    return _refuse_existing(args, action, existing)
            receipt = await client.execute(action)
        except AmiliError as exc:
            return _api_failure(args, exc)
    applied = receipt.applied if isinstance(receipt, Receipt) else True
    payload: dict[str, Any] = {"ok": applied, "kind": action.kind, "receipt": record(receipt)}
    if isinstance(receipt, Receipt) and not applied:
        reason = receipt.status_reason_locale or "Amili reported the action as an error"
        payload["error"] = _business_error(reason, action.reference)
        print(f"{prog(args)}: error: Amili did not apply the {action.kind}: {reason}", file=sys.stderr)
    _emit(args, payload, _describe_receipt(action, receipt))
    return EXIT_OK if applied else EXIT_FAILED


def _business_error(reason: str, reference: str | None) -> dict[str, Any]:
    return {"type": "BusinessError", "message": reason, "status_code": 201, "reference": reference}


async def _existing(client: AsyncAmiliClient, action: CreditorPayment | CreditorCrediting) -> Receipt | None:
    where = action.lookup_filter()
    assert where is not None
    if isinstance(action, CreditorPayment):
        found: list[Receipt] = [r async for r in client.creditor_payments.list(where=where, max_results=1, limit=1)]
    else:
        found = [r async for r in client.creditor_creditings.list(where=where, max_results=1, limit=1)]
    return found[0] if found else None


def _refuse_existing(args: argparse.Namespace, action: Action, existing: Receipt) -> int:
    shown = _describe_record(action.kind, existing)
    message = (
        f"a {action.kind} with the reference {action.reference!r} is already in Amili ({shown}); nothing was sent. "
        "Pass --allow-existing-reference to register another one with the same reference"
    )
    print(f"{prog(args)}: error: {message}", file=sys.stderr, flush=True)
    if args.json:
        error = {"type": "ExistingReference", "message": message, "status_code": None, "reference": action.reference}
        write_out(dumps({"ok": False, "kind": action.kind, "error": error, "existing": record(existing)}, pretty=True))
    return EXIT_FAILED


def check_respite(args: argparse.Namespace) -> int:
    """respite check."""
    seeded, case_id = _case_to_read(args)
    return asyncio.run(_check_respite(args, seeded, case_id))


async def _check_respite(args: argparse.Namespace, seeded: Seeded | None, case_id: str) -> int:
    async with open_client(args, seeded) as client:
        try:
            check = await client.respite.check(case_id)
        except AmiliError as exc:
            return _api_failure(args, exc)
    line = f"respite allowed for case {case_id}"
    if not check.allowed:
        line = f"respite not allowed for case {case_id}: {', '.join(check.issues) or 'no reason given'}"
    _emit(args, {"ok": True, "case": case_id, "allowed": check.allowed, "issues": list(check.issues)}, line)
    return EXIT_OK


def get_case(args: argparse.Namespace) -> int:
    """case get."""
    seeded, case_id = _case_to_read(args)
    return asyncio.run(_get_case(args, seeded, case_id))


async def _get_case(args: argparse.Namespace, seeded: Seeded | None, case_id: str) -> int:
    async with open_client(args, seeded) as client:
        try:
            case = await client.cases.get(case_id)
        except AmiliError as exc:
            return _api_failure(args, exc)
    _emit(args, {"ok": True, "case": record(case)}, _describe_case(case))
    return EXIT_OK


def _case_to_read(args: argparse.Namespace) -> tuple[Seeded | None, str]:
    seeded = _seed(args)
    case_id = seeded.resolve_case(args.case_id or "@0") if seeded is not None else args.case_id
    if case_id is None:
        raise _validate.fail("case", "required (or try it with --fake)")
    if case_id.startswith("@"):
        raise _validate.fail("case", "'@' values name seeded cases, which needs --fake")
    _validate.object_id("case", case_id)
    _announce(args, seeded)
    return seeded, case_id


def _announce(args: argparse.Namespace, seeded: Seeded | None) -> None:
    if seeded is not None and not args.json:
        print(
            f"(in-memory Amili: creditor {seeded.creditor.id}, case {seeded.cases[0]}, invoice INV-0)",
            file=sys.stderr,
        )


def _emit(args: argparse.Namespace, payload: Mapping[str, Any], line: str) -> None:
    if args.json:
        write_out(dumps(payload, pretty=True))
    else:
        say(line)


def _api_failure(args: argparse.Namespace, exc: AmiliError) -> int:
    if isinstance(exc, ConfigurationError) or (isinstance(exc, ValidationError) and exc.status_code is None):
        raise exc  # bad input or set-up: main() reports it (exit 2)
    print(f"{prog(args)}: error: {api_problem(exc)}", file=sys.stderr, flush=True)
    if args.json:
        write_out(dumps({"ok": False, "error": error_record(exc)}, pretty=True))
    return EXIT_FAILED


def _describe_record(kind: str, receipt: Receipt) -> str:
    parts = [f"{kind} {receipt.id}"]
    amount = getattr(receipt, "amount", None)
    if amount is not None:
        parts.append(f"amount {money_text(amount)} {getattr(receipt, 'currency', None) or ''}".rstrip())
    if receipt.case:
        parts.append(f"case {receipt.case}")
    if receipt.created is not None:
        parts.append(f"registered {receipt.created.isoformat()}")
    return ", ".join(parts)


def _describe_receipt(action: Action, receipt: Receipt | RespiteReceipt) -> str:
    if isinstance(receipt, RespiteReceipt):
        return f"respite granted: case {receipt.case} postponed by {receipt.days} days"
    status = receipt.status or "completed"
    if receipt.status_reason_locale:
        status += f" ({receipt.status_reason_locale})"
    verb = "NOT applied" if receipt.status == "error" else "registered"
    parts = [f"{action.kind} {verb}: {receipt.id}", f"status {status}"]
    settled = getattr(receipt, "settled_amount", None)
    amount = getattr(action, "amount", None)
    if settled is not None and amount is not None:
        parts.append(f"settled {money_text(settled)} of {money_text(amount)} {getattr(action, 'currency', '')}")
    where = receipt.case or (None if isinstance(action, RespiteGrant) else action.case)
    if where:
        parts.append(f"case {where}")
    if receipt.case_invoice_number:
        parts.append(f"invoice {receipt.case_invoice_number}")
    return ", ".join(parts)


def _describe_case(case: Case) -> str:
    parts = [f"case {case.id}: state {case.state}", f"status {case.status}", "closed" if case.closed else "open"]
    if case.remaining is not None:
        parts.append(f"remaining {money_text(case.remaining)} {case.currency or ''}".rstrip())
    if case.invoice_number:
        parts.append(f"invoice {case.invoice_number}")
    if case.due_date is not None:
        parts.append(f"due {case.due_date.date().isoformat()}")
    return ", ".join(parts)
