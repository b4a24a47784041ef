"""respx, the mocking library of httpx users, sees every request the SDK sends while a router is active.

On asyncio the SDK's default transport drives aiohttp directly, which respx cannot patch; under respx it hands
each exchange to httpx's own machinery instead. These tests run the SDK as a user's test suite would: on its
default transport (no `transport=`), on asyncio, on trio and through the blocking `AmiliClient`, with respx's
two mockers (`using="httpcore"`, its default, and `using="httpx"`). The base URL's host cannot resolve
(RFC 2606 `.invalid`) and a guard records, and refuses, any DNS lookup or connection attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx
import trio
from respx.models import AllMockedAssertionError

from amili_async import (
    ApiCodeJwtAuth,
    AsyncAmiliClient,
    CancellationReceipt,
    CreditingReceipt,
    OutcomeUnknownError,
    PaymentReceipt,
    RespiteReceipt,
    RetryPolicy,
    StaticTokenAuth,
    TransportError,
)
from amili_async import transports as transports_module
from amili_async.sync import AmiliClient
from amili_async.transports import AmiliAiohttpTransport, respx_active

pytest_plugins = ["pytester"]

BASE = "https://amili.invalid"
TOKEN_URL = f"{BASE}/authenticates/api-code"
CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68e4c40d93ee14723d28fa95"
RID = "68e4cb120da90297b3be0e01"
PAID_AT = datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc)
PAID_AT_WIRE = "Tue, 07 Oct 2025 08:15:30 GMT"
API_CODE = "api-code-SECRET-7d1e"

RUNNERS = ["asyncio", "trio", "blocking", "blocking-trio"]
MOCKERS = ["httpcore", "httpx"]

Steps = Callable[[Any], Iterable[Callable[[], Any]]]


def run(runner: str, steps: Steps, **client_kwargs: Any) -> list[Any]:
    """Open a client on its default transport as `runner` does, run each step, return the results.

    A step returns an awaitable on the async client and a value on the blocking one, so one scenario serves all.
    """
    kwargs: dict[str, Any] = {"base_url": BASE, "retry": RetryPolicy.no_delay(), **client_kwargs}
    kwargs.setdefault("auth", StaticTokenAuth("tok-static-123456"))
    if runner.startswith("blocking"):
        backend = "trio" if runner == "blocking-trio" else "asyncio"
        with AmiliClient(backend=backend, **kwargs) as amili:
            return [step() for step in steps(amili)]

    async def main() -> list[Any]:
        async with AsyncAmiliClient(**kwargs) as amili:
            return [await step() for step in steps(amili)]

    return asyncio.run(main()) if runner == "asyncio" else trio.run(main)


def pay(amili: Any, reference: str | None = "PAY-1") -> Any:
    return amili.creditor_payments.create(
        creditor=CREDITOR,
        case=CASE,
        amount=Decimal("250.10"),
        currency="SEK",
        bank_transaction_date=PAID_AT,
        creditor_payment_reference=reference,
    )


def meta(**fields: Any) -> dict[str, Any]:
    return {"_id": RID, "_etag": "e1", "_created": PAID_AT_WIRE, "_updated": PAID_AT_WIRE, "_status": "OK", **fields}


class NetworkGuard:
    """Records, and refuses, every DNS lookup and connection attempt of this process (asyncio, trio, threads)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[str] = []
        for name in ("connect", "connect_ex"):
            monkeypatch.setattr(socket.socket, name, self._refuse(f"socket.{name}"))
        for name in ("getaddrinfo", "create_connection"):
            monkeypatch.setattr(socket, name, self._refuse(f"socket.{name}", method=False))
        for name in ("create_connection", "getaddrinfo", "sock_connect"):
            monkeypatch.setattr(asyncio.BaseEventLoop, name, self._refuse_async(f"loop.{name}"))

    def _refuse(self, what: str, *, method: bool = True) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            self.attempts.append(f"{what}{args[1:] if method else args}")
            raise OSError(f"network access attempted: {what}")

        return refuse

    def _refuse_async(self, what: str) -> Callable[..., Any]:
        refuse = self._refuse(what)

        async def refuse_async(*args: Any, **kwargs: Any) -> Any:
            return refuse(*args, **kwargs)

        return refuse_async


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> NetworkGuard:
    return NetworkGuard(monkeypatch)


