"""The one cattrs converter, and the JSON codec around it.

The wire rules themselves (dates, exact JSON money) live in `_wire.py`; this module maps documents to
models:
- documents read from Amili (`loads_document`) turn every number with a fraction or an exponent into the
  `Decimal` of its exact text, scale included (`250.00` -> `Decimal("250.00")`, `99999999999999.99`
  unrounded), never through a binary float; a money field given as a string must spell a finite JSON number
  (`"NaN"`, `"Infinity"`, `"1_000"` are refused);
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
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import attrs
import orjson

from ._wire import dumps, format_rfc1123, loads, parse_datetime

if TYPE_CHECKING:
    import cattrs

__all__ = [
    "action_body",
    "converter",
    "dumps",
    "format_rfc1123",
    "loads",
    "loads_document",
    "try_loads_document",
    "parse_datetime",
    "parse_money",
    "structure_document",
]

T = TypeVar("T")


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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# The standard library's decoder, because it can hand each number's text to Decimal (orjson cannot: it
# parses to a double, which loses the scale of `250.00` and the last cent of `99999999999999.99`).
_EXACT = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constant)
# Its C scanner, called directly: a third cheaper than decode() (set by __init__, unknown to typeshed).
_SCAN: Callable[[str, int], tuple[Any, int]] = _EXACT.scan_once  # type: ignore[attr-defined]


def try_loads_document(raw: bytes) -> tuple[bool, Any]:
    """`(True, document)`, or `(False, None)` when `raw` is not JSON: no exception, so none can be chained
    to the error the caller then raises (a JSONDecodeError keeps the whole body in its `doc`)."""
    try:
        return True, loads_document(raw)
    except ValueError:
        return False, None


def loads_document(raw: bytes) -> Any:
    """A document answer from Amili: strict JSON, every number with a fraction or exponent an exact Decimal.

    The pipeline's reader of every 2xx answer: about 2 µs more per receipt than orjson (`_wire.loads`), the
    price of exact money. Raises `ValueError` for anything that is not JSON, including `NaN`/`Infinity`,
    nesting too deep to read and lone surrogate escapes (`"\\ud800"`, which orjson refuses and the
    standard library would accept).
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


def _money_fragment(value: Decimal) -> orjson.Fragment:
    return orjson.Fragment(format(value, "f").encode())


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


class _Converted(NamedTuple):
    converter: cattrs.Converter
    bodies: dict[type[Any], Callable[[Any], dict[str, Any]]]  # action class -> its generated unstructure function
    documents: dict[type[Any], Callable[..., Any]]  # receipt or case class -> its structure function


@functools.cache
def _converted() -> _Converted:
    conv = _build()
    # Imported here, not at the top: the models are only needed once a first document is converted.
    from .models import actions, cases, receipts

    bodies = {cls: _make_action_unstructure(conv, cls) for cls in actions.ACTION_TYPES}
    documented: tuple[type[Any], ...] = (*receipts.RECEIPT_TYPES, cases.Case)
    documents = {cls: _make_document_structure(conv, cls) for cls in documented}
    for cls, unstructure in bodies.items():
        conv.register_unstructure_hook(cls, unstructure)
    for cls, structure in documents.items():
        conv.register_structure_hook(cls, structure)
    return _Converted(conv, bodies, documents)


def converter() -> cattrs.Converter:
    """The SDK's converter, with hooks for every model registered."""
    return _converted().converter


def action_body(action: Any) -> dict[str, Any]:
    """An action's JSON body: wire names, `None` fields left out (its generated function, without cattrs'
    dispatch: this runs once per write)."""
    return _converted().bodies[type(action)](action)


def _make_action_unstructure(conv: cattrs.Converter, cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """Generated unstructure function: wire field names, `None` fields left out."""
    from cattrs.fns import identity
    from cattrs.gen import make_dict_unstructure_fn, override

    # An optional field is left out when None, so its hook only ever sees a value: the plain type's hook, not
    # cattrs' Optional wrapper (a function call fewer per field; `identity` is not called at all).
    present: dict[Any, Callable[[Any], Any]] = {
        str | None: identity,
        datetime | None: format_rfc1123,
        Decimal | None: _money_fragment,
    }
    overrides: dict[str, Any] = {}
    for a in attrs.fields(attrs.resolve_types(cls)):
        wire = a.metadata.get("wire", a.name)
        if not a.metadata.get("body", True):
            overrides[a.name] = override(omit=True)
        elif a.default is None:
            overrides[a.name] = override(rename=wire, omit_if_default=True, unstruct_hook=present.get(a.type))
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
        if a.name == "extra" or a.metadata.get("local"):  # not from the wire (provenance, request ids)
            continue
        readers[a.name] = (a.name, _field_reader(conv, a.type))
        for wire in a.metadata.get("aliases", ()):
            readers[wire] = readers[a.name]
    required = frozenset(a.name for a in fields if a.default is attrs.NOTHING)

    def structure(data: Any, _: Any, local: Mapping[str, Any] | None = None) -> T:
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            target = readers.get(key)
            if target is None:
                extra[key] = value
            elif value is not None and target[0] not in known:
                read = target[1]
                # Most fields are text that is already a str: taken as it is, without calling `_text`.
                known[target[0]] = value if read is _text and type(value) is str else read(value)
        missing = required.difference(known)
        if missing:
            raise ValueError(f"missing {', '.join(sorted(missing))}")
        if local:
            known.update(local)
        return cls(**known, extra=extra)  # type: ignore[call-arg]

    return structure


def structure_document(data: Any, cls: type[T], local: Mapping[str, Any] | None = None) -> T:
    """A decoded answer -> model; anything unusable becomes `ResponseDecodeError`, never a raw cattrs error.

    `local` sets a receipt's fields that do not come from Amili's document (`provenance`, the request ids).
    """
    try:
        structure = _converted().documents.get(cls)  # the receipts and cases: their function, without dispatch
        if structure is None:
            if local:
                raise TypeError(f"{cls.__name__} has no fields of its own to set")
            return converter().structure(data, cls)
        document: T = structure(data, cls, local)
        return document
    except Exception as exc:  # cattrs groups, KeyError, ValueError...
        from .errors import ResponseDecodeError

        raise ResponseDecodeError(f"could not read the answer as {cls.__name__}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    import cattrs

    if isinstance(exc, cattrs.BaseValidationError):
        leaves = cattrs.transform_error(exc)
        return "; ".join(leaves[:3])
    return str(exc) or type(exc).__name__
