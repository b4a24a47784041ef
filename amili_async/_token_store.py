"""One login shared by several processes through a `TokenStore` (a Redis, say), for the `TokenCache`.

Load first; else take the store's lock, log in and save; else (another process holds the lock) poll the store
briefly for the token it is fetching, then log in ourselves. Every store call is bounded by `timeout`, and any
failure of the store is logged once (its type, never its message) and the login goes on locally: a payment
never waits on the store. A stored token Amili refused is never adopted again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

__all__ = ["SharedLogin", "TokenStore"]

logger = logging.getLogger("amili_async")
T = TypeVar("T")
_FAILED: Any = object()  # a store call that raised or timed out

# (token, seconds it lives or None when unknown)
Login = Callable[[], Awaitable[tuple[str, "float | None"]]]


class TokenStore(Protocol):
    """Optional shared backing of a `TokenCache` (a Redis, say): one login for many processes."""

    async def load(self) -> tuple[str, float] | None:
        """The stored token and the seconds it still lives, or None."""
        ...

    async def save(self, token: str, lifetime: float) -> None: ...

    async def try_lock(self, ttl: float) -> str | None:
        """A lock id when this process may log in now (held for at most `ttl` seconds), else None."""
        ...

    async def unlock(self, lock_id: str) -> None: ...

    async def discard(self, token: str) -> None:
        """Drop the stored token, but only if it is still `token` (Amili refused it)."""
        ...


class SharedLogin:
    """A `TokenCache`'s way through its `TokenStore` (`clock`/`sleep`: the cache's)."""

    def __init__(
        self,
        store: TokenStore,
        *,
        timeout: float,
        wait: float,
        lock_ttl: float,
        assumed_lifetime: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._store = store
        self._timeout = timeout
        self._wait = wait
        self._lock_ttl = lock_ttl
        self._assumed_lifetime = assumed_lifetime
        self._clock = clock
        self._sleep = sleep
        self._warned = False
        self._refused: str | None = None

    async def obtain(self, login: Login, current: str | None) -> tuple[str, float | None]:
        """A token another process stored (not `current`, ours, due for renewal), or one we log in for."""
        store = self._store
        found: Any = await self._call(store.load())
        if self._usable(found, current):
            return found[0], float(found[1])
        lock_id = await self._call(store.try_lock(self._lock_ttl))
        if lock_id is None:  # another process is logging in: its token should appear in the store shortly
            found = await self._poll(current)
            if self._usable(found, current):
                return found[0], float(found[1])
        try:
            value, lifetime = await login()
            await self._call(store.save(value, lifetime if lifetime is not None else self._assumed_lifetime))
            return value, lifetime
        finally:
            if lock_id is not None and lock_id is not _FAILED:
                await self._call(store.unlock(lock_id))

    async def discard(self, token: str) -> None:
        """Amili refused `token`: drop it from the store (if still there), and never adopt it again."""
        self._refused = token
        await self._call(self._store.discard(token))

    def _usable(self, found: Any, current: str | None) -> bool:
        if found is None or found is _FAILED:
            return False
        try:
            value, lifetime = found
            return isinstance(value, str) and value not in (self._refused, current) and float(lifetime) > 10.0
        except (TypeError, ValueError):
            return False

    async def _poll(self, current: str | None) -> Any:
        """Load until a usable token appears, the store fails, or `wait` seconds (on our clock) have passed."""
        from tenacity import AsyncRetrying, retry_if_result, wait_exponential

        give_up_at = self._clock() + self._wait
        polling = AsyncRetrying(
            retry=retry_if_result(lambda found: found is not _FAILED and not self._usable(found, current)),
            wait=wait_exponential(multiplier=0.05, max=0.5),
            stop=lambda _: self._clock() >= give_up_at,
            retry_error_callback=lambda _: None,  # nobody saved one in time: we log in ourselves
            sleep=self._sleep,
        )

        async def load() -> Any:  # a coroutine function: tenacity awaits only those
            return await self._call(self._store.load())

        return await polling(load)

    async def _call(self, call: Awaitable[T]) -> T | Any:
        """`await call`, or `_FAILED` (logged once) when the store raises or is slow: payments never wait on it."""
        import anyio

        try:
            with anyio.fail_after(self._timeout):
                return await call
        except Exception as exc:  # any failure of somebody else's store: fall back to the local cache
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            logger.log(level, "token store failed (%s); using the process-local token cache", type(exc).__name__)
            return _FAILED
