"""The rule of evidence, written once: what an attempt of a write proves, and whether a record is the action's.

What happened to an attempt decides what may follow it:

| what happened to the attempt                                   | what it proves     | what the SDK may do     |
|----------------------------------------------------------------|--------------------|-------------------------|
| never left: connect refused or timed out, pool timeout         | not applied        | resend                  |
| never left, and never will: TLS certificate, protocol misuse   | not applied        | raise                   |
| refused before processing: 429, 401 (refresh once)             | not applied        | resend after the wait   |
| any 2xx                                                        | **applied**        | never resend (1)        |
| any other 4xx (and 3xx: redirects are not followed)            | not applied, final | raise                   |
| sent, no definite answer: read timeout, reset after sending, truncated answer, 5xx | **nothing** | reconcile |

(1) Return the record; when the body is unreadable, fetch it (by `_id`/`Location`, else by reference), and when
that fails raise `AppliedWithoutReceiptError`, which says the write was applied.

`of_answer` and `of_failure` are that table, `judge_failure` and `judge_refusal` turn it into what to raise, and
the pipeline asks them and nothing else. Reconciling (`_reconcile.py`) then treats a lookup as *evidence*,
never as proof on its own: a record found must be this action's on every identifying field it carries
(`Identity.sort`), and an empty answer counts as absence only when the server demonstrably honoured the filter
and the settle window has passed. When the call's deadline ends it, `deadline_error` says what the attempts
proved: applied, unknown, or not applied.

A uniqueness refusal of the reference (Eve's 422 `value '...' is not unique`, or a 409 from a unique index)
proves this attempt was not applied *and* that a record holding the reference exists: see `is_not_unique`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs
import httpx

from ._wire import is_object_id, parse_datetime
from .errors import AmiliError, APIStatusError, TimeoutError, TransportError
from .retry import Failure, FailureKind, classify_exception

__all__ = [
    "Ambiguous",
    "Evidence",
    "Identity",
    "Next",
    "Proof",
    "Sighting",
    "Taken",
    "Unreadable",
    "deadline_error",
    "is_not_unique",
    "judge_failure",
    "judge_refusal",
    "of_answer",
    "of_failure",
]

Doc = Mapping[str, Any]


class Proof(enum.Enum):
    """What one attempt proves about the write it carried."""

    NOT_APPLIED = "not applied"
    APPLIED = "applied"
    NOTHING = "nothing"


class Next(enum.Enum):
    """What the SDK may do after an attempt."""

    RESEND = "resend"
    RESEND_AFTER_WAIT = "resend after the wait"
    RAISE = "raise"
    RETURN = "return the record, never resend"
    RECONCILE = "reconcile"


@attrs.frozen
class Evidence:
    proves: Proof
    then: Next


NEVER_LEFT = Evidence(Proof.NOT_APPLIED, Next.RESEND)
NEVER_LEAVES = Evidence(Proof.NOT_APPLIED, Next.RAISE)
REFUSED_BEFORE = Evidence(Proof.NOT_APPLIED, Next.RESEND_AFTER_WAIT)
APPLIED = Evidence(Proof.APPLIED, Next.RETURN)
FINAL = Evidence(Proof.NOT_APPLIED, Next.RAISE)
UNKNOWN = Evidence(Proof.NOTHING, Next.RECONCILE)


def of_answer(status: int) -> Evidence:
    """What an HTTP answer to a write proves."""
    if 200 <= status < 300:
        return APPLIED
    if status in (401, 429):
        return REFUSED_BEFORE
    if status >= 500:
        return UNKNOWN
    return FINAL


def of_failure(exc: httpx.TransportError) -> Evidence:
    """What a failure below HTTP proves: only a connection that was never made proves anything."""
    kind = classify_exception(exc)
    if kind is FailureKind.NOT_SENT:
        return NEVER_LEFT
    if kind is FailureKind.FATAL:
        return NEVER_LEAVES
    return UNKNOWN


# -- the signals the pipeline raises for reconciliation (`_reconcile.py`) -----------------------------------

_ID_IN_BODY = re.compile(rb'"_id"\s*:\s*"([0-9a-f]{24})"')


class Ambiguous(Exception):
    """An attempt that was sent and got no definite answer (read timeout, disconnect after sending, 5xx).

    `wait`: the server asked to wait that long first (a 503 with `Retry-After`: throttling, issue 10)."""

    def __init__(self, message: str, error: AmiliError | None = None, *, wait: float | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.wait = wait


class Taken(Exception):
    """Amili refused the write because its reference is already held."""

    def __init__(self, error: APIStatusError) -> None:
        super().__init__(str(error))
        self.error = error


class Unreadable(Exception):
    """Amili answered 2xx (applied) with a body that is not the record."""

    def __init__(self, message: str, status: int, headers: Mapping[str, str], raw: bytes) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers
        self.raw = raw

    def record_id(self) -> str | None:
        location = self.headers.get("location") or self.headers.get("Location") or ""
        last = location.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        if is_object_id(last):
            return last
        found = _ID_IN_BODY.search(self.raw)
        return found.group(1).decode() if found else None


def judge_failure(exc: httpx.TransportError, text: str, *, write: bool, **where: Any) -> Exception:
    """What to raise for a failure below HTTP: a retryable `Failure`, a final error, or (a write) `Ambiguous`.

    `text` is what the error may say of `exc` (already scrubbed); `exc` itself is never kept in the chain."""
    evidence = of_failure(exc)
    if evidence.then is Next.RECONCILE and write:
        return Ambiguous(f"{text} (after the request was sent)")
    error_class = TimeoutError if isinstance(exc, httpx.TimeoutException) else TransportError
    error = error_class(text, **where)
    if evidence.then is Next.RAISE:
        return error
    return Failure(error, FailureKind.NOT_SENT if evidence.then is Next.RESEND else FailureKind.AMBIGUOUS)


def judge_refusal(
    error: APIStatusError, retry_after: float | None, *, write: bool, key: str | None, says_when: bool = False
) -> Exception:
    """What to raise for an error answer (`error`, built from it). `key`: the write's reference field;
    `says_when`: the answer carries `Retry-After` (a 503 that says when to come back is throttling, issue 10)."""
    status = error.status_code
    if status == 429:
        return Failure(error, FailureKind.THROTTLED, retry_after)
    if status == 503 and says_when:  # a write's 503 still proves nothing: wait what it asked, then reconcile
        wait = retry_after or 0.0
        return (
            Ambiguous(f"Amili answered {status} and asked to wait", error, wait=wait)
            if write
            else Failure(error, FailureKind.THROTTLED, retry_after)
        )
    if not write:  # reads are retried on what proves nothing, too
        return Failure(error, FailureKind.AMBIGUOUS, retry_after) if status in (500, 502, 503, 504) else error
    if of_answer(status).then is Next.RECONCILE:
        return Ambiguous(f"Amili answered {status}", error)
    if key is not None and is_not_unique(status, error.issues, key):
        return Taken(error)  # evidence that a record holding the reference exists
    return error


def deadline_error(message: str, proof: Proof | None, **where: Any) -> Exception:
    """The call's deadline ran out. For a write (`proof` of its attempts so far; None: nothing was sent, or
    it is a read) the error says what is known: applied, unknown, or not applied."""
    from .errors import AppliedWithoutReceiptError, OutcomeUnknownError, TimeoutError

    if proof is Proof.APPLIED:
        return AppliedWithoutReceiptError(f"{message}; the write WAS applied but its record was not read", **where)
    if proof is Proof.NOTHING:
        return OutcomeUnknownError(f"{message}; the write may or may not have been applied", **where)
    if proof is Proof.NOT_APPLIED:
        return TimeoutError(f"{message}; nothing that was sent was applied", **where)
    return TimeoutError(message, **where)


def is_not_unique(status: int, issues: Mapping[str, Sequence[str]], key: str) -> bool:
    """A refusal that says the reference is already held: a 409, or a 422 whose only issues are uniqueness."""
    if status == 409:
        return True
    if status != 422 or key not in issues:
        return False
    return all("not unique" in message for messages in issues.values() for message in messages)


# -- is this record the action's? ------------------------------------------------------------------------

# The fields that identify an action's record, by action kind, and the reference field each record must carry.
_IDENTIFYING: dict[str, tuple[str, tuple[str, ...]]] = {
    "payment": (
        "creditor_payment_reference",
        ("creditor", "case", "invoice_number", "amount", "currency", "bank_transaction_date"),
    ),
    "crediting": (
        "creditor_reference",
        ("creditor", "case", "invoice_number", "amount", "currency", "credit_invoice"),
    ),
    "cancellation": ("case", ("creditor", "case")),
}
# Where a record may carry a field under another name (Eve meta, or the case's own invoice number).
_ALSO_CALLED: dict[str, tuple[str, ...]] = {"case": ("_case",), "invoice_number": ("case_invoice_number",)}


def _same(expected: Any, value: Any) -> bool:
    """Equal as the wire means it: money as Decimal, dates to the second, text exactly."""
    if value is None:
        return False
    try:
        if isinstance(expected, Decimal):
            from .serde import parse_money

            return parse_money(value) == expected
        if isinstance(expected, datetime):
            parsed = value if isinstance(value, datetime) else parse_datetime(str(value))
            return int(parsed.timestamp()) == int(expected.timestamp())
    except (ValueError, ArithmeticError, TypeError):
        return False
    return isinstance(value, str) and value == expected


@attrs.frozen
class Sighting:
    """What one lookup showed, after checking every record client-side.

    `matching`: records that carry the reference and agree with the action on every identifying field they
    carry. `different`: records that carry the reference but differ. `unfiltered`: the server answered records
    outside the filter (it ignores `where`): its silence proves nothing. `more`: the server counts more
    records than it returned.
    """

    matching: tuple[Doc, ...] = ()
    different: tuple[Doc, ...] = ()
    unfiltered: bool = False
    more: bool = False

    @property
    def found(self) -> Doc | None:
        """The action's record, when exactly one record holds the reference and it is the action's."""
        if len(self.matching) == 1 and not self.different and not self.more:
            return self.matching[0]
        return None

    @property
    def conflict(self) -> bool:
        """Records hold the reference, but not exactly one of them, or not one that is the action's."""
        return bool(self.different) or len(self.matching) > 1 or (bool(self.matching) and self.more)

    @property
    def absent(self) -> bool:
        """Nothing holds the reference, according to a server that honoured the filter."""
        return not self.matching and not self.different and not self.unfiltered and not self.more


