"""Secrets never leak (issue 11): after every kind of failure, against servers that echo what they were sent.

The secrets: the API code, the private key (its PEM body lines), every signed login JWT (and its claims part,
which decodes to the API code) and every access token — each in every spelling a server or proxy may use:
raw, JSON-escaped (`\\/`, `\\uXXXX`), URL-encoded (upper or lower case hex, `+` for a space). A debtor's
personal identity number in a `where` must stay out too. The search covers `str()`, `repr()`, `args`, `body`,
`issues`, the formatted traceback and the whole `__cause__`/`__context__` chain, walking the attributes of
every chained object (`vars()` and slots, recursively), plus every log record captured at DEBUG.

The echoing servers are raw loopback servers (`raw_server.py`) on both transports, and the in-memory Amili
behind an echoing transport.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import traceback
import types
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote, quote_plus

import attrs
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from raw_server import RawServer, Seen, respond
from reliability_helpers import PAID_AT

from amili_async import ApiCodeAuth, ApiCodeJwtAuth, AsyncAmiliClient, RetryPolicy
from amili_async._redact import Redactor, describe_query
from amili_async.errors import (
    AmiliError,
    APIStatusError,
    AppliedWithoutReceiptError,
    AuthenticationError,
    NotFoundError,
    OutcomeUnknownError,
    ResponseDecodeError,
    ServerError,
    TimeoutError,
    TransportError,
    UnprocessableEntityError,
)
from amili_async.testing import FakeAmili

TOKEN_PATH = "/authenticates/api-code"
CASE = "68e4c40d93ee14723d28fa95"
CREDITOR = "674dbeb208847b9501cc9138"
API_CODE = "ApiC0de/+Sentinel=&x y-7c41"
PERSONAL_NUMBER = "19121212-1212"
LOGGERS = ("amili_async", "httpx", "httpcore", "aiohttp", "asyncio", "")
TRANSPORTS = ["aiohttp", "httpx"]


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


PEM = _pem()
PEM_LINES = [line for line in PEM.splitlines() if line and not line.startswith("-----")]


# -- every spelling of a secret (the test's own oracle, not the SDK's) ----------------------------------------


def spellings(secret: str) -> set[str]:
    json_escaped = json.dumps(secret)[1:-1]
    url = quote(secret, safe="")
    forms = {
        secret,
        json_escaped,
        json_escaped.replace("/", "\\/"),
        json_escaped.replace("&", "\\u0026"),  # Go's encoder escapes <, > and & so
        "".join(f"\\u{ord(c):04x}" for c in secret),
        "".join(f"\\u{ord(c):04X}" for c in secret),
        url,
        re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), url),
        quote_plus(secret, safe=""),
        quote(secret),  # `/` left as it is, as in a path
    }
    forms |= {f.replace("\\", "\\\\") for f in forms if "\\" in f}  # as a repr() quotes them
    return {f for f in forms if f}


def secret_parts(secret: str) -> list[str]:
    """A JWT's claims part is a secret of its own: it decodes to the API code."""
    parts = [secret]
    if secret.count(".") == 2:
        parts.append(secret.split(".")[1])
    return parts


# -- where a secret could hide ---------------------------------------------------------------------------------

_OPAQUE = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, type, types.CodeType)
_FRAMES = (types.FrameType, types.TracebackType)  # a traceback's frame locals are the program's, not the error's


