"""`creditor_payments`, `creditor_creditings`, `creditor_cancellations`: create, execute, get, list.

Each resource owns its whole request/answer logic: the body, the lookup that settles a lost answer, the receipt.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from .. import serde
from .._call import ApiResponse, Call
from .._evidence import Identity, Sighting
from .._pipeline import Pipeline
from .._reconcile import conflict_error, look
from ..errors import AmiliError, AppliedWithoutReceiptError, OutcomeUnknownError, ResponseDecodeError, ValidationError
from ..models import _validate
from ..models.actions import ORIGIN, CreditorCancellation, CreditorCrediting, CreditorPayment, ReceiptedAction
from ..models.receipts import CancellationReceipt, CreditingReceipt, PaymentReceipt, Receipt
from ._base import MAX_PAGES, AsyncPager, Timeout, with_timeout

__all__ = ["CreditorCancellations", "CreditorCreditings", "CreditorPayments"]

R = TypeVar("R", bound=Receipt)
A = TypeVar("A", bound=ReceiptedAction)


class _ActionResource(Generic[A, R]):
    path: str
    receipt: type[R]
    name: str  # in the names of its operations (spans, logs): `amili.<name>.create`

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._create = f"amili.{self.name}.create"

    async def execute(self, action: A, *, timeout: Timeout = None) -> R:
        """Send `action`. An `AmiliError` raised here names the action and its reference.

        With a reference, a lost or unreadable answer is settled by the rule of evidence (`_evidence.py`): the
        receipt is then the stored record (`receipt.recovered`), or the error says what is known.
        """
        return await self._execute(action, timeout, f"amili.{self.name}.execute")

    async def _execute(self, action: A, timeout: Timeout, operation: str) -> R:
        """`execute`, as the operation named `operation` (`AsyncAmiliClient.execute` calls it `amili.execute`)."""
        pipeline = with_timeout(self._pipeline, timeout)
        body = serde.action_body(action)
        call = pipeline.call("POST", self.path, json=body, action=action, operation=operation, kind=action.kind)
        with call:
            try:
                return self._receipt(await pipeline.run(call), call)
            except AmiliError as exc:
                exc.action = action
                exc.reference = action.reference
                raise

    def _receipt(self, response: ApiResponse, call: Call) -> R:
        """The receipt of the answer (or of the record found for it), with the call's request ids on it."""
        local = {"request_id": call.request_id}  # what is not the default (most answers carry no id of Amili's)
        if call.server_request_id is not None:
            local["server_request_id"] = call.server_request_id
        if response.provenance != "answer":
            local["provenance"] = response.provenance
        try:
            return serde.structure_document(response.payload, self.receipt, local)
        except ResponseDecodeError as exc:  # the write is applied (2xx, or its record found): say so
            record_id = response.payload.get("_id") if isinstance(response.payload, Mapping) else None
            raise AppliedWithoutReceiptError(
                f"the write WAS applied, but its record could not be read: {exc.message}",
                record_id=record_id if isinstance(record_id, str) else None,
                status_code=response.status,
                method="POST",
                path=self.path,
            ) from exc

    async def find(self, action: A, *, timeout: Timeout = None) -> R | None:
        """The stored record of `action`, found by its reference and checked field by field: reconcile an
        `OutcomeUnknownError` with it (`await resource.find(exc.action)`).

        None means Amili holds no record under the reference *now* (a write still in progress may land later:
        wait past the settle window before sending the action again). Records that hold the reference but
        are not exactly one record of this action raise `ReferenceConflictError`; an answer that cannot prove
        absence (a server ignoring the filter) raises `OutcomeUnknownError`; an action without a reference,
        `ValidationError`.
        """
        identity = Identity.of(action)
        if identity is None:
            raise ValidationError(f"this {action.kind} has no reference to find it by")
        pipeline = with_timeout(self._pipeline, timeout)

        async def get(path: str, params: Mapping[str, str] | None) -> Any:
            call = pipeline.call("GET", path, params=params, operation=f"amili.{self.name}.find")
            return (await pipeline.send(call)).payload

        try:
            sighting: Sighting = await pipeline.connection.lookups.run(self.path, lambda: look(get, identity))
            if sighting.conflict:
                raise conflict_error(identity, sighting, method="GET", path=self.path)
            if sighting.unfiltered and sighting.found is None:
                raise OutcomeUnknownError(
                    "the lookup by reference answered records outside its filter: not finding it there proves nothing",
                    method="GET",
                    path=self.path,
                )
        except AmiliError as exc:
            exc.action = action
            exc.reference = action.reference
            raise
        if sighting.found is None:
            return None
        return serde.structure_document(sighting.found, self.receipt, {"provenance": "found"})

    async def get(self, id: str, *, timeout: Timeout = None) -> R:
        """One record by its id."""
        _validate.object_id("id", id)
        pipeline = with_timeout(self._pipeline, timeout)
        response = await pipeline.send(pipeline.call("GET", f"{self.path}/{id}", operation=f"amili.{self.name}.get"))
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
            with_timeout(self._pipeline, timeout),
            self.path,
            self.receipt,
            where=where,
            sort=sort,
            max_results=max_results,
            limit=limit,
            max_pages=max_pages,
            operation=f"amili.{self.name}.list",
        )


class CreditorPayments(_ActionResource[CreditorPayment, PaymentReceipt]):
    path = CreditorPayment.path
    receipt = PaymentReceipt
    name = "creditor_payments"

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
        return await self._execute(action, timeout, self._create)


class CreditorCreditings(_ActionResource[CreditorCrediting, CreditingReceipt]):
    path = CreditorCrediting.path
    receipt = CreditingReceipt
    name = "creditor_creditings"

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
        return await self._execute(action, timeout, self._create)


class CreditorCancellations(_ActionResource[CreditorCancellation, CancellationReceipt]):
    path = CreditorCancellation.path
    receipt = CancellationReceipt
    name = "creditor_cancellations"

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
        return await self._execute(action, timeout, self._create)
