"""The wire protocol, written once: the SDK, the in-memory Amili and the CLI all import it from here.

- Paths and algorithms: the token endpoint and the JWT algorithms Amili accepts; the default cap on an answer.
- Ids: MongoDB ObjectIds, 24 lowercase hex digits.
- Dates: RFC 1123 in GMT (`Tue, 07 Oct 2025 08:15:30 GMT`) on the way out; RFC 1123 or ISO 8601 read, always
  to aware datetimes. `parse_http_date` is the strict reading Eve applies to a request body.
- JSON: money is `Decimal` in Python and a JSON *number* on the wire, written with its exact digits
  (`Decimal("250.00")` -> `250.00`); datetimes are written as RFC 1123. `loads` is the fast reading (orjson);
  `loads_exact` reads every non-integer number as an exact `Decimal` and refuses NaN and Infinity.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

__all__ = [
    "JWT_ALGORITHMS",
    "OBJECT_ID",
    "TOKEN_PATH",
    "BadJson",
    "dumps",
    "format_rfc1123",
    "format_rfc1123_epoch",
    "is_object_id",
    "loads",
    "loads_exact",
    "parse_datetime",
    "parse_http_date",
    "to_decimal",
]

TOKEN_PATH = "/authenticates/api-code"
JWT_ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512")
MAX_BODY = 16 * 1024 * 1024  # the default cap on one answer's body, whatever its framing (`max_response_bytes`)
OBJECT_ID = re.compile(r"[0-9a-f]{24}")

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name: i + 1 for i, name in enumerate(_MONTHS)}
_RFC1123 = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{1,2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT"
)


def is_object_id(value: object) -> bool:
    return isinstance(value, str) and OBJECT_ID.fullmatch(value) is not None


# -- dates ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def format_rfc1123(value: datetime) -> str:
    """`Tue, 07 Oct 2025 08:15:30 GMT`, independent of the process locale."""
    utc = value.astimezone(timezone.utc)
    return (
        f"{_DAYS[utc.weekday()]}, {utc.day:02d} {_MONTHS[utc.month - 1]} {utc.year:04d} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d} GMT"
    )


def format_rfc1123_epoch(epoch: float) -> str:
    """RFC 1123 GMT for a Unix time (whole seconds)."""
    return format_rfc1123(datetime.fromtimestamp(int(epoch), timezone.utc))


def parse_http_date(value: str) -> datetime | None:
    """Strict RFC 1123 GMT (what Eve's `strptime` accepts); None when it is not one."""
    m = _RFC1123.fullmatch(value)
    if m is None:
        return None
    _, day, month, year, hh, mm, ss = m.groups()
    try:
        return datetime(int(year), _MONTH_NUMBER[month], int(day), int(hh), int(mm), int(ss), tzinfo=timezone.utc)
    except ValueError:
        return None


def parse_datetime(value: Any) -> datetime:
    """RFC 1123 (`Tue, 07 Oct 2025 08:15:30 GMT`) or ISO 8601 -> an aware datetime; ValueError otherwise."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    return _parse_date_text(value)


@functools.lru_cache(maxsize=256)
def _parse_date_text(value: str) -> datetime:
    # Cached: in a bulk run most answers carry the same few `_created`/`_updated` seconds.
    strict = parse_http_date(value)
    if strict is not None:
        return strict
    parts = value.split()
    if len(parts) == 6 and parts[0].endswith(",") and parts[5] in ("GMT", "UTC", "+0000") and parts[2] in _MONTH_NUMBER:
        hour, minute, second = (int(p) for p in parts[4].split(":"))
        return datetime(
            int(parts[3]), _MONTH_NUMBER[parts[2]], int(parts[1]), hour, minute, second, tzinfo=timezone.utc
        )
    text = value.replace("Z", "+00:00") if value.endswith("Z") else value
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# -- JSON ----------------------------------------------------------------------------------------------


class BadJson(ValueError):
    """Not JSON as Amili reads it (a syntax error, NaN/Infinity, not UTF-8)."""


def _encode_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError("a non-finite Decimal cannot be written as JSON")
        return orjson.Fragment(format(value, "f").encode())
    if isinstance(value, datetime):
        return format_rfc1123(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(payload: Any) -> bytes:
    """JSON bytes; `Decimal` values are written with their exact digits, datetimes as RFC 1123 GMT.

    orjson writes datetimes as ISO 8601 by itself, which Eve refuses in a body and compares as a plain string
    inside `where`; passing them through sends them to `_encode_default` instead."""
    return orjson.dumps(payload, default=_encode_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def loads(raw: bytes | str) -> Any:
    """Fast strict JSON (orjson; NaN, Infinity and other non-JSON are refused with a ValueError)."""
    return orjson.loads(raw)


def _refuse_constant(name: str) -> Any:
    raise BadJson(f"{name} is not allowed")


def loads_exact(data: bytes | str) -> Any:
    """JSON with every non-integer number as an exact `Decimal` (scale kept); NaN and Infinity refused."""
    try:
        return json.loads(data, parse_float=Decimal, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJson(str(exc)) from exc


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
