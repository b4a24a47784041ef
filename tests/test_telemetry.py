"""OpenTelemetry: the spans and metrics of real calls, read back from the SDK's in-memory exporters.

Each test installs a fresh `TracerProvider` and `MeterProvider` as the global ones (and puts the previous
globals back afterwards), runs calls against the in-memory Amili, and asserts on the span tree, the
attributes, the events and the metric points.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from amili_async import (
    AmiliClient,
    ApiCodeJwtAuth,
    AsyncAmiliClient,
    CreditorPayment,
    OutcomeUnknownError,
    RetryPolicy,
    ValidationError,
)
from amili_async.testing import FakeAmili, FakeCreditor
from amili_async.testing.faults import Fault

PAID_AT = datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc)
PAYMENTS = "/creditor--payments"


class Recorded:
    """What the in-memory exporters caught."""

    def __init__(self, exporter: InMemorySpanExporter, reader: InMemoryMetricReader) -> None:
        self.exporter = exporter
        self.reader = reader

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.named(name)
        return span

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        found = [s for s in self.spans() if s.parent is not None and s.parent.span_id == parent.context.span_id]
        return sorted(found, key=lambda s: s.start_time or 0)

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def total(self, name: str, **attributes: Any) -> int:
        return sum(
            int(p.value) for p in self.points(name) if all(p.attributes.get(k) == v for k, v in attributes.items())
        )


@pytest.fixture
def otel(fresh_otel_globals: None) -> Iterator[Recorded]:
    """Fresh global providers for one test (OpenTelemetry allows setting them once per process)."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    yield Recorded(exporter, reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def fake() -> FakeAmili:
    return FakeAmili(seed=15)


@pytest.fixture
def creditor(fake: FakeAmili) -> FakeCreditor:
    return fake.add_creditor()


@pytest.fixture
def case_id(fake: FakeAmili, creditor: FakeCreditor) -> str:
    return fake.add_case(creditor.id, capital=Decimal("5000.00"), invoice_number="INV-SECRET-4711")


def client(fake: FakeAmili, creditor: FakeCreditor) -> AsyncAmiliClient:
    return fake.client(creditor, retry=RetryPolicy.no_delay())


async def pay(
    amili: AsyncAmiliClient, creditor: FakeCreditor, case_id: str, reference: str | None = "PAY-REF-1"
) -> Any:
    return await amili.creditor_payments.create(
        creditor=creditor.id,
        case=case_id,
        amount=Decimal("1234.56"),
        currency="SEK",
        bank_transaction_date=PAID_AT,
        creditor_payment_reference=reference,
    )


def http_attributes(span: ReadableSpan) -> dict[str, Any]:
    return {k: v for k, v in (span.attributes or {}).items() if not k.startswith("amili.")}


async def test_a_payment_is_one_operation_span_under_the_callers_span(
    otel: Recorded, fake: FakeAmili, creditor: FakeCreditor, case_id: str
) -> None:
    tracer = trace.get_tracer("the-app")
    async with client(fake, creditor) as amili:
        with tracer.start_as_current_span("POST /settle", kind=SpanKind.SERVER) as request_span:
            receipt = await pay(amili, creditor, case_id)

    operation = otel.one("amili.creditor_payments.create")
    assert operation.kind is SpanKind.INTERNAL
    assert operation.parent is not None and operation.parent.span_id == request_span.get_span_context().span_id
    assert operation.context.trace_id == request_span.get_span_context().trace_id
    assert dict(operation.attributes or {}) == {
        "amili.request_id": receipt.request_id,
        "amili.action.kind": "payment",
        "amili.attempts": 1,
        "amili.outcome": "applied",
    }
    assert operation.status.status_code is StatusCode.UNSET

    token, post = otel.children(operation)  # the first call also fetches the token, inside the operation
    assert (token.name, post.name) == ("GET /authenticates/api-code", "POST /creditor--payments")
    assert post.kind is SpanKind.CLIENT and token.kind is SpanKind.CLIENT
    assert http_attributes(post) == {
        "http.request.method": "POST",
        "url.template": "/creditor--payments",
        "server.address": "fake.amili.test",
        "server.port": 443,
        "http.response.status_code": 201,
    }
    assert post.attributes is not None and post.attributes["amili.request_id"] == receipt.request_id
    assert "http.request.resend_count" not in post.attributes
    assert post.start_time is not None and operation.start_time is not None and post.end_time is not None
    assert operation.start_time <= post.start_time <= post.end_time <= (operation.end_time or 0)

    # The request id on the span is the one Amili received, and the one on the receipt.
    (stored,) = [r for r in fake.requests if r.method == "POST"]
    assert stored.request_id == receipt.request_id
    assert otel.total("amili.client.token_refreshes") == 1
    durations = otel.points("http.client.request.duration")
    assert sorted(p.attributes["url.template"] for p in durations) == ["/authenticates/api-code", "/creditor--payments"]
    assert all(p.count == 1 and p.sum > 0 for p in durations)


