"""The token flow (issue 10): early renewal that never fails a call, back-off through an outage of the token
endpoint within the callers' deadlines, a refusal shared by every call, and the optional shared `TokenStore`."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import httpx
import pytest

from amili_async import ApiCodeAuth, AuthenticationError, ResponseDecodeError, ServerError, TransportError
from amili_async.auth import TokenCache, TokenStore

CASE = "68e4c40d93ee14723d28fa95"


class Clock:
    """A fake monotonic clock; `sleep` advances it (so back-off costs no real time)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


def ok(n: int, lifetime: int = 100) -> tuple[int, bytes]:
    return 200, json.dumps({"token": f"t{n}", "expires_in": lifetime}).encode()


DOWN = (503, b"<html>Service Unavailable</html>")


class Endpoint:
    """A token endpoint: answers `script[n]` to the n-th request (the last one repeats); an exception is raised."""

    def __init__(self, *script: tuple[int, bytes] | BaseException | Callable[[int], tuple[int, bytes]]) -> None:
        self.script = list(script) or [ok]
        self.calls = 0

    async def __call__(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        self.calls += 1
        step = self.script[min(self.calls, len(self.script)) - 1]
        if isinstance(step, BaseException):
            raise step
        status, raw = step(self.calls) if callable(step) else step
        return status, {}, raw


def cache(endpoint: Endpoint, clock: Clock, **kwargs: Any) -> TokenCache:
    return TokenCache(ApiCodeAuth(api_code="code"), endpoint, clock=clock, sleep=clock.sleep, **kwargs)


# -- early renewal (advisory) and the last moment (mandatory) --------------------------------------------------


async def test_a_failed_early_renewal_keeps_serving_the_valid_token_and_backs_off():
    clock = Clock()
    endpoint = Endpoint(ok, DOWN, DOWN, ok)
    tokens = cache(endpoint, clock)
    assert (await tokens.get()).value == "t1"
    clock.now += 91  # inside the early window (10 s before expiry), before the last moment (2 s)
    assert (await tokens.get()).value == "t1"  # the renewal failed: the call still gets the valid token
    assert endpoint.calls == 2
    for _ in range(10):  # within the back-off nobody tries again, everybody gets the valid token
        assert (await tokens.get()).value == "t1"
    assert endpoint.calls == 2
    clock.now += 1.0  # past the back-off (at most 0.5 s after the first failure)
    assert (await tokens.get()).value == "t1"
    assert endpoint.calls == 3
    clock.now += 2.0
    assert (await tokens.get()).value == "t4"
    assert endpoint.calls == 4


async def test_only_one_caller_renews_early_the_others_do_not_wait_for_it():
    clock = Clock()
    gate = anyio.Event()

    def slow(n: int) -> tuple[int, bytes]:
        return ok(n)

    endpoint = Endpoint(ok, slow)
    tokens = cache(endpoint, clock)
    await tokens.get()
    clock.now += 91
    original = endpoint.__call__

    async def gated(*args: Any) -> Any:
        if endpoint.calls >= 1:
            await gate.wait()
        return await original(*args)

    endpoint_gated = gated
    tokens._send = endpoint_gated  # type: ignore[assignment]
    got: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _append(tokens, got))  # this one renews, and waits for the endpoint
        await anyio.wait_all_tasks_blocked()
        for _ in range(20):
            got.append((await tokens.get()).value)  # the others go on at once with the valid token
        assert got == ["t1"] * 20
        gate.set()
    assert got[-1] == "t2" and endpoint.calls == 2


async def _append(tokens: TokenCache, got: list[str]) -> None:
    got.append((await tokens.get()).value)


async def test_at_the_last_moment_calls_wait_for_a_new_token_through_an_outage():
    clock = Clock()
    endpoint = Endpoint(ok, DOWN, DOWN, DOWN, ok)
    tokens = cache(endpoint, clock)
    await tokens.get()
    clock.now += 99  # one second before expiry: past the last moment (2 s)
    token = await tokens.get(wait=60)
    assert token.value == "t5"
    assert endpoint.calls == 5
    backoff = clock.sleeps
    assert len(backoff) == 3 and backoff == sorted(backoff)  # growing, jittered waits between the tries
    assert 0.25 <= backoff[0] <= 0.5 and 0.5 <= backoff[1] <= 1.0


