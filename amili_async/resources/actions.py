"""`creditor_payments`, `creditor_creditings`, `creditor_cancellations`: create, execute, get, list.

Each resource owns its whole request/answer logic: the body, the lookup that settles a lost answer, the receipt.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from .. import serde
from .._pipeline import Pipeline
from ..errors import AmiliError
from ..models import _validate
from ..models.actions import ORIGIN, CreditorCancellation, CreditorCrediting, CreditorPayment, ReceiptedAction
from ..models.receipts import CancellationReceipt, CreditingReceipt, PaymentReceipt, Receipt
from ._base import AsyncPager, Timeout, with_timeout

__all__ = ["CreditorCancellations", "CreditorCreditings", "CreditorPayments"]

R = TypeVar("R", bound=Receipt)
A = TypeVar("A", bound=ReceiptedAction)


class _ActionResource(Generic[A, R]):
    path: str
    receipt: type[R]

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def execute(self, action: A, *, timeout: Timeout = None) -> R:
        """Send `action`. An `AmiliError` raised here names the action and its reference."""
        pipeline = with_timeout(self._pipeline, timeout)
        lookup = action.lookup_filter()
        reconcile = None
        if lookup is not None:

            async def reconcile() -> Any:
                return await pipeline.find_one(self.path, lookup)

        try:
            body = serde.converter().unstructure(action)
            response = await pipeline.request("POST", self.path, json=body, reconcile=reconcile)
            return serde.structure_document(response.payload, self.receipt)
        except AmiliError as exc:
            exc.action = action
            exc.reference = action.reference
            raise

    async def get(self, id: str, *, timeout: Timeout = None) -> R:
        """One record by its id."""
        _validate.object_id("id", id)
        response = await with_timeout(self._pipeline, timeout).request("GET", f"{self.path}/{id}")
        return serde.structure_document(response.payload, self.receipt)

    def list(
        self,
        *,
        where: Mapping[str, Any] | None = None,
        sort: str | None = None,
        max_results: int = 25,
        limit: int | None = None,
        timeout: Timeout = None,
    ) -> AsyncPager[R]:
        """Every record matching `where` (an Eve/Mongo filter), fetched page by page as you iterate."""
        return AsyncPager(
            with_timeout(self._pipeline, timeout),
            self.path,
            self.receipt,
            where=where,
            sort=sort,
            max_results=max_results,
            limit=limit,
        )


class CreditorPayments(_ActionResource[CreditorPayment, PaymentReceipt]):
    path = CreditorPayment.path
    receipt = PaymentReceipt

    async def create(
        self,
        *,
        creditor: str,
        amount: Decimal | int,
        currency: str,
        bank_transaction_date: datetime,
        case: str | None = None,
        invoice_number: str | None = None,
        creditor_payment_reference: str | None = None,
        client_registration_date: datetime | None = None,
        origin: str = ORIGIN,
        timeout: Timeout = None,
    ) -> PaymentReceipt:
        """Register a payment the debtor made directly to you. Give `case`, or `invoice_number` (with `creditor`).

        Pass `creditor_payment_reference` (your own id for the payment): with it, a lost answer is settled by
        looking the payment up, so it is never registered twice nor silently dropped.
        """
        action = CreditorPayment(
            creditor=creditor,
            amount=amount,
            currency=currency,
            bank_transaction_date=bank_transaction_date,
            case=case,
            invoice_number=invoice_number,
            creditor_payment_reference=creditor_payment_reference,
            client_registration_date=client_registration_date,
            origin=origin,
        )
        return await self.execute(action, timeout=timeout)


class CreditorCreditings(_ActionResource[CreditorCrediting, CreditingReceipt]):
    path = CreditorCrediting.path
    receipt = CreditingReceipt

    async def create(
        self,
        *,
        amount: Decimal | int,
        currency: str,
        case: str | None = None,
        creditor: str | None = None,
        invoice_number: str | None = None,
        creditor_reference: str | None = None,
        credit_invoice: str | None = None,
        client_registration_date: datetime | None = None,
        origin: str = ORIGIN,
        timeout: Timeout = None,
    ) -> CreditingReceipt:
        """Credit part of a case's capital. `creditor_reference` makes a lost answer recoverable."""
        action = CreditorCrediting(
            amount=amount,
            currency=currency,
            case=case,
            creditor=creditor,
            invoice_number=invoice_number,
            creditor_reference=creditor_reference,
            credit_invoice=credit_invoice,
            client_registration_date=client_registration_date,
            origin=origin,
        )
        return await self.execute(action, timeout=timeout)


class CreditorCancellations(_ActionResource[CreditorCancellation, CancellationReceipt]):
    path = CreditorCancellation.path
    receipt = CancellationReceipt

    async def create(
        self,
        *,
        creditor: str,
        case: str | None = None,
        invoice_number: str | None = None,
        origin: str = ORIGIN,
        timeout: Timeout = None,
    ) -> CancellationReceipt:
        """Cancel a case entirely. A lost answer is settled by looking for the case's cancellation."""
        action = CreditorCancellation(creditor=creditor, case=case, invoice_number=invoice_number, origin=origin)
        return await self.execute(action, timeout=timeout)