async def test_a_retried_read_has_one_span_per_attempt_and_a_retry_event(
    otel: Recorded, fake: FakeAmili, creditor: FakeCreditor, case_id: str
) -> None:
    async with client(fake, creditor) as amili:
        await amili.cases.get(case_id)  # the token, out of the way
        otel.exporter.clear()
        fake.inject(Fault("server_error", path="/cases", method="GET", status=503, times=1))
        case = await amili.cases.get(case_id)
    assert case.id == case_id

    operation = otel.one("amili.cases.get")
    assert operation.attributes is not None
    assert operation.attributes["amili.attempts"] == 2
    assert operation.attributes["amili.outcome"] == "ok"
    failed, answered = otel.children(operation)
    assert failed.name == answered.name == "GET /cases/{id}"
    assert http_attributes(failed) == {
        "http.request.method": "GET",
        "url.template": "/cases/{id}",
        "server.address": "fake.amili.test",
        "server.port": 443,
        "http.response.status_code": 503,
        "error.type": "503",
    }
    assert failed.status.status_code is StatusCode.ERROR
    assert answered.attributes is not None
    assert answered.attributes["http.response.status_code"] == 200
    assert answered.attributes["http.request.resend_count"] == 1
    assert "error.type" not in answered.attributes
    (event,) = operation.events
    assert event.name == "amili.retry"
    assert event.attributes is not None and event.attributes["amili.retry.reason"] == "ambiguous"
    assert otel.total("amili.client.retries", **{"amili.operation": "amili.cases.get"}) == 1
    assert otel.total("amili.client.throttle_waits") == 0
    # Both attempts carried the same request id, the one on the span.
    sent = [r.request_id for r in fake.requests if r.path == f"/cases/{case_id}"][-2:]
    assert sent == [operation.attributes["amili.request_id"]] * 2


async def test_a_reconciled_write_shows_the_lost_attempt_and_the_lookup(
    otel: Recorded, fake: FakeAmili, creditor: FakeCreditor, case_id: str
) -> None:
    fake.inject(Fault("drop_after_commit", path=PAYMENTS, method="POST", times=1))
    async with client(fake, creditor) as amili:
        receipt = await pay(amili, creditor, case_id)
    assert len(fake.payments) == 1  # applied once, found again, never sent twice

    operation = otel.one("amili.creditor_payments.create")
    assert operation.attributes is not None
    assert operation.attributes["amili.outcome"] == "recovered_by_reference"
    assert operation.attributes["amili.attempts"] == 1
    _token, lost, lookup = otel.children(operation)
    assert lost.name == "POST /creditor--payments"
    assert lost.attributes is not None and lost.attributes["error.type"] == "httpx.RemoteProtocolError"
    assert "http.response.status_code" not in lost.attributes
    assert lookup.name == "amili.reconcile"
    assert lookup.attributes is not None and lookup.attributes["amili.outcome"] == "ok"
    assert lookup.attributes["amili.request_id"] == receipt.request_id  # one logical call, one id
    (get,) = otel.children(lookup)
    assert get.name == "GET /creditor--payments" and get.attributes is not None
    assert get.attributes["http.response.status_code"] == 200
    assert {r.request_id for r in fake.requests if r.path == PAYMENTS} == {receipt.request_id}


async def test_a_write_proven_absent_and_sent_again(
    otel: Recorded, fake: FakeAmili, creditor: FakeCreditor, case_id: str
) -> None:
    fake.inject(Fault("drop_before_commit", path=PAYMENTS, method="POST", times=1))
    async with client(fake, creditor) as amili:
        await pay(amili, creditor, case_id)
    assert len(fake.payments) == 1
    operation = otel.one("amili.creditor_payments.create")
    assert operation.attributes is not None
    assert operation.attributes["amili.outcome"] == "resent_after_proof"
    token, lost, *lookups, resent = (s.name for s in otel.children(operation))
    assert (token, lost, resent) == (
        "GET /authenticates/api-code",
        "POST /creditor--payments",
        "POST /creditor--payments",
    )
    assert lookups and set(lookups) == {"amili.reconcile"}  # not found, and not found again after the settle window


