"""The one redaction point: every text that came over the wire passes here before it reaches an error or a log.

A client owns one `Redactor`. The auth feeds it the API code and the private key when the client is built;
the pipeline adds each signed login JWT before it is sent, and each access token before an error is built.
Errors and log lines name a request by method, path and the *shape* of its query (`describe_query`), never
by query values; transport exceptions are reduced to their class name and a scrubbed message
(`transport_text`) and never chained, because they hold the request and its `X-API-Key` header.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .errors import excerpt

__all__ = ["REDACTED", "Redactor", "describe_query", "named", "query_values", "secrets_of", "transport_text"]


REDACTED = "***"
_MIN_SECRET = 6  # shorter strings are too common to take out of a text without destroying it
_RECENT = 8  # access tokens and login JWTs kept (the current ones and a few before them)
_MIN_EXTRA = 4  # a query value shorter than this is not worth hiding (and would shred the text)
_MAX_ERROR_BODY = 64 * 1024  # an error envelope is small; a bigger error answer is kept as an excerpt only
_HTML_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})
_QUERY = re.compile(r"\?(?:[^\s'\"<>&=#?]+=[^\s'\"<>&#]*&?)+")


class Redactor:
    """One client's secrets, and the one function that takes every spelling of them out of a text.

    A secret is removed raw, JSON-escaped (`\\/`, `\\uXXXX` in either case, `\\"`) and URL-encoded (`%2F`
    in either case, `+` for a space); a PEM key by each line of its body and by the body joined; a JWT also by
    its claims and its signature (the claims decode to the API code). Plain substring searches, longest
    spelling first: fast enough for the error path (about 10 ms for a 64 KiB body), never run on success.
    """

    __slots__ = ("_fixed", "_recent", "_sorted")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._fixed: dict[str, None] = {}
        self._recent: dict[str, tuple[str, ...]] = {}  # a short-lived secret -> its spellings, oldest first
        self._sorted: list[str] | None = None
        for secret in secrets:
            self.add(secret)

    def __repr__(self) -> str:
        return f"Redactor({len(self._fixed)} spellings, {len(self._recent)} recent secrets)"

    def add(self, secret: str) -> None:
        """A secret for the life of the client (API code, private key)."""
        self._fixed.update(dict.fromkeys(_forms(_parts(secret))))
        self._sorted = None

    def remember(self, secret: str) -> None:
        """A short-lived secret (access token, login JWT); the oldest is forgotten after a few newer ones."""
        if not secret or secret in self._recent:
            return
        self._recent[secret] = tuple(_forms(_parts(secret)))
        if len(self._recent) > _RECENT:
            del self._recent[next(iter(self._recent))]
        self._sorted = None

    def scrub(self, text: str, extra: Iterable[str] = ()) -> str:
        """`text` without any secret, nor any of `extra` (the query values of the failed request, say),
        and without the query part of any URL in it."""
        forms = self._sorted
        if forms is None:
            every = {*self._fixed, *(form for spellings in self._recent.values() for form in spellings)}
            forms = self._sorted = sorted(every, key=len, reverse=True)
        more = [e for e in extra if len(e) >= _MIN_EXTRA]
        if more:
            forms = sorted({*forms, *_forms(more)}, key=len, reverse=True)
        for form in forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return _QUERY.sub("?…", text) if "?" in text else text

    def scrub_answer(self, raw: bytes, extra: Iterable[str] = ()) -> bytes:
        """An answer's body, scrubbed; one too big to be an error envelope becomes a (scrubbed) excerpt.

        Scrubbed *before* it is cut: cutting first could leave the first half of a secret at the cut."""
        big = len(raw) > _MAX_ERROR_BODY
        text = self.scrub(raw[:_MAX_ERROR_BODY].decode("utf-8", "surrogateescape"), extra)
        return (excerpt(text.encode("utf-8", "surrogateescape")) if big else text).encode("utf-8", "surrogateescape")

    # What the pipeline calls: each takes the token the request was sent with and the request's query.

    def answer(self, raw: bytes, token: str, params: Mapping[str, str] | None) -> bytes:
        """An error answer to a request sent with `token`: scrubbed, its query values included."""
        self.remember(token)
        return self.scrub_answer(raw, query_values(params))

    def unreadable(self, raw: bytes, token: str, params: Mapping[str, str] | None) -> str:
        """A short, scrubbed excerpt of an answer that could not be read."""
        return excerpt(self.answer(raw, token, params))

    def transport_error(self, exc: BaseException, token: str, params: Mapping[str, str] | None) -> str:
        """What a transport exception may say in our errors: its class name and its scrubbed message."""
        self.remember(token)
        return transport_text(exc, self, query_values(params))


def _parts(secret: str) -> list[str]:
    """The pieces of a secret that must never show: itself, a PEM's body lines, a JWT's secret parts."""
    secret = secret.strip()
    parts = [secret]
    if "-----BEGIN" in secret:
        body = [line.strip() for line in secret.splitlines() if line.strip() and not line.startswith("-----")]
        body = [line for line in body if ":" not in line]  # PEM headers (Proc-Type: ...) are not secret
        parts = ["".join(body), *body]
    elif secret.count(".") == 2:
        parts += secret.split(".")[1:]
    return [p for p in parts if len(p) >= _MIN_SECRET]


def _forms(secrets: Iterable[str]) -> set[str]:
    """Every spelling of each secret a server, a proxy or a log line may use."""
    import json
    from urllib.parse import quote, quote_plus

    forms: set[str] = set()
    for s in secrets:
        escaped = {json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1]}
        escaped |= {e.translate(_HTML_SAFE) for e in escaped}  # Go's encoder: <, >, & as \u003c, \u003e, \u0026
        escaped |= {e.replace("/", "\\/") for e in escaped}  # PHP's: / as \/
        every = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else json.dumps(c)[1:-1] for c in s)
        urls = {quote(s, safe=""), quote(s, safe="/"), quote_plus(s, safe="")}
        urls |= {re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), u) for u in urls}
        spelled = {s, *escaped, every, every.upper().replace("\\U", "\\u"), *urls}
        # And as the repr() of a str or bytes holding them shows them (a parser's error quoting the line).
        forms |= spelled | {f.replace("\\", "\\\\") for f in spelled if "\\" in f}
    return forms


def secrets_of(auth: Any) -> list[str]:
    """The long-lived secrets an auth object holds (API code, private key PEM, static token), by attribute."""
    found: list[str] = []
    for name in ("api_code", "token"):
        value = getattr(auth, name, None)
        if isinstance(value, str):
            found.append(value)
    key = getattr(auth, "private_key", None)
    if isinstance(key, bytes):
        key = key.decode("ascii", "replace")
    if isinstance(key, str):
        found.append(key)
    elif key is not None:
        found += _pem_forms(key)
    return found


def _pem_forms(key: Any) -> list[str]:
    """A key object given instead of a PEM: the PEM texts it would be written as."""
    try:
        from cryptography.hazmat.primitives import serialization as s

        return [
            key.private_bytes(s.Encoding.PEM, fmt, s.NoEncryption()).decode()
            for fmt in (s.PrivateFormat.PKCS8, s.PrivateFormat.TraditionalOpenSSL)
        ]
    except Exception:  # not a key cryptography can write: nothing more to hide than what it holds
        return []


class Request(Protocol):
    """What `named` needs of a request (the pipeline's `Call`)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def params(self) -> Mapping[str, str] | None: ...


def named(request: Request, attempts: int) -> dict[str, Any]:
    """How an error names its request: method, path and the query's shape (never its values), and attempts."""
    return dict(method=request.method, path=request.path, attempts=attempts, query=describe_query(request.params))


def describe_query(params: Mapping[str, str] | None) -> str:
    """The shape of a query string for errors and logs: `?where={customer_id_number}&page=2`.

    Parameter names, the keys of `where`, and the page number and size (the SDK's own numbers); never a
    value a caller put in `where` or `sort` (a personal identity number in a filter stays out of the logs).
    """
    if not params:
        return ""
    shown = []
    for name, value in params.items():
        if name == "where":
            keys = _where_keys(value)
            shown.append(f"where={{{','.join(keys)}}}" if keys is not None else "where=…")
        elif name in ("page", "max_results") and value.isdigit():
            shown.append(f"{name}={value}")
        else:
            shown.append(name)
    return "?" + "&".join(shown)


def query_values(params: Mapping[str, str] | None) -> list[str]:
    """The values inside a request's `where` (and `sort`): taken out of error bodies that echo the URL."""
    if not params:
        return []
    values: list[str] = []
    for name, value in params.items():
        if name in ("where", "sort"):
            values.append(value)
            values += _leaves(_json(value))
    return values


def _where_keys(value: str) -> list[str] | None:
    where = _json(value)
    return [str(k) for k in where] if isinstance(where, Mapping) else None


def _json(value: str) -> Any:
    import orjson

    try:
        return orjson.loads(value)
    except ValueError:
        return None


def _leaves(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [] if value is None or isinstance(value, bool) else [str(value)]


def transport_text(exc: BaseException, redactor: Redactor, extra: Iterable[str] = ()) -> str:
    """What a transport exception may say in our errors: its class name and its scrubbed message."""
    message = str(exc)
    name = type(exc).__name__
    return f"{name}: {redactor.scrub(message, extra)}" if message else name
