"""The `amili` command: the demo, one action at a time, and bulk files with progress.

```
python -m amili_async demo [--cases N] [--seed S] [--concurrency C] [--json]
amili pay --creditor ID (--case ID | --invoice-number N) --amount 250.00 [--currency SEK] [--date D]
          [--reference REF]
amili credit (--case ID | --invoice-number N) --amount X [--creditor ID] [--reference REF]
amili cancel --creditor ID (--case ID | --invoice-number N)
amili respite check CASE
amili respite grant CASE --days N
amili case get CASE
amili bulk FILE --out results.jsonl [--concurrency N] [--fake [--fake-cases K]]
```

Credentials come from the environment (`AMILI_BASE_URL`, `AMILI_API_CODE`, `AMILI_PRIVATE_KEY` or
`AMILI_PRIVATE_KEY_FILE`): the client reads them itself. `--fake` runs against the in-memory Amili instead,
seeded on the fly. Exit codes: 0 done, 1 Amili refused or failed (or, for `bulk`, some line failed),
2 bad input or configuration, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import anyio
import attrs
import orjson

from ._progress import Progress, format_duration
from ._version import __version__
from .bulk import StopOn
from .client import AsyncAmiliClient
from .errors import AmiliError, ConfigurationError, NotSentError, ValidationError
from .models import _validate
from .models.actions import Action, CreditorCancellation, CreditorCrediting, CreditorPayment, RespiteGrant
from .models.receipts import Receipt, RespiteReceipt

if TYPE_CHECKING:
    from .testing import FakeAmili, FakeCreditor

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

PROG = "amili"
_AMOUNT_TEXT = re.compile(r"[0-9]+(\.[0-9]+)?")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CENT = Decimal("0.01")

# How the SDK's field names read on the command line (for error messages).
_OPTION_FOR = {
    "amount": "--amount",
    "currency": "--currency",
    "creditor": "--creditor",
    "case": "--case",
    "case_id": "CASE",
    "invoice_number": "--invoice-number",
    "bank_transaction_date": "--date",
    "creditor_payment_reference": "--reference",
    "creditor_reference": "--reference",
    "days": "--days",
}


class UsageError(Exception):
    """Bad input or configuration: one line on stderr, exit code 2."""


# -- small helpers ---------------------------------------------------------------------------------


def _money_text(value: Decimal) -> str:
    """`250.00`, exact: two decimals when that loses nothing, else every digit there is."""
    if value.is_finite() and value == value.quantize(_CENT):
        return str(value.quantize(_CENT))
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _money_text(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _dumps(payload: Any, *, pretty: bool = False) -> bytes:
    option = orjson.OPT_APPEND_NEWLINE | (orjson.OPT_INDENT_2 if pretty else 0)
    return orjson.dumps(payload, default=_json_default, option=option)


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


def _input_problem(exc: ValidationError) -> str:
    """A ValidationError caught before sending, phrased with the command line's option names."""
    if exc.issues:
        field, messages = next(iter(exc.issues.items()))
        text = messages[0] if messages else exc.message
        for name, option in _OPTION_FOR.items():
            text = re.sub(rf"\b{name}\b", option, text)
        return f"{_OPTION_FOR.get(field, field)}: {text}"
    return exc.message


def _api_problem(exc: AmiliError) -> str:
    return f"{type(exc).__name__}: {exc}"


def _write_out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def _say(text: str) -> None:
    _write_out((text + "\n").encode())


