"""What Amili answers to a case action, and what a GET of a payment, crediting or cancellation returns.

Eve's meta fields map to plain names (`_id` -> `id`, `_etag` -> `etag`, ...). `status` is the business outcome
(`completed`, `warning` or `error`, inside a 201: documented; which situations warn is not); `eve_status` is Eve's
`_status` (`OK`). Every key the SDK does not know is kept in `extra`.

`provenance` says where a receipt comes from: "answer" (Amili's answer to the write), "fetched" (the answer was
unreadable; the record was read back by its id) or "found" (the answer was lost, or Amili refused the reference
as already held; the record was found by reference and checked to be this action's). `recovered` is True for
the last two: the write happened once, and this is its stored record — which may lack fields only Amili's
answer carries (`payment_status`, say).

A receipt returned by `create(...)` / `execute(...)` also says which call produced it: `request_id` is the
`X-Request-ID` the SDK sent (the same on every attempt), `server_request_id` the id Amili or a proxy answered
with, if any. They are not part of the record: receipts compare equal without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

from .actions import CreditorCancellation, CreditorCrediting, CreditorPayment

__all__ = [
    "CancellationReceipt",
    "CreditingReceipt",
    "PaymentReceipt",
    "RECEIPT_FOR",
    "RECEIPT_TYPES",
    "Receipt",
    "RespiteReceipt",
]


def _alias(*names: str) -> Any:
    return {"aliases": names}


def _call_id() -> Any:
    """A field about the call that produced the receipt, not read from Amili's document, not compared."""
    return attrs.field(default=None, eq=False, metadata={"local": True})


@attrs.frozen(kw_only=True)
class Receipt:
    id: str = attrs.field(metadata=_alias("_id"))
    etag: str | None = attrs.field(default=None, metadata=_alias("_etag"))
    created: datetime | None = attrs.field(default=None, metadata=_alias("_created"))
    updated: datetime | None = attrs.field(default=None, metadata=_alias("_updated"))
    eve_status: str | None = attrs.field(default=None, metadata=_alias("_status"))
    status: str | None = None
    status_reason_locale: str | None = None
    case: str | None = attrs.field(default=None, metadata=_alias("_case"))
    creditor: str | None = None
    case_invoice_number: str | None = None
    case_reference_number: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    provenance: str = attrs.field(default="answer", metadata={"local": True})
    request_id: str | None = _call_id()
    server_request_id: str | None = _call_id()

    @property
    def recovered(self) -> bool:
        """True when the answer was lost or unreadable and this is the stored record read back afterwards."""
        return self.provenance != "answer"

    @property
    def applied(self) -> bool:
        """True unless Amili reported the action as an `error` (a `warning` was still applied)."""
        return self.status != "error"


@attrs.frozen(kw_only=True)
class PaymentReceipt(Receipt):
    payment_status: str | None = attrs.field(default=None, metadata=_alias("_payment_status"))
    settled_amount: Decimal | None = None
    amount: Decimal | None = None
    currency: str | None = None
    creditor_payment_reference: str | None = None


@attrs.frozen(kw_only=True)
class CreditingReceipt(Receipt):
    crediting_status: str | None = attrs.field(default=None, metadata=_alias("_crediting_status", "_payment_status"))
    settled_amount: Decimal | None = None
    amount: Decimal | None = None
    currency: str | None = None
    creditor_reference: str | None = None


@attrs.frozen(kw_only=True)
class CancellationReceipt(Receipt):
    cancellation_status: str | None = attrs.field(default=None, metadata=_alias("_cancellation_status"))


@attrs.frozen(kw_only=True)
class RespiteReceipt:
    """A granted respite. Amili answers an empty `{}`; this records what was granted."""

    case: str
    days: int
    request_id: str | None = _call_id()
    server_request_id: str | None = _call_id()


RECEIPT_TYPES: tuple[type[Receipt], ...] = (PaymentReceipt, CreditingReceipt, CancellationReceipt)
RECEIPT_FOR: dict[type[Any], type[Receipt]] = {  # the record an action is answered with
    CreditorPayment: PaymentReceipt,
    CreditorCrediting: CreditingReceipt,
    CreditorCancellation: CancellationReceipt,
}
