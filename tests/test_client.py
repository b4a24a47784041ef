"""Client configuration and lifecycle: base URL, env credentials, timeouts, plumbing, reprs."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import pytest

from amili_async import (
    ApiCodeJwtAuth,
    AsyncAmiliClient,
    ClientStateError,
    ConfigurationError,
    CreditorCrediting,
    RetryPolicy,
    ServerError,
    StaticTokenAuth,
)

CASE = "68e4c40d93ee14723d28fa95"
API_CODE = "env-api-code-SECRET"


def case_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"_id": CASE})


# -- lifecycle -----------------------------------------------------------------------------------------------


async def test_async_with_and_aclose_twice(make_client):
    client, _ = make_client(case_ok)
    async with client as entered:
        assert entered is client
        await client.cases.get(CASE)
    await client.aclose()
    await client.aclose()


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.cases.get(CASE),
        lambda c: c.respite.check(CASE),
        lambda c: c.creditor_creditings.create(case=CASE, amount=1, currency="SEK"),
        lambda c: c.execute(CreditorCrediting(case=CASE, amount=Decimal(1), currency="SEK")),
        lambda c: c.cases.get(CASE, timeout=3),
        lambda c: c.with_options(timeout=2).cases.get(CASE),
        lambda c: c.with_options(timeout=2).cases.get(CASE, timeout=1),
    ],
)
async def test_use_after_close_is_a_client_state_error(make_client, call):
    client, transport = make_client(case_ok)
    async with client:
        view = client.with_options(retry=RetryPolicy.no_delay(max_attempts=1))
        await client.cases.get(CASE)
    sent = len(transport.requests)
    with pytest.raises(ClientStateError):
        await call(client)
    with pytest.raises(ClientStateError):
        await call(view)  # a view made before closing is closed with its client
    assert len(transport.requests) == sent


async def test_use_after_close_listing_and_bulk(make_client):
    client, transport = make_client(case_ok)
    await client.aclose()
    with pytest.raises(ClientStateError):
        async for _ in client.cases.list():
            pass
    with pytest.raises(ClientStateError):
        async for _ in client.execute_many([CreditorCrediting(case=CASE, amount=1, currency="SEK")]):
            raise ClientStateError("unreachable")  # pragma: no cover
    assert transport.requests == []


async def test_closing_a_view_closes_the_client(make_client):
    client, _ = make_client(case_ok)
    await client.with_options(timeout=1).aclose()
    with pytest.raises(ClientStateError):
        await client.cases.get(CASE)


def test_a_client_belongs_to_one_event_loop(make_client):
    client, transport = make_client(case_ok)
    asyncio.run(client.cases.get(CASE))
    with pytest.raises(ClientStateError) as info:
        asyncio.run(client.cases.get(CASE))
    assert "event loop" in str(info.value)
    assert len(transport.api_requests) == 1


async def test_a_given_transport_is_not_closed_by_the_client(make_client):
    client, transport = make_client(case_ok)
    async with client:
        await client.cases.get(CASE)
    assert transport.closed is False


# -- base URL ------------------------------------------------------------------------------------------------


async def test_base_url_defaults_to_the_sandbox(make_client):
    client, transport = make_client(case_ok)
    assert client.base_url == "https://api-sandbox.amili.se"
    await client.cases.get(CASE)
    assert {str(r.url.copy_with(path="/")) for r in transport.requests} == {"https://api-sandbox.amili.se/"}


async def test_amili_base_url_from_the_environment(make_client, monkeypatch):
    monkeypatch.setenv("AMILI_BASE_URL", "https://api.amili.se/")
    client, transport = make_client(case_ok)
    assert client.base_url == "https://api.amili.se"
    await client.cases.get(CASE)
    assert transport.api_requests[0].url == f"https://api.amili.se/cases/{CASE}"
    explicit, _ = make_client(case_ok, base_url="https://other.amili.test")
    assert explicit.base_url == "https://other.amili.test"


async def test_base_url_with_a_path_prefix(make_client):
    client, transport = make_client(case_ok, base_url="https://gw.example.com/amili/")
    await client.cases.get(CASE)
    assert transport.api_requests[0].url == f"https://gw.example.com/amili/cases/{CASE}"
    assert transport.token_requests[0].url == "https://gw.example.com/amili/authenticates/api-code"


@pytest.mark.parametrize(
    "url", ["http://localhost", "http://localhost:8080", "http://127.0.0.1:9000", "http://[::1]:8000"]
)
def test_plain_http_allowed_for_localhost_only(make_client, url):
    client, _ = make_client(case_ok, base_url=url)
    assert client.base_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://api-sandbox.amili.se",
        "http://localhost.evil.com",
        "ftp://api.amili.se",
        "api.amili.se",
        "https://user:pass@api.amili.se",
        "https://user@api.amili.se",
        "https://api.amili.se?token=1",
        "https://api.amili.se/#frag",
    ],
)
def test_unsafe_base_urls_refused(make_client, url):
    with pytest.raises(ConfigurationError):
        make_client(case_ok, base_url=url)


def test_unsafe_base_url_from_env_refused(make_client, monkeypatch):
    monkeypatch.setenv("AMILI_BASE_URL", "http://api.amili.se")
    with pytest.raises(ConfigurationError):
        make_client(case_ok)


def test_transport_and_http_client_together_refused(make_transport):
    with pytest.raises(ConfigurationError):
        AsyncAmiliClient(auth=StaticTokenAuth("t"), transport=make_transport(case_ok), http_client=httpx.AsyncClient())


def test_tls_verification_cannot_be_turned_off():
    with pytest.raises(ConfigurationError):
        AsyncAmiliClient(auth=StaticTokenAuth("t"), verify=False)


# -- credentials from the environment ------------------------------------------------------------------------


async def test_credentials_from_env_with_inline_key(monkeypatch, ec_keys, make_transport):
    import jwt

    monkeypatch.setenv("AMILI_API_CODE", API_CODE)
    monkeypatch.setenv("AMILI_PRIVATE_KEY", ec_keys.private_pem)
    transport = make_transport(case_ok)
    async with AsyncAmiliClient(transport=transport, retry=RetryPolicy.no_delay()) as client:
        await client.cases.get(CASE)
    claims = jwt.decode(transport.token_requests[0].headers["X-API-Key"], ec_keys.public_pem, algorithms=["ES256"])
    assert claims["api_code"] == API_CODE


async def test_credentials_from_env_with_key_file(monkeypatch, tmp_path, key_for, make_transport):
    import jwt

    keys = key_for("RS256")
    path = tmp_path / "amili.pem"
    path.write_text(keys.private_pem)
    monkeypatch.setenv("AMILI_API_CODE", API_CODE)
    monkeypatch.setenv("AMILI_PRIVATE_KEY_FILE", str(path))
    monkeypatch.setenv("AMILI_JWT_ALGORITHM", "RS256")
    transport = make_transport(case_ok)
    async with AsyncAmiliClient(transport=transport, retry=RetryPolicy.no_delay()) as client:
        await client.cases.get(CASE)
    jwt.decode(transport.token_requests[0].headers["X-API-Key"], keys.public_pem, algorithms=["RS256"])


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "AMILI_API_CODE"),
        ({"AMILI_API_CODE": API_CODE}, "AMILI_PRIVATE_KEY"),
        ({"AMILI_PRIVATE_KEY": "pem"}, "AMILI_API_CODE"),
        ({"AMILI_API_CODE": "", "AMILI_PRIVATE_KEY": "pem"}, "AMILI_API_CODE"),
    ],
)
def test_missing_env_credentials_fail_at_construction(monkeypatch, env, missing):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        AsyncAmiliClient()
    assert missing in str(info.value)
    assert "pem" not in str(info.value)


def test_unreadable_key_file_fails_at_construction(monkeypatch, tmp_path):
    monkeypatch.setenv("AMILI_API_CODE", API_CODE)
    monkeypatch.setenv("AMILI_PRIVATE_KEY_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigurationError) as info:
        AsyncAmiliClient()
    assert "AMILI_PRIVATE_KEY_FILE" in str(info.value)


def test_bad_key_in_env_fails_at_construction(monkeypatch):
    monkeypatch.setenv("AMILI_API_CODE", API_CODE)
    monkeypatch.setenv("AMILI_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----")
    with pytest.raises(ConfigurationError):
        AsyncAmiliClient()


# -- timeouts ------------------------------------------------------------------------------------------------


def timeouts(request: httpx.Request) -> dict[str, float | None]:
    return dict(request.extensions["timeout"])


async def test_default_timeout_reaches_the_transport(make_client):
    client, transport = make_client(case_ok)
    await client.cases.get(CASE)
    for request in transport.requests:
        assert timeouts(request) == {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 10.0}


async def test_float_timeout(make_client):
    client, transport = make_client(case_ok, timeout=7.5)
    await client.cases.get(CASE)
    assert timeouts(transport.api_requests[0]) == {"connect": 7.5, "read": 7.5, "write": 7.5, "pool": 7.5}


async def test_httpx_timeout(make_client):
    client, transport = make_client(case_ok, timeout=httpx.Timeout(3.0, connect=1.0))
    await client.cases.get(CASE)
    assert timeouts(transport.api_requests[0]) == {"connect": 1.0, "read": 3.0, "write": 3.0, "pool": 3.0}


async def test_per_call_timeout_override(make_client):
    client, transport = make_client(
        lambda r: httpx.Response(201, json={"_id": CASE}) if r.method == "POST" else case_ok(r), timeout=30.0
    )
    await client.cases.get(CASE, timeout=2.0)
    await client.creditor_creditings.create(case=CASE, amount=1, currency="SEK", timeout=httpx.Timeout(4.0))
    await client.respite.check(CASE, timeout=6.0)
    await client.cases.get(CASE)  # the override did not stick
    reads = [timeouts(r)["read"] for r in transport.api_requests]
    assert reads == [2.0, 4.0, 6.0, 30.0]


async def test_per_call_timeout_on_listing(make_client):
    client, transport = make_client(lambda r: httpx.Response(200, json={"_items": []}))
    async for _ in client.creditor_payments.list(timeout=1.5):
        pass
    assert timeouts(transport.api_requests[0])["read"] == 1.5


async def test_with_options_timeout_and_shared_token(make_client):
    client, transport = make_client(case_ok, timeout=30.0)
    fast = client.with_options(timeout=0.5)
    await client.cases.get(CASE)
    await fast.cases.get(CASE)
    await fast.cases.get(CASE, timeout=9.0)  # a per-call override on a view
    await client.cases.get(CASE)
    assert [timeouts(r)["read"] for r in transport.api_requests] == [30.0, 0.5, 9.0, 30.0]
    assert len(transport.token_requests) == 1, "views share the token cache"
    assert fast.token_requests == client.token_requests == 1


async def test_a_view_made_before_first_use_shares_the_client(make_client):
    client, transport = make_client(case_ok)
    fast = client.with_options(timeout=1.0)
    await fast.cases.get(CASE, timeout=2.0)
    await fast.with_options(timeout=3.0).cases.get(CASE)
    await client.cases.get(CASE)
    assert len(transport.token_requests) == 1


async def test_with_options_retry(make_client):
    client, transport = make_client(lambda r: httpx.Response(503, content=b"busy"))
    with pytest.raises(ServerError):
        await client.with_options(retry=RetryPolicy.disabled()).cases.get(CASE)
    assert len(transport.api_requests) == 1
    with pytest.raises(ServerError):
        await client.cases.get(CASE)
    assert len(transport.api_requests) == 1 + 3


# -- plumbing: http_client= ----------------------------------------------------------------------------------


async def test_requests_through_a_user_http_client(ec_keys):
    seen: list[httpx.Request] = []
    hooked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/authenticates/api-code":
            return httpx.Response(200, json={"token": "tok-h", "expires_in": 3600})
        return case_ok(request)

    async def hook(request: httpx.Request) -> None:
        hooked.append(request.url.path)

    http_client = httpx.AsyncClient(transport=httpx.MockTransport(handler), event_hooks={"request": [hook]})
    client = AsyncAmiliClient(
        auth=ApiCodeJwtAuth(api_code=API_CODE, private_key=ec_keys.private_pem),
        http_client=http_client,
        timeout=4.0,
        retry=RetryPolicy.no_delay(),
    )
    async with client:
        case = await client.cases.get(CASE)
    assert case.id == CASE
    assert [r.url.path for r in seen] == ["/authenticates/api-code", f"/cases/{CASE}"]
    assert hooked == [r.url.path for r in seen]
    api = seen[1]
    assert api.headers["X-API-Key"] == "tok-h"
    assert api.headers["Accept"] == "application/json"
    assert api.headers["User-Agent"].startswith("amili-async/")
    assert api.extensions["timeout"]["read"] == 4.0
    assert not http_client.is_closed, "the caller's http client is the caller's to close"
    await http_client.aclose()


# -- reprs ---------------------------------------------------------------------------------------------------


async def test_reprs_never_show_secrets(make_client, ec_keys):
    auth = ApiCodeJwtAuth(api_code=API_CODE, private_key=ec_keys.private_pem)
    client, _ = make_client(case_ok, auth=auth)
    await client.cases.get(CASE)
    runtime = client._bind()
    token = await runtime.tokens.get()
    texts = [
        repr(client),
        str(client),
        repr(auth),
        repr(runtime.tokens),
        repr(token),
        repr(client.with_options()),
    ]
    pem_body = ec_keys.private_pem.splitlines()[1]
    for text in texts:
        assert API_CODE not in text
        assert pem_body not in text
        assert "tok-1" not in text
    assert "api-sandbox.amili.se" in repr(client)
