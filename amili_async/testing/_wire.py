"""Wire-level helpers shared by the fake: requests, replies, JSON, dates and Eve envelopes.

Dates, JSON and ids come from the SDK's own `amili_async._wire`, so the fake and the SDK can never disagree
on them. Everything here is framework-neutral: the httpx transport, the ASGI app and the socket server all turn
their native request into a `WireRequest`, and send back the `Outcome` the fake decides on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

import attrs

from .._wire import BadJson, dumps, is_object_id, parse_http_date, to_decimal
from .._wire import format_rfc1123_epoch as format_http_date
from .._wire import loads_exact as loads

__all__ = [
    "BadJson",
    "Handler",
    "Outcome",
    "Reply",
    "WireRequest",
    "dumps",
    "error_reply",
    "format_http_date",
    "html_error_reply",
    "is_object_id",
    "json_reply",
    "loads",
    "parse_http_date",
    "to_decimal",
    "validation_reply",
]

JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"


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


Action = Literal["respond", "drop", "connect_error", "stall", "hang"]


@attrs.define(slots=True)
class Outcome:
    """What a frontend must do with a request: answer (maybe late), stall mid-body, drop or refuse it, or
    never answer at all ("hang": the client's read timeout ends the wait).

    For "stall", only `reply.body[:stall_at]` is sent after the headers, then nothing more.
    """

    action: Action
    reply: Reply | None = None
    delay: float = 0.0
    stall_at: int = 0


# -- replies -------------------------------------------------------------------------------------------


class Handler(Protocol):
    """What a front end (httpx transport, ASGI app, socket server) needs: one request in, one outcome out.

    `FakeAmili` is one; the front ends depend on this protocol, never on the fake itself."""

    def handle(self, req: WireRequest) -> Outcome: ...


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
