"""Error answers (Eve envelopes, proxy pages, broken JSON) become the right exception, complete and safe.

The answers are respx routes on the client's default transport: each test names the exchange it pins, and a
request no route expects fails the test (the base URL cannot resolve, so nothing leaves the machine).
"""

from __future__ import annotations

import builtins
import pickle
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from decimal import Decimal

import httpx
import pytest

from amili_async import (
    AmiliError,
    ApiCodeJwtAuth,
    APIStatusError,
    AsyncAmiliClient,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    CreditorPayment,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    PreconditionFailedError,
    RateLimitError,
    ResponseDecodeError,
    RetryPolicy,
    ServerError,
    StaticTokenAuth,
    TimeoutError,
    TransportError,
    UnprocessableEntityError,
    ValidationError,
)
from amili_async.errors import error_for_status, normalise_issues

BASE = "https://amili.invalid"
CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68e4c40d93ee14723d28fa95"
STATIC_TOKEN = "tok-static-123456"

pytestmark = pytest.mark.respx(base_url=BASE)

INSERTION_FAILURE = "Insertion failure: 1 document(s) contain(s) error(s)"
HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
    b"</center>\r\n<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>\r\n" + b"<!-- padding -->" * 200
)


def eve_error(status: int, message: str, **extra: object) -> httpx.Response:
    return httpx.Response(status, json={"_status": "ERR", "_error": {"code": status, "message": message}, **extra})


@pytest.fixture
async def client() -> AsyncIterator[AsyncAmiliClient]:
    """A client on its default transport: under `respx_mock`, respx answers every request it sends."""
    async with AsyncAmiliClient(
        auth=StaticTokenAuth(STATIC_TOKEN), base_url=BASE, retry=RetryPolicy.no_delay()
    ) as amili:
        yield amili


async def test_422_with_string_issues(client, respx_mock):
    respx_mock.post("/creditor--creditings").mock(
        return_value=eve_error(422, INSERTION_FAILURE, _issues={"amount": "must be of number type"})
    )
    with pytest.raises(UnprocessableEntityError) as info:
        await client.creditor_creditings.create(case=CASE, amount=1, currency="SEK")
    err = info.value
    assert isinstance(err, ValidationError)
    assert isinstance(err, APIStatusError)
    assert err.status_code == 422
    assert err.issues == {"amount": ("must be of number type",)}
    assert err.message == INSERTION_FAILURE
    assert err.method == "POST"
    assert err.path == "/creditor--creditings"
    assert err.attempts == 1
    assert "amount: must be of number type" in str(err)


async def test_422_with_list_issues(client, respx_mock):
    issues = {"case": ["unknown case", "case is closed"], "currency": "unallowed value XYZ"}
    respx_mock.post("/creditor--creditings").mock(return_value=eve_error(422, INSERTION_FAILURE, _issues=issues))
    with pytest.raises(UnprocessableEntityError) as info:
        await client.creditor_creditings.create(case=CASE, amount=1, currency="SEK")
    assert info.value.issues == {
        "case": ("unknown case", "case is closed"),
        "currency": ("unallowed value XYZ",),
    }


async def test_patch_style_422_without_error_key(client, respx_mock):
    respx_mock.get(f"/cases/{CASE}").respond(422, json={"_status": "ERR", "_issues": {"days": "max value is 30"}})
    with pytest.raises(UnprocessableEntityError) as info:
        await client.cases.get(CASE)
    err = info.value
    assert err.issues == {"days": ("max value is 30",)}
    assert err.message  # a default sentence, never empty
    assert "422" in str(err)


async def test_error_key_as_a_string(client, respx_mock):
    respx_mock.get(f"/cases/{CASE}").respond(400, json={"_status": "ERR", "_error": "bad where clause"})
    with pytest.raises(BadRequestError) as info:
        await client.cases.get(CASE)
    assert info.value.message == "bad where clause"
    assert info.value.issues == {}


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (412, PreconditionFailedError),
        (428, PreconditionFailedError),
        (418, APIStatusError),
    ],
)
async def test_statuses_map_to_classes(client, respx_mock, status, cls):
    route = respx_mock.get(f"/cases/{CASE}").mock(return_value=eve_error(status, "The server said no"))
    with pytest.raises(cls) as info:
        await client.cases.get(CASE)
    err = info.value
    assert type(err) is cls
    assert err.status_code == status
    assert err.message == "The server said no"
    assert err.method == "GET"
    assert err.path == f"/cases/{CASE}"
    assert err.attempts == 1
    assert route.call_count == 1, "client errors are never retried"
    assert err.body == {"_status": "ERR", "_error": {"code": status, "message": "The server said no"}}


