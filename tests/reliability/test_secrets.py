"""Secret and PII sentinel sweep (§3.4, §4.2, §5.3 D41): every path, every logger at DEBUG, every repr.

The sentinels: the API code, the private key PEM, every `X-API-Key` value that went over the wire (the signed
JWTs and the access tokens, recorded at the fake's door), and the debtor's name and personal number.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from reliability_helpers import PAYMENTS, payment

from amili_async import ApiCodeJwtAuth, AsyncAmiliClient, RetryPolicy
from amili_async.errors import (
    AmiliError,
    AuthenticationError,
    OutcomeUnknownError,
    ServerError,
    UnprocessableEntityError,
)
from amili_async.testing import FakeAmili, Fault

LOGGERS = ("amili_async", "httpx", "httpcore", "aiohttp", "asyncio")
DEBTOR_NAME = "Sentinella Skuldsdotter"
SENTINEL_API_CODE = "SENTINEL-api-code-3f9a1c77e2"


def _record_keys(fake: FakeAmili) -> set[str]:
    """Wrap the fake's single entry point (all frontends use it) to keep every X-API-Key it receives."""
    keys: set[str] = set()
    handle = fake.handle

    def recording(req: Any) -> Any:
        key = req.headers.get("x-api-key")
        if key:
            keys.add(key)
        return handle(req)

    fake.handle = recording  # type: ignore[method-assign]
    return keys


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [err]
    while stack:
        exc = stack.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        yield exc
        stack += [exc.__cause__, exc.__context__]


def _texts_of(err: BaseException) -> Iterator[str]:
    for exc in _chain(err):
        yield repr(exc)
        yield str(exc)
        yield repr(getattr(exc, "args", ()))
        if isinstance(exc, AmiliError):
            yield repr(exc.body)
            yield repr(exc.issues)
            yield repr(exc.__dict__)
    yield "".join(traceback.format_exception(err))


