"""Whether a line that was in flight (or ended unknown) was applied, by what Amili shows — for every kind.

The rule of evidence, as the SDK applies it to a single write: a record found that matches the line proves it
was applied; a lookup that finds nothing counts as absence only once no earlier attempt can still commit (the
settle window, waited for by the caller before it asks); anything else is `unknown`, never a guess.

- payment, crediting: looked up by reference (`creditor_payment_reference` / `creditor_reference`) with the
  SDK's own lookup, which checks every record against the action's identifying fields (`_evidence.Identity`):
  exactly one record that is this line's proves it; records that differ, or several, leave it unknown. Without
  a reference there is nothing to look up.
- cancellation: looked up by creditor and case (a case given by invoice number is found first); a cancellation
  of the case found means the line's work is done (by this line, or by an earlier one that makes it moot).
- respite: Amili keeps no respite record, but the case shows it: its due date moves by the days granted, and
  where the case exposes its `history`, a `respite` entry is logged. Before a respite is sent, the case is
  read and its due date and respite entries recorded (`respite_evidence`); afterwards exactly one new entry
  (or the due date moved by exactly the days) proves the grant, nothing changed proves its absence.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import attrs

from .. import _wire, serde
from .._evidence import Identity, Sighting
from .._reconcile import conflict_error, look
from ..client import AsyncAmiliClient
from ..errors import AmiliError
from ..models.actions import Action, CreditorCancellation, CreditorCrediting, CreditorPayment, RespiteGrant
from ..models.receipts import RECEIPT_FOR, CancellationReceipt, RespiteReceipt


@attrs.frozen
class Verdict:
    """`receipt`: applied (this is its record). `unknown`: cannot be proven, and why. Neither: not applied."""

    receipt: Any = None
    unknown: str | None = None


ABSENT = Verdict()


async def respite_evidence(client: AsyncAmiliClient, case_id: str) -> dict[str, Any]:
    """The case before a respite is sent: its due date and, where Amili shows it, how many respites it logged."""
    case = await client.cases.get(case_id)
    history = case.extra.get("history")
    count = _respites(history)
    return {
        "due_date": None if case.due_date is None else _wire.format_rfc1123(case.due_date),
        "respites": None if count is None else len(count),
    }


def _respites(history: Any) -> list[Mapping[str, Any]] | None:
    if not isinstance(history, list):
        return None
    return [h for h in history if isinstance(h, Mapping) and h.get("event") == "respite"]


async def reconcile(client: AsyncAmiliClient, action: Action, evidence: Mapping[str, Any] | None) -> Verdict:
    """What Amili shows about `action` (see the module doc). Lookup failures make the verdict unknown."""
    try:
        if isinstance(action, RespiteGrant):
            return await _respite(client, action, evidence or {})
        if isinstance(action, CreditorCancellation):
            return await _cancellation(client, action)
        return await _by_reference(client, action)
    except AmiliError as exc:
        return Verdict(unknown=f"looking it up in Amili failed ({type(exc).__name__}: {exc})")


async def _by_reference(client: AsyncAmiliClient, action: CreditorPayment | CreditorCrediting) -> Verdict:
    identity = Identity.of(action)
    if identity is None:
        return Verdict(unknown=f"the {action.kind} has no reference to look it up by")
    sighting = await _look(client, identity)
    if sighting.found is not None:
        return Verdict(receipt=serde.structure_document(sighting.found, RECEIPT_FOR[type(action)]))
    if sighting.absent:
        return ABSENT
    if sighting.unfiltered:
        return Verdict(unknown="Amili answered the lookup with records outside its filter, so it proves nothing")
    return Verdict(unknown=conflict_error(identity, sighting).message)


async def _cancellation(client: AsyncAmiliClient, action: CreditorCancellation) -> Verdict:
    if action.case is None:
        where = {"creditor": action.creditor, "debt.invoice_number": action.invoice_number}
        cases = [c async for c in client.cases.list(where=where, max_results=2, limit=2)]
        if not cases:
            return ABSENT  # the invoice number names no case: Amili refuses the cancellation the same way again
        if len(cases) > 1:
            return Verdict(unknown=f"several cases carry the invoice number {action.invoice_number!r}")
        action = CreditorCancellation(creditor=action.creditor, case=cases[0].id)
    identity = Identity.of(action)
    assert identity is not None  # a cancellation of a case can always be looked up
    sighting = await _look(client, identity)
    if sighting.matching:  # cancelled: by this line, or by an earlier one that makes it moot
        return Verdict(receipt=serde.structure_document(sighting.matching[0], CancellationReceipt))
    if sighting.absent:
        return ABSENT
    return Verdict(unknown="Amili answered the lookup with records outside its filter, so it proves nothing")


async def _look(client: AsyncAmiliClient, identity: Identity) -> Sighting:
    """The SDK's own lookup (`_reconcile.look`): every record checked against the action (`Identity.sort`)."""

    async def get(path: str, params: Mapping[str, str] | None) -> Any:
        return (await client.request("GET", path, params=params)).payload

    return await look(get, identity)


async def _respite(client: AsyncAmiliClient, action: RespiteGrant, evidence: Mapping[str, Any]) -> Verdict:
    if "due_date" not in evidence:
        return Verdict(unknown="the case was not read before the respite was sent, so nothing can be compared")
    case = await client.cases.get(action.case)
    before = None if evidence["due_date"] is None else _wire.parse_datetime(evidence["due_date"])
    moved = None if before is None or case.due_date is None else case.due_date - before
    logged = _respites(case.extra.get("history"))
    granted = RespiteReceipt(case=action.case, days=action.days)
    if logged is not None and isinstance(evidence.get("respites"), int):
        new = logged[evidence["respites"] :]
        if not new and moved in (None, timedelta(0)):
            return ABSENT
        if len(new) == 1 and new[0].get("days") == action.days:
            return Verdict(receipt=granted)
        return Verdict(unknown=f"{len(new)} respites were logged on the case since, not one of {action.days} days")
    if moved is None:
        return Verdict(unknown="the case shows neither its respites nor its due date")
    if moved == timedelta(0):
        return ABSENT
    if moved == timedelta(days=action.days):
        return Verdict(receipt=granted)
    return Verdict(unknown=f"the due date moved by {moved}, not by the {action.days} days of this line")
