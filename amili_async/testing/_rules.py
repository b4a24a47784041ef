"""Amili's business rules, applied to a stored case document (mutated in place).

- Balances: ``local_added_*`` is what the case was opened with; ``local_remaining_*`` is what is still
  owed, for capital, costs and interest; ``*_transaction_amount`` is their sum;
  ``total_remaining_capital_amount`` is the remaining capital.
- A payment settles what remains in this order: costs, then interest, then capital. `settled_amount` is
  what was applied. Paying more than remains settles the rest and reports ``warning`` /
  ``creditor_payment.overpayment``.
- A crediting reduces the remaining capital only. Crediting more than the remaining capital settles what
  remains and reports ``warning`` / ``creditor_crediting.overcrediting``.
- When nothing remains (transaction amount 0) the case closes: ``closed`` true, state and status
  ``closed``, entries in ``state_history``, ``status_history`` and ``history``.
- A cancellation closes an open case (``completed``); cancelling a closed case changes nothing and reports
  ``warning`` / ``creditor_cancellation.case_already_closed``.
- A payment or crediting on a closed case changes nothing: the API still answers 201, with ``error``,
  ``settled_amount`` 0 and ``case.closed``.
- Respite is possible while the case is open, not yet at debt collection (state ``initializing``,
  ``invoice`` or ``reminder``), and below the creditor's per-case and per-customer counts. A grant moves
  ``due_date`` forward by the days and logs a ``respite`` history entry.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import attrs

from ._wire import format_http_date, parse_http_date

OVERPAYMENT = "creditor_payment.overpayment"
OVERCREDITING = "creditor_crediting.overcrediting"
CASE_CLOSED = "case.closed"
ALREADY_CLOSED = "creditor_cancellation.case_already_closed"

RESPITE_CASE_CLOSED = "respite.case_closed"
RESPITE_STATE = "respite.debt_collection_started"
RESPITE_CASE_LIMIT = "respite.max_per_case_reached"
RESPITE_CUSTOMER_LIMIT = "respite.max_per_customer_reached"

RESPITE_STATES = frozenset({"initializing", "invoice", "reminder"})
PARTS = ("costs", "interest", "capital")  # the order a payment settles in
ZERO = Decimal(0)

Case = dict[str, Any]


@attrs.frozen
class Settlement:
    status: str  # completed | warning | error
    reason: str | None
    settled: Decimal


def open_balances(case: Case, capital: Decimal, costs: Decimal, interest: Decimal) -> None:
    amounts = {"capital": capital, "costs": costs, "interest": interest}
    for part, value in amounts.items():
        case[f"local_added_{part}_amount"] = value
        case[f"local_remaining_{part}_amount"] = value
    case["local_added_transaction_amount"] = capital + costs + interest
    _refresh_totals(case)


def _refresh_totals(case: Case) -> None:
    case["local_remaining_transaction_amount"] = sum((case[f"local_remaining_{p}_amount"] for p in PARTS), start=ZERO)
    case["total_remaining_capital_amount"] = case["local_remaining_capital_amount"]


def set_state(case: Case, state: str, status: str, when: str) -> None:
    case["state"] = state
    case["latest_state_date"] = when
    case["state_history"].append({"state": state, "state_date": when})
    case["status"] = status
    case["status_history"].append({"status": status, "status_date": when})


def close(case: Case, reason: str, when: str) -> None:
    case["closed"] = True
    set_state(case, "closed", "closed", when)
    case["history"].append({"event": "closed", "date": when, "reason": reason})


def apply_payment(case: Case, amount: Decimal, when: str, payment_id: str) -> Settlement:
    if case["closed"]:
        return Settlement("error", CASE_CLOSED, ZERO)
    left = amount
    for part in PARTS:
        key = f"local_remaining_{part}_amount"
        take = min(left, case[key])
        case[key] -= take
        left -= take
    settled = amount - left
    _refresh_totals(case)
    case["history"].append(
        {
            "event": "creditor_payment",
            "date": when,
            "amount": amount,
            "settled_amount": settled,
            "id": payment_id,
        }
    )
    if case["local_remaining_transaction_amount"] <= 0:
        close(case, "paid", when)
    if left > 0:
        return Settlement("warning", OVERPAYMENT, settled)
    return Settlement("completed", None, settled)


def apply_crediting(case: Case, amount: Decimal, when: str, crediting_id: str) -> Settlement:
    if case["closed"]:
        return Settlement("error", CASE_CLOSED, ZERO)
    settled = min(amount, case["local_remaining_capital_amount"])
    case["local_remaining_capital_amount"] -= settled
    _refresh_totals(case)
    case["history"].append(
        {
            "event": "creditor_crediting",
            "date": when,
            "amount": amount,
            "settled_amount": settled,
            "id": crediting_id,
        }
    )
    if case["local_remaining_transaction_amount"] <= 0:
        close(case, "credited", when)
    if settled < amount:
        return Settlement("warning", OVERCREDITING, settled)
    return Settlement("completed", None, settled)


def apply_cancellation(case: Case, when: str, cancellation_id: str) -> Settlement:
    if case["closed"]:
        return Settlement("warning", ALREADY_CLOSED, ZERO)
    case["history"].append({"event": "creditor_cancellation", "date": when, "id": cancellation_id})
    close(case, "cancelled", when)
    return Settlement("completed", None, ZERO)


def respite_issues(
    case: Case, granted_on_case: int, granted_to_customer: int, max_per_case: int, max_per_customer: int
) -> list[str]:
    """Why a respite cannot be granted now (empty when it can)."""
    issues: list[str] = []
    if case["closed"]:
        issues.append(RESPITE_CASE_CLOSED)
    elif case["state"] not in RESPITE_STATES:
        issues.append(RESPITE_STATE)
    if granted_on_case >= max_per_case:
        issues.append(RESPITE_CASE_LIMIT)
    if granted_to_customer >= max_per_customer:
        issues.append(RESPITE_CUSTOMER_LIMIT)
    return issues


def grant_respite(case: Case, days: int, when: str) -> None:
    due = parse_http_date(case["due_date"])
    assert due is not None, "stored due dates are RFC 1123"
    new_due = format_http_date((due + timedelta(days=days)).timestamp())
    case["due_date"] = new_due
    case["history"].append({"event": "respite", "days": days, "date": when, "due_date": new_due})
