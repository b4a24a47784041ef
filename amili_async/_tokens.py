"""The token cache every call of a client shares (re-exported by `amili_async.auth`).

What a waiting call may expect from it:

- **One login at a time** for all callers (an anyio lock), shielded from the cancellation of the caller that
  happened to start it, each login bounded by `timeout`.
- **Early, not late.** From `refresh_at` (10 % of the lifetime before expiry, at most a minute) one caller
  tries to renew while everybody else goes on with the cached token; if that fails, the cached token is still
  served. Only from `renew_by` (2 % before expiry, at most 5 s) must calls wait for a new one.
- **An outage costs time.** A login that fails because the endpoint is down (5xx, 408/429, connect error,
  timeout) is tried again with jittered exponential back-off, as long as the waiting call's deadline allows;
  a caller whose deadline passes leaves, and the next one in line carries on, within the same back-off.
- **A refusal is final and shared.** 401/403/422 from the token endpoint, or two freshly issued tokens refused
  in a row (neither ever accepted by Amili), fail every waiting and every new call at once with the same
  `AuthenticationError` until `refusal_cooldown` has passed: one login per cool-down, however many calls.
- **Many processes** can share one login through a `TokenStore` (see `amili_async.auth.TokenStore` and
  `_shared_login.py`): load first, else take the store's lock and log in, else wait for the process holding
  it (or for its lock to expire). Any failure of the store is logged once and the cache works on locally: a
  payment never waits on the store. A valid cached token never touches the store.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

import attrs

from . import errors
from ._shared_login import SharedLogin, TokenStore
from ._wire import TOKEN_PATH
from .errors import AmiliError, AuthenticationError, TransportError

__all__ = ["Auth", "Token", "TokenCache", "TokenGrant", "TokenSender", "TokenStore"]

logger = logging.getLogger("amili_async")
T = TypeVar("T")
# (method, path, headers, body) -> (status, headers, body). Sends once, with the token timeout, no retries.
TokenSender = Callable[[str, str, Mapping[str, str], bytes | None], Awaitable[tuple[int, Mapping[str, str], bytes]]]


@attrs.frozen
class TokenGrant:
    """What a provider obtained: the token and, when known, how many seconds it lives."""

    value: str = attrs.field(repr=False)
    lifetime: float | None = None


class Auth(Protocol):
    """A way to obtain access tokens (`amili_async.auth` has three). `refreshable` is False for a token that
    cannot be renewed."""

    refreshable: bool

    async def fetch(self, send: TokenSender) -> TokenGrant: ...


@attrs.frozen
class Token:
    value: str = attrs.field(repr=False)
    generation: int
    refresh_at: float  # monotonic: one caller tries to renew early from here on (advisory)
    renew_by: float  # monotonic: calls wait for a new token from here on (mandatory)
    expires_at: float  # monotonic


def _failure_kind(exc: AmiliError) -> str:
    if isinstance(exc, TransportError):  # never reached the endpoint, or it did not answer in time
        return "outage"
    status = exc.status_code
    if status in (401, 403, 422):
        return "refused"
    if status is not None and (status >= 500 or status in (408, 425, 429)):
        return "outage"
    return "final"  # an answer we cannot use (no token in it, a redirect, another 4xx): retrying will not help


class TokenCache:
    """One per client: the current token, renewed single-flight. See the module docstring for the rules.

    `generation` goes up by one with every token obtained; a call that got a 401 passes the token it used to
    `refused`, so a burst of 401s for the same token causes exactly one renewal.
    """

    def __init__(
        self,
        auth: Auth,
        send: TokenSender,
        *,
        timeout: float = 10.0,
        assumed_lifetime: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        failure_backoff: float = 0.5,
        failure_backoff_cap: float = 10.0,
        refusal_cooldown: float = 30.0,
        store: TokenStore | None = None,
        store_timeout: float = 1.0,
        store_wait: float = 2.0,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        import anyio  # not at module level: `import amili_async` stays light

        self._auth = auth
        self._send = send
        self._timeout = timeout
        self._assumed_lifetime = assumed_lifetime
        self._clock = clock
        self._backoff = failure_backoff
        self._backoff_cap = failure_backoff_cap
        self._cooldown = refusal_cooldown
        self._sleep = sleep or anyio.sleep
        self._shared = None if store is None else SharedLogin(store, timeout, store_timeout, store_wait, self._sleep)
        self._lock = anyio.Lock()
        self._token: Token | None = None
        self._generation = 0
        self._accepted = 0  # the newest generation Amili accepted
        self._unaccepted_refusals = 0  # tokens refused in a row that Amili never accepted
        self._refused_generation = 0
        self._refused_value: str | None = None  # never adopt this one again from the store
        self._attempts = 0  # logins finished, successful or not
        self._failures = 0  # logins failed in a row because the endpoint was down
        self._last_error: AmiliError | None = None
        self._retry_not_before = 0.0
        self._blocked: AmiliError | None = None  # a final failure, shared until `_blocked_until`
        self._blocked_until = 0.0
        self.requests = 0  # token requests actually sent

    def __repr__(self) -> str:
        token = self._token
        fresh = token is not None and self._clock() < token.refresh_at
        return f"TokenCache(generation={self._generation}, fresh={fresh})"

    @property
    def refusal(self) -> AuthenticationError | None:
        """The shared credential refusal while its cool-down lasts, else None."""
        blocked = self._blocked
        if isinstance(blocked, AuthenticationError) and self._clock() < self._blocked_until:
            return blocked
        return None

    @property
    def last_error(self) -> AmiliError | None:
        """Why the last login failed (None after a success)."""
        return self._last_error

    # -- what calls use ------------------------------------------------------------------------------------

    def fresh(self) -> Token | None:
        """The cached token when no renewal is due yet (the path of nearly every call: no await at all)."""
        token = self._token
        return token if token is not None and self._clock() < token.refresh_at else None

    async def get(self, wait: float | None = None) -> Token:
        """A usable token. `wait`: how long this caller may wait for one while the endpoint is down
        (None: one login attempt, whose failure every caller queued behind it shares)."""
        token = self._token
        if token is not None:
            now = self._clock()
            if now < token.refresh_at:
                return token
            if now < token.renew_by:
                return await self._renew_early(token)
        return await self._wait_for_new(wait)

    def accepted(self, token: Token) -> None:
        """Amili answered something other than 401 to `token`: the credentials work."""
        if token.generation > self._accepted:
            self._accepted = token.generation
            self._unaccepted_refusals = 0

    async def refused(self, token: Token) -> bool:
        """Amili answered 401 to `token`. True: send once more with a newer token; False: the 401 is final."""
        if not self._auth.refreshable:
            return False
        if token.generation < self._generation:
            return True  # somebody already renewed it
        if self._blocked is not None and self._clock() < self._blocked_until:
            return False
        if token.generation == self._refused_generation:
            return True  # another call already reported this token: the renewal is under way
        self._refused_generation = token.generation
        self._expire(token.generation)
        self._refused_value = token.value
        if self._shared is not None:
            await self._shared.discard(token.value)
        if token.generation <= self._accepted:
            return True  # a token that worked was revoked: renew once
        self._unaccepted_refusals += 1
        if self._unaccepted_refusals < 2:
            return True
        self._block(
            AuthenticationError(
                "Amili refused two freshly issued access tokens in a row: the credentials are not accepted",
                status_code=401,
                path=TOKEN_PATH,
            )
        )
        return False

    async def invalidate(self, generation: int) -> bool:
        """Drop token `generation` unless a newer one is here. False for a token that cannot be renewed."""
        if not self._auth.refreshable:
            return False
        self._expire(generation)
        return True

    def _expire(self, generation: int) -> None:
        token = self._token
        if token is not None and token.generation == generation:
            gone = float("-inf")
            self._token = attrs.evolve(token, refresh_at=gone, renew_by=gone, expires_at=gone)

    # -- renewing ------------------------------------------------------------------------------------------

    async def _renew_early(self, token: Token) -> Token:
        """Advisory window: one caller renews, the others (and it, on failure) keep the cached token."""
        import anyio

        if self._clock() < max(self._retry_not_before, self._blocked_until):
            return token
        try:
            self._lock.acquire_nowait()
        except anyio.WouldBlock:
            return token  # somebody is renewing already
        try:
            if self._token is not token:
                return self._token or token
            return await self._login_once()
        except AmiliError as exc:
            logger.warning("early token renewal failed (%s); the current token is still valid", type(exc).__name__)
            return token
        finally:
            self._lock.release()

    async def _wait_for_new(self, wait: float | None) -> Token:
        seen = self._attempts
        deadline = None if wait is None else self._clock() + wait
        async with self._lock:
            while True:
                token = self._token
                now = self._clock()
                if token is not None and now < token.renew_by:
                    return token
                blocked = self._blocked
                if blocked is not None and now < self._blocked_until:
                    raise copy.copy(blocked)
                last = self._last_error
                if last is not None and (deadline is None and self._attempts != seen):
                    raise copy.copy(last)  # queued behind a failed login, with no time to wait: share it
                pause = self._retry_not_before - now
                if pause > 0:
                    if last is not None and deadline is not None and now + pause >= deadline:
                        raise copy.copy(last)
                    await self._sleep(pause)
                try:
                    return await self._login_once()
                except AmiliError as exc:
                    if deadline is None or _failure_kind(exc) != "outage":
                        raise
                    # the endpoint is down: try again after the back-off, while this caller's deadline allows

    async def _login_once(self) -> Token:
        """One login (through the store when there is one), shielded; records how it failed."""
        import anyio

        try:
            with anyio.CancelScope(shield=True):
                grant = await self._obtain()
        except AmiliError as exc:
            shared = self._record_failure(exc)
            if shared is exc:
                raise
            raise shared from exc
        finally:
            # Counted once the attempt is over, so every caller that queued while it ran shares its outcome.
            self._attempts += 1
        return self._install(grant.value, grant.lifetime)

    async def _login(self) -> TokenGrant:
        import anyio

        if self._auth.refreshable:  # a static token is handed over, not requested
            self.requests += 1
        try:
            with anyio.fail_after(self._timeout):
                return await self._auth.fetch(self._send)
        except AmiliError:  # before TimeoutError: our TimeoutError is one of those too
            raise
        except TimeoutError:
            raise errors.TimeoutError(
                f"could not obtain an access token: the token endpoint did not answer within {self._timeout} s",
                method=getattr(self._auth, "login_method", "GET"),  # issue 11: POST for ApiCodeAuth
                path=TOKEN_PATH,
            ) from None

    def _install(self, value: str, lifetime: float | None) -> Token:
        lifetime = lifetime if lifetime is not None else self._assumed_lifetime
        if not self._auth.refreshable:
            lifetime = float("inf")
        now = self._clock()
        self._generation += 1
        self._token = Token(
            value,
            self._generation,
            refresh_at=now + lifetime - min(60.0, lifetime * 0.1),
            renew_by=now + lifetime - min(5.0, lifetime * 0.02),
            expires_at=now + lifetime,
        )
        self._failures = 0
        self._last_error = None
        self._retry_not_before = 0.0
        self._blocked = None
        return self._token

    def _record_failure(self, error: AmiliError) -> AmiliError:
        """Remember how a login failed; the error every caller gets for it (a refusal: an AuthenticationError)."""
        kind = _failure_kind(error)
        if kind == "outage":
            self._failures += 1
            self._last_error = error
            delay = min(self._backoff_cap, self._backoff * 2 ** (self._failures - 1))
            self._retry_not_before = self._clock() + delay * random.uniform(0.5, 1.0)
            return error
        if kind == "refused" and not isinstance(error, AuthenticationError):
            refused = AuthenticationError(
                error.message, status_code=error.status_code, issues=error.issues, method=error.method, path=error.path
            )
            refused.__cause__ = error
            error = refused
        self._block(error)
        return copy.copy(error)

    def _block(self, error: AmiliError) -> None:
        self._blocked = self._last_error = error
        self._blocked_until = self._clock() + self._cooldown
        logger.warning("could not log in to Amili (%s); calls fail at once for %.0f s", error, self._cooldown)

    # -- the shared store ----------------------------------------------------------------------------------

    async def _obtain(self) -> TokenGrant:
        if self._shared is None or not self._auth.refreshable:
            return await self._login()
        return TokenGrant(*await self._shared.obtain(self._login, self._usable, self._assumed_lifetime))

    def _usable(self, found: tuple[str, float]) -> bool:
        """A stored token worth adopting: not ours (ours is due for renewal), not refused, living on a while."""
        try:
            value, lifetime = found
            current = self._token.value if self._token is not None else None
            return isinstance(value, str) and value not in (self._refused_value, current) and float(lifetime) > 10.0
        except (TypeError, ValueError):
            return False