# -- every action, a read and the token endpoint ---------------------------------------------------------------


@pytest.mark.parametrize("using", MOCKERS)
@pytest.mark.parametrize("runner", RUNNERS)
def test_every_request_goes_through_respx(runner: str, using: str, guard: NetworkGuard, ec_keys: Any) -> None:
    auth = ApiCodeJwtAuth(api_code=API_CODE, private_key=ec_keys.private_pem)
    with respx.mock(using=using, base_url=BASE) as mock:
        token = mock.get("/authenticates/api-code").respond(200, json={"token": "tok-respx-1", "expires_in": 3600})
        payment = mock.post("/creditor--payments").respond(201, json=meta(_payment_status="completed"))
        crediting = mock.post("/creditor--creditings").respond(201, json=meta(_crediting_status="completed"))
        cancellation = mock.post("/creditor--cancellations").respond(201, json=meta())
        respite = mock.post(f"/domain-actions/cases/respite/{CASE}").respond(204)
        case = mock.get(f"/cases/{CASE}").respond(200, json={"_id": CASE, "state": "invoice", "closed": False})

        def steps(amili: Any) -> Iterator[Callable[[], Any]]:
            yield lambda: pay(amili)
            yield lambda: amili.creditor_creditings.create(case=CASE, amount=Decimal("100.00"), currency="SEK")
            yield lambda: amili.creditor_cancellations.create(creditor=CREDITOR, case=CASE)
            yield lambda: amili.respite.grant(CASE, days=14)
            yield lambda: amili.cases.get(CASE)

        paid, credited, cancelled, granted, read = run(runner, steps, auth=auth)

    assert guard.attempts == []
    assert isinstance(paid, PaymentReceipt) and paid.id == RID and paid.payment_status == "completed"
    assert isinstance(credited, CreditingReceipt) and credited.crediting_status == "completed"
    assert isinstance(cancelled, CancellationReceipt) and cancelled.created == PAID_AT
    assert isinstance(granted, RespiteReceipt)
    assert read.id == CASE and read.state == "invoice"
    for route in (token, payment, crediting, cancellation, respite, case):
        assert route.call_count == 1, route

    # The token request carries a JWT signed by our key; every API request carries the token respx issued.
    login = token.calls.last.request
    claims = jwt.decode(login.headers["X-API-Key"], ec_keys.public_pem, algorithms=["ES256"])
    assert claims["api_code"] == API_CODE
    for route in (payment, crediting, cancellation, respite, case):
        assert route.calls.last.request.headers["X-API-Key"] == "tok-respx-1"

    # What went over the "wire" is what the SDK would have sent to Amili: exact JSON money, RFC 1123 dates.
    assert json.loads(payment.calls.last.request.content) == {
        "creditor": CREDITOR,
        "case": CASE,
        "amount": 250.10,
        "currency": "SEK",
        "bank_transaction_date": PAID_AT_WIRE,
        "creditor_payment_reference": "PAY-1",
        "origin": "creditor_system",
    }
    assert b'"amount":250.10' in payment.calls.last.request.content.replace(b" ", b"")
    assert json.loads(crediting.calls.last.request.content)["amount"] == 100
    assert json.loads(cancellation.calls.last.request.content) == {
        "creditor": CREDITOR,
        "case": CASE,
        "origin": "creditor_system",
    }
    assert json.loads(respite.calls.last.request.content) == {"days": 14}


@pytest.mark.parametrize("runner", RUNNERS)
def test_an_unmatched_request_fails_the_way_respx_says(runner: str, guard: NetworkGuard) -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        other = mock.get(f"/cases/{CASE}").respond(200, json={"_id": CASE})
        with pytest.raises(AllMockedAssertionError, match="creditor--payments"):
            run(runner, lambda amili: [lambda: pay(amili)])
    assert not other.called
    assert mock.calls.call_count == 0  # respx records matched calls only: the POST was refused, not sent
    assert guard.attempts == []