async def test_an_outage_longer_than_the_callers_deadline_gives_it_the_endpoints_error():
    clock = Clock()
    endpoint = Endpoint(DOWN)
    tokens = cache(endpoint, clock)
    with pytest.raises(ServerError) as info:
        await tokens.get(wait=10)
    assert info.value.status_code == 503 and "access token" in info.value.message
    assert 10 - 10 <= sum(clock.sleeps) < 10  # it gave up when the next try would have passed the deadline
    assert 3 <= endpoint.calls <= 6


async def test_many_callers_share_one_login_at_a_time_through_an_outage():
    clock = Clock()
    endpoint = Endpoint(DOWN, DOWN, ok)
    tokens = cache(endpoint, clock)
    got: list[str] = []

    async def caller() -> None:
        got.append((await tokens.get(wait=60)).value)

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(caller)
    assert got == ["t3"] * 100
    assert endpoint.calls == 3


async def test_a_connect_error_and_a_timeout_of_the_endpoint_are_an_outage_too():
    clock = Clock()
    endpoint = Endpoint(TransportError("could not reach the token endpoint: ConnectError"), ok)
    tokens = cache(endpoint, clock)
    assert (await tokens.get(wait=30)).value == "t2"


# -- refusal: final and shared ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 422])
async def test_a_refusal_by_the_token_endpoint_is_shared_by_every_call_until_the_cooldown(status):
    clock = Clock()
    endpoint = Endpoint((status, b'{"_status": "ERR", "_error": {"code": %d, "message": "no"}}' % status), ok)
    tokens = cache(endpoint, clock, refusal_cooldown=30)
    errors = []
    for _ in range(50):
        with pytest.raises(AuthenticationError) as info:
            await tokens.get(wait=60)
        errors.append(info.value)
    assert endpoint.calls == 1
    assert {e.status_code for e in errors} == {status}
    assert len({str(e) for e in errors}) == 1  # the same error for everybody
    assert tokens.refusal is not None
    clock.now += 31
    assert tokens.refusal is None
    assert (await tokens.get()).value == "t2"  # after the cool-down: one more login


async def test_waiting_callers_all_get_the_refusal_at_once():
    clock = Clock()
    gate = anyio.Event()
    endpoint = Endpoint((401, b"{}"))
    original = endpoint.__call__

    async def gated(*args: Any) -> Any:
        await gate.wait()
        return await original(*args)

    tokens = TokenCache(ApiCodeAuth(api_code="code"), gated, clock=clock, sleep=clock.sleep)
    errors: list[BaseException] = []

    async def caller() -> None:
        try:
            await tokens.get(wait=60)
        except AuthenticationError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert len(errors) == 30 and endpoint.calls == 1


async def test_an_answer_without_a_token_is_final_not_retried():
    clock = Clock()
    endpoint = Endpoint((200, b'{"message": "welcome"}'))
    tokens = cache(endpoint, clock)
    for _ in range(5):
        with pytest.raises(ResponseDecodeError):
            await tokens.get(wait=60)
    assert endpoint.calls == 1
    assert tokens.refusal is None  # not a refusal of the credentials


# -- the shared store ---------------------------------------------------------------------------------------------


class MemoryStore:
    """A `TokenStore` in memory, recording every call; `fail`/`hang` make it misbehave."""

    def __init__(self) -> None:
        self.token: tuple[str, float] | None = None
        self.locked = False
        self.calls: list[str] = []
        self.fail = False
        self.hang = False

    async def _enter(self, name: str) -> None:
        self.calls.append(name)
        if self.hang:
            await anyio.sleep_forever()
        if self.fail:
            raise ConnectionError("store is down")

    async def load(self) -> tuple[str, float] | None:
        await self._enter("load")
        return self.token

    async def save(self, token: str, lifetime: float) -> None:
        await self._enter("save")
        self.token = (token, lifetime)

    async def try_lock(self, ttl: float) -> str | None:
        await self._enter("try_lock")
        if self.locked:
            return None
        self.locked = True
        return "lock-1"

    async def unlock(self, lock_id: str) -> None:
        await self._enter("unlock")
        self.locked = False

    async def discard(self, token: str) -> None:
        await self._enter("discard")
        if self.token is not None and self.token[0] == token:
            self.token = None


def test_memory_store_is_a_token_store():
    store: TokenStore = MemoryStore()
    assert store is not None


async def test_a_stored_token_is_used_without_a_login_and_a_fresh_one_costs_no_store_call():
    clock = Clock()
    store = MemoryStore()
    store.token = ("shared", 300.0)
    endpoint = Endpoint()
    tokens = cache(endpoint, clock, store=store)
    for _ in range(100):
        assert (await tokens.get()).value == "shared"
    assert endpoint.calls == 0
    assert store.calls == ["load"]  # one load; the cached token never touches the store again


