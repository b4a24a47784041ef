"""The shared token cache: single flight, proactive refresh, 401 refresh-and-replay, failures, cancelling."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import httpx
import pytest

import amili_async.errors as amili_errors
from amili_async import (
    ApiCodeAuth,
    AuthenticationError,
    ResponseDecodeError,
    ServerError,
    StaticTokenAuth,
    TransportError,
)
from amili_async.auth import TokenCache

CASE = "68e4c40d93ee14723d28fa95"
RECEIPT = {"_id": "68e4cb120da90297b3be0e01", "_status": "OK", "_crediting_status": "completed"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Endpoint:
    """A token endpoint for `TokenCache`: answers `answer(n)` (n = 1, 2, ...), optionally after a gate."""

    def __init__(self, answer: Callable[[int], tuple[int, bytes]] | None = None) -> None:
        self.calls = 0
        self.started = anyio.Event()
        self.gate: anyio.Event | None = None
        self.answer = answer or (lambda n: (200, json.dumps({"token": f"t{n}", "expires_in": 100}).encode()))

    async def __call__(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        self.calls += 1
        n = self.calls
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        status, raw = self.answer(n)
        return status, {}, raw


def cache(endpoint: Endpoint, **kwargs: Any) -> TokenCache:
    return TokenCache(ApiCodeAuth(api_code="code"), endpoint, **kwargs)


# -- single flight -------------------------------------------------------------------------------------------


async def test_500_concurrent_first_calls_make_one_token_request(make_client):
    async def token(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.02)  # everybody else arrives while the first refresh is in flight
        return httpx.Response(200, json={"token": "tok-only", "expires_in": 3600})

    client, transport = make_client(lambda r: httpx.Response(200, json={"_id": CASE}), token_handler=token)
    async with anyio.create_task_group() as tg:
        for _ in range(500):
            tg.start_soon(client.cases.get, CASE)
    assert len(transport.token_requests) == 1
    assert client.token_requests == 1
    assert len(transport.api_requests) == 500
    assert {r.headers["X-API-Key"] for r in transport.api_requests} == {"tok-only"}


async def test_token_reused_across_sequential_calls(make_client):
    client, transport = make_client(lambda r: httpx.Response(200, json={"_id": CASE}))
    for _ in range(5):
        await client.cases.get(CASE)
    assert len(transport.token_requests) == 1


async def test_two_clients_never_share_tokens(make_client):
    client_a, transport_a = make_client(lambda r: httpx.Response(200, json={"_id": CASE}))
    client_b, transport_b = make_client(lambda r: httpx.Response(200, json={"_id": CASE}))
    await client_a.cases.get(CASE)
    await client_b.cases.get(CASE)
    assert len(transport_a.token_requests) == len(transport_b.token_requests) == 1


# -- lifetime and proactive refresh --------------------------------------------------------------------------


async def test_proactive_refresh_before_expiry():
    clock = FakeClock()
    endpoint = Endpoint()  # expires_in 100 -> refreshed 10 s (10 %) before expiry
    tokens = cache(endpoint, clock=clock)
    first = await tokens.get()
    assert first.value == "t1"
    assert first.expires_at == clock.now + 100
    clock.now += 89
    assert (await tokens.get()).value == "t1"
    assert endpoint.calls == 1
    clock.now += 2  # 91 s in: inside the margin, still before expiry
    second = await tokens.get()
    assert second.value == "t2"
    assert second.generation == first.generation + 1
    assert endpoint.calls == 2


async def test_margin_is_capped_at_a_minute_for_long_tokens():
    clock = FakeClock()
    endpoint = Endpoint(lambda n: (200, json.dumps({"token": f"t{n}", "expires_in": 3600}).encode()))
    tokens = cache(endpoint, clock=clock)
    token = await tokens.get()
    assert token.refresh_at == clock.now + 3540


async def test_assumed_lifetime_when_the_answer_has_none():
    clock = FakeClock()
    endpoint = Endpoint(lambda n: (200, json.dumps({"token": f"t{n}"}).encode()))
    tokens = cache(endpoint, clock=clock, assumed_lifetime=120)
    token = await tokens.get()
    assert token.expires_at == clock.now + 120
    clock.now += 119
    assert (await tokens.get()).value == "t2"


async def test_static_token_never_expires():
    clock = FakeClock()
    tokens = TokenCache(StaticTokenAuth("static"), Endpoint(), clock=clock)
    assert (await tokens.get()).value == "static"
    clock.now += 10**9
    assert (await tokens.get()).value == "static"
    assert tokens.requests == 0


async def test_proactive_refresh_through_the_client(make_client):
    client, transport = make_client(lambda r: httpx.Response(200, json={"_id": CASE}))
    await client.cases.get(CASE)
    clock = FakeClock()
    clock.now = time.monotonic()
    client._bind().tokens._clock = clock  # the cache of this client, on a fake clock from now on
    clock.now += 3600 - 61  # one hour tokens are renewed a minute early
    await client.cases.get(CASE)
    assert len(transport.token_requests) == 1
    clock.now += 2
    await client.cases.get(CASE)
    assert len(transport.token_requests) == 2
    assert [r.headers["X-API-Key"] for r in transport.api_requests] == ["tok-1", "tok-1", "tok-2"]


# -- 401: refresh once, replay once --------------------------------------------------------------------------


def only_token(accepted: str, payload: dict[str, Any]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["X-API-Key"] != accepted:
            return httpx.Response(401, json={"_status": "ERR", "_error": {"code": 401, "message": "expired"}})
        return httpx.Response(201 if request.method == "POST" else 200, json=payload)

    return handler


async def test_401_refreshes_once_and_replays_with_the_new_token(make_client):
    client, transport = make_client(only_token("tok-2", {"_id": CASE, "state": "invoice"}))
    case = await client.cases.get(CASE)
    assert case.state == "invoice"
    assert [(r.url.path, r.headers["X-API-Key"]) for r in transport.api_requests] == [
        (f"/cases/{CASE}", "tok-1"),
        (f"/cases/{CASE}", "tok-2"),
    ]
    assert len(transport.token_requests) == 2


async def test_401_replay_of_a_write_sends_the_same_body_once_more(make_client):
    client, transport = make_client(only_token("tok-2", RECEIPT))
    receipt = await client.creditor_creditings.create(case=CASE, amount=5, currency="SEK")
    assert receipt.crediting_status == "completed"
    first, replay = transport.api_requests
    assert first.content == replay.content
    assert (first.headers["X-API-Key"], replay.headers["X-API-Key"]) == ("tok-1", "tok-2")


async def test_a_second_401_is_final_and_a_refused_fresh_token_is_shared_by_later_calls(make_client):
    client, transport = make_client(only_token("never", {}))
    with pytest.raises(AuthenticationError) as info:
        await client.cases.get(CASE)
    assert info.value.status_code == 401
    assert len(transport.api_requests) == 2
    assert len(transport.token_requests) == 2
    # Two freshly issued tokens refused in a row: the credentials are refused. Later calls fail at once with
    # that refusal, without a login or a request, until the cool-down has passed.
    for _ in range(20):
        with pytest.raises(AuthenticationError) as later:
            await client.cases.get(CASE)
        assert "freshly issued" in str(later.value)
    assert len(transport.api_requests) == 2
    assert len(transport.token_requests) == 2
    tokens = client._bind().tokens
    clock = FakeClock()
    clock.now = tokens._clock() + 31  # past the 30 s cool-down: one more login, one more replay
    tokens._clock = clock
    with pytest.raises(AuthenticationError):
        await client.cases.get(CASE)
    assert len(transport.token_requests) == 3
    assert len(transport.api_requests) == 3


async def test_a_token_that_worked_and_is_then_refused_is_renewed_every_time(make_client):
    # A revocation is not a refusal of the credentials: tokens Amili accepted before are renewed each time.
    accepted = {"tok-1", "tok-2", "tok-3"}
    revoked: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["X-API-Key"]
        if key in revoked or key not in accepted:
            return httpx.Response(401, json={"_status": "ERR"})
        return httpx.Response(200, json={"_id": CASE})

    client, transport = make_client(handler)
    for n in (1, 2, 3):
        await client.cases.get(CASE)
        revoked.add(f"tok-{n}")
    assert len(transport.token_requests) == 3
    assert client._bind().tokens.refusal is None


async def test_50_concurrent_401s_for_one_token_cause_one_refresh(make_client):
    arrived = 0
    all_in = anyio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal arrived
        if request.headers["X-API-Key"] == "tok-1":
            arrived += 1
            if arrived == 50:
                all_in.set()
            await all_in.wait()  # every call holds the old token before any 401 is answered
            return httpx.Response(401, json={"_status": "ERR", "_error": {"code": 401, "message": "expired"}})
        return httpx.Response(200, json={"_id": CASE})

    client, transport = make_client(handler)
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(client.cases.get, CASE)
    assert len(transport.token_requests) == 2  # the first token, and exactly one refresh
    keys = [r.headers["X-API-Key"] for r in transport.api_requests]
    assert keys.count("tok-1") == 50
    assert keys.count("tok-2") == 50


async def test_invalidate_ignores_an_older_generation():
    endpoint = Endpoint()
    tokens = cache(endpoint)
    old = await tokens.get()
    assert await tokens.invalidate(old.generation)
    new = await tokens.get()
    assert new.value == "t2"
    assert await tokens.invalidate(old.generation)  # a late 401 for the old token
    assert (await tokens.get()).value == "t2"
    assert endpoint.calls == 2


async def test_static_token_cannot_be_invalidated():
    tokens = TokenCache(StaticTokenAuth("static"), Endpoint())
    token = await tokens.get()
    assert await tokens.invalidate(token.generation) is False


# -- failed refreshes ----------------------------------------------------------------------------------------


def failing_then_ok(failures: int) -> Callable[[int], tuple[int, bytes]]:
    def answer(n: int) -> tuple[int, bytes]:
        if n <= failures:
            return 503, b"<html>Service Unavailable</html>"
        return 200, json.dumps({"token": f"t{n}", "expires_in": 100}).encode()

    return answer


async def _gather_errors(tokens: TokenCache, count: int, endpoint: Endpoint) -> list[BaseException | str]:
    """Start one refresh, let `count - 1` more callers arrive while it is in flight, then release it."""
    results: list[BaseException | str] = []

    async def caller() -> None:
        try:
            results.append((await tokens.get()).value)
        except Exception as exc:
            results.append(exc)

    endpoint.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await endpoint.started.wait()
        for _ in range(count - 1):
            tg.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        endpoint.gate.set()
    return results


async def test_a_failed_refresh_reaches_every_waiter():
    clock = FakeClock()
    endpoint = Endpoint(failing_then_ok(1))
    tokens = cache(endpoint, clock=clock, failure_backoff=5.0)
    results = await _gather_errors(tokens, 20, endpoint)
    assert len(results) == 20
    assert all(isinstance(r, ServerError) for r in results), results
    assert endpoint.calls == 1, "waiters must share the failure, not hammer the endpoint"


async def test_a_failed_refresh_is_not_cached_for_ever():
    clock = FakeClock()
    endpoint = Endpoint(failing_then_ok(1))
    tokens = cache(endpoint, clock=clock, failure_backoff=5.0)
    with pytest.raises(ServerError):
        await tokens.get()
    clock.now += 10  # past the backoff (at most 5 s for the first failure)
    token = await tokens.get()
    assert token.value == "t2"
    assert endpoint.calls == 2


async def test_a_caller_inside_the_backoff_waits_then_tries_again():
    endpoint = Endpoint(failing_then_ok(1))
    tokens = cache(endpoint, failure_backoff=0.05)
    with pytest.raises(ServerError):
        await tokens.get()
    with anyio.fail_after(2):
        token = await tokens.get()  # sleeps out the remaining backoff, then refreshes
    assert token.value == "t2"


async def test_a_failed_refresh_through_the_client_reaches_every_caller(make_client):
    gate = anyio.Event()
    started = anyio.Event()

    async def token(request: httpx.Request) -> httpx.Response:
        started.set()
        await gate.wait()
        return httpx.Response(401, json={"_status": "ERR", "_error": {"code": 401, "message": "bad key"}})

    client, transport = make_client(lambda r: httpx.Response(200, json={"_id": CASE}), token_handler=token)
    errors: list[BaseException] = []

    async def call() -> None:
        try:
            await client.cases.get(CASE)
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await started.wait()
        for _ in range(9):
            tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert len(errors) == 10
    assert all(type(e) is AuthenticationError for e in errors)
    assert len(transport.token_requests) == 1
    assert transport.api_requests == []


async def test_token_endpoint_unreachable_is_a_transport_error(make_client):
    def token(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    client, transport = make_client(lambda r: httpx.Response(200, json={"_id": CASE}), token_handler=token)
    with pytest.raises(TransportError):
        await client.cases.get(CASE)
    assert transport.api_requests == []


async def test_token_endpoint_timeout_is_bounded():
    endpoint = Endpoint()
    endpoint.gate = anyio.Event()  # never set: the endpoint never answers
    tokens = cache(endpoint, timeout=0.05)
    # A silent endpoint is a timeout (nothing was refused), not an authentication failure.
    with anyio.fail_after(2), pytest.raises(amili_errors.TimeoutError) as info:
        await tokens.get()
    assert "did not answer" in str(info.value)
    assert info.value.status_code is None


async def test_bad_token_answer_is_shared_too():
    endpoint = Endpoint(lambda n: (200, b'{"message": "welcome"}'))
    tokens = cache(endpoint)
    with pytest.raises(ResponseDecodeError):
        await tokens.get()


# -- cancellation --------------------------------------------------------------------------------------------


async def test_cancelling_the_caller_that_started_the_refresh_does_not_cancel_it():
    endpoint = Endpoint()
    endpoint.gate = anyio.Event()
    tokens = cache(endpoint)
    got: list[str] = []
    first_cancelled = False

    async def first() -> None:
        nonlocal first_cancelled
        with anyio.CancelScope() as scope:
            first_scope.append(scope)
            got.append((await tokens.get()).value)
        first_cancelled = scope.cancelled_caught

    async def second() -> None:
        got.append((await tokens.get()).value)

    first_scope: list[anyio.CancelScope] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await endpoint.started.wait()
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            first_scope[0].cancel()  # the caller that started the refresh goes away
            await anyio.wait_all_tasks_blocked()
            endpoint.gate.set()
    assert endpoint.calls == 1, "the refresh must survive its starter's cancellation"
    assert "t1" in got
    assert (await tokens.get()).value == "t1"
    assert endpoint.calls == 1
    assert first_cancelled or got == ["t1", "t1"]


async def test_cancelling_a_call_through_the_client_keeps_the_token_for_others(make_client):
    gate = anyio.Event()
    started = anyio.Event()

    async def token(request: httpx.Request) -> httpx.Response:
        started.set()
        await gate.wait()
        return httpx.Response(200, json={"token": "tok-shared", "expires_in": 3600})

    client, transport = make_client(lambda r: httpx.Response(200, json={"_id": CASE}), token_handler=token)
    results: list[str] = []
    scopes: list[anyio.CancelScope] = []

    async def starter() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await client.cases.get(CASE)

    async def other() -> None:
        results.append((await client.cases.get(CASE)).id)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(starter)
            await started.wait()
            tg.start_soon(other)
            await anyio.wait_all_tasks_blocked()
            scopes[0].cancel()  # the caller whose call started the token request goes away
            await anyio.wait_all_tasks_blocked()
            gate.set()
    assert results == [CASE]
    assert len(transport.token_requests) == 1
    assert {r.headers["X-API-Key"] for r in transport.api_requests} == {"tok-shared"}
