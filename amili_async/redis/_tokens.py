"""`RedisTokenStore`: one access token for every process that logs in with the same API code.

Keys (all in one Redis Cluster hash slot, thanks to the `{...}` tag):

- `<prefix>:{<base URL>|<id>}:token`: the token, encrypted, living exactly as long as Amili said (`SET PX`,
  read back with `PTTL`: Redis's clock, so the hosts' clocks may disagree);
- `<prefix>:{<base URL>|<id>}:login`: the login lock, `SET NX PX` with a random id, released by
  compare-and-delete, so a process that dies mid-login only blocks the others until the lock expires.

`<id>` is a hash of the API code, never the code. The token is encrypted (AES-GCM) with a key derived from
the API code and the base URL, so reading Redis (a dump, `MONITOR`, a shared instance) does not give a token
to anyone who could not log in already. A short keyed fingerprint before the ciphertext lets a script drop
the stored token only while it is still the one Amili refused (`discard`), without the script ever seeing it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from typing import Any

from ..errors import ConfigurationError
from ._link import RedisDown, RedisLink, RedisSource

__all__ = ["RedisTokenStore"]

logger = logging.getLogger("amili_async")

_LOAD = "return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}"
_SAVE = "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1"
_LOCK = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end return 0"
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# Drop the token only if its fingerprint is still the one given: a token a peer stored since stays.
_DISCARD = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_VERSION = "v1"


def identity_of(auth: Any, identity: str | None) -> str:
    """The secret that tells logins apart: `identity` if given, else the API code of `auth`."""
    secret = identity if identity is not None else getattr(auth, "api_code", None)
    if not isinstance(secret, str) or not secret:
        raise ConfigurationError(
            "a shared Redis store needs auth with an api_code (ApiCodeJwtAuth, ApiCodeAuth) or identity=..."
        )
    return secret


def namespace(prefix: str, base_url: str, secret: str) -> str:
    """`<prefix>:{<base URL>|<hash>}`: one login's keys, never the secret itself."""
    digest = hashlib.sha256(b"amili-async key name\0" + secret.encode()).hexdigest()[:24]
    return f"{prefix}:{{{base_url.rstrip('/')}|{digest}}}"


class RedisTokenStore:
    """The shared backing of the token cache: one login for all processes, on asyncio and trio.

    Args:
        redis: a URL (``redis://...``, ``rediss://...``, ``unix://...``), a ``redis.Redis`` (used from a worker
            thread; works on asyncio and trio) or a ``redis.asyncio.Redis`` (asyncio only).
        base_url: the Amili base URL of the clients that share the token.
        auth: the clients' credentials; only a hash of the API code is used to name the keys.
        identity: instead of ``auth``: any secret string that identifies the login.
        prefix: the first part of every key.
        timeout: seconds a Redis command may take before the store falls back to this process alone.
        recheck: seconds between attempts to reach Redis again after a failure.

    When Redis cannot be reached the store logs one warning and behaves as if it were absent: every process
    keeps its own token. Close it with ``await store.aclose()`` (or ``async with``) when it made its own
    connections from a URL.
    """

    def __init__(
        self,
        redis: RedisSource,
        *,
        base_url: str,
        auth: Any = None,
        identity: str | None = None,
        prefix: str = "amili-async",
        timeout: float = 0.25,
        recheck: float = 5.0,
    ) -> None:
        secret = identity_of(auth, identity)
        space = namespace(prefix, base_url, secret)
        self._token_key = space + ":token"
        self._lock_key = space + ":login"
        self._link = RedisLink(redis, what="token store", timeout=timeout, recheck=recheck)
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        material = HKDF(hashes.SHA256(), 64, salt=None, info=b"amili-async token store " + space.encode()).derive(
            secret.encode()
        )
        self._cipher = AESGCM(material[:32])
        self._mac_key = material[32:]

    def __repr__(self) -> str:
        return f"RedisTokenStore(key={self._token_key!r})"

    async def __aenter__(self) -> RedisTokenStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._link.aclose()

    # -- the TokenStore protocol --------------------------------------------------------------------

    async def load(self) -> tuple[str, float] | None:
        """The shared token and the seconds it still lives, or None (none stored, or Redis unreachable)."""
        try:
            value, pttl = await self._link.script(_LOAD, [self._token_key], [])
        except RedisDown:
            return None
        if value is None or pttl is None or int(pttl) <= 0:
            return None
        token = self._open(value)
        return None if token is None else (token, int(pttl) / 1000)

    async def save(self, token: str, lifetime: float) -> None:
        """Share a token that lives `lifetime` more seconds."""
        ms = int(lifetime * 1000)
        if ms <= 0:
            return
        with contextlib.suppress(RedisDown):  # it is local now
            await self._link.script(_SAVE, [self._token_key], [self._seal(token), ms])

    async def try_lock(self, ttl: float) -> str | None:
        """The right to log in for `ttl` seconds (a lock id), or None while another process holds it.

        With Redis unreachable every process may log in: a local id is returned.
        """
        lock_id = secrets.token_hex(16)
        try:
            won = await self._link.script(_LOCK, [self._lock_key], [lock_id, max(1, int(ttl * 1000))])
        except RedisDown:
            return "local:" + lock_id
        return lock_id if int(won) else None

    async def unlock(self, lock_id: str) -> None:
        """Release the lock, if it is still ours (it may have expired and been taken by another process)."""
        if lock_id.startswith("local:"):
            return
        with contextlib.suppress(RedisDown):  # the lock expires by itself
            await self._link.script(_UNLOCK, [self._lock_key], [lock_id])

    async def discard(self, token: str) -> None:
        """After a 401: drop the stored token, but only if it is still `token` (a peer may have replaced it)."""
        with contextlib.suppress(RedisDown):  # it is local now
            await self._link.script(_DISCARD, [self._token_key], [self._tag(token)])

    # -- sealing ------------------------------------------------------------------------------------

    def _tag(self, token: str) -> str:
        fingerprint = hmac.new(self._mac_key, token.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{_VERSION}.{fingerprint}."

    def _seal(self, token: str) -> str:
        nonce = os.urandom(12)
        sealed = self._cipher.encrypt(nonce, token.encode(), self._token_key.encode())
        return self._tag(token) + base64.urlsafe_b64encode(nonce + sealed).decode()

    def _open(self, value: bytes | str) -> str | None:
        from cryptography.exceptions import InvalidTag

        text = value.decode() if isinstance(value, bytes) else value
        version, _, rest = text.partition(".")
        _fingerprint, _, blob = rest.partition(".")
        try:
            raw = base64.urlsafe_b64decode(blob)
            token = self._cipher.decrypt(raw[:12], raw[12:], self._token_key.encode()).decode()
        except (ValueError, InvalidTag, UnicodeDecodeError):
            logger.warning("ignoring an unreadable token in Redis (%s format); logging in instead", version[:8])
            return None
        return token
