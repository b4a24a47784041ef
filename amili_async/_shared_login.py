"""The token cache's side of a `TokenStore`: one login for many processes, never a wait on the store.

`TokenCache` owns the rules for its own token; this is how it takes part in a shared one:

- **Load first**: a token another process stored (and that lives on for a while) is adopted without a login.
- **Else take the login lock** (held at most `timeout + store_wait`: a login's own bound plus the time peers
  poll), log in, store the token, release the lock.
- **Else wait for the peer that holds it**: poll for its token; when the lock is gone without one (that process
  failed, or died mid-login and its lock expired) take the lock over. Nobody waits longer than twice the life
  of a lock (a holder that died, then the one that took over); after that a process logs in on its own.
- **After a 401** the stored token is dropped only if it is still the refused one (`discard` compares), so a
  process holding an old token never throws away the new one a peer just stored.
- **Any failure of the store** (an exception, or no answer within `store_timeout`) is logged once and the cache
  carries on alone: a payment never waits on the store.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

__all__ = ["SharedLogin", "TokenStore"]

logger = logging.getLogger("amili_async")
T = TypeVar("T")
_FAILED: Any = object()  # a store call that raised or timed out


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


class Grant(Protocol):
    """What a login gives (`TokenGrant`)."""

    @property
    def value(self) -> str: ...

    @property
    def lifetime(self) -> float | None: ...


class SharedLogin:
    """A `TokenStore` seen from one process's `TokenCache` (see the module docstring)."""

    def __init__(
        self,
        store: TokenStore,
        timeout: float,
        store_timeout: float,
        store_wait: float,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._store = store
        self._lock_ttl = timeout + store_wait
        self._store_timeout = store_timeout
        self._sleep = sleep
        self._warned = False

    async def obtain(
        self,
        login: Callable[[], Awaitable[Grant]],
        usable: Callable[[tuple[str, float]], bool],
        assumed_lifetime: float,
    ) -> tuple[str, float | None]:
        """(token, lifetime): a stored one if usable, else `login()`'s (once for all processes if the store works)."""
        store = self._store
        found: Any = await self._call(store.load())
        lock_id: Any = None
        if not self._adoptable(found, usable):
            found, lock_id = await self._turn(usable)
        if self._adoptable(found, usable):
            return found[0], found[1]
        try:
            grant = await login()
            lifetime = grant.lifetime if grant.lifetime is not None else assumed_lifetime
            await self._call(store.save(grant.value, lifetime))
            return grant.value, grant.lifetime
        finally:
            if isinstance(lock_id, str):
                await self._call(store.unlock(lock_id))

    async def discard(self, token: str) -> None:
        await self._call(self._store.discard(token))

    async def _turn(self, usable: Callable[[tuple[str, float]], bool]) -> tuple[Any, Any]:
        """(a token a peer stored, None) or (None, our lock id, or None to log in without the lock)."""
        store = self._store
        waited, step = 0.0, 0.05
        while True:
            lock_id = await self._call(store.try_lock(self._lock_ttl))
            if lock_id is _FAILED:
                return None, None
            # Load after taking the lock: a peer may have stored its token and unlocked just before.
            found = await self._call(store.load())
            if self._adoptable(found, usable) or found is _FAILED or lock_id is not None:
                if lock_id is not None and self._adoptable(found, usable):
                    await self._call(store.unlock(lock_id))
                    lock_id = None
                return found, lock_id
            if waited >= 2 * self._lock_ttl:  # a holder that died, then the one that took over: both timed out
                return None, None
            await self._sleep(step)
            waited, step = waited + step, min(0.5, step * 2)

    @staticmethod
    def _adoptable(found: Any, usable: Callable[[tuple[str, float]], bool]) -> bool:
        return found is not None and found is not _FAILED and usable(found)

    async def _call(self, call: Awaitable[T]) -> T | Any:
        """`await call`, or `_FAILED` (logged once) when the store raises or is slow: payments never wait on it."""
        import anyio

        try:
            with anyio.fail_after(self._store_timeout):
                return await call
        except Exception as exc:  # any failure of somebody else's store: fall back to the local cache
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            logger.log(level, "token store failed (%s); using the process-local token cache", type(exc).__name__)
            return _FAILED