async def test_html_502_from_a_proxy_after_retries(client, respx_mock):
    route = respx_mock.get(f"/cases/{CASE}").respond(502, content=HTML_502, headers={"Content-Type": "text/html"})
    with pytest.raises(ServerError) as info:
        await client.cases.get(CASE)
    err = info.value
    assert err.status_code == 502
    assert err.attempts == 3
    assert route.call_count == 3
    assert "502 Bad Gateway" in err.message
    assert len(err.message) < 300, "the message holds an excerpt, not the whole page"
    assert "\n" not in str(err)
    assert isinstance(err.body, str) and len(err.body) <= 201


async def test_malformed_json_on_a_get_after_retries(client, respx_mock):
    route = respx_mock.get(f"/cases/{CASE}").respond(200, content=b'{"_id": "68e4c40d93ee14723d28fa95", "state": ')
    with pytest.raises(ResponseDecodeError) as info:
        await client.cases.get(CASE)
    err = info.value
    assert err.attempts == 3
    assert route.call_count == 3
    assert err.method == "GET"
    assert err.path == f"/cases/{CASE}"
    assert "not JSON" in str(err)


async def test_json_of_the_wrong_shape_is_a_decode_error(client, respx_mock):
    route = respx_mock.get(f"/cases/{CASE}").respond(200, json=["not", "an", "object"])
    with pytest.raises(ResponseDecodeError):
        await client.cases.get(CASE)
    route.respond(200, json={"state": "invoice"})  # no _id
    with pytest.raises(ResponseDecodeError):
        await client.cases.get(CASE)


async def test_error_path_never_has_the_query_string(client, respx_mock):
    route = respx_mock.get("/creditor--payments").mock(return_value=eve_error(400, "no"))
    with pytest.raises(BadRequestError) as info:
        async for _ in client.creditor_payments.list(where={"creditor_payment_reference": "SECRET-REF-42"}):
            pass
    assert "SECRET-REF-42" in route.calls.last.request.url.params["where"]  # sent, as it must be
    assert info.value.path == "/creditor--payments"
    assert "SECRET-REF-42" not in str(info.value)
    assert "SECRET-REF-42" not in repr(info.value)


# -- the error objects themselves ----------------------------------------------------------------------------


def test_normalise_issues_forms():
    assert normalise_issues(None) == {}
    assert normalise_issues({}) == {}
    assert normalise_issues([]) == {}
    assert normalise_issues({"a": "x"}) == {"a": ("x",)}
    assert normalise_issues({"a": ["x", "y"]}) == {"a": ("x", "y")}
    assert normalise_issues(["x", {"message": "y"}]) == {"_": ("x", "y")}
    assert normalise_issues("just text") == {"_": ("just text",)}
    assert normalise_issues({"a": {"code": "E1"}}) == {"a": ("E1",)}


def test_error_for_status_uses_the_envelope():
    err = error_for_status(
        429,
        {"_status": "ERR", "_error": {"code": 429, "message": "Rate limit exceeded"}},
        b"",
        method="POST",
        path="/creditor--payments",
        retry_after=7.0,
        attempts=2,
    )
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 7.0
    assert err.attempts == 2
    assert err.message == "Rate limit exceeded"
    assert "after 2 attempts" in str(err)
    unknown = error_for_status(599, None, b"", method="GET", path="/x")
    assert isinstance(unknown, ServerError) and unknown.status_code == 599