async def test_a_throttled_call_waits_and_says_so(
    otel: Recorded, fake: FakeAmili, creditor: FakeCreditor, case_id: str
) -> None:
    fake.inject(Fault("rate_limit", path=PAYMENTS, method="POST", retry_after=0.25, times=1))
    async with client(fake, creditor) as amili:
        await pay(amili, creditor, case_id)

    operation = otel.one("amili.creditor_payments.create")
    assert operation.attributes is not None
    assert operation.attributes["amili.outcome"] == "applied"
    assert operation.attributes["amili.attempts"] == 2
    (event,) = operation.events
    assert event.name == "amili.throttle_wait"
    assert event.attributes is not None
    assert event.attributes["amili.retry.reason"] == "throttled"
    assert event.attributes["amili.wait_s"] >= 0.25  # Retry-After, plus jitter
    refused, applied = (s for s in otel.children(operation) if s.name.startswith("POST"))
    assert refused.attributes is not None and refused.attributes["http.response.status_code"] == 429
    assert refused.attributes["error.type"] == "429"
    assert applied.attributes is not None and applied.attributes["http.request.resend_count"] == 1
    assert otel.total("amili.client.throttle_waits", **{"amili.operation": "amili.creditor_payments.create"}) == 1
    assert otel.total("amili.client.retries", **{"amili.retry.reason": "throttled"}) == 1
    statuses = sorted(
        p.attributes.get("http.response.status_code")
        for p in otel.points("http.client.request.duration")
        if p.attributes["url.template"] == PAYMENTS
    )
    assert statuses == [201, 429]


async def test_an_unknown_outcome_is_an_error_span_and_counted(
    otel: Recorded, fake: FakeAmili, creditor: FakeCreditor, case_id: str
) -> None:
    fake.inject(Fault("drop_after_commit", path=PAYMENTS, method="POST", times=1))
    async with client(fake, creditor) as amili:
        with pytest.raises(OutcomeUnknownError) as caught:
            no_reference = CreditorPayment(  # nothing to look the payment up by
                creditor=creditor.id, case=case_id, amount=Decimal("10"), currency="SEK", bank_transaction_date=PAID_AT
            )
            await amili.execute(no_reference)
    operation = otel.one("amili.execute")
    assert operation.attributes is not None
    assert operation.attributes["amili.outcome"] == "unknown"
    assert operation.attributes["error.type"] == "amili_async.OutcomeUnknownError"
    assert operation.status.status_code is StatusCode.ERROR
    assert not operation.status.description  # messages may quote ids: never on a span
    assert caught.value.request_id == operation.attributes["amili.request_id"]
    assert otel.total("amili.client.unknown_outcomes", **{"amili.action.kind": "payment"}) == 1


