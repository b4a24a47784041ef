"""Credentials: the JWT for /authenticates/api-code, the other providers, and the token answers we read."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta, timezone

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from amili_async import (
    ApiCodeAuth,
    ApiCodeJwtAuth,
    APIStatusError,
    AuthenticationError,
    ConfigurationError,
    ResponseDecodeError,
    ServerError,
    StaticTokenAuth,
)
from amili_async.auth import parse_token_answer
from amili_async.serde import format_rfc1123

CASE = "68e4c40d93ee14723d28fa95"
API_CODE = "my-api-code-123"


def case_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"_id": CASE})


@pytest.mark.parametrize("algorithm", ["ES256", "ES384", "ES512", "RS256", "RS384", "RS512"])
async def test_jwt_token_request(make_client, key_for, algorithm):
    keys = key_for(algorithm)
    auth = ApiCodeJwtAuth(api_code=API_CODE, private_key=keys.private_pem, algorithm=algorithm)
    client, transport = make_client(case_ok, auth=auth)
    before = time.time()
    await client.cases.get(CASE)
    (token_request,) = transport.token_requests
    assert token_request.method == "GET"
    assert token_request.url == "https://api-sandbox.amili.se/authenticates/api-code"
    assert token_request.content == b""
    signed = token_request.headers["X-API-Key"]
    assert jwt.get_unverified_header(signed)["alg"] == algorithm
    claims = jwt.decode(signed, keys.public_pem, algorithms=[algorithm])
    assert set(claims) == {"api_code", "exp"}
    assert claims["api_code"] == API_CODE
    assert before + 590 <= claims["exp"] <= time.time() + 610  # ~10 minutes
    # The API call then carries the access token, not the JWT.
    assert transport.api_requests[0].headers["X-API-Key"] == "tok-1"


def test_es256_is_the_default(ec_keys):
    auth = ApiCodeJwtAuth(api_code=API_CODE, private_key=ec_keys.private_pem)
    signed = auth.signed_jwt()
    assert jwt.get_unverified_header(signed)["alg"] == "ES256"
    jwt.decode(signed, ec_keys.public_pem, algorithms=["ES256"])


def test_jwt_does_not_verify_with_another_key(ec_keys):
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    signed = ApiCodeJwtAuth(api_code=API_CODE, private_key=ec_keys.private_pem).signed_jwt()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(signed, other, algorithms=["ES256"])


def test_private_key_object_accepted(key_for):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    keys = key_for("RS256")
    key = load_pem_private_key(keys.private_pem.encode(), password=None)
    signed = ApiCodeJwtAuth(api_code=API_CODE, private_key=key, algorithm="RS256").signed_jwt()
    assert jwt.decode(signed, keys.public_pem, algorithms=["RS256"])["api_code"] == API_CODE


@pytest.mark.parametrize(
    ("key_algorithm", "algorithm"),
    [
        ("ES256", "RS256"),  # EC key, RSA algorithm
        ("RS256", "ES256"),  # RSA key, EC algorithm
        ("ES256", "ES512"),  # P-256 key with ES512 (the inconsistency of Amili's own guide)
        ("ES256", "ES384"),
        ("ES384", "ES256"),
    ],
)
def test_wrong_key_type_for_the_algorithm_is_a_configuration_error(key_for, key_algorithm, algorithm):
    with pytest.raises(ConfigurationError) as info:
        ApiCodeJwtAuth(api_code=API_CODE, private_key=key_for(key_algorithm).private_pem, algorithm=algorithm)
    assert algorithm in str(info.value)


@pytest.mark.parametrize("algorithm", ["HS256", "none", "es256", "PS256"])
def test_unsupported_algorithm(ec_keys, algorithm):
    with pytest.raises(ConfigurationError):
        ApiCodeJwtAuth(api_code=API_CODE, private_key=ec_keys.private_pem, algorithm=algorithm)


@pytest.mark.parametrize(
    "key", ["", "not a key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", None]
)
def test_unreadable_private_key(key):
    with pytest.raises(ConfigurationError) as info:
        ApiCodeJwtAuth(api_code=API_CODE, private_key=key)
    assert "AAAA" not in str(info.value)


@pytest.mark.parametrize("api_code", ["", "   ", None])
def test_missing_api_code(ec_keys, api_code):
    with pytest.raises(ConfigurationError):
        ApiCodeJwtAuth(api_code=api_code, private_key=ec_keys.private_pem)


async def test_api_code_auth_posts_the_code(make_client):
    client, transport = make_client(case_ok, auth=ApiCodeAuth(api_code=API_CODE))
    await client.cases.get(CASE)
    (token_request,) = transport.token_requests
    assert token_request.method == "POST"
    assert token_request.url.path == "/authenticates/api-code"
    assert json.loads(token_request.content) == {"api_code": API_CODE}
    assert token_request.headers["Content-Type"] == "application/json"
    assert "X-API-Key" not in token_request.headers
    assert transport.api_requests[0].headers["X-API-Key"] == "tok-1"


async def test_static_token_never_calls_the_endpoint_and_a_401_is_final(make_client):
    client, transport = make_client(
        lambda r: httpx.Response(401, json={"_status": "ERR", "_error": {"code": 401, "message": "no"}}),
        auth=StaticTokenAuth("static-tok"),
    )
    with pytest.raises(AuthenticationError) as info:
        await client.cases.get(CASE)
    assert info.value.status_code == 401
    assert transport.token_requests == []
    assert len(transport.api_requests) == 1  # nothing to refresh: no replay
    assert transport.api_requests[0].headers["X-API-Key"] == "static-tok"


async def test_static_token_used_as_given(make_client):
    client, transport = make_client(case_ok, auth=StaticTokenAuth("static-tok"))
    for _ in range(3):
        await client.cases.get(CASE)
    assert transport.token_requests == []
    assert [r.headers["X-API-Key"] for r in transport.api_requests] == ["static-tok"] * 3


@pytest.mark.parametrize("token", ["", "with space", "line\nbreak", "cr\rlf", "åäö"])
def test_static_token_must_be_header_safe(token):
    with pytest.raises(ConfigurationError) as info:
        StaticTokenAuth(token)
    if token.strip():
        assert token not in str(info.value)


def test_reprs_hide_secrets(ec_keys):
    jwt_auth = ApiCodeJwtAuth(api_code=API_CODE, private_key=ec_keys.private_pem)
    for auth, secrets in (
        (jwt_auth, [API_CODE, ec_keys.private_pem[40:80]]),
        (ApiCodeAuth(api_code=API_CODE), [API_CODE]),
        (StaticTokenAuth("static-SECRET"), ["static-SECRET"]),
    ):
        for secret in secrets:
            assert secret not in repr(auth)
            assert secret not in str(auth)


# -- the token endpoint's answers ----------------------------------------------------------------------------


def _jwt_with_exp(exp: float) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'exp': exp, 'sub': 'x'})}.c2lnbmF0dXJl"


def answer(payload: object, status: int = 200) -> tuple[int, dict[str, str], bytes]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return status, {}, raw


@pytest.mark.parametrize("key", ["token", "access_token", "accessToken"])
def test_token_keys(key):
    grant = parse_token_answer(answer({key: "abc", "expires_in": 120}))
    assert grant.value == "abc"
    assert grant.lifetime == 120


def test_bare_json_string_and_plain_text_tokens():
    assert parse_token_answer(answer("abc")).value == "abc"
    assert parse_token_answer(answer(b"plain-token-42\n")).value == "plain-token-42"


def test_expires_rfc1123():
    expires = format_rfc1123(datetime.now(timezone.utc) + timedelta(hours=1))
    grant = parse_token_answer(answer({"token": "abc", "expires": expires}))
    assert grant.lifetime is not None
    assert 3590 <= grant.lifetime <= 3601


def test_expires_iso_and_epoch():
    iso = (datetime.now(timezone.utc) + timedelta(minutes=30)).isoformat()
    lifetime = parse_token_answer(answer({"token": "abc", "expires_at": iso})).lifetime
    assert lifetime is not None and 1790 <= lifetime <= 1801
    lifetime = parse_token_answer(answer({"token": "abc", "exp": time.time() + 600})).lifetime
    assert lifetime is not None and 590 <= lifetime <= 601


def test_jwt_exp_of_the_token_itself():
    grant = parse_token_answer(answer({"token": _jwt_with_exp(time.time() + 900)}))
    assert grant.lifetime is not None and 890 <= grant.lifetime <= 901


def test_no_lifetime_means_unknown():
    assert parse_token_answer(answer({"token": "abc"})).lifetime is None
    assert parse_token_answer(answer({"token": "abc", "expires_in": 0})).lifetime is None
    assert parse_token_answer(answer({"token": "abc", "expires_in": True})).lifetime is None


def test_expires_in_wins_over_the_jwt_exp():
    grant = parse_token_answer(answer({"token": _jwt_with_exp(time.time() + 900), "expires_in": 60}))
    assert grant.lifetime == 60


@pytest.mark.parametrize(
    "payload",
    [{}, {"token": ""}, {"token": 123}, {"message": "ok"}, b"", b"   ", None, [], {"token": None}],
)
def test_answers_without_a_token_are_refused(payload):
    with pytest.raises(ResponseDecodeError):
        parse_token_answer(answer(payload))


@pytest.mark.parametrize(
    "payload",
    [
        {"token": "secret-part\r\nX-Evil: 1"},
        {"access_token": "secret-part\nmore"},
        "secret-part\r\n",
        {"token": "secret-part with space"},
        {"token": "secret-part\x00"},
    ],
)
def test_tokens_that_cannot_go_in_a_header_are_refused_without_echoing(payload):
    with pytest.raises(ResponseDecodeError) as info:
        parse_token_answer(answer(payload))
    assert "secret-part" not in str(info.value)
    assert "secret-part" not in repr(info.value)
    assert "secret-part" not in repr(info.value.__dict__)


def test_plain_text_token_with_crlf_refused():
    with pytest.raises(ResponseDecodeError) as info:
        parse_token_answer((200, {}, b"secret-part\r\nX-Injected: yes"))
    assert "secret-part" not in str(info.value)


async def test_token_endpoint_refusal_is_an_authentication_error(make_client):
    client, transport = make_client(
        case_ok,
        token_handler=lambda r: httpx.Response(
            401,
            json={"_status": "ERR", "_error": {"code": 401, "message": "Please provide proper credentials"}},
        ),
    )
    with pytest.raises(AuthenticationError) as info:
        await client.cases.get(CASE)
    assert "access token" in str(info.value)
    assert info.value.path == "/authenticates/api-code"
    assert transport.api_requests == []


async def test_token_endpoint_server_error(make_client):
    client, transport = make_client(case_ok, token_handler=lambda r: httpx.Response(503, content=b"<html>down</html>"))
    with pytest.raises(ServerError):
        await client.cases.get(CASE)
    assert transport.api_requests == []


@pytest.mark.parametrize("status", [301, 302, 303, 307])
async def test_token_endpoint_redirect_is_an_error_not_a_token(make_client, status):
    client, transport = make_client(
        case_ok,
        token_handler=lambda r: httpx.Response(
            status, content=b"Redirecting", headers={"Location": "https://login.example.com/"}
        ),
    )
    with pytest.raises(APIStatusError) as info:
        await client.cases.get(CASE)
    assert info.value.status_code == status
    assert transport.api_requests == [], "the redirect body must not be used as a token"


async def test_token_with_crlf_from_the_endpoint_never_reaches_a_header(make_client):
    client, transport = make_client(
        case_ok, token_handler=lambda r: httpx.Response(200, json={"token": "secret-part\r\nX-Evil: 1"})
    )
    with pytest.raises(ResponseDecodeError) as info:
        await client.cases.get(CASE)
    assert "secret-part" not in str(info.value)
    assert transport.api_requests == []
