"""What goes on the wire: the exact JSON bodies, paths and headers of every action."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest

import amili_async
from amili_async import APIStatusError, AsyncAmiliClient, RetryPolicy

CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68e4c40d93ee14723d28fa95"
WHEN = datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc)
WHEN_WIRE = "Tue, 07 Oct 2025 08:15:30 GMT"

CREATED = {
    "_updated": WHEN_WIRE,
    "_created": WHEN_WIRE,
    "_etag": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0",
    "_id": "68e4cb120da90297b3be0e01",
    "_status": "OK",
}


def created(request: httpx.Request) -> httpx.Response:
    return httpx.Response(201, json=CREATED)


def body_of(request: httpx.Request) -> dict[str, object]:
    return json.loads(request.content, parse_float=Decimal)


async def test_payment_by_case_body(make_client):
    client, transport = make_client(created)
    await client.creditor_payments.create(
        creditor=CREDITOR,
        case=CASE,
        amount=Decimal("250.10"),
        currency="SEK",
        bank_transaction_date=WHEN,
        creditor_payment_reference="PAY-REF-001",
    )
    (request,) = transport.api_requests
    assert request.method == "POST"
    assert request.url == "https://api-sandbox.amili.se/creditor--payments"
    assert body_of(request) == {
        "creditor": CREDITOR,
        "case": CASE,
        "amount": Decimal("250.10"),
        "currency": "SEK",
        "bank_transaction_date": WHEN_WIRE,
        "origin": "creditor_system",
        "creditor_payment_reference": "PAY-REF-001",
    }
    # The exact digits of the Decimal, as a JSON number (not a string, not 250.1).
    assert b'"amount":250.10' in request.content


async def test_payment_by_invoice_number_body_has_no_case_key(make_client):
    client, transport = make_client(created)
    await client.creditor_payments.create(
        creditor=CREDITOR,
        invoice_number="INV-2025-003",
        amount=100,
        currency="SEK",
        bank_transaction_date=WHEN,
    )
    (request,) = transport.api_requests
    assert body_of(request) == {
        "creditor": CREDITOR,
        "invoice_number": "INV-2025-003",
        "amount": 100,
        "currency": "SEK",
        "bank_transaction_date": WHEN_WIRE,
        "origin": "creditor_system",
    }
    assert b'"amount":100,' in request.content  # an int stays an int: no "100.0", no quotes


async def test_payment_optional_client_registration_date(make_client):
    client, transport = make_client(created)
    await client.creditor_payments.create(
        creditor=CREDITOR,
        case=CASE,
        amount=Decimal("1.00"),
        currency="SEK",
        bank_transaction_date=WHEN,
        client_registration_date=WHEN + timedelta(days=1),
    )
    body = body_of(transport.api_requests[0])
    assert body["client_registration_date"] == "Wed, 08 Oct 2025 08:15:30 GMT"
    assert body["amount"] == Decimal("1.00")
    assert b'"amount":1.00' in transport.api_requests[0].content


async def test_crediting_body(make_client):
    client, transport = make_client(created)
    await client.creditor_creditings.create(case=CASE, amount=Decimal("100"), currency="SEK")
    (request,) = transport.api_requests
    assert request.method == "POST"
    assert request.url.path == "/creditor--creditings"
    assert body_of(request) == {"case": CASE, "amount": 100, "currency": "SEK", "origin": "creditor_system"}
    assert b'"amount":100,' in request.content


async def test_crediting_by_invoice_number_body(make_client):
    client, transport = make_client(created)
    await client.creditor_creditings.create(
        creditor=CREDITOR,
        invoice_number="INV-9",
        amount=Decimal("0.01"),
        currency="SEK",
        creditor_reference="CRED-1",
        credit_invoice="CI-7",
    )
    assert body_of(transport.api_requests[0]) == {
        "creditor": CREDITOR,
        "invoice_number": "INV-9",
        "amount": Decimal("0.01"),
        "currency": "SEK",
        "creditor_reference": "CRED-1",
        "credit_invoice": "CI-7",
        "origin": "creditor_system",
    }


async def test_cancellation_body(make_client):
    client, transport = make_client(created)
    await client.creditor_cancellations.create(creditor=CREDITOR, case=CASE)
    (request,) = transport.api_requests
    assert request.url.path == "/creditor--cancellations"
    assert body_of(request) == {"creditor": CREDITOR, "case": CASE, "origin": "creditor_system"}


async def test_respite_grant_body_and_path(make_client):
    client, transport = make_client(lambda r: httpx.Response(200, json={}))
    await client.respite.grant(CASE, days=14)
    (request,) = transport.api_requests
    assert request.method == "POST"
    assert request.url.path == f"/domain-actions/cases/respite/{CASE}"
    assert request.content == b'{"days":14}'


async def test_respite_check_is_a_get_on_the_same_path(make_client):
    client, transport = make_client(lambda r: httpx.Response(200, json={}))
    await client.respite.check(CASE)
    (request,) = transport.api_requests
    assert request.method == "GET"
    assert request.url.path == f"/domain-actions/cases/respite/{CASE}"
    assert request.content == b""


@pytest.mark.parametrize(
    ("when", "wire"),
    [
        (datetime(2025, 10, 7, 10, 15, 30, tzinfo=timezone(timedelta(hours=2))), WHEN_WIRE),
        (datetime(2025, 10, 7, 10, 15, 30, tzinfo=ZoneInfo("Europe/Stockholm")), WHEN_WIRE),  # CEST
        (
            datetime(2025, 1, 1, 0, 30, 0, tzinfo=ZoneInfo("Europe/Stockholm")),
            "Tue, 31 Dec 2024 23:30:00 GMT",
        ),
        (
            datetime(2025, 10, 6, 22, 0, 0, tzinfo=timezone(timedelta(hours=-5))),
            "Tue, 07 Oct 2025 03:00:00 GMT",
        ),
    ],
)
async def test_aware_dates_go_out_as_rfc1123_gmt(make_client, when, wire):
    client, transport = make_client(created)
    await client.creditor_payments.create(
        creditor=CREDITOR, case=CASE, amount=1, currency="SEK", bank_transaction_date=when
    )
    assert body_of(transport.api_requests[0])["bank_transaction_date"] == wire


async def test_no_none_fields_on_the_wire(make_client):
    client, transport = make_client(created)
    await client.creditor_payments.create(
        creditor=CREDITOR, case=CASE, amount=1, currency="SEK", bank_transaction_date=WHEN
    )
    await client.creditor_creditings.create(case=CASE, amount=1, currency="SEK")
    await client.creditor_cancellations.create(creditor=CREDITOR, invoice_number="INV-1")
    for request in transport.api_requests:
        assert b"null" not in request.content
        assert None not in body_of(request).values()
    assert set(body_of(transport.api_requests[2])) == {"creditor", "invoice_number", "origin"}


async def test_headers_on_writes_and_reads(make_client):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"_id": CASE})
        return created(request)

    client, transport = make_client(handler)
    await client.creditor_creditings.create(case=CASE, amount=1, currency="SEK")
    await client.cases.get(CASE)
    post, get = transport.api_requests
    python = "{}.{}.{}".format(*sys.version_info[:3])
    expected_ua = f"amili-async/{amili_async.__version__} python/{python} httpx/{httpx.__version__}"
    for request in (post, get):
        assert request.headers["X-API-Key"] == "tok-1"
        assert request.headers["Accept"] == "application/json"
        assert request.headers["User-Agent"] == expected_ua
        assert request.headers.get_list("X-API-Key") == ["tok-1"]
    assert post.headers["Content-Type"] == "application/json"
    assert "Content-Type" not in get.headers
    # The token request carries the same identity, and one Accept header.
    (token_request,) = transport.token_requests
    assert token_request.headers["User-Agent"] == expected_ua
    assert token_request.headers.get_list("Accept") == ["application/json"]


async def test_custom_user_agent(make_client):
    client, transport = make_client(lambda r: httpx.Response(200, json={"_id": CASE}), user_agent="my-app/2")
    await client.cases.get(CASE)
    assert transport.api_requests[0].headers["User-Agent"] == "my-app/2"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_not_followed(make_client, status):
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "api-sandbox.amili.se", "the redirect was followed"
        return httpx.Response(status, headers={"Location": "https://evil.example.com/collect"})

    client, transport = make_client(handler)
    with pytest.raises(APIStatusError) as info:
        await client.cases.get(CASE)
    assert info.value.status_code == status
    assert [r.url.host for r in transport.requests] == ["api-sandbox.amili.se"] * 2  # token + one GET
    with pytest.raises(APIStatusError):
        await client.creditor_creditings.create(case=CASE, amount=1, currency="SEK")
    assert all(r.url.host == "api-sandbox.amili.se" for r in transport.requests)


async def test_redirect_not_followed_even_with_a_user_http_client_that_follows(ec_keys):
    """With `http_client=`, a client configured to follow redirects must still not forward X-API-Key."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/authenticates/api-code":
            return httpx.Response(200, json={"token": "tok-secret", "expires_in": 3600})
        return httpx.Response(307, headers={"Location": "https://evil.example.com/steal"})

    http_client = httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=True)
    async with AsyncAmiliClient(
        auth=amili_async.ApiCodeJwtAuth(api_code="x", private_key=ec_keys.private_pem),
        http_client=http_client,
        retry=RetryPolicy.no_delay(),
    ) as client:
        with pytest.raises(APIStatusError) as info:
            await client.cases.get(CASE)
    assert info.value.status_code == 307
    assert {r.url.host for r in seen} == {"api-sandbox.amili.se"}
    await http_client.aclose()


