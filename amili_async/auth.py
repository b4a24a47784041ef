"""Credentials, and the token cache every call of a client shares.

Amili hands out short-lived access tokens at `/authenticates/api-code`; every other call carries one in
`X-API-Key`. Three ways to get one:

- `ApiCodeJwtAuth` (the documented default): `GET /authenticates/api-code` with a JWT `{"api_code", "exp"}`
  signed by your private key (ES256 unless you say otherwise; ES384/512 and RS256/384/512 accepted),
  valid for 10 minutes.
- `ApiCodeAuth`: `POST /authenticates/api-code` with `{"api_code": ...}` in the body (for accounts whose static
  IP address Amili has whitelisted).
- `StaticTokenAuth`: a token you obtained yourself; never refreshed.

The token endpoint's answer is not documented. We accept a JSON object with the token under `token`,
`access_token` or `accessToken` (or a bare JSON string / plain-text token), and its lifetime from `expires_in`
(seconds), `expires` / `expires_at` / `exp` (RFC 1123, ISO 8601 or epoch seconds), or the token's own JWT `exp`
claim; failing all of those we assume `assumed_lifetime` seconds (5 minutes by default). Expiry is tracked on
the monotonic clock, so a wrong wall clock cannot cause a refresh loop. A server clock far from ours moves the
login JWT's `exp`, and the answer's absolute expiry times, onto the server's clock (see `_clock`).

`TokenCache` (in `_tokens.py`, re-exported here with `Token` and the `TokenStore` protocol) is the cache every
call of a client shares: one login at a time, early renewal that never fails a call while the cached token is
valid, back-off through an outage of the token endpoint, a refusal of the credentials shared by every call,
and an optional `TokenStore` that shares one login between processes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from . import errors
from ._clock import ServerClock, server_now
from .errors import AmiliError, ConfigurationError, ResponseDecodeError, error_for_status

if TYPE_CHECKING:  # the token endpoint's helpers and the token cache come with the first client, not with the
    # credentials (`import amili_async` stays light); the cache's names are re-exported here (`__getattr__`)
    from . import _telemetry
    from ._redact import Redactor
    from ._tokens import Auth, Token, TokenCache, TokenGrant, TokenSender, TokenStore
    from .transports import Exchange

__all__ = [
    "ApiCodeAuth",
    "ApiCodeJwtAuth",
    "Auth",
    "StaticTokenAuth",
    "Token",
    "TokenCache",
    "TokenEndpoint",
    "TokenGrant",
    "TokenStore",
]

from ._wire import JWT_ALGORITHMS, TOKEN_PATH, dumps, loads, parse_datetime

_FROM_TOKENS = frozenset(("Auth", "Token", "TokenCache", "TokenGrant", "TokenSender", "TokenStore"))


def __getattr__(name: str) -> Any:
    if name in _FROM_TOKENS:
        from . import _tokens

        return getattr(_tokens, name)
    raise AttributeError(f"module 'amili_async.auth' has no attribute {name!r}")


_TOKEN_CHARS = re.compile(r"[\x21-\x7e]{1,8192}")


def _api_code(value: Any) -> str:
    return _secret(value, "api_code")


def _token(value: Any) -> str:
    return _secret(value, "token")


def _secret(value: Any, name: str) -> str:
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} is missing or empty")
    return value.strip()


@attrs.define(repr=False)
class ApiCodeJwtAuth:
    """`GET /authenticates/api-code` with a JWT signed by your private key (the documented default)."""

    api_code: str = attrs.field(converter=_api_code)
    private_key: Any = attrs.field()
    algorithm: str = "ES256"
    jwt_lifetime: float = 600.0
    refreshable: bool = attrs.field(default=True, init=False)
    _signing_key: Any = attrs.field(default=None, init=False)
    clock: ServerClock = attrs.field(factory=ServerClock, init=False)  # the server's, as learned (issue 16)

    def __attrs_post_init__(self) -> None:
        if self.algorithm not in JWT_ALGORITHMS:
            raise ConfigurationError(f"algorithm must be one of {', '.join(JWT_ALGORITHMS)}, got {self.algorithm!r}")
        self._signing_key = _load_private_key(self.private_key, self.algorithm)

    def __repr__(self) -> str:
        return f"ApiCodeJwtAuth(api_code='***', private_key='***', algorithm={self.algorithm!r})"

    def signed_jwt(self) -> str:
        import jwt  # PyJWT, imported only when a token is needed

        claims = {"api_code": self.api_code, "exp": self.clock.expiry(self.jwt_lifetime)}
        return jwt.encode(claims, self._signing_key, algorithm=self.algorithm)

    async def fetch(self, send: TokenSender) -> TokenGrant:
        answer = await send("GET", TOKEN_PATH, {"X-API-Key": self.signed_jwt(), "Accept": "application/json"}, None)
        if self.clock.learn(answer[1]) and 400 <= answer[0] < 500:  # refused by a clock far from ours (issue 16):
            answer = await send("GET", TOKEN_PATH, {"X-API-Key": self.signed_jwt(), "Accept": "application/json"}, None)
            self.clock.learn(answer[1])  # ... signed again, once, on the server's clock
        return parse_token_answer(answer)


def _load_private_key(key: Any, algorithm: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        loaded: Any = key
    else:
        pem = _secret(key, "private_key").encode()
        try:
            loaded = load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            # The message of the underlying error never contains the key, but keep ours generic anyway.
            raise ConfigurationError("private_key is not a readable unencrypted PEM private key") from exc
    wants_ec = algorithm.startswith("ES")
    if wants_ec != isinstance(loaded, ec.EllipticCurvePrivateKey):
        kind = "an EC" if wants_ec else "an RSA"
        raise ConfigurationError(f"algorithm {algorithm} needs {kind} private key")
    # PyJWT refuses to sign with a curve other than the algorithm's (ES256 P-256, ES384 P-384, ES512 P-521);
    # say so now rather than on the first request.
    curve = _CURVE_FOR.get(algorithm)
    if curve is not None and loaded.curve.name != curve:
        raise ConfigurationError(f"algorithm {algorithm} needs a {curve} key, got a {loaded.curve.name} key")
    return loaded


_CURVE_FOR = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


@attrs.define(repr=False)
class ApiCodeAuth:
    """`POST /authenticates/api-code` with the API code in the body (static-IP accounts)."""

    login_method = "POST"  # how its errors name the login (issue 11)
    api_code: str = attrs.field(converter=_api_code)
    refreshable: bool = attrs.field(default=True, init=False)

    def __repr__(self) -> str:
        return "ApiCodeAuth(api_code='***')"

    async def fetch(self, send: TokenSender) -> TokenGrant:
        body = dumps({"api_code": self.api_code})
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        return parse_token_answer(await send(self.login_method, TOKEN_PATH, headers, body), self.login_method)


@attrs.define(repr=False)
class StaticTokenAuth:
    """A token obtained elsewhere. It is never refreshed: a 401 is final."""

    token: str = attrs.field(converter=_token)
    refreshable: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        check_token_text(self.token, ConfigurationError)

    def __repr__(self) -> str:
        return "StaticTokenAuth(token='***')"

    async def fetch(self, send: TokenSender) -> TokenGrant:
        from ._tokens import TokenGrant

        return TokenGrant(self.token)


def check_token_text(token: str, error: type[AmiliError]) -> None:
    """Visible ASCII only: a CR/LF or non-ASCII character would break the header (and h11 echoes the value)."""
    if not _TOKEN_CHARS.fullmatch(token):
        raise error("the access token contains characters that cannot go in an HTTP header (not shown)")


_TOKEN_KEYS = ("token", "access_token", "accessToken")
_EXPIRY_KEYS = ("expires", "expires_at", "exp", "expiry")


def parse_token_answer(answer: tuple[int, Mapping[str, str], bytes], method: str = "GET") -> TokenGrant:
    """The answer of the login (`method`: GET, or POST for `ApiCodeAuth`) -> a grant, or its error.

    The token endpoint's door has scrubbed an error answer of the JWT and the API code (issue 11)."""
    from ._tokens import TokenGrant

    status, headers, raw = answer
    if not 200 <= status < 300:  # a redirect is an error too: its body is not a token
        payload = _json_or_none(raw)
        err = error_for_status(status, payload, raw, method=method, path=TOKEN_PATH)
        err.message = f"could not obtain an access token: {err.message}"
        raise err
    payload = _json_or_none(raw)
    is_json = payload is not None or raw.strip() == b"null"
    token: Any = None
    lifetime: float | None = None
    now = server_now(headers)  # absolute expiry times are on the server's clock (issue 16)
    if isinstance(payload, Mapping):
        token = next((payload[k] for k in _TOKEN_KEYS if isinstance(payload.get(k), str)), None)
        lifetime = _lifetime(payload, now)
    elif isinstance(payload, str):
        token = payload
    elif not is_json and raw.strip() and b"{" not in raw:
        token = raw.decode("ascii", "replace").strip()
    if not isinstance(token, str) or not token:
        raise ResponseDecodeError(
            "the token endpoint answered without a token (body not shown)",
            status_code=status,
            method=method,
            path=TOKEN_PATH,
        )
    check_token_text(token, ResponseDecodeError)
    if lifetime is None:
        lifetime = _jwt_lifetime(token, now)
    if lifetime is not None and lifetime <= 0:
        lifetime = None
    return TokenGrant(token, lifetime)