def strings_in(obj: Any, *, depth: int = 0, seen: set[int] | None = None) -> Iterator[str]:
    """Every text reachable from `obj`: its repr, and recursively its items, attributes, slots and chain."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 10 or len(seen) > 50_000:
        return
    seen.add(id(obj))
    if isinstance(obj, str):
        yield obj
        return
    if isinstance(obj, (bytes, bytearray, memoryview)):
        yield bytes(obj).decode("latin-1")
        return
    if obj is None or isinstance(obj, (bool, int, float, Decimal, *_OPAQUE, *_FRAMES)):
        return
    with contextlib.suppress(Exception):
        yield repr(obj)
    children: list[Any] = []
    if isinstance(obj, Mapping):
        for key, value in list(obj.items()):
            children += [key, value]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children += list(obj)
    if isinstance(obj, BaseException):
        children += [obj.args, obj.__cause__, obj.__context__, str(obj)]
    children += list(getattr(obj, "__dict__", {}).values())
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if not name.startswith("__"):
                children.append(getattr(obj, name, None))
    for child in children:
        yield from strings_in(child, depth=depth + 1, seen=seen)


def texts_of_error(err: BaseException) -> list[str]:
    texts = list(strings_in(err))
    texts += [str(err), repr(err), "".join(traceback.format_exception(err))]
    if isinstance(err, AmiliError):
        texts += [repr(err.body), repr(err.issues), repr(err.args)]
    return texts


def texts_of_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = []
    for record in caplog.records:
        if _server_bytes_traced_by_httpcore(record):
            continue
        texts.append(record.getMessage())
        texts += list(strings_in(record.__dict__))
    return texts


def _server_bytes_traced_by_httpcore(record: logging.LogRecord) -> bool:
    """httpcore's own DEBUG trace of a response it could not parse quotes the bytes the *server* sent.

    The one known exception (SECURITY.md): a server that echoes a secret into a malformed status line, read
    through httpx's transport with httpcore's logger at DEBUG. No SDK code runs in between; the SDK's own
    logs and errors of that same failure are checked like every other.
    """
    return record.name.startswith("httpcore") and record.getMessage().startswith("receive_response_headers.failed")


def assert_no_secret(secrets: list[str], texts: list[str], what: str) -> None:
    for secret in secrets:
        for part in secret_parts(secret):
            for form in spellings(part):
                for text in texts:
                    assert form not in text, f"{what}: a secret ({form[:12]}…) leaked into {text[:200]!r}"


# -- echoing servers -------------------------------------------------------------------------------------------


def echo_items(secrets: list[str], forms: str = "all") -> list[str]:
    """Pieces of JSON string text that spell each secret in each form (or in one named form)."""
    items = []
    for secret in secrets:
        escaped = json.dumps(secret)[1:-1]
        by_form = {
            "raw": escaped,  # JSON needs its own escapes even for a "raw" echo
            "json-slash": escaped.replace("/", "\\/"),
            "json-go": escaped.replace("&", "\\u0026").replace("<", "\\u003c"),
            "uescape": "".join(f"\\u{ord(c):04x}" for c in secret),
            "url": quote(secret, safe=""),
            "url-lower": re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(secret, safe="")),
            "url-plus": quote_plus(secret, safe=""),
        }
        items += list(by_form.values()) if forms == "all" else [by_form[forms]]
    return items


def echo_json(status: int, secrets: list[str]) -> bytes:
    items = echo_items(secrets)
    joined = " ".join(items)
    issues = ", ".join(f'"{item}"' for item in items)
    return (
        f'{{"_status": "ERR", "_error": {{"code": {status}, "message": "you sent {joined}"}},'
        f' "_issues": {{"api_code": [{issues}], "token": "{items[0]}"}}, "echo": {{"{items[-1]}": [{issues}]}}}}'
    ).encode()


def echo_html(secrets: list[str], form: str) -> bytes:
    text = " ".join(echo_items(secrets, form)).replace("\\\\", "\\")
    return f"<html><body><h1>Error</h1><p>{text}</p></body></html>".encode()


class EchoServer:
    """Issues access tokens with odd characters; in the chosen places, answers with echoes of every secret
    it was sent or knows (X-API-Key, the API code from the JWT or the POST body, the key, the URL)."""

    def __init__(self, login: str = "ok", data: str = "ok", *, lookup: str = "ok", form: str = "raw") -> None:
        self.pem = True
        self.login = login
        self.data = data
        self.lookup = lookup
        self.form = form
        self.sent_keys: list[str] = []  # every X-API-Key value received: the JWTs and access tokens
        self.issued = 0

    def known(self, seen: Seen) -> list[str]:
        key = seen.headers.get("x-api-key", "")
        found = [key, API_CODE, seen.target]
        if self.pem:  # the client signs with it: a server (or a proxy) that saw it could echo it
            found += [PEM, *PEM_LINES]
        if PERSONAL_NUMBER in seen.query.get("where", ""):  # the filter it was sent, decoded
            found.append(PERSONAL_NUMBER)
        if key.count(".") == 2:  # a JWT: what it says is what it carries
            claims = key.split(".")[1]
            found.append(json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["api_code"])
        return [s for s in found if s]

    async def __call__(self, seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.headers.get("x-api-key"):
            self.sent_keys.append(seen.headers["x-api-key"])
        if seen.path == TOKEN_PATH:
            behaviour = self.login
        elif seen.method == "GET" and "where" in seen.query and self.lookup != "ok" and seen.path != "/cases":
            behaviour = self.lookup
        else:
            behaviour = self.data
        if behaviour == "ok":
            return await self.ok(seen, writer)
        kind, _, status = behaviour.partition("-")
        code = int(status or 200)
        secrets = self.known(seen)
        if kind == "json":
            return await respond(writer, code, echo_json(code, secrets))
        if kind == "html":
            return await respond(writer, code, echo_html(secrets, self.form), headers={"Content-Type": "text/html"})
        if kind == "notoken":  # a 2xx from the token endpoint without a token, full of echoes
            return await respond(writer, 200, {"message": " ".join(echo_items(secrets))})
        if kind == "text":  # a 2xx that is not JSON
            return await respond(writer, code, " ".join(secrets).encode(), headers={"Content-Type": "text/plain"})
        if kind == "garbage":  # a status line no parser accepts, full of echoes
            writer.write(f"HTTP/1.1 ABC {' '.join(echo_items(secrets[:3]))}\r\n\r\n".encode())
            await writer.drain()
            return False
        if kind == "drop":  # read the request, hang up without a word
            return False
        if kind == "big":  # an echo that never ends
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = " ".join(secrets).encode() * 64
            for _ in range(64):
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            return False
        if kind == "stall":  # never answers within the client's read timeout
            await asyncio.sleep(0.6)
            return False
        raise AssertionError(behaviour)

    async def ok(self, seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.path == TOKEN_PATH:
            self.issued += 1
            token = f"Acc3ss/Tok+en=Sentinel&{self.issued:04d}"
            return await respond(writer, 200, {"token": token, "expires_in": 3600})
        if seen.path.startswith("/cases/"):
            return await respond(writer, 200, {"_id": CASE})
        return await respond(writer, 200, {"_items": [], "_meta": {"total": 0}})


def get_case(amili: AsyncAmiliClient) -> Any:
    return amili.cases.get(CASE)


async def list_cases(amili: AsyncAmiliClient) -> Any:
    return [case async for case in amili.cases.list(where={"customer_id_number": PERSONAL_NUMBER})]


def pay(reference: str | None) -> Callable[[AsyncAmiliClient], Any]:
    def call(amili: AsyncAmiliClient) -> Any:
        return amili.creditor_payments.create(
            creditor=CREDITOR,
            case=CASE,
            amount=Decimal("10.00"),
            currency="SEK",
            bank_transaction_date=PAID_AT,
            creditor_payment_reference=reference,
        )

    return call


@attrs.frozen
class Kind:
    """One failure kind: how the server behaves, what the client does, what it must raise."""

    server: Callable[[], EchoServer]
    call: Callable[[AsyncAmiliClient], Any]
    raises: type[AmiliError]
    auth: str = "jwt"
    method: str | None = None


KINDS: dict[str, Kind] = {
    "login 401 echoing the JWT": Kind(lambda: EchoServer(login="json-401"), get_case, APIStatusError, method="GET"),
    "login 422 echoing the API code (POST)": Kind(
        lambda: EchoServer(login="json-422"), get_case, APIStatusError, auth="code", method="POST"
    ),
    "login 500 page": Kind(lambda: EchoServer(login="html-500"), get_case, ServerError, method="GET"),
    "login 200 without a token": Kind(lambda: EchoServer(login="notoken"), get_case, ResponseDecodeError),
    "login 200 without a token (POST)": Kind(
        lambda: EchoServer(login="notoken"), get_case, ResponseDecodeError, auth="code", method="POST"
    ),
    "login garbage status line": Kind(lambda: EchoServer(login="garbage"), get_case, TransportError),
    "login hang-up": Kind(lambda: EchoServer(login="drop"), get_case, TransportError, auth="code"),
    "login answer too large": Kind(lambda: EchoServer(login="big"), get_case, TransportError),
    "login timeout (POST)": Kind(lambda: EchoServer(login="stall"), get_case, TimeoutError, auth="code", method="POST"),
    "401 twice echoing the token": Kind(lambda: EchoServer(data="json-401"), get_case, AuthenticationError),
    "404 page echoing the URL of a filtered list": Kind(lambda: EchoServer(data="html-404"), list_cases, NotFoundError),
    "422 echoing everything on a payment": Kind(
        lambda: EchoServer(data="json-422"), pay("PAY-1"), UnprocessableEntityError
    ),
    "500 on a filtered list, retried": Kind(lambda: EchoServer(data="json-500"), list_cases, ServerError),
    "200 that is not JSON on a read": Kind(lambda: EchoServer(data="text-200"), get_case, ResponseDecodeError),
    "201 that is not JSON on a write": Kind(
        lambda: EchoServer(data="text-201"),
        pay(None),
        AppliedWithoutReceiptError,  # a 2xx: applied (issue 9)
    ),
    "garbage status line on a filtered list": Kind(lambda: EchoServer(data="garbage"), list_cases, TransportError),
    "hang-up after a write, then a failed lookup": Kind(
        lambda: EchoServer(data="drop", lookup="json-500"), pay("PAY-2"), OutcomeUnknownError
    ),
    "answer too large": Kind(lambda: EchoServer(data="big"), list_cases, TransportError),
    "read timeout on a filtered list": Kind(lambda: EchoServer(data="stall"), list_cases, TimeoutError),
}


def _auth(kind: str) -> Any:
    if kind == "code":
        return ApiCodeAuth(api_code=API_CODE)
    return ApiCodeJwtAuth(api_code=API_CODE, private_key=PEM)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    return caplog


async def _fail(kind: Kind, server: EchoServer, transport_name: str) -> tuple[AmiliError, AsyncAmiliClient]:
    server.pem = kind.auth == "jwt"
    async with RawServer(server) as raw:
        transport = httpx.AsyncHTTPTransport() if transport_name == "httpx" else None
        client = AsyncAmiliClient(
            auth=_auth(kind.auth),
            base_url=raw.base_url,
            transport=transport,
            retry=RetryPolicy.no_delay(),
            timeout=httpx.Timeout(5.0, read=0.2),
            max_response_bytes=256 * 1024,
        )
        try:
            with pytest.raises(kind.raises) as caught:
                await kind.call(client)
        finally:
            await client.aclose()
            if transport is not None:
                await transport.aclose()
    return caught.value, client


@pytest.mark.parametrize("transport_name", TRANSPORTS)
@pytest.mark.parametrize("name", list(KINDS))
async def test_no_secret_in_any_spelling_after_each_failure_kind(name, transport_name, debug_logs):
    kind = KINDS[name]
    server = kind.server()
    err, client = await _fail(kind, server, transport_name)

    if kind.method is not None:
        assert err.method == kind.method  # a POST login is named POST
    if kind.auth == "jwt":
        assert server.sent_keys, "the client sent credentials the server could echo"
    secrets = [API_CODE, *PEM_LINES, "".join(PEM_LINES), *server.sent_keys, PERSONAL_NUMBER]
    assert_no_secret(secrets, texts_of_error(err), f"{name}: the error")
    assert_no_secret(secrets, texts_of_logs(debug_logs), f"{name}: the logs")
    assert_no_secret(secrets, [repr(client), str(client)], f"{name}: the client")


@pytest.mark.parametrize("form", ["raw", "json-slash", "json-go", "uescape", "url", "url-lower", "url-plus"])
@pytest.mark.parametrize("where", ["login", "data"])
async def test_no_secret_in_an_html_error_page_whatever_the_spelling(form, where, debug_logs):
    """An HTML page is kept as a short excerpt: each spelling gets its own page, so each reaches the excerpt."""
    kind = KINDS["login 500 page"] if where == "login" else KINDS["404 page echoing the URL of a filtered list"]
    server = EchoServer(login="html-500", form=form) if where == "login" else EchoServer(data="html-404", form=form)
    err, _ = await _fail(kind, server, "aiohttp")
    assert isinstance(err.body, str) and "***" in err.body  # the echo was there, and it was scrubbed
    secrets = [API_CODE, *PEM_LINES, *server.sent_keys, PERSONAL_NUMBER]
    assert_no_secret(secrets, texts_of_error(err), f"{where} {form}: the error")
    assert_no_secret(secrets, texts_of_logs(debug_logs), f"{where} {form}: the logs")


async def test_a_failed_filtered_list_names_its_where_keys_never_their_values(debug_logs):
    server = EchoServer(data="json-500")
    err, _ = await _fail(KINDS["500 on a filtered list, retried"], server, "aiohttp")
    assert err.path == "/cases"
    assert err.query == "?max_results=25&page=1&where={customer_id_number}"
    assert "(GET /cases?max_results=25&page=1&where={customer_id_number}) after 3 attempts" in str(err)
    retries = [r.getMessage() for r in debug_logs.records if r.getMessage().startswith("retrying")]
    assert len(retries) == 2 and all("where={customer_id_number}" in line for line in retries)


def test_describe_query_shows_names_and_page_numbers_only():
    assert describe_query(None) == ""
    params = {"where": json.dumps({"customer_id_number": "1912", "$or": [{"a": 1}]}), "sort": "-x", "page": "2"}
    assert describe_query(params) == "?where={customer_id_number,$or}&sort&page=2"
    assert describe_query({"where": "not json"}) == "?where=…"


# -- the in-memory Amili behind an echoing transport -------------------------------------------------------


class EchoingTransport(httpx.AsyncBaseTransport):
    """The fake answers, except on `paths` where the answer becomes an echo of the credentials it got."""

    def __init__(self, fake: FakeAmili, creditor_code: str, echo: dict[str, tuple[int, str]]) -> None:
        self._inner = fake.transport()
        self._code = creditor_code
        self._echo = echo
        self.keys: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("x-api-key", "")
        if key:
            self.keys.append(key)
        rule = next((v for p, v in self._echo.items() if request.url.path.startswith(p)), None)
        if rule is None:
            return await self._inner.handle_async_request(request)
        status, kind = rule
        secrets = [key, self._code, str(request.url)]
        if PERSONAL_NUMBER in request.url.params.get("where", ""):
            secrets.append(PERSONAL_NUMBER)
        if kind == "json":
            return httpx.Response(status, content=echo_json(status, secrets))
        return httpx.Response(status, content=echo_html(secrets, "url"), headers={"Content-Type": "text/html"})


IN_MEMORY = {
    "401 echo on a read": ({"/cases": (401, "json")}, get_case, AuthenticationError),
    "login refused with an echo": ({TOKEN_PATH: (401, "json")}, get_case, AuthenticationError),
    "500 page on a filtered list": ({"/cases": (500, "html")}, list_cases, ServerError),
    "422 echo on a payment": ({"/creditor--payments": (422, "json")}, pay("PAY-3"), UnprocessableEntityError),
}


@pytest.mark.parametrize("name", list(IN_MEMORY))
async def test_no_secret_after_each_failure_kind_on_the_in_memory_amili(name, debug_logs):
    echo, call, raises = IN_MEMORY[name]
    fake = FakeAmili(seed=11)
    creditor = fake.add_creditor()
    transport = EchoingTransport(fake, creditor.api_code, echo)
    async with fake.client(creditor, transport=transport, retry=RetryPolicy.no_delay()) as amili:
        with pytest.raises(raises) as caught:
            await call(amili)
    assert transport.keys
    pem_lines = [line for line in creditor.private_key_pem.splitlines() if line and not line.startswith("-----")]
    secrets = [creditor.api_code, *pem_lines, *transport.keys, PERSONAL_NUMBER]
    assert_no_secret(secrets, texts_of_error(caught.value), name)
    assert_no_secret(secrets, texts_of_logs(debug_logs), name)


# -- the redactor itself -----------------------------------------------------------------------------------


def test_the_redactor_removes_every_spelling_of_every_secret():
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJhcGlfY29kZSI6IkFwaUMwZGUifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    token = "Acc3ss/Tok+en=Sentinel&0001"
    redactor = Redactor([API_CODE, PEM])
    redactor.remember(jwt)
    redactor.remember(token)
    for secret in [API_CODE, *PEM_LINES, "".join(PEM_LINES), jwt, jwt.split(".")[1], token]:
        for form in spellings(secret):
            scrubbed = redactor.scrub(f"before {form} after")
            assert scrubbed == "before *** after", (form, scrubbed)
    assert "Acc3ss" not in repr(redactor) and "Sentinel" not in repr(redactor)


def test_the_redactor_forgets_old_tokens_but_never_the_api_code():
    redactor = Redactor([API_CODE])
    for n in range(20):
        redactor.remember(f"token-number-{n:04d}")
    assert redactor.scrub("token-number-0000") == "token-number-0000"  # long expired, forgotten
    assert redactor.scrub("token-number-0019") == "***"
    assert redactor.scrub(API_CODE) == "***"


def test_the_redactor_takes_query_values_and_url_queries_out():
    redactor = Redactor()
    url = f"https://api.amili.se/cases?where=%7B%22pnr%22%3A%22{PERSONAL_NUMBER}%22%7D"
    text = f"GET {url} failed for {PERSONAL_NUMBER}"
    assert redactor.scrub(text, [PERSONAL_NUMBER]) == "GET https://api.amili.se/cases?… failed for ***"


def test_a_big_error_body_is_kept_as_an_excerpt_only():
    redactor = Redactor([API_CODE])
    raw = b"<html>" + API_CODE.encode() + b" " + b"x" * 200_000 + b"</html>"
    scrubbed = redactor.scrub_answer(raw)
    assert len(scrubbed) < 1000 and API_CODE.encode() not in scrubbed


async def test_a_post_login_that_outlives_the_token_timeout_is_named_post():
    async with RawServer(EchoServer(login="stall")) as raw:
        retry = RetryPolicy.no_delay(deadline=1.0)  # a silent login is an outage: tried again until the deadline
        client = AsyncAmiliClient(
            auth=ApiCodeAuth(api_code=API_CODE), base_url=raw.base_url, retry=retry, token_timeout=0.1
        )
        async with client:
            with pytest.raises(TimeoutError) as caught:
                await client.cases.get(CASE)
    assert (caught.value.method, caught.value.path) == ("POST", TOKEN_PATH)
    assert "within 0.1 s" in str(caught.value)
    assert {(r.method, r.path) for r in raw.requests} == {("POST", TOKEN_PATH)}


@pytest.mark.parametrize("size", [150, 70_000])
def test_an_excerpt_never_keeps_the_first_half_of_a_secret_it_cut(size):
    """Scrubbed first, cut second: a secret across the excerpt's end must not leave its start behind."""
    from amili_async.errors import excerpt

    redactor = Redactor([API_CODE])
    raw = b"x" * 190 + API_CODE.encode() + b" tail" * (size // 5)
    shown = excerpt(redactor.scrub_answer(raw))
    assert API_CODE[:8] not in shown
    assert shown.startswith("x" * 190 + "***")