@attrs.frozen
class Identity:
    """How to find an action's record again (`path`, `where`) and how to tell it is that action's."""

    path: str
    where: Mapping[str, Any]
    key: str
    reference: str
    fields: Mapping[str, Any]

    @classmethod
    def of(cls, action: Any) -> Identity | None:
        """The identity of a payment, crediting or cancellation; None when it has nothing to look it up by."""
        where = action.lookup_filter()
        rule = _IDENTIFYING.get(getattr(action, "kind", ""))
        if where is None or rule is None:
            return None
        key, names = rule
        fields = {name: getattr(action, name) for name in (key, *names) if getattr(action, name) is not None}
        return cls(action.path, where, key, str(fields[key]), fields)

    def wire_fields(self) -> dict[str, Any]:
        """The identifying fields as the action sent them (for errors: "what we sent")."""
        from .serde import format_rfc1123

        return {
            name: format_rfc1123(value) if isinstance(value, datetime) else str(value)
            for name, value in self.fields.items()
        }

    def differences(self, record: Doc) -> list[str]:
        """The identifying fields `record` carries with another value than the action's."""
        out = []
        for name, expected in self.fields.items():
            for wire in (name, *_ALSO_CALLED.get(name, ())):
                if wire in record:
                    if not _same(expected, record[wire]):
                        out.append(name)
                    break
        return out

    def _in_filter(self, record: Doc) -> bool:
        # The reference must be there; every other filter field is compared where the record carries it.
        if not _same(self.reference, record.get(self.key)):
            return False
        return all(_same(value, record[name]) for name, value in self.where.items() if name in record)

    def sort(self, payload: Any) -> Sighting:
        """Check a lookup's answer (an Eve list) record by record; raises ValueError when it is not a list."""
        items = payload.get("_items") if isinstance(payload, Mapping) else None
        if not isinstance(items, list):
            raise ValueError("a list answer without _items")
        records = [item for item in items if isinstance(item, Mapping)]
        held = [r for r in records if self._in_filter(r)]
        matching = tuple(r for r in held if not self.differences(r))
        different = tuple(r for r in held if self.differences(r))
        unfiltered = len(held) != len(items)
        meta = payload.get("_meta")
        total = meta.get("total") if isinstance(meta, Mapping) else None
        more = not unfiltered and isinstance(total, int) and not isinstance(total, bool) and total > len(held)
        return Sighting(matching, different, unfiltered, more)
