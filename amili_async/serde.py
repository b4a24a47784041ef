"""The one cattrs converter, and the JSON codec around it.

Wire rules (see `reference/amili-api.md` §2 and `eve-behaviour.md`):
- money is `Decimal` in Python and a JSON *number* on the wire, written with its exact digits
  (`Decimal("250.00")` -> `250.00`); documents read from Amili (`loads_document`) turn every number with a
  fraction or an exponent into the `Decimal` of its exact text, scale included (`250.00` ->
  `Decimal("250.00")`, `99999999999999.99` unrounded), never through a binary float. A money field given as
  a string must be a finite JSON number (`"NaN"`, `"Infinity"`, `"1_000"` are refused);
- datetimes go out as RFC 1123 GMT (`Tue, 07 Oct 2025 08:15:30 GMT`); RFC 1123 and ISO 8601 are both read,
  always to aware datetimes;
- Eve's meta keys (`_id`, `_etag`, `_created`, `_updated`, `_status`, `_payment_status`, ...) map to plain
  attribute names; any key a model does not know is kept in its `extra` mapping, never an error;
- `None` fields are never sent.

The converter is built once per process on first use and never changed afterwards.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import orjson

if TYPE_CHECKING:
    import cattrs

__all__ = [
    "converter",
    "dumps",
    "format_rfc1123",
    "loads",
    "loads_document",
    "parse_datetime",
    "parse_money",
    "structure_document",
]

T = TypeVar("T")

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name: i + 1 for i, name in enumerate(_MONTHS)}


@functools.lru_cache(maxsize=1024)
def format_rfc1123(value: datetime) -> str:
    """`Tue, 07 Oct 2025 08:15:30 GMT`, independent of the process locale."""
    utc = value.astimezone(timezone.utc)
    return (
        f"{_DAYS[utc.weekday()]}, {utc.day:02d} {_MONTHS[utc.month - 1]} {utc.year:04d} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d} GMT"
    )


def parse_datetime(value: Any) -> datetime:
    """RFC 1123 (`Tue, 07 Oct 2025 08:15:30 GMT`) or ISO 8601 -> an aware datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    return _parse_date_text(value)


@functools.lru_cache(maxsize=256)
def _parse_date_text(value: str) -> datetime:
    # Cached: in a bulk run most answers carry the same few `_created`/`_updated` seconds.
    parts = value.split()
    if len(parts) == 6 and parts[0].endswith(",") and parts[5] in ("GMT", "UTC", "+0000"):
        hour, minute, second = (int(p) for p in parts[4].split(":"))
        return datetime(
            int(parts[3]), _MONTH_NUMBER[parts[2]], int(parts[1]), hour, minute, second, tzinfo=timezone.utc
        )
    text = value.replace("Z", "+00:00") if value.endswith("Z") else value
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def parse_money(value: Any) -> Decimal:
    """An amount read from Amili, exact. Only finite numbers: a JSON number, or a string that spells one."""
    if type(value) is Decimal:  # the common case: `loads_document` made it from the JSON text
        amount = value
    elif isinstance(value, bool):
        raise ValueError("a bool is not an amount")
    elif isinstance(value, (int, Decimal)):
        amount = Decimal(value)
    elif isinstance(value, float):  # only from a caller's own payload: the document reader never makes one
        amount = Decimal(repr(value))
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        amount = Decimal(value.strip())
    else:
        raise ValueError(f"not an amount: {_short(value)}")
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {amount}")
    return amount


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else type(value).__name__
    return text if len(text) <= 40 else text[:40] + "…"


def _money_fragment(value: Decimal) -> orjson.Fragment:
    return orjson.Fragment(format(value, "f").encode())


