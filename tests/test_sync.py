"""`AmiliClient`, the blocking facade: real calls through `httpx.MockTransport`, on asyncio and trio."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import anyio
import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from amili_async import (
    ApiCodeJwtAuth,
    AsyncAmiliClient,
    ClientStateError,
    ConfigurationError,
    CreditorPayment,
    NotFoundError,
    PaymentReceipt,
    RetryPolicy,
    StaticTokenAuth,
    UnprocessableEntityError,
    ValidationError,
)
from amili_async.sync import AmiliClient, SyncPager

BASE = "https://amili.test"
CREDITOR = "5f" + "0" * 22
CASE = "5c" + "1" * 22
PAID_AT = datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc)

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Recorder:
    """A MockTransport handler that records every request and answers from `answer`."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


def receipt_json(n: int = 0, **extra: Any) -> dict[str, Any]:
    return {"_id": f"{n:024x}", "_status": "OK", "status": "completed", "_case": CASE, **extra}


def make_client(handler: Handler, *, backend: str = "asyncio", **kwargs: Any) -> AmiliClient:
    kwargs.setdefault("auth", StaticTokenAuth("t"))
    return AmiliClient(base_url=BASE, transport=httpx.MockTransport(handler), backend=backend, **kwargs)


def payment(n: int) -> CreditorPayment:
    return CreditorPayment(
        creditor=CREDITOR, case=CASE, amount=Decimal(n + 1), currency="SEK", bank_transaction_date=PAID_AT
    )


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    before = threading.active_count()
    yield
    assert threading.active_count() == before


