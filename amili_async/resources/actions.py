"""`creditor_payments`, `creditor_creditings`, `creditor_cancellations`: create, get, list."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

import httpx

from .. import serde
from ..models import _validate
from ..models.actions import ORIGIN, CreditorCancellation, CreditorCrediting, CreditorPayment
from ..models.receipts import CancellationReceipt, CreditingReceipt, PaymentReceipt, Receipt
from ._base import MAX_PAGES, AsyncPager, Pipeline

__all__ = ["CreditorCancellations", "CreditorCreditings", "CreditorPayments"]

R = TypeVar("R", bound=Receipt)
Timeout = httpx.Timeout | float | None


def _pipe(pipeline: Pipeline, timeout: Timeout) -> Pipeline:
    return pipeline if timeout is None else pipeline.with_options(timeout=timeout)


class _ActionResource(Generic[R]):
    path: str
    receipt: type[R]

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def get(self, id: str, *, timeout: Timeout = None) -> R:
        """One record by its id."""
        _validate.object_id("id", id)
        response = await _pipe(self._pipeline, timeout).request("GET", f"{self.path}/{id}")
        return serde.structure_document(response.payload, self.receipt)

    def list(
        self,
        *,
        where: Mapping[str, Any] | None = None,
        sort: str | None = None,
        max_results: int = 25,
        limit: int | None = None,
        max_pages: int | None = MAX_PAGES,
        timeout: Timeout = None,
    ) -> AsyncPager[R]:
        """Every record matching `where` (an Eve/Mongo filter), fetched page by page as you iterate.

        The pager always ends: see `AsyncPager` (`max_pages` bounds it whatever the server claims)."""
        return AsyncPager(
            _pipe(self._pipeline, timeout),
            self.path,
            self.receipt,
            where=where,
            sort=sort,
            max_results=max_results,
            limit=limit,
            max_pages=max_pages,
        )


class CreditorPayments(_ActionResource[PaymentReceipt]):
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
        return await _pipe(self._pipeline, timeout).execute(action)  # type: ignore[no-any-return]


class CreditorCreditings(_ActionResource[CreditingReceipt]):
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
        return await _pipe(self._pipeline, timeout).execute(action)  # type: ignore[no-any-return]


class CreditorCancellations(_ActionResource[CancellationReceipt]):
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
        return await _pipe(self._pipeline, timeout).execute(action)  # type: ignore[no-any-return]
