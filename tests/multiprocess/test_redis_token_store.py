"""`RedisTokenStore` against a real redis-server, on asyncio (redis.asyncio) and trio (sync client in a thread).

Asserted on what Redis holds: key names, lifetimes on Redis's clock, the lock, compare-and-delete.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import redis as redis_py

from amili_async import ApiCodeAuth, ConfigurationError, StaticTokenAuth
from amili_async.redis import RedisTokenStore
from amili_async.testing.redis_server import RedisServer

API_CODE = "api-code-SECRET-7d1e"
BASE = "https://api-sandbox.amili.se"
TOKEN = "tok-SECRET-0123456789abcdef"

BACKENDS = ["asyncio", "trio"]


def run(backend: str, main: Callable[[], Awaitable[Any]]) -> Any:
    return anyio.run(main, backend=backend)


def keys(server: RedisServer) -> dict[bytes, bytes]:
    with redis_py.Redis(unix_socket_path=str(server.socket)) as r:
        return {k: r.get(k) or b"" for k in r.keys("*") if r.type(k) == b"string"}


def pttl(server: RedisServer, key: bytes) -> int:
    with redis_py.Redis(unix_socket_path=str(server.socket)) as r:
        return int(r.pttl(key))


def test_import_amili_async_does_not_import_redis():
    code = "import sys, amili_async; import amili_async.client; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_needs_an_api_code_identity():
    with pytest.raises(ConfigurationError, match="api_code"):
        RedisTokenStore("redis://127.0.0.1:1", base_url=BASE, auth=StaticTokenAuth("tok-abcdefgh"))
    with pytest.raises(ConfigurationError, match="URL"):
        RedisTokenStore(object(), base_url=BASE, identity="x")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
def test_save_load_on_redis_clock_and_never_the_secrets(redis_server: RedisServer, backend: str):
    auth = ApiCodeAuth(api_code=API_CODE)

    async def main() -> tuple[Any, Any]:
        async with RedisTokenStore(redis_server.url, base_url=BASE + "/", auth=auth) as store:
            empty = await store.load()
            await store.save(TOKEN, 30.0)
            return empty, await store.load()

    empty, loaded = run(backend, main)
    assert empty is None
    token, lifetime = loaded
    assert token == TOKEN
    assert 29.0 < lifetime <= 30.0
    stored = keys(redis_server)
    (name, value) = next(iter(stored.items()))
    assert name.startswith(b"amili-async:{https://api-sandbox.amili.se|") and name.endswith(b":token")
    for secret in (API_CODE.encode(), TOKEN.encode()):
        assert secret not in name and secret not in value
    assert 29_000 < pttl(redis_server, name) <= 30_000  # Redis expires it: no host clock involved
    assert "SECRET" not in repr(RedisTokenStore(redis_server.url, base_url=BASE, auth=auth))


@pytest.mark.parametrize("backend", BACKENDS)
def test_stores_of_other_credentials_or_servers_do_not_share(redis_server: RedisServer, backend: str):
    async def main() -> list[Any]:
        a = RedisTokenStore(redis_server.url, base_url=BASE, identity="code-a")
        b = RedisTokenStore(redis_server.url, base_url=BASE, identity="code-b")
        c = RedisTokenStore(redis_server.url, base_url="https://api.amili.se", identity="code-a")
        await a.save(TOKEN, 30.0)
        found = [await b.load(), await c.load(), await a.load()]
        for store in (a, b, c):
            await store.aclose()
        return found

    b_sees, c_sees, a_sees = run(backend, main)
    assert b_sees is None and c_sees is None
    assert a_sees[0] == TOKEN


@pytest.mark.parametrize("backend", BACKENDS)
def test_login_lock_is_exclusive_released_by_owner_only_and_expires(redis_server: RedisServer, backend: str):
    async def main() -> dict[str, Any]:
        async with (
            RedisTokenStore(redis_server.url, base_url=BASE, identity="c") as one,
            RedisTokenStore(redis_server.url, base_url=BASE, identity="c") as two,
        ):
            seen: dict[str, Any] = {}
            seen["first"] = await one.try_lock(0.3)
            seen["second"] = await two.try_lock(0.3)
            await two.unlock("not-the-owner")  # must not release one's lock
            seen["still_held"] = await two.try_lock(0.3)
            await one.unlock(seen["first"])
            seen["after_unlock"] = await two.try_lock(0.3)
            await anyio.sleep(0.5)  # two never unlocks: its lock expires by itself
            seen["after_expiry"] = await one.try_lock(0.3)
            return seen

    seen = run(backend, main)
    assert seen["first"] and seen["second"] is None and seen["still_held"] is None
    assert seen["after_unlock"] and seen["after_unlock"] != seen["first"]
    assert seen["after_expiry"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_discard_only_drops_the_refused_token(redis_server: RedisServer, backend: str):
    async def main() -> list[Any]:
        async with RedisTokenStore(redis_server.url, base_url=BASE, identity="c") as store:
            await store.save("tok-old", 30.0)
            await store.save("tok-new", 30.0)  # a peer refreshed
            await store.discard("tok-old")  # our 401 was for the old one: the new one stays
            kept = await store.load()
            await store.discard("tok-new")
            return [kept, await store.load()]

    kept, gone = run(backend, main)
    assert kept is not None and kept[0] == "tok-new"
    assert gone is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_redis_down_means_local_behaviour_and_one_warning(
    redis_server: RedisServer, backend: str, caplog: pytest.LogCaptureFixture
):
    redis_server.stop()

    async def main() -> list[Any]:
        async with RedisTokenStore(redis_server.url, base_url=BASE, identity="c", recheck=60) as store:
            lock = await store.try_lock(5.0)
            await store.save(TOKEN, 30.0)
            loaded = await store.load()
            await store.unlock(lock or "")
            await store.discard(TOKEN)
            return [lock, loaded, await store.try_lock(5.0)]

    with caplog.at_level(logging.WARNING, logger="amili_async"):
        lock, loaded, again = run(backend, main)
    assert lock and again  # every process may log in on its own
    assert loaded is None
    warnings = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert str(redis_server.socket) not in caplog.text


@pytest.mark.parametrize("backend", BACKENDS)
def test_redis_back_after_an_outage(redis_server: RedisServer, backend: str, caplog: pytest.LogCaptureFixture):
    async def main() -> list[Any]:
        async with RedisTokenStore(redis_server.url, base_url=BASE, identity="c", recheck=0.05) as store:
            await store.save(TOKEN, 30.0)
            redis_server.stop()
            down = await store.load()
            redis_server.start()  # empty again: no persistence
            await anyio.sleep(0.1)
            await store.save("tok-2", 30.0)
            return [down, await store.load()]

    with caplog.at_level(logging.WARNING, logger="amili_async"):
        down, back = run(backend, main)
    assert down is None
    assert back is not None and back[0] == "tok-2"
    assert "reachable again" in caplog.text


def test_a_sync_client_works_on_both_loops(redis_server: RedisServer):
    client = redis_py.Redis(unix_socket_path=str(redis_server.socket))
    store = RedisTokenStore(client, base_url=BASE, identity="c")

    async def save() -> None:
        await store.save(TOKEN, 30.0)

    async def load() -> Any:
        return await store.load()

    run("asyncio", save)
    assert run("trio", load)[0] == TOKEN
    run("asyncio", store.aclose)
    assert client.ping()  # ours to close, not the store's
    client.close()


def test_an_asyncio_client_on_trio_falls_back_and_says_why(redis_server: RedisServer, caplog: pytest.LogCaptureFixture):
    import redis.asyncio

    store = RedisTokenStore(redis.asyncio.Redis(unix_socket_path=str(redis_server.socket)), base_url=BASE, identity="c")

    async def main() -> Any:
        await store.save(TOKEN, 30.0)
        return await store.load()

    with caplog.at_level(logging.WARNING, logger="amili_async"):
        assert run("trio", main) is None  # local behaviour, no crash
    assert "cannot be used outside asyncio" in caplog.text
