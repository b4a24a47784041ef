"""Input checks run when an action is built, so bad input never leaves the machine.

Each check raises `ValidationError` naming the field and what is wrong with the value (one message per
problem), without echoing anything that could be a secret or personal data. Nothing else escapes: a date
that does not fit once converted to UTC, text that cannot be encoded, a time zone that fails, a value of
the wrong type — all are a `ValidationError` here, never an `OverflowError` or `TypeError` later.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone
from decimal import Context, Decimal
from typing import Any

from .._wire import OBJECT_ID as _OBJECT_ID
from ..errors import ValidationError

_CURRENCY = re.compile(r"[A-Z]{3}")
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What an identifier must not hold, by Unicode category: C0/C1 controls (Cc), format characters (Cf: bidi
# embeddings, overrides, isolates and marks, zero-width characters, BOM), lone surrogates (Cs: not text at
# all, no encoding can send them) and the line and paragraph separators U+2028/U+2029 (Zl, Zp).
_UNSAFE = {
    "Cc": "control characters",
    "Cf": "invisible formatting characters (bidi controls, zero-width characters)",
    "Cs": "lone surrogates (not valid Unicode text)",
    "Zl": "line separators",
    "Zp": "paragraph separators",
}
# Decimal arithmetic on our terms, not on the caller's thread context (a low `prec` there would make
# quantize() raise InvalidOperation instead of answering).
_DECIMAL = Context(prec=64)
_CENT = Decimal("0.01")

MAX_AMOUNT = Decimal("1000000000000")  # 10^12: well above any single case, and exact through a JSON double
MAX_TEXT = 255
MAX_RESPITE_DAYS = 365


def fail(field: str, problem: str) -> ValidationError:
    return ValidationError(f"{field}: {problem}", issues={field: (problem,)})


def shown(value: Any, size: int = 40) -> str:
    """A value for a message: a str or number cut short, anything else by its type only (its repr may fail)."""
    if isinstance(value, (str, int, Decimal)) and not isinstance(value, bool):
        text = repr(value) if isinstance(value, str) else str(value)
        return text if len(text) <= size else text[:size] + "…"
    return type(value).__name__


def object_id(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise fail(field, f"must be a 24-character lowercase hex id (a str), got {type(value).__name__}")
    if not _OBJECT_ID.fullmatch(value):
        raise fail(field, f"must be a 24-character lowercase hex id, got {shown(value)}")
    return value


def amount(field: str, value: Any) -> Decimal:
    if isinstance(value, bool):
        raise fail(field, "must be a Decimal or int, got bool")
    if isinstance(value, float):
        raise fail(
            field,
            "must be a Decimal or int, not a float: floats cannot hold most cent amounts exactly "
            f"(use Decimal({str(value)!r}))",
        )
    if isinstance(value, int):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise fail(field, f"must be a Decimal or int, got {type(value).__name__}")
    if not value.is_finite():
        raise fail(field, f"must be a finite number, got {value}")
    if value <= 0:
        raise fail(field, f"must be greater than zero, got {shown(value)}")
    if value > MAX_AMOUNT:  # first: quantizing a huge value would overflow the decimal context
        raise fail(field, f"must be at most {MAX_AMOUNT}, got {shown(value)}")
    if value != value.quantize(_CENT, context=_DECIMAL):
        raise fail(field, f"must have at most two decimals, got {shown(value)}")
    return value


def currency(field: str, value: Any) -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise fail(field, f"must be three upper-case letters (ISO 4217, e.g. 'SEK'), got {shown(value, 10)}")
    return value


def aware_datetime(field: str, value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise fail(field, f"must be a datetime, got {type(value).__name__}")
    try:
        offset = value.utcoffset()  # a tzinfo is caller code: it may raise, or answer something that is no offset
    except Exception:
        raise fail(field, "has a time zone that cannot give its UTC offset") from None
    if offset is None:
        raise fail(field, "must be timezone-aware (e.g. datetime(..., tzinfo=timezone.utc)), got a naive datetime")
    try:
        value.astimezone(timezone.utc)  # it goes out in UTC (RFC 1123 GMT): it must exist there
    except (OverflowError, ValueError):
        raise fail(field, "must fall within the years 1 to 9999 once converted to UTC") from None
    return value


def text(field: str, value: Any) -> str:
    """An identifier (reference, invoice number): visible text, no surrounding whitespace, encodable."""
    if not isinstance(value, str):
        raise fail(field, f"must be a str, got {type(value).__name__}")
    if not value.strip():
        raise fail(field, "must not be empty")
    if len(value) > MAX_TEXT:
        raise fail(field, f"must be at most {MAX_TEXT} characters, got {len(value)}")
    problem = _unsafe_character(value)
    if problem:
        raise fail(field, problem)
    if value != value.strip():
        raise fail(field, "must not start or end with whitespace")
    return value


def _unsafe_character(value: str) -> str | None:
    """What is wrong with the first character an identifier must not hold (by code point, never quoted)."""
    if value.isascii():  # the common case: one regex search
        found = _ASCII_CONTROL.search(value)
        if found is None:
            return None
        position, char = found.start(), found.group()
        kind = _UNSAFE["Cc"]
    else:
        for position, char in enumerate(value):  # noqa: B007 - both are used after the loop
            kind = _UNSAFE.get(unicodedata.category(char), "")
            if kind:
                break
        else:
            return None
    return f"must not contain {kind} (found U+{ord(char):04X} at position {position})"


def query_text(field: str, value: Any) -> str:
    """A query parameter the caller wrote (`sort`): text without control or invisible characters."""
    return text(field, value)


def days(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(field, f"must be a positive int, got {type(value).__name__}")
    if value < 1:
        raise fail(field, f"must be a positive int, got {shown(value)}")
    if value > MAX_RESPITE_DAYS:
        raise fail(field, f"must be at most {MAX_RESPITE_DAYS}, got {shown(value)}")
    return value


def case_identity(case: str | None, invoice_number: str | None, creditor: str | None) -> None:
    """Exactly one of `case` and `invoice_number`; an invoice number needs its creditor."""
    if case is not None and invoice_number is not None:
        raise fail("case", "give either case or invoice_number, not both")
    if case is None and invoice_number is None:
        raise fail("case", "one of case or invoice_number is required")
    if invoice_number is not None and creditor is None:
        raise fail("creditor", "is required when the case is given by invoice_number")