def _warn(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


# -- parsing values ----------------------------------------------------------------------------------


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
    from . import serde

    cleaned = text.strip()
    try:
        if _ISO_DATE.fullmatch(cleaned):
            return datetime.combine(date.fromisoformat(cleaned), datetime.min.time(), timezone.utc)
        if "," in cleaned:
            return serde.parse_datetime(cleaned)
        parsed = datetime.fromisoformat(cleaned[:-1] + "+00:00" if cleaned.endswith("Z") else cleaned)
    except (ValueError, KeyError, IndexError):
        raise _validate.fail(
            field, f"not a date: {text[:40]!r} (use 2025-10-07, 2025-10-07T08:15:30Z or RFC 1123)"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise _validate.fail(field, f"{text[:40]!r} has no UTC offset (add Z or +02:00)")
    return parsed


def _arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse `type=` from a parser raising ValidationError (argparse then names the option)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValidationError as exc:
            problem = exc.message.split(": ", 1)[-1]
            raise argparse.ArgumentTypeError(problem) from None

    convert.__name__ = parse.__name__
    return convert


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:40]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# -- the in-memory Amili, seeded on the fly ------------------------------------------------------------


@attrs.frozen
class Seeded:
    """An in-memory Amili with one creditor and `cases` (case `@i` has invoice number `INV-i`)."""

    fake: FakeAmili
    creditor: FakeCreditor
    cases: tuple[str, ...]

    def client(self, **kwargs: Any) -> AsyncAmiliClient:
        return self.fake.client(self.creditor, **kwargs)

    def resolve_creditor(self, value: str | None) -> str:
        if value is None or value == "@":
            return self.creditor.id
        return value

    def resolve_case(self, value: str | None, field: str = "case") -> str | None:
        if value is None or not value.startswith("@"):
            return value
        index_text = value[1:] or "0"
        if not index_text.isdigit() or int(index_text) >= len(self.cases):
            raise _validate.fail(field, f"{value!r} is not a seeded case (the fake has @0 to @{len(self.cases) - 1})")
        return self.cases[int(index_text)]


def seed_fake(cases: int, *, seed: int = 0, capital: Decimal = Decimal("10000.00"), state: str = "invoice") -> Seeded:
    from .testing import FakeAmili

    fake = FakeAmili(seed=seed, record_requests=False)
    creditor = fake.add_creditor(name="Example Creditor AB")
    ids = tuple(
        fake.add_case(creditor.id, capital=capital, state=state, invoice_number=f"INV-{i}") for i in range(cases)
    )
    return Seeded(fake, creditor, ids)


def _no_placeholder(value: str | None, option: str) -> str | None:
    if value is not None and value.startswith("@"):
        raise UsageError(f"{option}: {value!r} names a seeded case or creditor, which needs --fake")
    return value


def _open_client(args: argparse.Namespace, seeded: Seeded | None) -> AsyncAmiliClient:
    if seeded is not None:
        return seeded.client()
    return AsyncAmiliClient(base_url=args.base_url)  # credentials from the environment


# -- single actions -------------------------------------------------------------------------------------


def _single_seed(args: argparse.Namespace) -> Seeded | None:
    if not args.fake:
        return None
    return seed_fake(1, capital=args.fake_capital, state=args.fake_state)


def _case_identity(args: argparse.Namespace, seeded: Seeded | None) -> tuple[str | None, str | None]:
    case: str | None = args.case
    invoice: str | None = args.invoice_number
    if seeded is not None:
        if case is None and invoice is None:
            case = "@0"
        return seeded.resolve_case(case), invoice
    return _no_placeholder(case, "--case"), invoice


def _creditor(args: argparse.Namespace, seeded: Seeded | None, *, required: bool) -> str | None:
    if seeded is not None:
        return seeded.resolve_creditor(args.creditor)
    creditor: str | None = _no_placeholder(args.creditor, "--creditor")
    if required and creditor is None:
        raise UsageError("--creditor is required (or try it with --fake)")
    return creditor


def _case_arg(args: argparse.Namespace, seeded: Seeded | None) -> str:
    case: str | None = args.case_id
    if seeded is not None:
        resolved = seeded.resolve_case(case or "@0", "case_id")
        assert resolved is not None
        return resolved
    if case is None:
        raise UsageError("CASE is required (or try it with --fake)")
    _no_placeholder(case, "CASE")
    _validate.object_id("case_id", case)
    return case


def _build_single(args: argparse.Namespace, seeded: Seeded | None) -> Action:
    command = args.command
    if command == "pay":
        case, invoice = _case_identity(args, seeded)
        creditor = _creditor(args, seeded, required=True)
        assert creditor is not None
        return CreditorPayment(
            creditor=creditor,
            case=case,
            invoice_number=invoice,
            amount=args.amount,
            currency=args.currency,
            bank_transaction_date=args.date or datetime.now(timezone.utc).replace(microsecond=0),
            creditor_payment_reference=args.reference,
        )
    if command == "credit":
        case, invoice = _case_identity(args, seeded)
        return CreditorCrediting(
            creditor=_creditor(args, seeded, required=False),
            case=case,
            invoice_number=invoice,
            amount=args.amount,
            currency=args.currency,
            creditor_reference=args.reference,
        )
    if command == "cancel":
        case, invoice = _case_identity(args, seeded)
        creditor = _creditor(args, seeded, required=True)
        assert creditor is not None
        return CreditorCancellation(creditor=creditor, case=case, invoice_number=invoice)
    assert command == "respite" and args.respite_command == "grant"
    return RespiteGrant(case=_case_arg(args, seeded), days=args.days)


def _describe_receipt(action: Action, receipt: Any) -> str:
    if isinstance(receipt, RespiteReceipt):
        return f"respite granted: case {receipt.case} postponed by {receipt.days} days"
    assert isinstance(receipt, Receipt)
    noun = {"payment": "payment", "crediting": "crediting", "cancellation": "cancellation"}[action.kind]
    status = receipt.status or "completed"
    if receipt.status_reason_locale:
        status += f" ({receipt.status_reason_locale})"
    verb = "NOT applied" if receipt.status == "error" else "registered"
    parts = [f"{noun} {verb}: {receipt.id}", f"status {status}"]
    settled = getattr(receipt, "settled_amount", None)
    amount = getattr(action, "amount", None)
    currency = getattr(action, "currency", "")
    if settled is not None and amount is not None:
        parts.append(f"settled {_money_text(settled)} of {_money_text(amount)} {currency}")
    where = receipt.case or getattr(action, "case", None)
    if where:
        parts.append(f"case {where}")
    if receipt.case_invoice_number:
        parts.append(f"invoice {receipt.case_invoice_number}")
    return ", ".join(parts)


async def _single(args: argparse.Namespace) -> int:
    seeded = _single_seed(args)
    command = args.command
    sub = getattr(args, "respite_command", None) or getattr(args, "case_command", None)
    action: Action | None = None
    if command in ("pay", "credit", "cancel") or (command == "respite" and sub == "grant"):
        action = _build_single(args, seeded)  # validated here: bad input never reaches the client
    else:
        case_id = _case_arg(args, seeded)
    if seeded is not None and not args.json:
        print(
            f"(in-memory Amili: creditor {seeded.creditor.id}, case {seeded.cases[0]}, invoice INV-0)",
            file=sys.stderr,
        )
    async with _open_client(args, seeded) as client:
        try:
            if action is not None:
                receipt = await client.execute(action)
                payload: dict[str, Any] = {
                    "ok": receipt.applied if isinstance(receipt, Receipt) else True,
                    "kind": action.kind,
                    "receipt": record(receipt),
                }
                if isinstance(receipt, Receipt) and not receipt.applied:
                    payload["error"] = _business_error(action, receipt)
                    reason = payload["error"]["message"]
                    print(
                        f"{_prog(args)}: error: Amili did not apply the {action.kind}: {reason}",
                        file=sys.stderr,
                    )
                _emit(args, payload, _describe_receipt(action, receipt))
                return EXIT_OK if payload["ok"] else EXIT_FAILED
            if command == "respite":
                check = await client.respite.check(case_id)
                payload = {
                    "ok": True,
                    "case": case_id,
                    "allowed": check.allowed,
                    "issues": list(check.issues),
                }
                line = f"respite allowed for case {case_id}"
                if not check.allowed:
                    reasons = ", ".join(check.issues) or "no reason given"
                    line = f"respite not allowed for case {case_id}: {reasons}"
                _emit(args, payload, line)
                return EXIT_OK
            case = await client.cases.get(case_id)
            _emit(args, {"ok": True, "case": record(case)}, _describe_case(case))
            return EXIT_OK
        except ValidationError as exc:
            if exc.status_code is None:
                raise
            return _api_failure(args, exc)
        except AmiliError as exc:
            if isinstance(exc, ConfigurationError):
                raise
            return _api_failure(args, exc)


def _business_error(action: Action, receipt: Receipt) -> dict[str, Any]:
    return {
        "type": "BusinessError",
        "message": receipt.status_reason_locale or "Amili reported the action as an error",
        "status_code": 201,
        "reference": action.reference,
    }


def _describe_case(case: Any) -> str:
    parts = [f"case {case.id}: state {case.state}", f"status {case.status}"]
    parts.append("closed" if case.closed else "open")
    if case.remaining is not None:
        parts.append(f"remaining {_money_text(case.remaining)} {case.currency or ''}".rstrip())
    if case.invoice_number:
        parts.append(f"invoice {case.invoice_number}")
    if case.due_date is not None:
        parts.append(f"due {case.due_date.date().isoformat()}")
    return ", ".join(parts)


def _emit(args: argparse.Namespace, payload: Mapping[str, Any], line: str) -> None:
    if args.json:
        _write_out(_dumps(payload, pretty=True))
    else:
        _say(line)


def _prog(args: argparse.Namespace) -> str:
    """`amili pay`, `amili respite grant`: how error lines start."""
    sub = getattr(args, "respite_command", None) or getattr(args, "case_command", None)
    return " ".join(filter(None, (PROG, args.command, sub)))


def _api_failure(args: argparse.Namespace, exc: AmiliError) -> int:
    print(f"{_prog(args)}: error: {_api_problem(exc)}", file=sys.stderr, flush=True)
    if args.json:
        _write_out(_dumps({"ok": False, "error": error_record(exc)}, pretty=True))
    return EXIT_FAILED


# -- the demo -------------------------------------------------------------------------------------------


@attrs.frozen
class _DemoCase:
    id: str
    total: Decimal  # capital + costs + interest when seeded
    capital: Decimal
    state: str
    invoice_number: str | None  # set when the creditor system knows it
    big_customer: bool


_DEMO_COSTS = {"invoice": Decimal("0"), "reminder": Decimal("60.00"), "debt_collection": Decimal("180.00")}
_KINDS = ("payment", "crediting", "cancellation", "respite", "respite check")


def _cents(rng: random.Random, low: int, high: int) -> Decimal:
    return Decimal(rng.randrange(low * 100, high * 100)).scaleb(-2)


def _seed_demo(fake: FakeAmili, creditor: str, n: int, rng: random.Random) -> list[_DemoCase]:
    big_customers = [f"demo-customer-{k}" for k in range(max(2, n // 125))]
    cases: list[_DemoCase] = []
    for i in range(n):
        tier = rng.random()
        if tier < 0.40:
            capital = _cents(rng, 200, 2_000)
        elif tier < 0.75:
            capital = _cents(rng, 2_000, 10_000)
        elif tier < 0.95:
            capital = _cents(rng, 10_000, 50_000)
        else:
            capital = _cents(rng, 50_000, 250_000)
        roll = rng.random()
        state = "invoice" if roll < 0.55 else "reminder" if roll < 0.85 else "debt_collection"
        costs = _DEMO_COSTS[state]
        interest = _cents(rng, 10, 400) if state == "debt_collection" else Decimal("0")
        invoice = f"2025-{100000 + i}" if rng.random() < 0.6 else None
        big = rng.random() < 0.2
        case_id = fake.add_case(
            creditor,
            capital=capital,
            costs=costs,
            interest=interest,
            state=state,
            invoice_number=invoice,
            customer_id=rng.choice(big_customers) if big else None,
            closed=rng.random() < 0.03,
        )
        cases.append(_DemoCase(case_id, capital + costs + interest, capital, state, invoice, big))
    return cases


class _DemoPlan:
    """The action mix, generated lazily (what `execute_many` pulls), and what it generated."""

    def __init__(self, rng: random.Random, cases: list[_DemoCase], creditor: str, seed: int) -> None:
        self.rng = rng
        self.cases = cases
        self.by_invoice = [c for c in cases if c.invoice_number is not None]
        self.big = [c for c in cases if c.big_customer] or cases
        self.creditor = creditor
        self.seed = seed
        self.yielded = 0
        self.by_invoice_count = 0
        self.now = datetime.now(timezone.utc).replace(microsecond=0)

    def actions(self, n: int) -> Iterator[Action]:
        for i in range(n):
            roll = self.rng.random()
            if roll < 0.62:
                action: Action = self._payment(i)
            elif roll < 0.80:
                action = self._crediting(i)
            elif roll < 0.84:
                action = self._cancellation()
            else:
                action = self._respite()
            self.yielded += 1
            yield action

    def checks(self, n: int) -> Iterator[str]:
        for _ in range(n):
            yield self.rng.choice(self.big if self.rng.random() < 0.5 else self.cases).id

    def _payment(self, i: int) -> CreditorPayment:
        rng = self.rng
        case = rng.choice(self.cases)
        roll = rng.random()
        if roll < 0.70:  # partial
            amount = max(_CENT, (case.total * Decimal(rng.randint(5, 50)) / 100).quantize(_CENT))
        elif roll < 0.80:  # in full
            amount = case.total
        elif roll < 0.85:  # overpaid
            amount = case.total + _cents(rng, 1, 500)
        else:  # a round sum
            amount = Decimal(rng.choice((100, 200, 250, 500)))
        identity: dict[str, Any] = {"case": case.id}
        if rng.random() < 0.2 and self.by_invoice:
            self.by_invoice_count += 1
            known = rng.choice(self.by_invoice)
            # Now and then an invoice number the creditor mistyped: Amili refuses it (422).
            invoice = known.invoice_number if rng.random() > 0.03 else f"2025-9{rng.randint(0, 99999):05d}"
            identity = {"invoice_number": invoice}
            if known is not case and invoice == known.invoice_number:
                amount = (known.total * Decimal(rng.randint(10, 60)) / 100).quantize(_CENT) or _CENT
        return CreditorPayment(
            creditor=self.creditor,
            amount=amount,
            currency="SEK",
            bank_transaction_date=self.now - timedelta(days=rng.randint(0, 20), minutes=rng.randint(0, 600)),
            creditor_payment_reference=f"DEMO-{self.seed}-PAY-{i:06d}",
            **identity,
        )

    def _crediting(self, i: int) -> CreditorCrediting:
        rng = self.rng
        case = rng.choice(self.cases)
        if rng.random() < 0.05:
            amount = case.capital
        else:
            amount = max(_CENT, (case.capital * Decimal(rng.randint(5, 30)) / 100).quantize(_CENT))
        return CreditorCrediting(
            case=case.id,
            creditor=self.creditor if rng.random() < 0.5 else None,
            amount=amount,
            currency="SEK",
            creditor_reference=f"DEMO-{self.seed}-CRED-{i:06d}",
        )

    def _cancellation(self) -> CreditorCancellation:
        case = self.rng.choice(self.cases)
        if case.invoice_number is not None and self.rng.random() < 0.2:
            return CreditorCancellation(creditor=self.creditor, invoice_number=case.invoice_number)
        return CreditorCancellation(creditor=self.creditor, case=case.id)

    def _respite(self) -> RespiteGrant:
        rng = self.rng
        case = rng.choice(self.big if rng.random() < 0.3 else self.cases)
        days = rng.choice((7, 10, 14, 14, 21, 30)) if rng.random() < 0.9 else rng.choice((45, 60, 90))
        return RespiteGrant(case=case.id, days=days)


class _Tally:
    def __init__(self) -> None:
        self.rows: dict[str, Counter[str]] = {kind: Counter() for kind in _KINDS}
        self.refused: dict[str, Counter[str]] = {kind: Counter() for kind in _KINDS}
        self.reasons: Counter[str] = Counter()

    def receipt(self, kind: str, receipt: Any) -> str:
        status = getattr(receipt, "status", None)
        column = "warning" if status == "warning" else "business_error" if status == "error" else "ok"
        reason = getattr(receipt, "status_reason_locale", None)
        if reason:
            self.reasons[reason] += 1
        self.rows[kind][column] += 1
        self.rows[kind]["total"] += 1
        return column

    def error(self, kind: str, exc: BaseException) -> None:
        self.rows[kind]["refused"] += 1
        self.rows[kind]["total"] += 1
        self.refused[kind][type(exc).__name__] += 1
        for field, messages in getattr(exc, "issues", {}).items():
            for message in messages:
                text = re.sub(r"'[^']*'", "'…'", message)
                self.reasons[text if field in ("respite", "_") else f"{field}: {text}"] += 1

    def check(self, allowed: bool, issues: Sequence[str]) -> None:
        row = self.rows["respite check"]
        row["total"] += 1
        if allowed:
            row["ok"] += 1
        else:
            row["refused"] += 1
            self.refused["respite check"]["not allowed"] += 1
            self.reasons.update(issues)


async def _demo(args: argparse.Namespace) -> int:
    from .testing import FakeAmili

    n_cases = args.cases
    rng = random.Random(args.seed)
    started = time.perf_counter()
    fake = FakeAmili(seed=args.seed, record_requests=False)
    creditor = fake.add_creditor(
        name="Demo Creditor AB", respite_max_days=30, respite_max_per_case=1, respite_max_per_customer=3
    )
    cases = _seed_demo(fake, creditor.id, n_cases, rng)
    seeding = time.perf_counter() - started
    plan = _DemoPlan(rng, cases, creditor.id, args.seed)
    n_actions = n_cases * 2
    n_checks = max(1, n_cases * 3 // 10)
    tally = _Tally()
    seen = bytearray(n_actions)
    extra_outcomes = 0
    checks_done = 0
    check_workers = max(1, args.concurrency // 8)

    async with fake.client(creditor) as client:
        run_started = time.perf_counter()
        progress = Progress(n_actions + n_checks, label="demo", unit="actions", enabled=not args.quiet)

        async def run_actions() -> None:
            nonlocal extra_outcomes
            async for outcome in client.execute_many(plan.actions(n_actions), concurrency=args.concurrency):
                if 0 <= outcome.index < n_actions and seen[outcome.index] == 0:
                    seen[outcome.index] = 1
                else:
                    extra_outcomes += 1
                kind = type(outcome.action).kind
                if outcome.error is not None:
                    tally.error(kind, outcome.error)
                else:
                    tally.receipt(kind, outcome.receipt)
                progress.advance()

        checks = plan.checks(n_checks)

        async def run_checks() -> None:
            nonlocal checks_done
            for case_id in checks:  # shared by the workers: each pulls the next case
                try:
                    result = await client.respite.check(case_id)
                except AmiliError as exc:
                    tally.error("respite check", exc)
                else:
                    tally.check(result.allowed, result.issues)
                progress.advance()
                checks_done += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_actions)
            for _ in range(check_workers):
                tg.start_soon(run_checks)
        elapsed = time.perf_counter() - run_started
        progress.close()
        token_requests = client.token_requests

    outcomes = sum(row["total"] for row in tally.rows.values())
    total = n_actions + n_checks
    complete = (
        plan.yielded == n_actions and all(seen) and extra_outcomes == 0 and checks_done == n_checks
    ) and outcomes == total
    summary: dict[str, Any] = {
        "cases": n_cases,
        "seed": args.seed,
        "concurrency": args.concurrency,
        "actions": total,
        "outcomes": outcomes,
        "one_outcome_per_action": complete,
        "by_kind": {
            kind: {
                "total": tally.rows[kind]["total"],
                "ok": tally.rows[kind]["ok"],
                "warning": tally.rows[kind]["warning"],
                "business_error": tally.rows[kind]["business_error"],
                "refused": tally.rows[kind]["refused"],
                "refused_by": dict(tally.refused[kind].most_common()),
            }
            for kind in _KINDS
        },
        "payments_by_invoice_number": plan.by_invoice_count,
        "reasons": dict(tally.reasons.most_common()),
        "seeding_seconds": round(seeding, 3),
        "elapsed_seconds": round(elapsed, 3),
        "throughput_per_second": round(total / elapsed, 1) if elapsed > 0 else None,
        "token_requests": token_requests,
        "tokens_issued": fake.tokens_issued,
    }
    if args.json:
        _write_out(_dumps(summary, pretty=True))
    else:
        _say(_demo_table(summary))
    if not complete:
        _warn(
            f"error: {outcomes:,} outcomes for {total:,} actions "
            f"({extra_outcomes} duplicates): every action must produce exactly one"
        )
        return EXIT_FAILED
    return EXIT_OK


def _demo_table(s: Mapping[str, Any]) -> str:
    head = ("kind", "total", "ok", "warning", "business error", "refused")
    rows: list[tuple[str, ...]] = []
    sums = Counter[str]()
    for kind, row in s["by_kind"].items():
        values = (row["total"], row["ok"], row["warning"], row["business_error"], row["refused"])
        rows.append((kind, *(f"{v:,}" for v in values)))
        sums.update(dict(zip(("total", "ok", "warning", "business_error", "refused"), values, strict=True)))
    rows.append(("all", *(f"{sums[k]:,}" for k in ("total", "ok", "warning", "business_error", "refused"))))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))

    lines = [
        f"amili demo: {s['cases']:,} cases in an in-memory Amili, {s['actions']:,} actions, "
        f"concurrency {s['concurrency']}, seed {s['seed']}",
        "",
        fmt(head),
        fmt(["-" * w for w in widths]),
        *(fmt(r) for r in rows),
        "",
    ]
    for kind, row in s["by_kind"].items():
        if row["refused_by"]:
            refusals = ", ".join(f"{name} {count:,}" for name, count in row["refused_by"].items())
            lines.append(f"refused {kind}: {refusals}")
    if s["reasons"]:
        top = list(s["reasons"].items())[:10]
        width = max(len(reason) for reason, _ in top)
        lines.append("why (warnings, business errors, refusals):")
        lines.extend(f"  {reason.ljust(width)}  {count:>6,}" for reason, count in top)
    lines.append(f"payments identified by invoice number + creditor: {s['payments_by_invoice_number']:,}")
    lines.append(
        f"elapsed {s['elapsed_seconds']:.2f} s ({s['seeding_seconds']:.2f} s seeding), "
        f"throughput {s['throughput_per_second'] or 0:,.0f} actions/s"
    )
    lines.append(f"token requests: client {s['token_requests']}, in-memory Amili issued {s['tokens_issued']}")
    verdict = "yes" if s["one_outcome_per_action"] else "NO"
    lines.append(f"every action produced exactly one outcome: {verdict} ({s['outcomes']:,}/{s['actions']:,})")
    return "\n".join(lines)


# -- bulk files -----------------------------------------------------------------------------------------

BULK_FIELDS = (
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
_KIND_FIELDS: dict[str, frozenset[str]] = {
    "payment": frozenset(
        {
            "creditor",
            "case",
            "invoice_number",
            "amount",
            "currency",
            "bank_transaction_date",
            "creditor_payment_reference",
        }
    ),
    "crediting": frozenset({"creditor", "case", "invoice_number", "amount", "currency", "creditor_reference"}),
    "cancellation": frozenset({"creditor", "case", "invoice_number"}),
    "respite": frozenset({"case", "days"}),
}
_RESULT_HEAD = re.compile(rb'\{"line":([0-9]+),"ok":(true|false)')
_CHUNK = 1 << 20


class _Bitmap:
    """Line numbers as bits: a million lines in 128 KB."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0
        self.highest = 0

    def add(self, n: int) -> bool:
        byte, bit = divmod(n, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits))))
        if self._bits[byte] >> bit & 1:
            return False
        self._bits[byte] |= 1 << bit
        self.count += 1
        self.highest = max(self.highest, n)
        return True

    def __contains__(self, n: int) -> bool:
        byte, bit = divmod(n, 8)
        return byte < len(self._bits) and bool(self._bits[byte] >> bit & 1)


def count_lines(path: Path) -> int:
    """Lines in a file by a fast byte scan (a last line without a newline counts too)."""
    lines = 0
    last = b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def read_done(out: Path) -> tuple[_Bitmap, int]:
    """The input line numbers `out` already holds a result for, and how many of those failed.

    A last line cut short (the previous run was killed mid-write) is removed, so new results append cleanly.
    """
    done = _Bitmap()
    failed = 0
    if not out.exists():
        return done, failed
    good_end = 0
    with out.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            match = _RESULT_HEAD.match(raw)
            if match is not None:
                line, ok = int(match.group(1)), match.group(2) == b"true"
            else:
                try:
                    data = orjson.loads(raw)
                    line, ok = int(data["line"]), bool(data["ok"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    good_end += len(raw)
                    continue  # not one of ours: leave it, it names no line
            good_end += len(raw)
            if done.add(line) and not ok:
                failed += 1
    if good_end < out.stat().st_size:
        _warn(f"{out}: removing an incomplete last line left by an interrupted run")
        with out.open("r+b") as fh:
            fh.truncate(good_end)
    return done, failed


_Item = bytes | dict[str, str] | ValidationError


def _csv_records(fh: IO[bytes]) -> Iterator[tuple[int, _Item]]:
    """(start line, row) for each CSV record after the header. The header is read and checked now (a
    `UsageError` before anything runs), the rows as they are pulled."""
    bad_lines: set[int] = set()
    physical = 0

    def text_lines() -> Iterator[str]:
        nonlocal physical
        for raw in fh:
            physical += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                bad_lines.add(physical)
                text = raw.decode("utf-8", "replace")
            if physical == 1:
                text = text.removeprefix("\ufeff")
            yield text

    reader = csv.reader(text_lines())
    try:
        header = next(reader)
    except StopIteration:
        return iter(())
    except csv.Error as exc:
        raise UsageError(f"the CSV header cannot be read: {exc}") from None
    names = [name.strip() for name in header]
    unknown = [n for n in names if n not in BULK_FIELDS]
    if unknown:
        raise UsageError(
            f"unknown column(s) in the CSV header: {', '.join(map(repr, unknown))} (known: {', '.join(BULK_FIELDS)})"
        )
    if len(set(names)) != len(names) or "kind" not in names:
        raise UsageError("the CSV header must name each column once, and include 'kind'")

    def rows() -> Iterator[tuple[int, _Item]]:
        while True:
            start = physical + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield start, _validate.fail("line", f"not valid CSV ({exc})")
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if any(n in bad_lines for n in range(start, physical + 1)):
                yield start, _validate.fail("line", "not valid UTF-8")
            elif len(row) > len(names):
                yield (
                    start,
                    _validate.fail("line", f"has {len(row)} values but the header names {len(names)}"),
                )
            else:
                yield start, {name: value for name, value in zip(names, row, strict=False) if value.strip()}

    return rows()


def _jsonl_records(fh: IO[bytes]) -> Iterator[tuple[int, _Item]]:
    for n, raw in enumerate(fh, 1):
        if raw.strip():
            yield n, raw


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def parse_item(item: _Item) -> dict[str, Any]:
    if isinstance(item, ValidationError):
        raise item
    if isinstance(item, dict):
        return item
    try:
        text = item.decode("utf-8")
    except UnicodeDecodeError:
        raise _validate.fail("line", "not valid UTF-8") from None
    try:
        data = json.loads(text, parse_float=Decimal, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise _validate.fail("line", f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # NaN / Infinity, bad UTF-8, absurd nesting
        text = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise _validate.fail("line", f"not valid JSON: {text}") from None
    if not isinstance(data, dict):
        raise _validate.fail("line", f"must be a JSON object, got {type(data).__name__}")
    return data


def _text_field(row: Mapping[str, Any], field: str) -> str | None:
    value = row.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _validate.fail(field, f"must be a string, got {type(value).__name__}")
    return value.strip() or None


def build_action(row: Mapping[str, Any], seeded: Seeded | None) -> Action:
    """One bulk line -> its action; any problem is a ValidationError naming the field."""
    kind = row.get("kind")
    if kind is None:
        raise _validate.fail("kind", f"missing (one of {', '.join(_KIND_FIELDS)})")
    if not isinstance(kind, str) or kind.strip() not in _KIND_FIELDS:
        raise _validate.fail("kind", f"unknown kind {str(kind)[:40]!r} (one of {', '.join(_KIND_FIELDS)})")
    kind = kind.strip()
    allowed = _KIND_FIELDS[kind]
    for field, value in row.items():
        if field == "kind" or value is None:
            continue
        if field not in BULK_FIELDS:
            raise _validate.fail(str(field)[:40], "unknown field")
        if field not in allowed:
            raise _validate.fail(field, f"does not apply to a {kind}")
    creditor = _text_field(row, "creditor")
    case = _text_field(row, "case")
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
    invoice = _text_field(row, "invoice_number")
    if kind == "cancellation":
        if creditor is None:
            raise _validate.fail("creditor", "missing")
        return CreditorCancellation(creditor=creditor, case=case, invoice_number=invoice)
    amount = _amount(row.get("amount"))
    currency = _text_field(row, "currency") or "SEK"
    if kind == "crediting":
        return CreditorCrediting(
            creditor=creditor,
            case=case,
            invoice_number=invoice,
            amount=amount,
            currency=currency,
            creditor_reference=_text_field(row, "creditor_reference"),
        )
    if creditor is None:
        raise _validate.fail("creditor", "missing")
    when = _text_field(row, "bank_transaction_date")
    if when is None:
        raise _validate.fail("bank_transaction_date", "missing")
    return CreditorPayment(
        creditor=creditor,
        case=case,
        invoice_number=invoice,
        amount=amount,
        currency=currency,
        bank_transaction_date=parse_date(when),
        creditor_payment_reference=_text_field(row, "creditor_payment_reference"),
    )


def _amount(value: Any) -> Decimal:
    if value is None:
        raise _validate.fail("amount", "missing")
    if isinstance(value, str):
        return parse_amount(value)
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise _validate.fail("amount", f"must be a number or a string like '250.00', got {type(value).__name__}")
    return _validate.amount("amount", value)


def _days(value: Any) -> int:
    if value is None:
        raise _validate.fail("days", "missing")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise _validate.fail("days", f"must be a whole number of days, got {str(value)[:40]!r}")
    return _validate.days("days", value)


class _Results:
    """The `--out` file: one JSON line per input line, appended and flushed as results come in."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.ok = 0
        self.failed = 0
        self.not_sent: list[NotSentError] = []  # issue 10: lines a stopped run did not send get no result line

    def write(
        self,
        line: int,
        kind: str | None,
        *,
        receipt: Any = None,
        error: BaseException | None = None,
        action: Action | None = None,
        **extra: Any,
    ) -> bool:
        result: dict[str, Any] = {"line": line}
        if error is not None:
            result.update(ok=False, kind=kind, error=error_record(error))
        else:
            applied = not (isinstance(receipt, Receipt) and not receipt.applied)
            result.update(ok=applied, kind=kind, receipt=record(receipt), **extra)
            if not applied:
                assert action is not None and isinstance(receipt, Receipt)
                result["error"] = _business_error(action, receipt)
        self._fh.write(_dumps(result))
        self._fh.flush()
        if result["ok"]:
            self.ok += 1
        else:
            self.failed += 1
        return bool(result["ok"])


def _records(fmt: str, fh: IO[bytes]) -> Iterator[tuple[int, _Item]]:
    return _csv_records(fh) if fmt == "csv" else _jsonl_records(fh)


def _open_input(path: Path) -> IO[bytes]:
    if str(path) == "-":
        return sys.stdin.buffer
    return path.open("rb")


def _bulk_format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    suffix = Path(args.file).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise UsageError(f"cannot tell the format of {args.file!r} from its name: pass --format csv or --format jsonl")


def _bulk(args: argparse.Namespace) -> int:
    path = Path(args.file)
    fmt = _bulk_format(args)
    if str(path) != "-" and not path.is_file():
        raise UsageError(f"{args.file}: no such file")
    out = Path(args.out)
    if out.exists() and not out.is_file():
        raise UsageError(f"--out {args.out}: not a regular file")
    if out.exists() and str(path) != "-" and out.samefile(path):
        raise UsageError("--out must not be the input file")
    done, failed_before = read_done(out)
    skipped_before = done.count
    total: int | None = None
    if path.is_file():
        total = max(0, count_lines(path) - (1 if fmt == "csv" else 0) - done.count)
    seeded = seed_fake(args.fake_cases) if args.fake else None
    started = time.perf_counter()
    progress = Progress(total, label="bulk", unit="lines", enabled=not args.quiet)
    with _open_input(path) as in_fh, out.open("ab") as out_fh:
        records = _records(fmt, in_fh)  # a bad CSV header stops here, before anything is sent
        results = _Results(out_fh)

        async def run() -> None:
            async with _open_client(args, seeded) as client:
                if done.count and seeded is None and str(path) != "-":
                    await _reconcile_resumed(client, path, fmt, done, results, args.concurrency, progress)
                await _bulk_run(client, records, done, seeded, results, args, progress)

        asyncio.run(run())
    progress.close()
    elapsed = time.perf_counter() - started
    processed = results.ok + results.failed
    message = (
        f"bulk: {processed:,} lines processed ({results.ok:,} ok, {results.failed:,} failed) in "
        f"{format_duration(elapsed)}"
    )
    if skipped_before:
        message += f"; {skipped_before:,} already in {out} skipped"
        if failed_before:
            message += f" ({failed_before:,} of them failed)"
    print(f"{message}; results in {out}", file=sys.stderr, flush=True)
    # -- issue 10: a run that stopped (credentials refused, Amili unreachable) says how to resume ----------------
    if results.not_sent:
        reason = results.not_sent[0].reason
        print(
            f"bulk: stopped: {reason}\nbulk: {len(results.not_sent):,} lines were not sent (no result in {out}); "
            "fix the cause, then run the same command again to send them (lines with a result are skipped)",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_FAILED
    # ------------------------------------------------------------------------------------------------------------
    return EXIT_FAILED if results.failed or failed_before else EXIT_OK


async def _bulk_run(
    client: AsyncAmiliClient,
    records: Iterator[tuple[int, _Item]],
    done: _Bitmap,
    seeded: Seeded | None,
    results: _Results,
    args: argparse.Namespace,
    progress: Progress,
) -> None:
    in_flight: dict[int, int] = {}  # execute_many's index -> input line (at most ~2 x concurrency entries)
    fatal: list[Exception] = []

    def actions() -> Iterator[Action]:
        # Runs inside execute_many's workers: a bad line becomes its result here, and anything else (the
        # input file vanishing, a full disk) stops the run cleanly and is raised once the workers are done.
        try:
            yield from _actions()
        except Exception as exc:
            fatal.append(exc)

    def _actions() -> Iterator[Action]:
        index = 0
        for line, item in records:
            if line in done:
                continue
            row: dict[str, Any] | None = None
            try:
                row = parse_item(item)
                action = build_action(row, seeded)
            except ValidationError as exc:
                kind = row.get("kind") if row is not None else None
                kind = kind if isinstance(kind, str) and kind in _KIND_FIELDS else None
                progress.advance(failed=0 if results.write(line, kind, error=exc) else 1)
                continue
            in_flight[index] = line
            index += 1
            yield action

    # issue 10: stop when the run cannot succeed; a line not sent gets no result line, so a rerun sends it
    async for outcome in client.execute_many(actions(), concurrency=args.concurrency, stop_on=StopOn()):
        line = in_flight.pop(outcome.index)
        if isinstance(outcome.error, NotSentError):
            results.not_sent.append(outcome.error)
            continue
        kind = type(outcome.action).kind
        if outcome.error is not None:
            ok = results.write(line, kind, error=outcome.error)
        else:
            ok = results.write(line, kind, receipt=outcome.receipt, action=outcome.action)
        progress.advance(failed=0 if ok else 1)
    if fatal:
        raise fatal[0]
    if in_flight:  # pragma: no cover - execute_many yields one outcome per action
        raise RuntimeError(f"{len(in_flight)} actions produced no outcome")


async def _reconcile_resumed(
    client: AsyncAmiliClient,
    path: Path,
    fmt: str,
    done: _Bitmap,
    results: _Results,
    concurrency: int,
    progress: Progress,
) -> None:
    """Before resuming: the lines an interrupted run may have sent without writing their result.

    Results are written in completion order, so the lines in flight when the run stopped are missing lines
    at most a few times the concurrency past the last one written. A payment or crediting there that
    carries a reference is looked up first: when Amili has it, its record becomes the result instead of
    paying twice. When the lookup fails, the line is reported unknown rather than sent again.
    """
    horizon = done.highest + max(1024, 4 * concurrency)

    def candidates() -> Iterator[tuple[int, Action]]:
        with _open_input(path) as fh:
            for line, item in _records(fmt, fh):
                if line > horizon:
                    return
                if line in done:
                    continue
                try:
                    action = build_action(parse_item(item), None)
                except (ValidationError, UsageError):
                    continue
                if isinstance(action, (CreditorPayment, CreditorCrediting)) and action.lookup_filter():
                    yield line, action

    source = candidates()

    async def worker() -> None:
        for line, action in source:
            resource = client.creditor_payments if isinstance(action, CreditorPayment) else client.creditor_creditings
            where = action.lookup_filter()
            assert where is not None
            try:
                found = [r async for r in resource.list(where=where, max_results=1, limit=1)]
            except AmiliError as exc:
                unknown = _outcome_unknown(action, exc)
                results.write(line, action.kind, error=unknown)
                done.add(line)
                progress.advance(failed=1)
                continue
            if found:
                results.write(line, action.kind, receipt=found[0], action=action, reconciled=True)
                done.add(line)
                progress.advance()

    async with anyio.create_task_group() as tg:
        for _ in range(min(concurrency, 16)):
            tg.start_soon(worker)


def _outcome_unknown(action: Action, exc: AmiliError) -> AmiliError:
    from .errors import OutcomeUnknownError

    return OutcomeUnknownError(
        "an interrupted run may have sent this line, and looking it up by its reference failed "
        f"({exc}); check it in Amili before sending it again",
        action=action,
        reference=action.reference,
    )


# -- the command line -----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _connection_options(parser: argparse.ArgumentParser, *, single: bool) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument(
        "--base-url", help="Amili's base URL (default: $AMILI_BASE_URL, else the sandbox)", default=None
    )
    fake = parser.add_argument_group("in-memory Amili")
    fake.add_argument(
        "--fake",
        action="store_true",
        help="run against an in-memory Amili seeded with one creditor and one case (no network); "
        "--creditor and --case may then be left out",
    )
    if single:
        fake.add_argument(
            "--fake-state",
            choices=("invoice", "reminder", "debt_collection"),
            default="invoice",
            help="state of the seeded case (default: invoice)",
        )
        fake.add_argument(
            "--fake-capital",
            type=_arg(parse_amount),
            default=Decimal("1000.00"),
            help="capital of the seeded case (default: 1000.00)",
        )


def _case_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--creditor", help="the creditor's id (24 hex characters)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--case", help="the case's id (24 hex characters)")
    which.add_argument("--invoice-number", help="the case's invoice number (with --creditor)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Amili's creditor API from the shell: payments, creditings, cancellations, respite, "
        "bulk files, and a self-contained demo.",
        epilog="Credentials: AMILI_API_CODE and AMILI_PRIVATE_KEY (or AMILI_PRIVATE_KEY_FILE); "
        "AMILI_BASE_URL picks the server. "
        "Exit codes: 0 ok, 1 refused or failed, 2 bad input, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"amili-async {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run a realistic mix of actions against an in-memory Amili (no network, no configuration)",
        description="Seed an in-memory Amili with cases, run payments, creditings, cancellations and respite "
        "checks and grants through the SDK concurrently, and summarise the outcomes.",
    )
    demo.add_argument("--cases", type=_positive_int, default=1000, help="cases to seed (default: 1000)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--concurrency", type=_positive_int, default=32, help="actions at once (default: 32)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")

    pay = commands.add_parser("pay", help="register a payment the debtor made to you directly")
    _case_options(pay)
    pay.add_argument("--amount", type=_arg(parse_amount), required=True, help="e.g. 250.00 (a dot, two decimals)")
    pay.add_argument("--currency", default="SEK", help="ISO 4217 (default: SEK)")
    pay.add_argument(
        "--date",
        type=_arg(parse_date),
        help="bank transaction date: 2025-10-07 (UTC), ISO 8601 with an offset, or RFC 1123 (default: now)",
    )
    pay.add_argument(
        "--reference",
        help="your id for the payment (creditor_payment_reference); recommended: a lost answer is then "
        "looked up instead of guessed",
    )
    _connection_options(pay, single=True)

    credit = commands.add_parser("credit", help="credit part of a case's capital")
    _case_options(credit)
    credit.add_argument("--amount", type=_arg(parse_amount), required=True, help="e.g. 100.00")
    credit.add_argument("--currency", default="SEK", help="ISO 4217 (default: SEK)")
    credit.add_argument("--reference", help="your id for the crediting (creditor_reference); recommended")
    _connection_options(credit, single=True)

    cancel = commands.add_parser("cancel", help="cancel a case")
    _case_options(cancel)
    _connection_options(cancel, single=True)

    respite = commands.add_parser("respite", help="check or grant respite (anstånd) on a case")
    respite_commands = respite.add_subparsers(dest="respite_command", required=True, metavar="{check,grant}")
    check = respite_commands.add_parser("check", help="whether a respite may be granted now")
    check.add_argument("case_id", metavar="CASE", nargs="?", help="the case's id (optional with --fake)")
    _connection_options(check, single=True)
    grant = respite_commands.add_parser("grant", help="postpone the case by --days")
    grant.add_argument("case_id", metavar="CASE", nargs="?", help="the case's id (optional with --fake)")
    grant.add_argument("--days", type=int, required=True, help="days to postpone by")
    _connection_options(grant, single=True)

    case = commands.add_parser("case", help="read a case")
    case_commands = case.add_subparsers(dest="case_command", required=True, metavar="{get}")
    get = case_commands.add_parser("get", help="state, balances and due date of a case")
    get.add_argument("case_id", metavar="CASE", nargs="?", help="the case's id (optional with --fake)")
    _connection_options(get, single=True)

    bulk = commands.add_parser(
        "bulk",
        help="run a CSV or JSONL file of actions, resumably",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_BULK_HELP,
    )
    bulk.add_argument("file", metavar="FILE", help="a .csv (with a header row) or .jsonl file; - for stdin")
    bulk.add_argument("--out", required=True, help="results, one JSON line per input line (appended; resumable)")
    bulk.add_argument("--concurrency", type=_positive_int, default=32, help="actions at once (default: 32)")
    bulk.add_argument("--format", choices=("csv", "jsonl"), help="the input format (default: from the name)")
    bulk.add_argument("--quiet", action="store_true", help="no progress bar")
    bulk.add_argument("--base-url", default=None, help="Amili's base URL (default: $AMILI_BASE_URL)")
    bulk.add_argument("--fake", action="store_true", help="run against an in-memory Amili (see 'Trying it out' above)")
    bulk.add_argument("--fake-cases", type=_positive_int, default=100, help="cases to seed with --fake (default: 100)")
    return parser


_BULK_HELP = """\
Run one action per input line, --concurrency at a time, and write one result per line to --out.

Each line (JSONL) or row (CSV, with a header) has a `kind` and the action's fields:
  payment       creditor, case | invoice_number, amount, currency (SEK), bank_transaction_date,
                creditor_payment_reference
  crediting     case | invoice_number (+ creditor), amount, currency (SEK), creditor_reference
  cancellation  creditor, case | invoice_number
  respite       case, days
Amounts are exact decimals (`250.00`, or a JSON number); dates are 2025-10-07 (UTC), ISO 8601 with an offset
or RFC 1123. Blank lines are ignored.

Results: {"line": N, "ok": true, "kind": ..., "receipt": {...}} or
         {"line": N, "ok": false, "kind": ..., "error": {"type", "message", "status_code", "reference"}}
with N the 1-based line number in FILE (for a CSV the header is line 1). A line that cannot be read (bad
JSON, unknown kind, bad amount, missing field) gets an error result; the run goes on. Exit code 0 when every
line succeeded, 1 otherwise.

Resuming: when --out exists, the lines it already has a result for are skipped and new results are
appended. Payments and creditings with a reference near the point of interruption are first looked up in
Amili, so a line whose answer was lost is not sent twice; give every line a reference.

Trying it out: with --fake the file runs against an in-memory Amili seeded with one creditor and
--fake-cases cases of 10000.00 SEK. There, creditor `@` is the seeded creditor, case `@0`, `@1`, ... the
i-th seeded case, and invoice number INV-i belongs to case @i:
  kind,creditor,case,amount,bank_transaction_date,creditor_payment_reference
  payment,@,@0,250.00,2025-10-07,PAY-1
"""


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "bulk":
        return _bulk(args)  # files are opened before the event loop starts
    runner: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = _demo if command == "demo" else _single
    return asyncio.run(runner(args))


def main(argv: Sequence[str] | None = None) -> int:
    """The `amili` console script (also `python -m amili_async`). Returns the exit code."""
    from ._config import configure_logging_from_env

    configure_logging_from_env()
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = _prog(args)
    try:
        return _dispatch(args)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigurationError as exc:
        print(f"{prog}: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as exc:  # caught before sending: the input is wrong
        print(f"{prog}: error: {_input_problem(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except AmiliError as exc:
        print(f"{prog}: error: {_api_problem(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        hint = f"; rerun the same command to resume from {out}" if out else ""
        print(f"\n{prog}: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `amili ... | head`: stop quietly
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:  # a file that cannot be read or written (permissions, a full disk)
        name = f" {exc.filename}" if exc.filename else ""
        print(f"{prog}: error:{name} {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