def test_an_unmatched_token_request_fails_the_way_respx_says(guard: NetworkGuard, ec_keys: Any) -> None:
    auth = ApiCodeJwtAuth(api_code=API_CODE, private_key=ec_keys.private_pem)
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        case = mock.get(f"/cases/{CASE}").respond(200, json={"_id": CASE})
        with pytest.raises(AllMockedAssertionError, match="authenticates"):
            run("asyncio", lambda amili: [lambda: amili.cases.get(CASE)], auth=auth)
    assert not case.called
    assert guard.attempts == []


# -- the forms a user writes: decorator, pytest fixture, side effects ---------------------------------------------


@respx.mock
async def test_the_decorator_form(guard: NetworkGuard) -> None:
    route = respx.post(f"{BASE}/creditor--payments").respond(201, json=meta())
    async with AsyncAmiliClient(auth=StaticTokenAuth("tok-static-123456"), base_url=BASE) as amili:
        receipt = await pay(amili)
    assert receipt.id == RID
    assert route.call_count == 1
    assert guard.attempts == []


async def test_the_respx_mock_fixture(respx_mock: respx.MockRouter, guard: NetworkGuard) -> None:
    route = respx_mock.get(url__regex=r".*/cases/.*").respond(200, json={"_id": CASE, "state": "invoice"})
    async with AsyncAmiliClient(auth=StaticTokenAuth("tok-static-123456"), base_url=BASE) as amili:
        case = await amili.cases.get(CASE)
    assert case.state == "invoice"
    assert route.call_count == 1
    assert guard.attempts == []


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_connect_error_from_respx_is_a_request_that_never_left(runner: str, guard: NetworkGuard) -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/creditor--payments")
        route.side_effect = [httpx.ConnectError("refused"), httpx.Response(201, json=meta())]
        [receipt] = run(runner, lambda amili: [lambda: pay(amili, reference=None)])
    assert receipt.id == RID
    assert route.call_count == 2  # resent: a connect error proves the first attempt never reached Amili
    assert guard.attempts == []


def test_a_read_timeout_on_a_payment_is_settled_by_looking_it_up(guard: NetworkGuard) -> None:
    record = meta(
        creditor=CREDITOR,
        case=CASE,
        amount=250.10,
        currency="SEK",
        bank_transaction_date=PAID_AT_WIRE,
        creditor_payment_reference="PAY-1",
    )
    with respx.mock(base_url=BASE) as mock:
        post = mock.post("/creditor--payments").mock(side_effect=httpx.ReadTimeout("no answer"))
        lookup = mock.get("/creditor--payments").respond(200, json={"_items": [record]})
        [receipt] = run("asyncio", lambda amili: [lambda: pay(amili)])
    assert receipt.id == RID
    assert post.call_count == 1, "never sent twice"
    where = json.loads(lookup.calls.last.request.url.params["where"])
    assert where == {"creditor": CREDITOR, "creditor_payment_reference": "PAY-1"}
    assert guard.attempts == []


def test_a_read_timeout_without_a_reference_is_an_unknown_outcome(guard: NetworkGuard) -> None:
    with respx.mock(base_url=BASE) as mock:
        post = mock.post("/creditor--payments").mock(side_effect=httpx.ReadTimeout("no answer"))
        with pytest.raises(OutcomeUnknownError):
            run("trio", lambda amili: [lambda: pay(amili, reference=None)])
    assert post.call_count == 1
    assert guard.attempts == []


# -- respx, not the SDK, decides what reaches the network: a real loopback server as the witness -----------------


