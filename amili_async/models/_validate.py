"""Input checks run when an action is built, so bad input never leaves the machine.

Each check raises `ValidationError` naming the field and what is wrong with the value, without echoing
anything that could be a secret.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from .._wire import OBJECT_ID as _OBJECT_ID
from ..errors import ValidationError

_CURRENCY = re.compile(r"[A-Z]{3}")
# Printable text, no control characters (CR/LF/NUL would end up in logs or break the request).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_AMOUNT = Decimal("1000000000000")  # 10^12: well above any single case, and exact through a JSON double
MAX_TEXT = 255
MAX_RESPITE_DAYS = 365


def fail(field: str, problem: str) -> ValidationError:
    return ValidationError(f"{field}: {problem}", issues={field: (problem,)})


def object_id(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise fail(field, f"must be a 24-character lowercase hex id (a str), got {type(value).__name__}")
    if not _OBJECT_ID.fullmatch(value):
        raise fail(field, f"must be a 24-character lowercase hex id, got {value[:40]!r}")
    return value


def optional_object_id(field: str, value: Any) -> str | None:
    return None if value is None else object_id(field, value)


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
        raise fail(field, f"must be greater than zero, got {value}")
    if value > MAX_AMOUNT:  # first: quantizing a huge value would overflow the decimal context
        raise fail(field, f"must be at most {MAX_AMOUNT}, got {value}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2 and value != value.quantize(Decimal("0.01")):
        raise fail(field, f"must have at most two decimals, got {value}")
    return value


def currency(field: str, value: Any) -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise fail(field, f"must be three upper-case letters (ISO 4217, e.g. 'SEK'), got {value!r}")
    return value


def aware_datetime(field: str, value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise fail(field, f"must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise fail(field, "must be timezone-aware (e.g. datetime(..., tzinfo=timezone.utc)), got a naive datetime")
    return value


def optional_aware_datetime(field: str, value: Any) -> datetime | None:
    return None if value is None else aware_datetime(field, value)


def text(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise fail(field, f"must be a str, got {type(value).__name__}")
    if not value.strip():
        raise fail(field, "must not be empty")
    if len(value) > MAX_TEXT:
        raise fail(field, f"must be at most {MAX_TEXT} characters, got {len(value)}")
    if _CONTROL.search(value):
        raise fail(field, "must not contain control characters (newline, tab, NUL, ...)")
    return value


def optional_text(field: str, value: Any) -> str | None:
    return None if value is None else text(field, value)


def days(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(field, f"must be a positive int, got {type(value).__name__}")
    if value < 1:
        raise fail(field, f"must be a positive int, got {value}")
    if value > MAX_RESPITE_DAYS:
        raise fail(field, f"must be at most {MAX_RESPITE_DAYS}, got {value}")
    return value


def case_identity(case: str | None, invoice_number: str | None, creditor: str | None) -> None:
    """Exactly one of `case` and `invoice_number`; an invoice number needs its creditor."""
    if case is not None and invoice_number is not None:
        raise ValidationError(
            "give either case or invoice_number, not both",
            issues={"case": ("give either case or invoice_number, not both",)},
        )
    if case is None and invoice_number is None:
        raise ValidationError(
            "one of case or invoice_number is required",
            issues={"case": ("one of case or invoice_number is required",)},
        )
    if invoice_number is not None and creditor is None:
        raise ValidationError(
            "creditor is required when the case is given by invoice_number",
            issues={"creditor": ("required with invoice_number",)},
        )
