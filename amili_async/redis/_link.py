"""One Redis, reached from asyncio and trio alike, that is never allowed to make a payment wait.

On asyncio the link talks through `redis.asyncio`; on trio (which redis-py does not support) through the
blocking client in a worker thread. Every command is a Lua script (one round trip, atomic on the server).

Failure is expected, not exceptional: a refused connection, a timeout or any Redis error marks the link down
for `recheck` seconds, logs one warning for the whole outage, and raises `RedisDown`; the callers then use
their local fallback. While the link is down nothing is sent, so no call pays a timeout twice. The first
success after an outage logs that Redis is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sniffio

if TYPE_CHECKING:
    import redis
    import redis.asyncio

    RedisSource = str | redis.Redis | redis.asyncio.Redis
else:
    RedisSource = Any

logger = logging.getLogger("amili_async")

__all__ = ["RedisDown", "RedisLink", "RedisSource"]


class RedisDown(Exception):
    """Redis cannot be used right now; use the local fallback."""


class _WrongLoop(Exception):
    """A redis.asyncio client used outside asyncio (our own message: safe to log)."""


class RedisLink:
    """A Redis client (or URL) plus the outage guard. `what` names the user of the link in log lines."""

    def __init__(self, source: RedisSource, *, what: str, timeout: float, recheck: float) -> None:
        import redis
        import redis.asyncio

        if not isinstance(source, (str, redis.Redis, redis.asyncio.Redis)):
            from ..errors import ConfigurationError

            raise ConfigurationError("redis must be a URL, a redis.Redis or a redis.asyncio.Redis client")
        self._source = source
        self._what = what
        self._timeout = timeout
        self._recheck = recheck
        self._down_until = 0.0
        self._down = False
        self._sync: redis.Redis | None = source if isinstance(source, redis.Redis) else None
        self._async: tuple[object, redis.asyncio.Redis] | None = None  # (its event loop, the client)
        self._scripts: dict[tuple[int, str], Any] = {}
        self._own: list[Any] = []  # clients we created from a URL, closed by `aclose`

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return f"RedisLink({self._what}, down={self._down})"

    @property
    def down(self) -> bool:
        return self._down

    async def script(self, text: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        """Run a Lua script; raise `RedisDown` (after logging once) when Redis cannot answer."""
        if self._down:
            now = time.monotonic()
            if now < self._down_until:
                raise RedisDown
            self._down_until = now + self._recheck  # one probe per period; the other calls stay local meanwhile
        try:
            result = await self._run(text, keys, args)
        except Exception as exc:  # any failure: a payment must never fail because of Redis
            self._mark_down(exc)
            raise RedisDown from None
        if self._down:
            self._down = False
            logger.warning("Redis is reachable again: the %s is shared across processes again", self._what)
        return result

    async def _run(self, text: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        import redis.asyncio

        if sniffio.current_async_library() == "asyncio" and not isinstance(self._source, redis.Redis):
            client = self._async_client()
            return await self._registered(client, text)(keys=list(keys), args=list(args))
        if isinstance(self._source, redis.asyncio.Redis):
            raise _WrongLoop("a redis.asyncio client cannot be used outside asyncio: pass a URL or a redis.Redis")
        import anyio.to_thread

        client_sync = self._sync_client()
        script = self._registered(client_sync, text)
        return await anyio.to_thread.run_sync(lambda: script(keys=list(keys), args=list(args)))

    def _registered(self, client: Any, text: str) -> Any:
        key = (id(client), text)
        script = self._scripts.get(key)
        if script is None:
            script = self._scripts[key] = client.register_script(text)
        return script

    def _options(self) -> dict[str, Any]:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Short timeouts and no retries of its own: a slow Redis must cost a payment milliseconds, not seconds.
        return {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "retry": Retry(NoBackoff(), 0),
        }

    def _sync_client(self) -> redis.Redis:
        import redis

        if self._sync is None:
            assert isinstance(self._source, str)
            self._sync = redis.Redis.from_url(self._source, **self._options())
            self._own.append(self._sync)
        return self._sync

    def _async_client(self) -> redis.asyncio.Redis:
        import asyncio

        import redis.asyncio

        if isinstance(self._source, redis.asyncio.Redis):
            return self._source
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:  # redis.asyncio connections belong to one loop
            assert isinstance(self._source, str)
            client = redis.asyncio.Redis.from_url(self._source, **self._options())
            self._async = (loop, client)
            self._own.append(client)
        return self._async[1]

    def _mark_down(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self._recheck
        if not self._down:
            self._down = True
            # The exception's text may quote the URL (and its password): the class name is enough.
            logger.warning(
                "Redis is unreachable (%s): the %s falls back to this process alone; retrying Redis every %g s",
                exc if isinstance(exc, _WrongLoop) else type(exc).__name__,
                self._what,
                self._recheck,
            )

    async def aclose(self) -> None:
        """Close the clients this link created (never one you passed in)."""
        own, self._own = self._own, []
        self._async = None
        self._scripts.clear()
        for client in own:
            try:
                result = client.aclose() if hasattr(client, "aclose") else client.close()
                if result is not None:
                    await result
            except Exception:  # closing a dead connection may fail; nothing to do about it
                logger.debug("closing a Redis client failed", exc_info=True)
        if self._sync is not None and self._sync in own:
            self._sync = None
