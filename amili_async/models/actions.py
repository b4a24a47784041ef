"""The four case actions as values: build one, then `await client.execute(action)`.

Actions are frozen attrs classes checked when they are built: a bad id, amount, currency, date or case
identity raises `ValidationError` right there, so nothing invalid is ever sent. Their JSON body is exactly the
one the Creditor Case Actions page shows, with `None` fields left out.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

import attrs

from ..errors import ValidationError
from . import _validate as v

__all__ = [
    "ACTION_TYPES",
    "Action",
    "CreditorCancellation",
    "CreditorCrediting",
    "CreditorPayment",
    "ReceiptedAction",
    "RespiteGrant",
    "not_an_action",
]

ORIGIN = "creditor_system"


def _check(check: Any) -> Any:
    """An attrs validator from one of the `_validate` checks (field name taken from the attribute)."""

    def validator(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        check(attribute.name, value)

    return validator


def _optional(check: Any) -> Any:
    """`_check`, letting None through (without a call: most optional fields are left None)."""

    def validator(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            check(attribute.name, value)

    return validator


def _money(value: Any) -> Any:
    """An int amount becomes the Decimal it stands for (written `100`, not `100.000000`); the validator judges
    everything else (a bool or float is refused there, not converted here)."""
    return Decimal(value) if type(value) is int else value


def _origin(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value != ORIGIN:
        raise v.fail("origin", f"must be {ORIGIN!r}, got {v.shown(value)}")


@attrs.frozen(kw_only=True)
class CreditorPayment:
    """A payment the debtor made directly to the creditor (`POST /creditor--payments`)."""

    path: ClassVar[str] = "/creditor--payments"
    kind: ClassVar[str] = "payment"

    creditor: str = attrs.field(validator=_check(v.object_id))
    amount: Decimal = attrs.field(converter=_money, validator=_check(v.amount))
    currency: str = attrs.field(validator=_check(v.currency))
    bank_transaction_date: datetime = attrs.field(validator=_check(v.aware_datetime))
    case: str | None = attrs.field(default=None, validator=_optional(v.object_id))
    invoice_number: str | None = attrs.field(default=None, validator=_optional(v.text))
    creditor_payment_reference: str | None = attrs.field(default=None, validator=_optional(v.text))
    client_registration_date: datetime | None = attrs.field(default=None, validator=_optional(v.aware_datetime))
    origin: str = attrs.field(default=ORIGIN, validator=_origin)

    def __attrs_post_init__(self) -> None:
        v.case_identity(self.case, self.invoice_number, self.creditor)

    @property
    def reference(self) -> str | None:
        return self.creditor_payment_reference

    def lookup_filter(self) -> dict[str, Any] | None:
        """The `where` that finds this payment again after a lost answer (None: no reference to look for)."""
        if self.creditor_payment_reference is None:
            return None
        return {"creditor": self.creditor, "creditor_payment_reference": self.creditor_payment_reference}


@attrs.frozen(kw_only=True)
class CreditorCrediting:
    """Credit part of a case's capital (`POST /creditor--creditings`)."""

    path: ClassVar[str] = "/creditor--creditings"
    kind: ClassVar[str] = "crediting"

    amount: Decimal = attrs.field(converter=_money, validator=_check(v.amount))
    currency: str = attrs.field(validator=_check(v.currency))
    case: str | None = attrs.field(default=None, validator=_optional(v.object_id))
    creditor: str | None = attrs.field(default=None, validator=_optional(v.object_id))
    invoice_number: str | None = attrs.field(default=None, validator=_optional(v.text))
    creditor_reference: str | None = attrs.field(default=None, validator=_optional(v.text))
    credit_invoice: str | None = attrs.field(default=None, validator=_optional(v.text))
    client_registration_date: datetime | None = attrs.field(default=None, validator=_optional(v.aware_datetime))
    origin: str = attrs.field(default=ORIGIN, validator=_origin)

    def __attrs_post_init__(self) -> None:
        v.case_identity(self.case, self.invoice_number, self.creditor)

    @property
    def reference(self) -> str | None:
        return self.creditor_reference

    def lookup_filter(self) -> dict[str, Any] | None:
        if self.creditor_reference is None:
            return None
        where: dict[str, Any] = {"creditor_reference": self.creditor_reference}
        if self.creditor is not None:
            where["creditor"] = self.creditor
        if self.case is not None:
            where["case"] = self.case
        return where


@attrs.frozen(kw_only=True)
class CreditorCancellation:
    """Cancel a case entirely (`POST /creditor--cancellations`). `creditor` is always required."""

    path: ClassVar[str] = "/creditor--cancellations"
    kind: ClassVar[str] = "cancellation"

    creditor: str = attrs.field(validator=_check(v.object_id))
    case: str | None = attrs.field(default=None, validator=_optional(v.object_id))
    invoice_number: str | None = attrs.field(default=None, validator=_optional(v.text))
    origin: str = attrs.field(default=ORIGIN, validator=_origin)

    def __attrs_post_init__(self) -> None:
        v.case_identity(self.case, self.invoice_number, self.creditor)

    @property
    def reference(self) -> str | None:
        return self.case or self.invoice_number

    def lookup_filter(self) -> dict[str, Any] | None:
        """A case is cancelled at most once, so an existing cancellation of it is ours (or makes ours moot)."""
        if self.case is None:
            return None
        return {"creditor": self.creditor, "case": self.case}


@attrs.frozen(kw_only=True)
class RespiteGrant:
    """Postpone a case by `days` (`POST /domain-actions/cases/respite/{case}`)."""

    kind: ClassVar[str] = "respite"

    case: str = attrs.field(validator=_check(v.object_id), metadata={"body": False})
    days: int = attrs.field(validator=_check(v.days))

    @property
    def path(self) -> str:
        return f"/domain-actions/cases/respite/{self.case}"

    @property
    def reference(self) -> str | None:
        return self.case

    def lookup_filter(self) -> dict[str, Any] | None:
        # A respite is relative (+N days): a lost answer cannot be told apart from a refusal, so no lookup.
        return None


Action = CreditorPayment | CreditorCrediting | CreditorCancellation | RespiteGrant
ReceiptedAction = CreditorPayment | CreditorCrediting | CreditorCancellation  # answered with a stored record
ACTION_TYPES: tuple[type[Any], ...] = (CreditorPayment, CreditorCrediting, CreditorCancellation, RespiteGrant)


def not_an_action(value: Any) -> ValidationError:
    """The error for something given to `execute` that is not one of the four actions."""
    names = ", ".join(cls.__name__ for cls in ACTION_TYPES)
    return v.fail("action", f"must be one of {names}, got {type(value).__name__}")