async def test_no_stored_token_lock_login_save_unlock():
    clock = Clock()
    store = MemoryStore()
    endpoint = Endpoint()
    tokens = cache(endpoint, clock, store=store)
    assert (await tokens.get()).value == "t1"
    # Loaded again once the lock is ours: a peer may have stored its token and unlocked in between.
    assert store.calls == ["load", "try_lock", "load", "save", "unlock"]
    assert store.token == ("t1", 100.0) and not store.locked


async def test_another_process_holds_the_lock_we_poll_and_use_its_token():
    clock = Clock()
    store = MemoryStore()
    store.locked = True
    endpoint = Endpoint()
    tokens = cache(endpoint, clock, store=store)

    async def other_process_saves() -> None:
        while store.calls.count("load") < 3:
            await anyio.lowlevel.checkpoint()
        store.token = ("from-elsewhere", 600.0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(other_process_saves)
        token = await tokens.get()
    assert token.value == "from-elsewhere"
    assert endpoint.calls == 0


async def test_a_lock_that_never_goes_away_makes_us_log_in_ourselves_in_the_end():
    clock = Clock()
    store = MemoryStore()
    store.locked = True  # a lock that never expires (a real one lives timeout + store_wait)
    endpoint = Endpoint()
    tokens = cache(endpoint, clock, store=store, timeout=1.0, store_wait=2.0)
    assert (await tokens.get()).value == "t1"
    assert endpoint.calls == 1
    # At most twice the life of a lock: a holder that died, then one that took over and died too.
    assert 2 * 3.0 <= sum(clock.sleeps) <= 2 * 3.0 + 0.5


async def test_the_lock_of_a_dead_holder_expires_and_we_take_it_over():
    clock = Clock()
    store = MemoryStore()
    store.locked = True  # held by a process that died mid-login

    async def lock_expires() -> None:
        while sum(clock.sleeps) < 3.0:  # timeout + store_wait: the life of the dead holder's lock
            await anyio.lowlevel.checkpoint()
        store.locked = False

    endpoint = Endpoint()
    tokens = cache(endpoint, clock, store=store, timeout=1.0, store_wait=2.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lock_expires)
        assert (await tokens.get()).value == "t1"
    assert endpoint.calls == 1
    assert store.token == ("t1", 100.0) and not store.locked  # stored for the others, lock released


@pytest.mark.parametrize("misbehaviour", ["fail", "hang"])
async def test_a_broken_store_is_logged_once_and_the_cache_works_locally(misbehaviour, caplog):
    clock = Clock()
    store = MemoryStore()
    setattr(store, misbehaviour, True)
    endpoint = Endpoint(ok, ok)
    tokens = cache(endpoint, clock, store=store, store_timeout=0.05)
    with anyio.fail_after(5):
        assert (await tokens.get()).value == "t1"
        assert await tokens.refused(await tokens.get())  # discard fails too: still renewed
        assert (await tokens.get()).value == "t2"
    assert endpoint.calls == 2
    warnings = [r for r in caplog.records if "token store failed" in r.getMessage() and r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert all("store is down" not in r.getMessage() for r in caplog.records)  # type only, never the message


async def test_a_refused_token_is_discarded_from_the_store_and_never_adopted_again():
    clock = Clock()
    store = MemoryStore()
    store.token = ("stale", 300.0)
    endpoint = Endpoint()
    tokens = cache(endpoint, clock, store=store)
    stale = await tokens.get()
    assert stale.value == "stale"
    store.calls.clear()
    assert await tokens.refused(stale)  # Amili answered 401 to it
    assert store.calls == ["discard"] and store.token is None
    store.token = ("stale", 300.0)  # another process put it back
    assert (await tokens.get()).value == "t1"
    assert store.token == ("t1", 100.0)


async def test_the_client_takes_a_token_store(make_client):
    store = MemoryStore()
    store.token = ("shared-token", 600.0)
    client, transport = make_client(lambda r: httpx.Response(200, json={"_id": CASE}), token_store=store)
    await client.cases.get(CASE)
    await client.cases.get(CASE)
    assert transport.token_requests == []
    assert [r.headers["X-API-Key"] for r in transport.api_requests] == ["shared-token", "shared-token"]
    assert store.calls == ["load"]