# -- the same promises over real HTTP, with the default (aiohttp) transport --------------------------------


class _LocalServer:
    """A loopback aiohttp server whose handler the test provides; records every request it gets."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def __aenter__(self) -> str:
        from aiohttp import web

        async def entry(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            self.seen.append((request.method, request.path_qs, dict(request.headers), body))
            return await self.handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", entry)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def test_real_http_round_trip_with_the_default_transport(ec_keys):
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/authenticates/api-code":
            return web.json_response({"token": "tok-real", "expires_in": 3600})
        return web.json_response(CREATED, status=201)

    server = _LocalServer(handler)
    async with (
        server as base_url,
        AsyncAmiliClient(
            auth=amili_async.ApiCodeJwtAuth(api_code="x", private_key=ec_keys.private_pem),
            base_url=base_url,
            trust_env=False,
            retry=RetryPolicy.no_delay(),
        ) as client,
    ):
        receipt = await client.creditor_payments.create(
            creditor=CREDITOR,
            case=CASE,
            amount=Decimal("250.10"),
            currency="SEK",
            bank_transaction_date=WHEN,
        )
    assert receipt.id == CREATED["_id"]
    (_, _, token_headers, _), (method, path, headers, body) = server.seen
    assert (method, path) == ("POST", "/creditor--payments")
    assert headers["X-API-Key"] == "tok-real"
    assert headers["Accept"] == "application/json"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith(f"amili-async/{amili_async.__version__} python/")
    assert b'"amount":250.10' in body
    assert token_headers["User-Agent"] == headers["User-Agent"]


async def test_real_http_redirect_to_another_host_is_not_followed(ec_keys):
    from aiohttp import web

    async def other(request: web.Request) -> web.Response:
        return web.json_response({"_id": CASE})

    elsewhere = _LocalServer(other)
    async with elsewhere as other_url:

        async def handler(request: web.Request) -> web.Response:
            if request.path == "/authenticates/api-code":
                return web.json_response({"token": "tok-real", "expires_in": 3600})
            raise web.HTTPFound(f"{other_url}/steal")

        async with (
            _LocalServer(handler) as base_url,
            AsyncAmiliClient(
                auth=amili_async.ApiCodeJwtAuth(api_code="x", private_key=ec_keys.private_pem),
                base_url=base_url,
                trust_env=False,
                retry=RetryPolicy.no_delay(),
            ) as client,
        ):
            with pytest.raises(APIStatusError) as info:
                await client.cases.get(CASE)
    assert info.value.status_code == 302
    assert elsewhere.seen == [], "the other host received a request (and with it, X-API-Key)"