def test_create_payment_sends_the_documented_body_and_returns_the_receipt(backend: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/authenticates/api-code":
            claims = jwt.decode(request.headers["X-API-Key"], key.public_key(), algorithms=["ES256"])
            assert claims["api_code"] == "code-1"
            return httpx.Response(200, json={"token": "tok-1", "expires_in": 600})
        assert request.headers["X-API-Key"] == "tok-1"
        return httpx.Response(201, json=receipt_json(7, amount=123.45, currency="SEK"))

    recorder = Recorder(answer)
    auth = ApiCodeJwtAuth(api_code="code-1", private_key=pem)
    with make_client(recorder, backend=backend, auth=auth) as amili:
        receipt = amili.creditor_payments.create(
            creditor=CREDITOR,
            case=CASE,
            amount=Decimal("123.45"),
            currency="SEK",
            bank_transaction_date=PAID_AT,
            creditor_payment_reference="pay-1",
        )
        assert amili.token_requests == 1
    assert isinstance(receipt, PaymentReceipt)
    assert receipt.id == f"{7:024x}"
    assert receipt.amount == Decimal("123.45")
    assert receipt.applied
    assert recorder.paths() == ["GET /authenticates/api-code", "POST /creditor--payments"]
    post = recorder.requests[1]
    assert post.headers["Content-Type"] == "application/json"
    assert b'"amount":123.45' in post.content  # exact digits, not a float
    assert orjson.loads(post.content) == {
        "creditor": CREDITOR,
        "amount": 123.45,
        "currency": "SEK",
        "bank_transaction_date": "Tue, 07 Oct 2025 08:15:30 GMT",
        "case": CASE,
        "creditor_payment_reference": "pay-1",
        "origin": "creditor_system",
    }


def test_list_pages_lazily_through_two_pages(backend: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        items = [receipt_json(n) for n in range(3)] if page == 1 else [receipt_json(3)]
        return httpx.Response(200, json={"_items": items, "_meta": {"page": page, "total": 4}})

    recorder = Recorder(answer)
    with make_client(recorder, backend=backend) as amili:
        pager = amili.creditor_payments.list(where={"creditor": CREDITOR}, max_results=3)
        assert isinstance(pager, SyncPager)
        assert recorder.requests == []  # nothing is fetched before iteration
        items = iter(pager)
        first = next(items)
        assert len(recorder.requests) == 1  # one page at a time
        rest = list(items)
        assert [r.id for r in [first, *rest]] == [f"{n:024x}" for n in range(4)]
        assert all(isinstance(r, PaymentReceipt) for r in rest)
        assert [r.url.params["page"] for r in recorder.requests] == ["1", "2"]
        assert orjson.loads(recorder.requests[0].url.params["where"]) == {"creditor": CREDITOR}
        assert [len(p) for p in amili.creditor_payments.list(max_results=3).pages()] == [3, 1]
        assert len(list(amili.creditor_payments.list(max_results=3, limit=2))) == 2


def test_stopping_a_list_early_closes_it(backend: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/cases/{CASE}":
            return httpx.Response(200, json={"_id": CASE})
        return httpx.Response(200, json={"_items": [{"_id": f"{n:024x}"} for n in range(2)]})

    recorder = Recorder(answer)
    with make_client(recorder, backend=backend) as amili:
        for _ in amili.cases.list(max_results=2):
            break
        assert len(recorder.requests) == 1
        assert amili.cases.get(CASE).id == CASE  # the client is still usable


def test_execute_many_yields_one_outcome_per_action(backend: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        amount = orjson.loads(request.content)["amount"]
        if amount == 3:
            return httpx.Response(404, json={"_error": {"message": "no such case"}})
        return httpx.Response(201, json=receipt_json(int(amount)))

    with make_client(Recorder(answer), backend=backend) as amili:
        outcomes = amili.execute_many((payment(n) for n in range(10)), concurrency=3)
        assert not isinstance(outcomes, list)
        seen = sorted(outcomes, key=lambda o: o.index)
    assert [o.index for o in seen] == list(range(10))
    assert [o.ok for o in seen] == [n != 2 for n in range(10)]
    assert isinstance(seen[2].error, NotFoundError)
    assert seen[2].error.reference is None and seen[2].error.action == payment(2)
    assert seen[0].receipt.id == f"{1:024x}"


def test_execute_many_streams_and_can_stop_early(backend: str, no_thread_leak: None) -> None:
    recorder = Recorder(lambda r: httpx.Response(201, json=receipt_json()))
    pulled = 0

    def actions() -> Iterator[CreditorPayment]:
        nonlocal pulled
        for n in range(10_000):
            pulled += 1
            yield payment(n)

    with make_client(recorder, backend=backend) as amili:
        outcomes = amili.execute_many(actions(), concurrency=4)
        first = next(outcomes)
        assert first.ok
        assert pulled < 50  # outcomes stream: the input is not drained up front
        outcomes.close()  # cancels what is in flight
        sent = len(recorder.requests)
        assert amili.execute(payment(1)).id == f"{0:024x}"
        assert len(recorder.requests) == sent + 1
        # A bad argument surfaces when iteration starts, as with the async client.
        with pytest.raises(ValidationError):
            next(amili.execute_many([payment(1)], concurrency=0))
        # An abandoned run does not keep close() waiting.
        abandoned = amili.execute_many(actions(), concurrency=2)
        next(abandoned)
    del abandoned


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, {"_status": "ERR", "_error": {"code": 404, "message": "not found"}}, NotFoundError),
        (422, {"_status": "ERR", "_issues": {"amount": "must be positive"}}, UnprocessableEntityError),
    ],
)
def test_errors_are_the_async_clients_errors(
    backend: str, status: int, body: dict[str, Any], error: type[Exception]
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    async def with_async_client() -> BaseException:
        transport = httpx.MockTransport(answer)
        async with AsyncAmiliClient(StaticTokenAuth("t"), base_url=BASE, transport=transport) as amili:
            with pytest.raises(error) as caught:
                await amili.creditor_payments.get(CASE)
            return caught.value

    expected = anyio.run(with_async_client)
    with make_client(answer, backend=backend) as amili, pytest.raises(error) as caught:
        amili.creditor_payments.get(CASE)
    got = caught.value
    assert type(got) is type(expected)
    assert str(got) == str(expected)
    assert getattr(got, "status_code", None) == status
    if status == 422:
        assert got.issues == {"amount": ("must be positive",)}  # type: ignore[attr-defined]

    # Errors raised before sending (input validation) are the same too.
    with make_client(answer, backend=backend) as amili, pytest.raises(ValidationError):
        amili.cases.get("not-an-id")


def test_a_read_is_retried(backend: str) -> None:
    answers = iter([httpx.Response(503, text="busy"), httpx.Response(200, json={"_id": CASE, "state": "open"})])
    recorder = Recorder(lambda r: next(answers))
    with make_client(recorder, backend=backend, retry=RetryPolicy.no_delay()) as amili:
        case = amili.cases.get(CASE)
    assert case.id == CASE and case.state == "open"
    assert recorder.paths() == [f"GET /cases/{CASE}"] * 2


def test_respite_check_and_grant() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(206, json={"issues": ["respite limit reached"]})
        assert orjson.loads(request.content) == {"days": 14}
        return httpx.Response(200, json={})

    with make_client(answer) as amili:
        check = amili.respite.check(CASE)
        assert not check.allowed and check.issues == ("respite limit reached",)
        receipt = amili.respite.grant(CASE, days=14)
        assert (receipt.case, receipt.days) == (CASE, 14)


def test_missing_credentials_fail_at_construction(monkeypatch: pytest.MonkeyPatch, no_thread_leak: None) -> None:
    for name in ("AMILI_API_CODE", "AMILI_PRIVATE_KEY", "AMILI_PRIVATE_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="AMILI_API_CODE"):
        AmiliClient()
    with pytest.raises(ConfigurationError, match="https"):
        AmiliClient(StaticTokenAuth("t"), base_url="http://amili.example")
    with pytest.raises(ConfigurationError, match="backend"):
        AmiliClient(StaticTokenAuth("t"), backend="curio")


def test_lazy_start_close_twice_and_no_leaked_thread(backend: str) -> None:
    before = threading.active_count()
    amili = make_client(lambda r: httpx.Response(200, json={"_id": CASE}), backend=backend)
    assert threading.active_count() == before  # nothing started by construction
    assert amili.cases.get(CASE).id == CASE  # the portal starts on first use
    assert threading.active_count() == before + 1
    amili.close()
    assert threading.active_count() == before
    amili.close()
    with pytest.raises(ClientStateError, match="closed"):
        amili.cases.get(CASE)
    with pytest.raises(ClientStateError, match="closed"), amili:
        pass

    never_used = make_client(lambda r: httpx.Response(200))
    never_used.close()
    never_used.close()
    assert threading.active_count() == before


async def test_works_inside_a_running_asyncio_loop(no_thread_leak: None) -> None:
    """A notebook cell, IPython's autoawait, a sync library called from async code: the calling thread runs a
    loop. The work runs on the client's own loop thread, so the call completes instead of being refused."""
    import asyncio

    caller_loop = asyncio.get_running_loop()
    seen_on: list[object] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen_on.append(threading.current_thread())
        if request.method == "POST":
            return httpx.Response(201, json=receipt_json(3))
        return httpx.Response(200, json={"_id": CASE, "state": "invoice"})

    with make_client(answer) as amili:
        assert amili.cases.get(CASE).id == CASE
        assert amili.execute(payment(1)).id == f"{3:024x}"
        outcomes = list(amili.execute_many([payment(2), payment(3)], concurrency=2))
        assert [o.ok for o in outcomes] == [True, True]
    assert asyncio.get_running_loop() is caller_loop  # the caller's loop is untouched, still running
    assert seen_on and all(t is not threading.current_thread() for t in seen_on)


def test_works_inside_trio() -> None:
    amili = make_client(lambda r: httpx.Response(201, json=receipt_json(5)))

    async def main() -> str:
        return str(amili.execute(payment(1)).id)

    assert anyio.run(main, backend="trio") == f"{5:024x}"
    amili.close()


def test_a_closed_client_inside_a_running_loop_says_closed() -> None:
    amili = make_client(lambda r: httpx.Response(200, json={"_id": CASE}))

    async def main() -> None:
        amili.cases.get(CASE)
        amili.close()
        with pytest.raises(ClientStateError, match="closed"):
            amili.cases.get(CASE)

    anyio.run(main)


def test_resources_proxy_only_public_methods() -> None:
    with make_client(lambda r: httpx.Response(200)) as amili:
        assert amili.creditor_payments.path == "/creditor--payments"
        assert "create" in dir(amili.creditor_payments)
        assert amili.creditor_payments.create.__doc__.startswith("Register a payment")
        with pytest.raises(AttributeError):
            _ = amili.creditor_payments._pipeline
        assert "amili.test" in repr(amili)