def dumps(payload: Any) -> bytes:
    """JSON bytes; `Decimal` values are written with their exact digits, datetimes as RFC 1123 GMT.

    orjson writes datetimes as ISO 8601 by itself, which Eve refuses in a body and compares as a plain string
    inside `where`; passing them through sends them to `_encode_default` instead."""
    return orjson.dumps(payload, default=_encode_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def _encode_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _money_fragment(value)
    if isinstance(value, datetime):
        return format_rfc1123(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def loads(raw: bytes) -> Any:
    """Strict JSON (NaN, Infinity and other non-JSON are refused by orjson); numbers as int and float."""
    return orjson.loads(raw)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# The standard library's decoder, because it can hand each number's text to Decimal (orjson cannot: it
# parses to a double, which loses the scale of `250.00` and the last cent of `99999999999999.99`). It costs
# about 2 µs more than orjson per receipt (benchmarks/README.md).
_EXACT = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constant)
# Its C scanner, called directly: a third cheaper than decode() (set by __init__, unknown to typeshed).
_SCAN: Callable[[str, int], tuple[Any, int]] = _EXACT.scan_once  # type: ignore[attr-defined]


def loads_document(raw: bytes) -> Any:
    """A document answer from Amili: strict JSON, every number with a fraction or exponent an exact Decimal.

    Raises `ValueError` for anything that is not JSON, including `NaN`/`Infinity`, nesting too deep to read
    and lone surrogate escapes (`"\\ud800"`, which orjson refuses and the standard library would accept).
    """
    if b"\\u" in raw:
        orjson.loads(raw)  # the strict check for escapes; rare in Amili's answers, so rarely paid
    text = raw.decode()
    try:
        try:
            document, end = _SCAN(text, 0)
        except StopIteration:
            end = -1
        # Whitespace around the document, or not JSON at all: decode() says which (with a proper error).
        return document if end == len(text) else _EXACT.decode(text)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def _build() -> cattrs.Converter:
    import cattrs  # imported on first use: it is the largest part of `import amili_async`

    # Without detailed validation the generated functions are about twice as fast; decode errors are still
    # caught and reported as ResponseDecodeError by `structure_document`.
    conv = cattrs.Converter(detailed_validation=False)
    conv.register_structure_hook(Decimal, lambda v, _: parse_money(v))
    conv.register_unstructure_hook(Decimal, _money_fragment)
    conv.register_structure_hook(datetime, lambda v, _: parse_datetime(v))
    conv.register_unstructure_hook(datetime, format_rfc1123)
    conv.register_structure_hook(timedelta, lambda v, _: timedelta(seconds=float(v)))
    return conv


@functools.cache
def converter() -> cattrs.Converter:
    """The SDK's converter, with hooks for every model registered."""
    conv = _build()
    # Imported here: models import this module for its helpers.
    from .models import actions, cases, receipts

    for cls in actions.ACTION_TYPES:
        conv.register_unstructure_hook(cls, _make_action_unstructure(conv, cls))
    for cls in (*receipts.RECEIPT_TYPES, cases.Case):
        conv.register_structure_hook(cls, _make_document_structure(conv, cls))
    return conv


def _make_action_unstructure(conv: cattrs.Converter, cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """Generated unstructure function: wire field names, `None` fields left out."""
    from cattrs.gen import make_dict_unstructure_fn, override

    overrides: dict[str, Any] = {}
    for a in attrs.fields(cls):
        wire = a.metadata.get("wire", a.name)
        if not a.metadata.get("body", True):
            overrides[a.name] = override(omit=True)
        elif a.default is None:
            overrides[a.name] = override(rename=wire, omit_if_default=True)
        else:
            overrides[a.name] = override(rename=wire)
    return make_dict_unstructure_fn(cls, conv, **overrides)


def _text(value: Any) -> str:
    return value if type(value) is str else str(value)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {value!r}")


def _field_reader(conv: cattrs.Converter, annotation: Any) -> Callable[[Any], Any]:
    """How one field's wire value becomes its Python value (the common types skip cattrs' dispatch)."""
    fast: dict[Any, Callable[[Any], Any]] = {
        str: _text,
        str | None: _text,
        Decimal | None: parse_money,
        datetime | None: parse_datetime,
        bool | None: _flag,
    }
    reader = fast.get(annotation)
    if reader is not None:
        return reader
    return lambda value: conv.structure(value, annotation)


def _make_document_structure(conv: cattrs.Converter, cls: type[T]) -> Callable[[Any, Any], T]:
    """Structure an Eve document: aliases -> attribute names, unknown keys -> `extra`.

    Hand-rolled rather than `make_dict_structure_fn`: one pass over the answer's keys does the aliasing,
    the `extra` collection and the conversion, at a third of the cost (it runs once per receipt).
    """
    fields = attrs.fields(attrs.resolve_types(cls))  # type: ignore[type-var, arg-type]
    readers: dict[str, tuple[str, Callable[[Any], Any]]] = {}
    for a in fields:
        if a.name == "extra":
            continue
        readers[a.name] = (a.name, _field_reader(conv, a.type))
        for wire in a.metadata.get("aliases", ()):
            readers[wire] = readers[a.name]
    required = frozenset(a.name for a in fields if a.default is attrs.NOTHING)

    def structure(data: Any, _: Any) -> T:
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            target = readers.get(key)
            if target is None:
                extra[key] = value
            elif value is not None and target[0] not in known:
                known[target[0]] = target[1](value)
        missing = required.difference(known)
        if missing:
            raise ValueError(f"missing {', '.join(sorted(missing))}")
        return cls(**known, extra=extra)  # type: ignore[call-arg]

    return structure


def structure_document(data: Any, cls: type[T]) -> T:
    """A decoded answer -> model; anything unusable becomes `ResponseDecodeError`, never a raw cattrs error."""
    try:
        return converter().structure(data, cls)
    except Exception as exc:  # cattrs groups, KeyError, ValueError...
        from .errors import ResponseDecodeError

        raise ResponseDecodeError(f"could not read the answer as {cls.__name__}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    import cattrs

    if isinstance(exc, cattrs.BaseValidationError):
        leaves = cattrs.transform_error(exc)
        return "; ".join(leaves[:3])
    return str(exc) or type(exc).__name__