def _all_kinds() -> list[AmiliError]:
    payment = CreditorPayment(
        creditor=CREDITOR,
        case=CASE,
        amount=Decimal("10.00"),
        currency="SEK",
        bank_transaction_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
        creditor_payment_reference="PAY-1",
    )
    unknown = OutcomeUnknownError(
        "lost", action=payment, reference="PAY-1", method="POST", path="/creditor--payments", attempts=2
    )
    return [
        error_for_status(
            422, {"_issues": {"a": ["x", "y"]}, "_error": {"message": "m"}}, b"", method="POST", path="/p"
        ),
        error_for_status(429, None, b"", method="GET", path="/p", retry_after=3.0),
        error_for_status(502, None, HTML_502, method="GET", path="/p", attempts=3),
        AuthenticationError("no", status_code=401, method="GET", path="/cases"),
        ValidationError("amount: bad", issues={"amount": ("bad",)}),
        TimeoutError("ConnectTimeout", method="GET", path="/p", attempts=3),
        TransportError("ConnectError", method="POST", path="/p"),
        ResponseDecodeError("not JSON", status_code=200, method="GET", path="/p"),
        unknown,
    ]


@pytest.mark.parametrize("err", _all_kinds(), ids=lambda e: type(e).__name__)
def test_errors_pickle_with_every_field(err):
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err)
    for name in (
        "message",
        "status_code",
        "issues",
        "method",
        "path",
        "body",
        "attempts",
        "action",
        "reference",
    ):
        assert getattr(copy, name) == getattr(err, name), name
    assert str(copy) == str(err)
    if isinstance(err, RateLimitError):
        assert copy.retry_after == err.retry_after


def test_every_error_has_the_documented_fields():
    for err in _all_kinds():
        for name in ("message", "status_code", "issues", "method", "path", "body", "attempts"):
            assert hasattr(err, name), (type(err).__name__, name)


def test_timeout_error_is_both_a_transport_error_and_a_builtin_timeout():
    err = TimeoutError("t")
    assert isinstance(err, TransportError)
    assert isinstance(err, builtins.TimeoutError)


# -- secrets never end up in an error ------------------------------------------------------------------------

SECRET_TOKEN = "tok-VERY-SECRET-abc123"


def _assert_secret_free(err: BaseException, *secrets: str) -> None:
    texts = [str(err), repr(err), str(getattr(err, "body", "")), repr(err.__dict__)]
    cause = err.__cause__
    while cause is not None:
        texts += [str(cause), repr(cause)]
        cause = cause.__cause__
    for secret in secrets:
        for text in texts:
            assert secret not in text


async def test_a_final_401_does_not_reveal_the_token(respx_mock):
    route = respx_mock.get(f"/cases/{CASE}").mock(return_value=eve_error(401, "Please provide proper credentials"))
    async with AsyncAmiliClient(auth=StaticTokenAuth(SECRET_TOKEN), base_url=BASE) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.cases.get(CASE)
    assert route.calls.last.request.headers["X-API-Key"] == SECRET_TOKEN
    _assert_secret_free(info.value, SECRET_TOKEN)


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, content=b"<html>Internal Server Error</html>"),
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectError("connection refused"),
        httpx.Response(200, content=b"not json"),
    ],
    ids=["500", "read-timeout", "connect-error", "bad-json"],
)
async def test_failures_do_not_reveal_token_or_api_code(respx_mock, ec_keys, failure):
    api_code = "API-CODE-SECRET-991"
    login = respx_mock.get("/authenticates/api-code").respond(200, json={"token": "tok-1", "expires_in": 3600})
    answer = {"return_value": failure} if isinstance(failure, httpx.Response) else {"side_effect": failure}
    case = respx_mock.get(f"/cases/{CASE}").mock(**answer)
    crediting = respx_mock.post("/creditor--creditings").mock(**answer)
    auth = ApiCodeJwtAuth(api_code=api_code, private_key=ec_keys.private_pem)
    async with AsyncAmiliClient(auth=auth, base_url=BASE, retry=RetryPolicy.no_delay(max_attempts=2)) as client:
        for call in (
            lambda: client.cases.get(CASE),
            lambda: client.creditor_creditings.create(case=CASE, amount=1, currency="SEK"),
        ):
            with pytest.raises(AmiliError) as info:
                await call()
            _assert_secret_free(info.value, "tok-1", api_code, login.calls.last.request.headers["X-API-Key"])
    assert login.call_count == 1
    assert case.calls.last.request.headers["X-API-Key"] == "tok-1"
    assert crediting.called
