"""What every program of the `amili` command shares: exit codes, messages, JSON out, the seeded fake, clients.

JSON goes out through the wire module's encoder (`_wire`): money as exact JSON numbers, dates as RFC 1123, the
way Amili writes them. Money is shown with two decimals whenever that loses nothing (`10000.00`, not
`10000.0`), in every answer, including the parts of a document the SDK keeps as raw JSON (`debt`, `extra`).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from .. import _wire
from ..client import AsyncAmiliClient
from ..errors import AmiliError, ValidationError
from ..models import _validate

if TYPE_CHECKING:
    from ..testing import FakeAmili, FakeCreditor

PROG = "amili"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_CENT = Decimal("0.01")


class UsageError(Exception):
    """Bad input or configuration: one line on stderr, exit code 2."""


# -- money and JSON ------------------------------------------------------------------------------------


def cents(value: Decimal) -> Decimal:
    """`Decimal('250.0')` -> `Decimal('250.00')`; values with more digits than cents keep them all."""
    if value.is_finite() and value == value.quantize(_CENT):
        return value.quantize(_CENT)
    return value


def money_text(value: Decimal) -> str:
    return str(cents(value))


def _plain(value: Any) -> Any:
    """A JSON-ready copy: money in cents (floats of raw JSON too), tuples and sets as lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        exact = _wire.to_decimal(value)  # the shortest repr of the double, as the SDK reads JSON money
        return value if exact is None else cents(exact)
    if isinstance(value, Decimal):
        return cents(value)
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(_wire.dumps(value))  # exact digits, as the SDK sends money
    if isinstance(value, datetime):
        return _wire.format_rfc1123(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(payload: Any, *, pretty: bool = False) -> bytes:
    """One JSON document and a newline."""
    option = orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_DATETIME | (orjson.OPT_INDENT_2 if pretty else 0)
    return orjson.dumps(_plain(payload), default=_encode, option=option)


def record(obj: Any) -> dict[str, Any]:
    """An attrs receipt or case as a JSON-ready dict: None fields and `_links` left out, `extra` kept."""
    out: dict[str, Any] = {}
    for field in attrs.fields(type(obj)):
        value = getattr(obj, field.name)
        if field.name == "extra":
            extra = {k: v for k, v in value.items() if k != "_links"}
            if extra:
                out["extra"] = extra
        elif value is not None:
            out[field.name] = value
    return out


def error_record(exc: BaseException) -> dict[str, Any]:
    """What a failed action writes: type, message, status code, the action's reference, the issues."""
    if isinstance(exc, AmiliError):
        out: dict[str, Any] = {
            "type": type(exc).__name__,
            "message": exc.message,
            "status_code": exc.status_code,
            "reference": exc.reference,
        }
        if exc.issues:
            out["issues"] = {field: list(messages) for field, messages in exc.issues.items()}
        return out
    return {"type": type(exc).__name__, "message": str(exc), "status_code": None, "reference": None}


# -- messages ------------------------------------------------------------------------------------------


def write_out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def say(text: str) -> None:
    write_out((text + "\n").encode())


def warn(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def input_problem(exc: ValidationError, options: Mapping[str, str]) -> str:
    """A ValidationError caught before sending, phrased with the names the user typed (`--amount`, `CASE`).

    Field names are replaced only where they stand alone: `upper-case` in a message stays `upper-case`."""
    if exc.issues:
        field, messages = next(iter(exc.issues.items()))
        text = messages[0] if messages else exc.message
        for name, option in options.items():
            text = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", option, text)
        return f"{options.get(field, field)}: {text}"
    return exc.message


def api_problem(exc: AmiliError) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- the in-memory Amili, seeded on the fly ------------------------------------------------------------


@attrs.frozen
class Seeded:
    """An in-memory Amili with one creditor and its cases: case `@i` has invoice number `INV-i`.

    `python -m amili_async.testing serve` seeds the same way, so a file written for one runs on the other."""

    fake: FakeAmili
    creditor: FakeCreditor
    cases: tuple[str, ...]

    def client(self) -> AsyncAmiliClient:
        return self.fake.client(self.creditor)

    def resolve_creditor(self, value: str | None) -> str:
        return self.creditor.id if value is None or value == "@" else value

    def resolve_case(self, value: str | None, field: str = "case") -> str | None:
        if value is None or not value.startswith("@"):
            return value
        index_text = value[1:] or "0"
        if not index_text.isdigit() or int(index_text) >= len(self.cases):
            raise _validate.fail(field, f"{value!r} is not a seeded case (the fake has @0 to @{len(self.cases) - 1})")
        return self.cases[int(index_text)]


def seed_fake(cases: int, *, capital: Decimal = Decimal("10000.00"), state: str = "invoice") -> Seeded:
    from ..testing import FakeAmili

    fake = FakeAmili(seed=0, record_requests=False)
    creditor = fake.add_creditor(name="Example Creditor AB")
    ids = tuple(
        fake.add_case(creditor.id, capital=capital, state=state, invoice_number=f"INV-{i}") for i in range(cases)
    )
    return Seeded(fake, creditor, ids)


def open_client(args: argparse.Namespace, seeded: Seeded | None) -> AsyncAmiliClient:
    """The client a program talks through: the seeded fake, or Amili with credentials from the environment."""
    if seeded is not None:
        return seeded.client()
    return AsyncAmiliClient(base_url=args.base_url)