def _json_or_none(raw: bytes) -> Any:
    try:
        return loads(raw) if raw else None
    except ValueError:
        return None


def _lifetime(payload: Mapping[str, Any], now: float) -> float | None:
    expires_in = payload.get("expires_in")
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool):
        return float(expires_in)
    for key in _EXPIRY_KEYS:
        value = payload.get(key)
        if value is None or isinstance(value, bool):
            continue
        try:
            if isinstance(value, (int, float)):
                return float(value) - now
            return parse_datetime(value).timestamp() - now
        except (ValueError, KeyError, IndexError):
            continue
    return None


def _jwt_lifetime(token: str, now: float) -> float | None:
    """Seconds until the token's own `exp`, when it is a JWT (read, not verified: it is Amili's business)."""
    if token.count(".") != 2:
        return None
    import jwt  # PyJWT, already loaded by whoever signed the login

    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and not isinstance(exp, bool):
        return float(exp) - now
    return None


def _redactor() -> Redactor:
    from ._redact import Redactor

    return Redactor()


@attrs.frozen
class TokenEndpoint:
    """The door to the token endpoint, given to the cache at construction (no call-back into the client).

    One attempt, with the client's timeouts (the cache bounds the whole fetch with its own), no retry policy.
    The provider's headers replace the client's defaults of the same name (no doubled `Accept`).
    """

    exchange: Exchange
    base_url: str
    headers: tuple[tuple[str, str], ...]
    timeout_ext: Mapping[str, float | None]
    redactor: Redactor = attrs.field(factory=_redactor)  # issue 11: the client's one redaction point
    telemetry: _telemetry.Telemetry | None = None  # a token request is a span, a metric and a log record too

    async def __call__(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        import httpx

        from . import _telemetry

        own = {name.lower() for name in headers}
        sent = [(name, value) for name, value in self.headers if name.lower() not in own]
        sent.extend(headers.items())
        self.redactor.remember(headers.get("X-API-Key", ""))  # the signed login JWT is a secret from now on
        started = time.monotonic()
        try:
            status, answer_headers, raw = await self.exchange(
                method, self.base_url + path, sent, body, self.timeout_ext
            )
        except httpx.TransportError as exc:
            _telemetry.token_request(self.telemetry, method, path, started, None, exc)
            kind = errors.TimeoutError if isinstance(exc, httpx.TimeoutException) else errors.TransportError
            error = kind(f"could not reach the token endpoint: {type(exc).__name__}", method=method, path=path)
        else:  # an error answer may echo the JWT or the API code: scrubbed before anything is built from it
            _telemetry.token_request(self.telemetry, method, path, started, status, None)
            return status, answer_headers, raw if 200 <= status < 300 else self.redactor.scrub_answer(raw)
        raise error  # outside the `except`: not chained to an exception that holds the request
