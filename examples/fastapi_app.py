"""A FastAPI service that registers debtor payments with Amili.

One `AsyncAmiliClient` is opened in the app's lifespan and shared by every request (it holds the connection
pool and the access token); handlers get it through `Depends`. `POST /payments` registers a payment and
answers with the receipt.

    pip install -e ".[examples]"            # fastapi and uvicorn
    python examples/fastapi_app.py          # in-memory Amili: starts the app in-process, posts one payment
    uvicorn examples.fastapi_app:app        # serve it (in-memory Amili unless AMILI_API_CODE is set)

With `AMILI_API_CODE` and `AMILI_PRIVATE_KEY` (or `AMILI_PRIVATE_KEY_FILE`) in the environment the app talks
to the real Amili (`AMILI_BASE_URL`, the sandbox by default); otherwise to an in-memory one seeded with a
creditor and three cases, whose ids it logs at start-up.

`create_app(client_factory)` takes any zero-argument callable returning an unopened `AsyncAmiliClient`: tests
pass one bound to a `FakeAmili` (see tests/test_examples.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field

from amili_async import (
    AmiliError,
    AsyncAmiliClient,
    NotFoundError,
    OutcomeUnknownError,
    PaymentReceipt,
    RateLimitError,
    ValidationError,
)

logger = logging.getLogger("payments_service")

ClientFactory = Callable[[], AsyncAmiliClient]
CENT = Decimal("0.01")


class PaymentIn(BaseModel):
    creditor: str = Field(description="the creditor's id (24 hex characters)")
    case: str = Field(description="the case's id (24 hex characters)")
    # Send amounts as strings ("250.00") so no float ever touches them.
    amount: Decimal = Field(gt=0, decimal_places=2)
    currency: str = "SEK"
    bank_transaction_date: AwareDatetime
    reference: str = Field(min_length=1, max_length=255, description="your id for the payment (required)")


class PaymentOut(BaseModel):
    id: str
    status: str | None
    payment_status: str | None
    settled_amount: Decimal | None
    reference: str
    created: datetime | None

    @classmethod
    def from_receipt(cls, receipt: PaymentReceipt, reference: str) -> PaymentOut:
        return cls(
            id=receipt.id,
            status=receipt.status,
            payment_status=receipt.payment_status,
            # Amili sends amounts as JSON numbers (`250.0`); show them with the currency's two decimals.
            settled_amount=None if receipt.settled_amount is None else receipt.settled_amount.quantize(CENT),
            reference=reference,
            created=receipt.created,
        )


def get_amili(request: Request) -> AsyncAmiliClient:
    """The app's one shared client (opened in the lifespan)."""
    client: AsyncAmiliClient = request.app.state.amili
    return client


Amili = Annotated[AsyncAmiliClient, Depends(get_amili)]


def create_app(client_factory: ClientFactory | None = None) -> FastAPI:
    factory = client_factory or default_client_factory

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with factory() as amili:
            app.state.amili = amili
            yield

    app = FastAPI(title="payments", lifespan=lifespan)

    @app.post("/payments", status_code=201, response_model=PaymentOut)
    async def register_payment(payment: PaymentIn, amili: Amili) -> PaymentOut:
        receipt = await amili.creditor_payments.create(
            creditor=payment.creditor,
            case=payment.case,
            amount=payment.amount,
            currency=payment.currency,
            bank_transaction_date=payment.bank_transaction_date,
            creditor_payment_reference=payment.reference,
        )
        return PaymentOut.from_receipt(receipt, payment.reference)

    @app.exception_handler(AmiliError)
    async def amili_error(request: Request, exc: AmiliError) -> JSONResponse:
        return _error_response(exc)

    return app


def _error_response(exc: AmiliError) -> JSONResponse:
    body: dict[str, object] = {"error": type(exc).__name__, "message": exc.message}
    if exc.issues:
        body["issues"] = {field: list(messages) for field, messages in exc.issues.items()}
    headers: dict[str, str] = {}
    if isinstance(exc, ValidationError):
        status = 422
    elif isinstance(exc, NotFoundError):
        status = 404
    elif isinstance(exc, RateLimitError):
        status = 503
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    elif isinstance(exc, OutcomeUnknownError):
        # Applied or not, nobody knows yet: the caller must not treat it as failed. Reconcile by reference.
        status = 504
        body["reference"] = exc.reference
    else:
        status = 502
    logger.warning("Amili call failed: %s", exc)  # AmiliError messages hold no secrets
    return JSONResponse(body, status_code=status, headers=headers)


def default_client_factory() -> AsyncAmiliClient:
    """Real Amili when credentials are in the environment, else a seeded in-memory one."""
    if os.environ.get("AMILI_API_CODE"):
        return AsyncAmiliClient()  # credentials and base URL from AMILI_* variables
    from amili_async.testing import FakeAmili

    fake = FakeAmili(seed=0)
    creditor = fake.add_creditor()
    cases = [fake.add_case(creditor=creditor.id, capital=Decimal("1000.00")) for _ in range(3)]
    logger.warning("in-memory Amili: creditor %s, cases %s", creditor.id, ", ".join(cases))
    return fake.client(creditor)


app = create_app()


async def main() -> None:
    """Start the app in-process against an in-memory Amili and post one payment to it."""
    import httpx

    from amili_async.testing import FakeAmili

    fake = FakeAmili(seed=0)
    creditor = fake.add_creditor()
    case_id = fake.add_case(creditor=creditor.id, capital=Decimal("1000.00"))
    demo = create_app(lambda: fake.client(creditor))
    # httpx.ASGITransport does not run the lifespan: enter it ourselves (a server such as uvicorn does it).
    async with demo.router.lifespan_context(demo):
        transport = httpx.ASGITransport(app=demo)
        async with httpx.AsyncClient(transport=transport, base_url="http://payments.local") as http:
            answer = await http.post(
                "/payments",
                json={
                    "creditor": creditor.id,
                    "case": case_id,
                    "amount": "250.00",
                    "bank_transaction_date": "2025-10-07T08:15:30+00:00",
                    "reference": "PAY-REF-001",
                },
            )
    print(answer.status_code, answer.json())
    remaining = fake.get_case(case_id)["local_remaining_capital_amount"]
    print(f"payments recorded by Amili: {len(fake.payments)}; capital left on the case: {remaining}")


if __name__ == "__main__":
    asyncio.run(main())