async def test_nothing_about_ids_amounts_queries_or_secrets_reaches_telemetry(
    otel: Recorded, fake: FakeAmili, creditor: FakeCreditor, case_id: str
) -> None:
    """Every span name, attribute and event, and every metric attribute, of a run touching every operation,
    errors and reconciliation included: none holds an id, a query value, an amount or a secret."""
    keys: set[str] = set()
    handle = fake.handle

    def spy(request: Any) -> Any:
        keys.add(request.headers.get("x-api-key") or "")
        return handle(request)

    fake.handle = spy  # type: ignore[method-assign]
    other_case = fake.add_case(creditor.id, capital=Decimal("777.00"), customer_name="Anna Andersson")
    fake.inject(Fault("drop_after_commit", path="/creditor--creditings", method="POST", times=1))
    fake.inject(Fault("server_error", path="/cases", method="GET", times=1, status=502))
    receipts: list[Any] = []
    async with client(fake, creditor) as amili:
        receipts.append(await pay(amili, creditor, case_id, reference="PAY-REF-SECRET-1"))
        receipts.append(
            await amili.creditor_creditings.create(
                case=other_case, amount=Decimal("98.76"), currency="SEK", creditor_reference="CRED-REF-SECRET-2"
            )
        )
        await amili.cases.get(case_id)
        check = await amili.respite.check(other_case)
        if check.allowed:
            await amili.respite.grant(other_case, days=13)
        listed = [
            p async for p in amili.creditor_payments.list(where={"creditor_payment_reference": "PAY-REF-SECRET-1"})
        ]
        assert len(listed) == 1
        with pytest.raises(ValidationError):
            await amili.creditor_payments.create(  # refused by Amili: 422 with issues quoting the case
                creditor=creditor.id,
                invoice_number="INV-NOT-THERE-9",
                amount=Decimal("5.55"),
                currency="SEK",
                bank_transaction_date=PAID_AT,
            )
        receipts.append(await amili.creditor_cancellations.create(creditor=creditor.id, case=other_case))

    secrets = {k for k in keys if k} | {creditor.api_code, *creditor.private_key_pem.splitlines()[1:-1]}
    needles = {
        creditor.id,
        case_id,
        other_case,
        "INV-SECRET-4711",
        "INV-NOT-THERE-9",
        "PAY-REF-SECRET-1",
        "CRED-REF-SECRET-2",
        "Anna Andersson",
        "1234.56",
        "98.76",
        "5.55",
        "777.00",
        *(r.id for r in receipts),
        *secrets,
    }
    texts: list[str] = []
    for span in otel.spans():
        texts.append(span.name)
        texts.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        texts.append(span.status.description or "")
        for event in span.events:
            texts.append(event.name)
            texts.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
    for name in (
        "http.client.request.duration",
        "amili.client.retries",
        "amili.client.throttle_waits",
        "amili.client.token_refreshes",
        "amili.client.unknown_outcomes",
    ):
        for point in otel.points(name):
            texts.extend(f"{k}={v}" for k, v in point.attributes.items())
    assert len(otel.spans()) >= 12
    assert {"amili.creditor_creditings.create", "amili.reconcile", "amili.creditor_payments.list"} <= {
        s.name for s in otel.spans()
    }
    for needle in needles:
        leaked = [t for t in texts if needle in t]
        assert not leaked, f"{needle!r} reached telemetry: {leaked[:3]}"
    # The check itself can fail: the sentinels are what the calls really sent.
    assert any(r.query.get("where", "").find("PAY-REF-SECRET-1") >= 0 for r in fake.requests)


async def test_no_configured_provider_means_no_spans_and_no_cost_path(
    fake: FakeAmili, creditor: FakeCreditor, case_id: str, fresh_otel_globals: None
) -> None:
    """The API is imported but no SDK is set (the proxies are in place): calls work and record nothing."""
    async with client(fake, creditor) as amili:
        receipt = await pay(amili, creditor, case_id)
        assert amili._pipeline.connection.telemetry.otel() is None
    assert receipt.request_id is not None


def test_the_blocking_client_continues_the_calling_threads_trace(
    otel: Recorded, fake: FakeAmili, creditor: FakeCreditor, case_id: str
) -> None:
    tracer = trace.get_tracer("notebook")
    auth = ApiCodeJwtAuth(api_code=creditor.api_code, private_key=creditor.private_key_pem)
    with (
        AmiliClient(auth=auth, base_url=fake.BASE_URL, transport=fake.transport()) as amili,
        tracer.start_as_current_span("cell") as cell,
    ):
        amili.cases.get(case_id)  # runs on the client's own loop thread, in the caller's context
    operation = otel.one("amili.cases.get")
    assert operation.parent is not None and operation.parent.span_id == cell.get_span_context().span_id


_WITHOUT_OTEL = textwrap.dedent(
    """
    import asyncio, sys
    if sys.argv[1] == "blocked":
        sys.modules["opentelemetry"] = None  # as if the extra were not installed: `import` raises ImportError
    from decimal import Decimal
    from datetime import datetime, timezone
    from amili_async import RetryPolicy
    from amili_async.testing import FakeAmili, Fault

    fake = FakeAmili(seed=1)
    creditor = fake.add_creditor()
    case_id = fake.add_case(creditor.id)
    fake.inject(Fault("server_error", path="/cases", method="GET", times=1))

    async def main():
        async with fake.client(creditor, retry=RetryPolicy.no_delay()) as amili:
            await amili.cases.get(case_id)
            receipt = await amili.creditor_payments.create(
                creditor=creditor.id, case=case_id, amount=Decimal("1"), currency="SEK",
                bank_transaction_date=datetime(2025, 1, 1, tzinfo=timezone.utc), creditor_payment_reference="R")
            assert len(receipt.request_id) == 32

    asyncio.run(main())
    loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry", "amili_async._otel")) and sys.modules[m])
    print(loaded)
    """
)


@pytest.mark.parametrize("how", ["blocked", "installed"])
def test_without_opentelemetry_in_use_nothing_of_it_is_imported(how: str) -> None:
    """Not installed, or installed but never imported by the application: the SDK never imports it."""
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL, how], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
