"""Structured logs: every record of the SDK carries the same `extra` fields, and no message quotes an id,
an amount, a query value or a secret."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from amili_async import CreditorPayment, OutcomeUnknownError, RetryPolicy
from amili_async.testing import FakeAmili, Fault

FIELDS = (
    "amili.operation",
    "amili.path_template",
    "amili.attempt",
    "amili.outcome",
    "amili.request_id",
    "amili.elapsed_ms",
)
PAID_AT = datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc)


def sdk_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("amili_async")]


async def run_a_rough_day(fake: FakeAmili) -> dict[str, Any]:
    """Retries, throttling, a reconciled write, an unknown outcome and plain calls, with debug logging on."""
    creditor = fake.add_creditor()
    case_id = fake.add_case(creditor.id, capital=Decimal("9000.00"), customer_name="Britt Bengtsson")
    fake.inject(Fault("server_error", path="/cases", method="GET", status=503, times=1))
    fake.inject(Fault("rate_limit", path="/creditor--creditings", method="POST", retry_after=0.01, times=1))
    fake.inject(Fault("drop_after_commit", path="/creditor--payments", method="POST", times=2))
    keys: set[str] = set()
    handle = fake.handle

    def spy(request: Any) -> Any:
        keys.add(request.headers.get("x-api-key") or "")
        return handle(request)

    fake.handle = spy  # type: ignore[method-assign]
    ids: dict[str, Any] = {}
    async with fake.client(creditor, retry=RetryPolicy.no_delay()) as amili:
        await amili.cases.get(case_id)
        crediting = await amili.creditor_creditings.create(
            case=case_id, amount=Decimal("432.10"), currency="SEK", creditor_reference="CR-SECRET-9"
        )
        payment = await amili.creditor_payments.create(
            creditor=creditor.id,
            case=case_id,
            amount=Decimal("876.54"),
            currency="SEK",
            bank_transaction_date=PAID_AT,
            creditor_payment_reference="PAY-SECRET-8",
        )
        with pytest.raises(OutcomeUnknownError) as caught:
            await amili.execute(
                CreditorPayment(
                    creditor=creditor.id,
                    case=case_id,
                    amount=Decimal("3.21"),
                    currency="SEK",
                    bank_transaction_date=PAID_AT,
                )
            )
    ids.update(
        case=case_id,
        creditor=creditor.id,
        crediting=crediting,
        payment=payment,
        unknown=caught.value,
        secrets={k for k in keys if k} | {creditor.api_code, *creditor.private_key_pem.splitlines()[1:-1]},
    )
    return ids


async def test_every_sdk_record_carries_the_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="amili_async")
    ran = await run_a_rough_day(FakeAmili(seed=9))
    records = sdk_records(caplog)
    assert len(records) >= 15
    for record in records:
        missing = [f for f in FIELDS if not hasattr(record, f)]
        assert not missing, (record.getMessage(), missing)

    by_request: dict[str, list[logging.LogRecord]] = {}
    for record in records:
        by_request.setdefault(getattr(record, "amili.request_id"), []).append(record)
    payment_records = by_request[ran["payment"].request_id]
    operations = {getattr(r, "amili.operation") for r in payment_records}
    assert operations == {"amili.creditor_payments.create", "amili.reconcile"}
    final = [r for r in payment_records if r.getMessage().startswith("amili.creditor_payments.create:")]
    assert [getattr(r, "amili.outcome") for r in final] == ["recovered_by_reference"]
    assert all(getattr(r, "amili.path_template") == "/creditor--payments" for r in payment_records)
    assert all(isinstance(getattr(r, "amili.elapsed_ms"), float) for r in payment_records)

    # The retried read: its attempts 1 and 2, what each got, and a retry record between them.
    read = [r for r in records if getattr(r, "amili.operation") == "amili.cases.get"]
    attempts = [
        (getattr(r, "amili.attempt"), getattr(r, "amili.outcome")) for r in read if "(attempt" in r.getMessage()
    ]
    assert attempts == [(1, "503"), (2, "200")]
    assert any(r.getMessage().startswith("retrying GET /cases/{id}") and r.levelno == logging.INFO for r in read)
    assert {getattr(r, "amili.path_template") for r in read} == {"/cases/{id}"}

    throttled = [r for r in records if getattr(r, "amili.operation") == "amili.creditor_creditings.create"]
    assert [getattr(r, "amili.outcome") for r in throttled if "(attempt" in r.getMessage()] == ["429", "201"]
    unknown = [r for r in by_request[ran["unknown"].request_id] if r.getMessage().startswith("amili.execute:")]
    assert [getattr(r, "amili.outcome") for r in unknown] == ["unknown"]


async def test_no_message_or_field_quotes_an_id_an_amount_or_a_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="amili_async")
    ran = await run_a_rough_day(FakeAmili(seed=10))
    needles = {
        ran["case"],
        ran["creditor"],
        ran["crediting"].id,
        ran["payment"].id,
        "CR-SECRET-9",
        "PAY-SECRET-8",
        "Britt Bengtsson",
        "432.1",
        "876.54",
        "3.21",
        "9000",
        *ran["secrets"],
    }
    records = sdk_records(caplog)
    assert records
    for record in records:
        texts = [record.getMessage(), *(str(getattr(record, f)) for f in FIELDS)]
        for needle in needles:
            assert not any(needle in t for t in texts), f"{needle!r} in {texts}"


async def test_outside_logging_is_free(caplog: pytest.LogCaptureFixture) -> None:
    """With the logger at its default level nothing is formatted, and nothing is emitted."""
    caplog.set_level(logging.WARNING, logger="amili_async")
    await run_a_rough_day(FakeAmili(seed=11))
    assert sdk_records(caplog) == []


class JsonFormatter(logging.Formatter):
    """The recipe of docs/observability.md, in its smallest form."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in record.__dict__.items() if k.startswith("amili.")}
        return json.dumps({"level": record.levelname, "message": record.getMessage(), **fields})


async def test_the_fields_make_json_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="amili_async")
    await run_a_rough_day(FakeAmili(seed=12))
    lines = [json.loads(JsonFormatter().format(r)) for r in sdk_records(caplog)]
    assert all(set(FIELDS) <= set(line) for line in lines)
    assert {line["amili.operation"] for line in lines} >= {
        "amili.cases.get",
        "amili.creditor_creditings.create",
        "amili.creditor_payments.create",
        "amili.reconcile",
        "amili.execute",
    }
