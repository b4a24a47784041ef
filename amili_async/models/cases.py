"""The case read model (`GET /cases/{id}`) and the respite check answer."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

__all__ = ["Case", "RespiteCheck"]


def _alias(*names: str) -> Any:
    return {"aliases": names}


@attrs.frozen(kw_only=True)
class Case:
    """A debt-collection case. Debtor personal data is kept out of `repr()` so it does not end up in logs.

    `due_date` is our assumption: Amili says a respite moves the due date stored on the case, but documents no
    field name. It is None unless Amili sends `due_date` (the in-memory Amili does); everything else Amili
    sends is in `extra`.
    """

    id: str = attrs.field(metadata=_alias("_id"))
    etag: str | None = attrs.field(default=None, metadata=_alias("_etag"))
    created: datetime | None = attrs.field(default=None, metadata=_alias("_created"))
    updated: datetime | None = attrs.field(default=None, metadata=_alias("_updated"))
    creditor: str | None = None
    creditor_name: str | None = None
    customer: str | None = attrs.field(default=None, repr=False)
    customer_name: str | None = attrs.field(default=None, repr=False)
    customer_id_number: str | None = attrs.field(default=None, repr=False)
    customer_number: str | None = attrs.field(default=None, repr=False)
    reference_number: str | None = None
    currency: str | None = None
    state: str | None = None
    status: str | None = None
    closed: bool | None = None
    due_date: datetime | None = None
    debt: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    local_added_capital_amount: Decimal | None = None
    local_added_costs_amount: Decimal | None = None
    local_added_interest_amount: Decimal | None = None
    local_added_transaction_amount: Decimal | None = None
    local_remaining_capital_amount: Decimal | None = None
    local_remaining_costs_amount: Decimal | None = None
    local_remaining_interest_amount: Decimal | None = None
    local_remaining_transaction_amount: Decimal | None = None
    total_remaining_capital_amount: Decimal | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    @property
    def invoice_number(self) -> str | None:
        value = (self.debt or {}).get("invoice_number")
        return None if value is None else str(value)

    @property
    def remaining(self) -> Decimal | None:
        """What is left to pay in total (`local_remaining_transaction_amount`)."""
        return self.local_remaining_transaction_amount


@attrs.frozen
class RespiteCheck:
    """`GET /domain-actions/cases/respite/{id}`: 200 means allowed; 206 carries the reasons it is not."""

    allowed: bool
    issues: tuple[str, ...] = ()