class RawServer:
    """A loopback HTTP/1.1 server on its own thread and event loop (asyncio streams), bounded and short-lived.

    It stores every connection and every request it reads, answers each with a 201 payment receipt and closes
    the connection. It stops on exit, or by itself after 30 s.
    """

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[tuple[str, bytes]] = []
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RawServer:
        self._thread.start()
        assert self._ready.wait(10), "the loopback server did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 30)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            body = await reader.readexactly(min(int(length.group(1)), 65536) if length else 0)
            self.requests.append((head.split(b"\r\n", 1)[0].decode(), body))
            payload = json.dumps(meta()).encode()
            writer.write(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_mocked_request_never_reaches_the_server_and_pass_through_does(runner: str) -> None:
    with RawServer() as server:
        # Control: without respx, the default transport reaches the server.
        run(runner, lambda amili: [lambda: pay(amili)], base_url=server.base_url)
        assert [line for line, _ in server.requests] == ["POST /creditor--payments HTTP/1.1"]

        with respx.mock(base_url=server.base_url) as mock:
            mocked = mock.post("/creditor--payments").respond(201, json=meta(_id=CASE))
            [receipt] = run(runner, lambda amili: [lambda: pay(amili)], base_url=server.base_url)
        assert receipt.id == CASE and mocked.call_count == 1
        assert server.connections == 1, "respx answered; nothing reached the server"

        with respx.mock(base_url=server.base_url) as mock:
            passed = mock.post("/creditor--payments").pass_through()
            [receipt] = run(runner, lambda amili: [lambda: pay(amili, reference="PAY-2")], base_url=server.base_url)
        # (respx counts a pass-through twice under its httpcore mocker, pool and connection, as for any httpx user)
        assert receipt.id == RID and passed.called
        assert len(server.requests) == 2
        assert json.loads(server.requests[-1][1])["creditor_payment_reference"] == "PAY-2"


# -- the guard and the mechanism themselves ---------------------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
def test_the_guard_sees_a_request_that_escapes(runner: str, guard: NetworkGuard) -> None:
    """Without respx the same client tries the network: the guard records it (and refuses it)."""
    with pytest.raises(TransportError):
        run(runner, lambda amili: [lambda: amili.cases.get(CASE)])
    assert guard.attempts


def test_without_the_hand_over_respx_would_be_bypassed(guard: NetworkGuard, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue as reported: on asyncio the aiohttp transport goes around respx unless it hands over."""
    monkeypatch.setattr(transports_module, "respx_active", lambda: False)
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        route = mock.get(f"/cases/{CASE}").respond(200, json={"_id": CASE})
        with pytest.raises(TransportError):
            run("asyncio", lambda amili: [lambda: amili.cases.get(CASE)])
    assert not route.called
    assert guard.attempts


def test_respx_active_follows_the_routers() -> None:
    assert not respx_active()
    with respx.mock:
        assert respx_active()
        with respx.mock(using="httpx"):
            assert respx_active()
        assert respx_active()
    assert not respx_active()
    with respx.mock(using=None):  # patches nothing: the user routes a transport by hand
        assert not respx_active()
    router = respx.mock(using="httpx")
    router.start()
    try:
        assert respx_active()
    finally:
        router.stop()
    assert not respx_active()


def test_a_respx_we_do_not_recognise_counts_as_active(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should respx's internals change, the SDK errs on the side of sending through httpx (slower, still caught)."""
    import respx.mocks

    monkeypatch.delattr(respx.mocks.Mocker, "registry")
    assert respx_active()


@pytest.mark.parametrize("using", MOCKERS)
async def test_the_aiohttp_transport_in_a_users_own_httpx_client_is_mocked_once(
    using: str, guard: NetworkGuard
) -> None:
    transport = AmiliAiohttpTransport()
    with respx.mock(using=using) as mock:
        route = mock.get(f"{BASE}/ping").respond(200, text="pong")
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(f"{BASE}/ping")
    assert response.text == "pong"
    assert route.call_count == 1
    assert guard.attempts == []


def test_the_pytest_example_in_the_testing_guide(pytester: pytest.Pytester, guard: NetworkGuard) -> None:
    """docs/testing.md shows a pytest module with the `respx_mock` fixture; it runs here, under pytest."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "testing.md").read_text(encoding="utf-8")
    marker = guide.index("<!-- no-run: a pytest module; tests/test_respx.py runs this block under pytest -->")
    start = guide.index("```python\n", marker) + len("```python\n")
    pytester.makepyfile(test_guide=guide[start : guide.index("\n```", start)])
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"
    )
    result.assert_outcomes(passed=2)
    assert guard.attempts == []