async def _sweep(fake: FakeAmili, client_kwargs: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Run every kind of outcome; return (the sentinels, every text that must not contain them)."""
    keys = _record_keys(fake)
    creditor = fake.add_creditor()
    case_id = fake.add_case(creditor.id, customer_name=DEBTOR_NAME, capital=10_000)
    personal_number = fake.get_case(case_id)["customer_id_number"]
    texts: list[str] = []
    errors: list[BaseException] = []
    kwargs = {"retry": RetryPolicy.no_delay(), **client_kwargs}

    async def expect(error: type[Exception], call: Any) -> None:
        with pytest.raises(error) as caught:
            await call
        errors.append(caught.value)

    async with fake.client(creditor, **kwargs) as amili:
        case = await amili.cases.get(case_id)  # success: the answer carries the debtor's data
        assert (case.customer_name, case.customer_id_number) == (DEBTOR_NAME, personal_number)
        texts += [repr(case), str(case)]
        receipt = await amili.execute(payment(creditor, case_id, "PAY-SECRET-1"))
        texts += [repr(receipt)]
        # 422: a case that does not exist
        await expect(UnprocessableEntityError, amili.execute(payment(creditor, "0" * 24, "PAY-SECRET-2")))
        # 500 on a read, HTML page
        fake.inject(Fault(kind="server_error", status=500, path="/cases", method="GET", times=3))
        await expect(ServerError, amili.cases.get(case_id))
        # dropped connection after commit on a write without reference
        fake.inject(Fault(kind="drop_after_commit", path=PAYMENTS, method="POST", times=1))
        await expect(OutcomeUnknownError, amili.execute(payment(creditor, case_id, None)))
        # 401 after the one refresh and replay
        fake.inject(Fault(kind="revoke_token", path="/cases", method="GET", times=2))
        await expect(AuthenticationError, amili.cases.get(case_id))
        # the token endpoint down for longer than the call's deadline
        fake.revoke_tokens()
        fake.inject(Fault(kind="token_endpoint_down", status=503))
        await expect(ServerError, amili.with_options(retry=RetryPolicy.no_delay(deadline=0.5)).cases.get(case_id))
        fake.clear_faults()
        texts += [repr(amili), str(amili), repr(amili._auth), repr(amili._bind().tokens)]

    # a refused login: an API code Amili does not know, signed with a real key
    unknown = ApiCodeJwtAuth(api_code=SENTINEL_API_CODE, private_key=creditor.private_key_pem)
    base_url = kwargs.pop("base_url", FakeAmili.BASE_URL)
    kwargs.setdefault("transport", fake.transport())
    async with AsyncAmiliClient(auth=unknown, base_url=base_url, **kwargs) as stranger:
        await expect(AuthenticationError, stranger.cases.get(case_id))
        texts += [repr(stranger), repr(unknown), str(unknown)]

    assert [type(e) for e in errors] == [
        UnprocessableEntityError,
        ServerError,
        OutcomeUnknownError,
        AuthenticationError,
        ServerError,
        AuthenticationError,
    ]
    for err in errors:
        texts += list(_texts_of(err))
        texts.append(repr(getattr(err, "action", None)))
    pem_lines = [line for line in creditor.private_key_pem.splitlines() if len(line) > 20]
    sentinels = [
        creditor.api_code,
        SENTINEL_API_CODE,
        *pem_lines,
        *keys,
        DEBTOR_NAME,
        personal_number,
    ]
    assert len(keys) >= 4  # JWTs and access tokens were recorded
    return sentinels, texts


def _assert_clean(sentinels: list[str], texts: list[str], caplog: pytest.LogCaptureFixture) -> None:
    logged = [caplog.text]
    for record in caplog.records:
        logged += [record.getMessage(), repr(record.args), repr(record.__dict__.get("exc_text"))]
    assert any("amili_async" in r.name for r in caplog.records)  # the SDK did log at DEBUG
    for sentinel in sentinels:
        for text in texts:
            assert sentinel not in text, f"a secret or debtor datum leaked into {text[:120]!r}"
        for text in logged:
            assert sentinel not in text, "a secret or debtor datum leaked into the logs"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    caplog.set_level(logging.DEBUG)
    return caplog


async def test_no_secret_or_debtor_data_in_logs_reprs_or_errors_in_memory(debug_logs):
    fake = FakeAmili(seed=41)
    sentinels, texts = await _sweep(fake, {})
    _assert_clean(sentinels, texts, debug_logs)


@pytest.mark.parametrize("transport_name", ["aiohttp", "httpx"])
async def test_no_secret_or_debtor_data_in_logs_reprs_or_errors_over_sockets(debug_logs, transport_name):
    from amili_async.testing.server import start_server

    fake = FakeAmili(seed=42)
    async with await start_server(fake) as server:
        transport = httpx.AsyncHTTPTransport() if transport_name == "httpx" else None
        try:
            sentinels, texts = await _sweep(fake, {"base_url": server.base_url, "transport": transport})
        finally:
            if transport is not None:
                await transport.aclose()
    if transport_name == "httpx":
        assert any(r.name.startswith("httpcore") for r in debug_logs.records)
    _assert_clean(sentinels, texts, debug_logs)


_AMILI_LOG_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, logging, sys
    from amili_async import RetryPolicy, configure_logging_from_env
    from amili_async.testing import FakeAmili

    configure_logging_from_env()  # the explicit step: constructing a client configures no logging
    fake = FakeAmili(seed=5)
    creditor = fake.add_creditor()
    case_id = fake.add_case(creditor.id)
    keys = set()
    handle = fake.handle
    fake.handle = lambda req: (keys.add(req.headers.get("x-api-key") or ""), handle(req))[1]

    async def main():
        async with fake.client(creditor, retry=RetryPolicy.no_delay()) as amili:
            await amili.cases.get(case_id)

    asyncio.run(main())
    level = logging.getLogger("amili_async").level
    print(json.dumps({"level": level, "case": case_id, "secrets": sorted(keys - {""}) + [creditor.api_code]}))
    """
)


def test_amili_log_debug_turns_the_sdk_logger_on_without_secrets():
    env = {**os.environ, "AMILI_LOG": "debug"}
    done = subprocess.run(
        [sys.executable, "-c", _AMILI_LOG_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["level"] == logging.DEBUG
    assert "amili_async DEBUG GET /cases/{id} -> 200" in done.stderr  # the route, not the case's id
    assert report["case"] not in done.stderr
    for secret in report["secrets"]:
        assert secret not in done.stderr
