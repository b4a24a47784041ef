"""Wire-level helpers shared by the fake: requests, replies, JSON, dates and Eve envelopes.

Everything here is framework-neutral: the httpx transport, the ASGI app and the socket server all turn
their native request into a `WireRequest`, and send back the `Outcome` the fake decides on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from email.utils import formatdate
from typing import Any, Literal

import attrs
import orjson

JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"

_OBJECT_ID = re.compile(r"[0-9a-f]{24}")
_RFC1123 = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{1,2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT"
)
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, start=1)}


@attrs.define(slots=True)
class WireRequest:
    """One HTTP request as the fake sees it. `headers` has lower-case names; `base_url` has no slash."""

    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes
    base_url: str


@attrs.define(slots=True)
class Reply:
    """An HTTP answer. Frontends add `Content-Length` themselves."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


Action = Literal["respond", "drop", "connect_error", "stall"]


@attrs.define(slots=True)
class Outcome:
    """What a frontend must do with a request: answer (maybe late), stall mid-body, drop or refuse it.

    For "stall", only `reply.body[:stall_at]` is sent after the headers, then nothing more.
    """

    action: Action
    reply: Reply | None = None
    delay: float = 0.0
    stall_at: int = 0


def is_object_id(value: object) -> bool:
    return isinstance(value, str) and _OBJECT_ID.fullmatch(value) is not None


# -- dates -------------------------------------------------------------------------------------------


def format_http_date(epoch: float) -> str:
    """RFC 1123 in GMT, e.g. ``Tue, 07 Oct 2025 08:15:30 GMT`` (locale independent)."""
    return formatdate(epoch, usegmt=True)


def parse_http_date(value: str) -> datetime | None:
    """Parse RFC 1123 GMT strictly (what Eve's `strptime` accepts); None when it is not one."""
    m = _RFC1123.fullmatch(value)
    if m is None:
        return None
    _, day, month, year, hh, mm, ss = m.groups()
    try:
        return datetime(int(year), _MONTHS[month], int(day), int(hh), int(mm), int(ss), tzinfo=timezone.utc)
    except ValueError:
        return None


# -- JSON ----------------------------------------------------------------------------------------------


class BadJson(ValueError):
    """The body is not JSON the fake accepts (syntax error, NaN/Infinity, not UTF-8)."""


def _refuse_constant(name: str) -> Any:
    raise BadJson(f"{name} is not allowed")


def loads(data: bytes | str) -> Any:
    """Parse JSON with every non-integer number as an exact `Decimal`; NaN and Infinity are refused."""
    try:
        return json.loads(data, parse_float=Decimal, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJson(str(exc)) from exc


def _default(value: object) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError("non-finite Decimal cannot be written as JSON")
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """Serialise with `Decimal` written as a plain JSON number (no float round trip)."""
    return orjson.dumps(value, default=_default)


def to_decimal(value: object) -> Decimal | None:
    """A finite Decimal from a JSON number or numeric string (Eve's number coercion); bools are refused."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            return None
        return d if d.is_finite() else None
    return None


# -- replies -------------------------------------------------------------------------------------------


def json_reply(status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, [("Content-Type", JSON_TYPE), *(headers or [])], dumps(body))


_MESSAGES = {
    400: "Bad request: the server could not understand it.",
    401: "Please provide proper credentials",
    403: "Forbidden: this resource belongs to another account.",
    404: "Not found.",
    405: "Method not allowed for this URL.",
    429: "Rate limit exceeded",
    500: "Internal server error.",
}


def error_reply(status: int, message: str | None = None, headers: list[tuple[str, str]] | None = None) -> Reply:
    """Eve's generic error envelope."""
    text = message or _MESSAGES.get(status, "Error.")
    body = {"_status": "ERR", "_error": {"code": status, "message": text}}
    return json_reply(status, body, headers)


def unauthorized() -> Reply:
    return error_reply(401, headers=[("WWW-Authenticate", 'Basic realm="eve"')])


Issues = dict[str, Any]


def render_issues(issues: Mapping[str, Any]) -> dict[str, Any]:
    """Eve shows one message as a string and several as a list; nested documents stay nested."""
    out: dict[str, Any] = {}
    for key, value in issues.items():
        if isinstance(value, Mapping):
            out[key] = render_issues(value)
        elif isinstance(value, list) and len(value) == 1:
            out[key] = value[0]
        else:
            out[key] = value
    return out


def validation_reply(issues: Mapping[str, Any], message: str | None = None) -> Reply:
    body = {
        "_status": "ERR",
        "_issues": render_issues(issues),
        "_error": {"code": 422, "message": message or "Insertion failure: 1 document(s) contain(s) error(s)"},
    }
    return json_reply(422, body)


_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def html_error_reply(status: int) -> Reply:
    """What a crashing app or a proxy in front of it answers: an HTML page, not JSON."""
    reason = _REASONS.get(status, "Server Error")
    page = (
        f"<!doctype html>\n<html><head><title>{status} {reason}</title></head>"
        f"<body><h1>{reason}</h1><p>The server could not complete the request.</p></body></html>\n"
    )
    return Reply(status, [("Content-Type", HTML_TYPE)], page.encode())
