"""Reading what the user gives: values (amounts, dates, days), bulk files (CSV, JSON Lines), and the one way
a row of fields becomes an action.

Every program builds its actions with `build_action`, from a mapping of field names to values, through the
SDK's own models: the single commands pass what was typed on the command line, `amili bulk` passes one input
line. So an amount, a date or a case is read and checked the same way everywhere.

Each bulk line also gets a **digest** of its content (16 bytes of BLAKE2b): the results file records it, and
a resumed run matches results to input lines by it, never by position. A CSV row's digest is taken over its
fields by name (so reordering columns changes nothing), a JSON line's over its bytes.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

import attrs
import orjson

from .. import _wire
from ..errors import ValidationError
from ..models import _validate
from ..models.actions import Action, CreditorCancellation, CreditorCrediting, CreditorPayment, RespiteGrant
from ._common import Seeded, UsageError

_AMOUNT_TEXT = re.compile(r"[0-9]+(\.[0-9]+)?")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

FIELDS = (
    "kind",
    "creditor",
    "case",
    "invoice_number",
    "amount",
    "currency",
    "bank_transaction_date",
    "creditor_payment_reference",
    "creditor_reference",
    "days",
)
KIND_FIELDS: dict[str, frozenset[str]] = {
    "payment": frozenset(FIELDS[1:8]),
    "crediting": frozenset({"creditor", "case", "invoice_number", "amount", "currency", "creditor_reference"}),
    "cancellation": frozenset({"creditor", "case", "invoice_number"}),
    "respite": frozenset({"case", "days"}),
}
# The field that names a line for sharding: its reference, or for actions without one, the case.
_SHARD_FIELDS = {
    "payment": ("creditor_payment_reference",),
    "crediting": ("creditor_reference",),
    "cancellation": ("case", "invoice_number"),
    "respite": ("case",),
}


# -- values ----------------------------------------------------------------------------------------------


def parse_amount(text: str, field: str = "amount") -> Decimal:
    """`250.00` -> Decimal('250.00'); anything else (a comma, an exponent, NaN, too many decimals) refused."""
    cleaned = text.strip()
    if not _AMOUNT_TEXT.fullmatch(cleaned):
        hint = " (use a dot for decimals)" if "," in cleaned else " (write it like 250.00)"
        raise _validate.fail(field, f"not an amount: {text[:40]!r}{hint}")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:  # pragma: no cover - the pattern only lets plain decimals through
        raise _validate.fail(field, f"not an amount: {text[:40]!r}") from None
    return _validate.amount(field, value)


def parse_date(text: str, field: str = "bank_transaction_date") -> datetime:
    """RFC 1123 (`Tue, 07 Oct 2025 08:15:30 GMT`), ISO 8601 with an offset, or a date (`2025-10-07`, UTC)."""
    cleaned = text.strip()
    try:
        if _ISO_DATE.fullmatch(cleaned):
            return datetime.combine(date.fromisoformat(cleaned), datetime.min.time(), timezone.utc)
        if "," in cleaned:
            return _wire.parse_datetime(cleaned)  # RFC 1123, read as the SDK reads Amili's dates
        parsed = datetime.fromisoformat(cleaned[:-1] + "+00:00" if cleaned[-1:] in ("Z", "z") else cleaned)
    except (ValueError, KeyError, IndexError):
        raise _validate.fail(
            field, f"not a date: {text[:40]!r} (use 2025-10-07, 2025-10-07T08:15:30Z or RFC 1123)"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise _validate.fail(field, f"{text[:40]!r} has no UTC offset (add Z or +02:00)")
    return parsed


def _text(row: Mapping[str, Any], field: str) -> str | None:
    value = row.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _validate.fail(field, f"must be a string, got {type(value).__name__}")
    return value.strip() or None


def _amount(value: Any) -> Decimal:
    if value is None:
        raise _validate.fail("amount", "missing")
    if isinstance(value, str):
        return parse_amount(value)
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise _validate.fail("amount", f"must be a number or a string like '250.00', got {type(value).__name__}")
    return _validate.amount("amount", value)


def _when(value: Any) -> datetime:
    if value is None:
        raise _validate.fail("bank_transaction_date", "missing")
    if isinstance(value, datetime):
        return _validate.aware_datetime("bank_transaction_date", value)
    if not isinstance(value, str) or not value.strip():
        raise _validate.fail("bank_transaction_date", f"must be a date string, got {str(value)[:40]!r}")
    return parse_date(value)


def _days(value: Any) -> int:
    if value is None:
        raise _validate.fail("days", "missing")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise _validate.fail("days", f"must be a whole number of days, got {str(value)[:40]!r}")
    return _validate.days("days", value)


# -- rows -> actions -------------------------------------------------------------------------------------


def build_action(row: Mapping[str, Any], seeded: Seeded | None) -> Action:
    """A row of fields (`kind` plus the action's own) -> its action; any problem is a ValidationError naming
    the field. With `seeded`, `@` names the seeded creditor and `@i` the i-th seeded case."""
    kind = row.get("kind")
    if kind is None:
        raise _validate.fail("kind", f"missing (one of {', '.join(KIND_FIELDS)})")
    if not isinstance(kind, str) or kind.strip() not in KIND_FIELDS:
        raise _validate.fail("kind", f"unknown kind {str(kind)[:40]!r} (one of {', '.join(KIND_FIELDS)})")
    kind = kind.strip()
    allowed = KIND_FIELDS[kind]
    for field, value in row.items():
        if field == "kind" or value is None:
            continue
        if field not in FIELDS:
            raise _validate.fail(str(field)[:40], "unknown field")
        if field not in allowed:
            raise _validate.fail(field, f"does not apply to a {kind}")
    creditor = _text(row, "creditor")
    case = _text(row, "case")
    if seeded is not None:
        creditor = seeded.resolve_creditor(creditor) if creditor is not None or kind != "crediting" else None
        case = seeded.resolve_case(case)
    elif (creditor or "").startswith("@") or (case or "").startswith("@"):
        field = "creditor" if (creditor or "").startswith("@") else "case"
        raise _validate.fail(field, "'@' values name seeded cases and creditors, which needs --fake")
    if kind == "respite":
        if case is None:
            raise _validate.fail("case", "missing")
        return RespiteGrant(case=case, days=_days(row.get("days")))
    invoice = _text(row, "invoice_number")
    if kind != "crediting" and creditor is None:
        raise _validate.fail("creditor", "missing")
    if kind == "cancellation":
        assert creditor is not None
        return CreditorCancellation(creditor=creditor, case=case, invoice_number=invoice)
    amount = _amount(row.get("amount"))
    currency = _text(row, "currency") or "SEK"
    if kind == "crediting":
        return CreditorCrediting(
            creditor=creditor,
            case=case,
            invoice_number=invoice,
            amount=amount,
            currency=currency,
            creditor_reference=_text(row, "creditor_reference"),
        )
    assert creditor is not None
    return CreditorPayment(
        creditor=creditor,
        case=case,
        invoice_number=invoice,
        amount=amount,
        currency=currency,
        bank_transaction_date=_when(row.get("bank_transaction_date")),
        creditor_payment_reference=_text(row, "creditor_payment_reference"),
    )


def parse_item(item: bytes | dict[str, str] | ValidationError) -> dict[str, Any]:
    """One bulk line as its fields (a JSON line is parsed here, amounts as exact Decimals)."""
    if isinstance(item, ValidationError):
        raise item
    if isinstance(item, dict):
        return item
    try:
        item.decode("utf-8")
    except UnicodeDecodeError:
        raise _validate.fail("line", "not valid UTF-8") from None
    try:
        data = _wire.loads_exact(item)  # amounts as exact Decimals; NaN and Infinity refused
    except (_wire.BadJson, RecursionError) as exc:
        message = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise _validate.fail("line", f"not valid JSON: {message}") from None
    if not isinstance(data, dict):
        raise _validate.fail("line", f"must be a JSON object, got {type(data).__name__}")
    return data


# -- bulk files ------------------------------------------------------------------------------------------


@attrs.frozen
class Line:
    """One input line (a CSV record may span several physical lines: `number` is where it starts)."""

    number: int
    digest: bytes
    item: bytes | dict[str, str] | ValidationError


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def shard_of(line: Line, shards: int) -> int:
    """The 0-based shard a line belongs to: a stable hash of its reference (payments, creditings) or case
    (cancellations, respites), else of its content. The same on every machine and Python version."""
    key = b"digest:" + line.digest
    try:
        row = parse_item(line.item)
    except ValidationError:
        row = {}
    kind = row.get("kind")
    for field in _SHARD_FIELDS.get(kind.strip() if isinstance(kind, str) else "", ()):
        value = row.get(field)
        if isinstance(value, str) and value.strip():
            key = f"{field}:{value.strip()}".encode()
            break
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % shards


@attrs.define
class InputFile:
    """A CSV (with a header) or JSON Lines file of actions, read as many times as needed."""

    path: Path
    format: str

    def check_header(self) -> None:
        """Raise UsageError for a CSV header that cannot be used (before anything is created or sent)."""
        if self.format == "csv":
            with self.path.open("rb") as fh:
                for _ in self._csv(fh, None):
                    break

    def lines(self, hasher: Any = None) -> Iterator[Line]:
        """Every non-blank line, with its digest; `hasher` (hashlib) sees every byte of the file."""
        with self.path.open("rb") as fh:
            if self.format == "csv":
                yield from self._csv(fh, hasher)
            else:
                yield from self._jsonl(fh, hasher)

    @staticmethod
    def _jsonl(fh: IO[bytes], hasher: Any) -> Iterator[Line]:
        for n, raw in enumerate(fh, 1):
            if hasher is not None:
                hasher.update(raw)
            stripped = raw.strip()
            if stripped:
                yield Line(n, _digest(stripped), stripped)

    @staticmethod
    def _csv(fh: IO[bytes], hasher: Any) -> Iterator[Line]:
        physical = 0
        bad_lines: set[int] = set()
        raw_lines: list[bytes] = []

        def text_lines() -> Iterator[str]:
            nonlocal physical
            for raw in fh:
                physical += 1
                raw_lines.append(raw)
                if hasher is not None:
                    hasher.update(raw)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    bad_lines.add(physical)
                    text = raw.decode("utf-8", "replace")
                yield text.removeprefix("\ufeff") if physical == 1 else text

        reader = csv.reader(text_lines())
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise UsageError(f"the CSV header cannot be read: {exc}") from None
        names = [name.strip() for name in header]
        unknown = [n for n in names if n not in FIELDS]
        if unknown:
            raise UsageError(
                f"unknown column(s) in the CSV header: {', '.join(map(repr, unknown))} (known: {', '.join(FIELDS)})"
            )
        if len(set(names)) != len(names) or "kind" not in names:
            raise UsageError("the CSV header must name each column once, and include 'kind'")
        raw_lines.clear()
        while True:
            start = physical + 1
            item: dict[str, str] | ValidationError
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                item = _validate.fail("line", f"not valid CSV ({exc})")
            else:
                if not row or (len(row) == 1 and not row[0].strip()):
                    raw_lines.clear()
                    continue
                if any(n in bad_lines for n in range(start, physical + 1)):
                    item = _validate.fail("line", "not valid UTF-8")
                elif len(row) != len(names):
                    item = _validate.fail("line", f"has {len(row)} values but the header names {len(names)}")
                else:
                    item = {name: value.strip() for name, value in zip(names, row, strict=True) if value.strip()}
            raw = b"".join(raw_lines).strip()
            raw_lines.clear()
            if isinstance(item, dict):
                digest = _digest(orjson.dumps(item, option=orjson.OPT_SORT_KEYS))
            else:
                digest = _digest(b"raw:" + raw)
            yield Line(start, digest, item)
