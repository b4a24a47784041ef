"""The checks of `amili doctor`, each a small function returning typed findings (see `amili_async.doctor`).

A check states one assumption the SDK makes about Amili, what the server showed, and what the SDK will do
about it. Checks speak to the server only through the public client; the token answers and the headers
they need come from `Seen` records the doctor's transport wrapper keeps. A finding never holds a secret: a
token answer is described by its field names and value types, never its values.
"""

from __future__ import annotations

import enum
import re
import secrets
import statistics
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import attrs

from . import serde
from ._clock import CLOCK_TOLERANCE, server_clock_offset
from ._wire import TOKEN_PATH
from .auth import parse_token_answer
from .client import AsyncAmiliClient
from .errors import AmiliError, ConflictError, ResponseDecodeError, ValidationError
from .models.actions import CreditorCancellation, CreditorCrediting, CreditorPayment

__all__ = ["Finding", "Reads", "Seen", "Verdict"]

NOWHERE = "000000000000000000000000"  # a well-formed creditor id, for lookups when no creditor is known
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,40}")


class Verdict(str, enum.Enum):
    OK = "ok"
    DIFFERS = "differs"  # not as we assume, and the SDK copes (the finding says how)
    BROKEN = "broken"  # a safety assumption does not hold
    NOT_CHECKED = "not checked"


@attrs.frozen
class Finding:
    """One row of the report."""

    check: str
    verdict: Verdict
    assumption: str
    observed: str
    consequence: str


@attrs.frozen
class Seen:
    """One answer as it arrived: header names lower-cased, `at` our wall clock (epoch seconds) on arrival."""

    method: str
    path: str
    status: int
    headers: Mapping[str, str]
    body: bytes = attrs.field(repr=False)
    at: float


@attrs.define
class Reads:
    """What the read checks learned for the later checks: list totals, a case and its creditor."""

    totals: dict[str, int | None] = attrs.field(factory=dict)
    case: str | None = None
    creditor: str | None = None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "list"
    return "null" if value is None else "value"


def describe_body(raw: bytes) -> str:
    """What an answer looks like, without its values (a token answer's values are secrets)."""
    if not raw.strip():
        return "an empty body"
    try:
        payload = serde.loads(raw)
    except ValueError:
        return f"a body that is not JSON ({len(raw)} bytes)"
    if isinstance(payload, Mapping):
        names = [f"{k} ({_kind(v)})" for k, v in sorted(payload.items()) if _FIELD_NAME.fullmatch(str(k))]
        return "a JSON object with " + (", ".join(names) if names else "no readable field names")
    return f"a JSON {_kind(payload)}"


# -- login and token --------------------------------------------------------------------------------------

ASSUME_LOGIN = "Your credentials get an access token from {how} (documented by Amili)"
ASSUME_SHAPE = "The token answer names the token `token` or `access_token` (our assumption: undocumented)"
ASSUME_LIFETIME = "The token answer says how long the token lives: `expires_in`, `expires` or a JWT `exp` (assumption)"


def check_login(seen: Sequence[Seen], error: AmiliError | None, assumed_lifetime: float) -> list[Finding]:
    """Login, the token answer's shape, and the token's lifetime, from the token endpoint's answers."""
    answers = [s for s in seen if s.path == TOKEN_PATH]
    if not answers:
        if error is None:
            observed, sdk = "no token request: the client was given a token", "uses that token; a 401 is final"
            return [Finding("login", Verdict.NOT_CHECKED, ASSUME_LOGIN.format(how=TOKEN_PATH), observed, sdk)]
        observed = f"the token endpoint could not be reached ({type(error).__name__})"
        sdk = "every call fails until the token endpoint answers"
        return [Finding("login", Verdict.BROKEN, ASSUME_LOGIN.format(how=TOKEN_PATH), observed, sdk)]
    last = answers[-1]
    assumption = ASSUME_LOGIN.format(how=f"{last.method} {TOKEN_PATH}")
    statuses = ", then ".join(str(a.status) for a in answers)
    observed = f"answered {statuses}"
    first_offset = server_clock_offset(answers[0].headers, answers[0].at)
    skewed = first_offset is not None and abs(first_offset) > CLOCK_TOLERANCE
    if len(answers) > 1 and 400 <= answers[0].status < 500 and skewed:
        observed += " (the first refusal came with a server clock far from ours; the SDK signed again on it)"
    if not 200 <= last.status < 300:
        hint = "check the API code, the public key registered with Amili and the algorithm"
        if last.status >= 500:
            hint = "the token endpoint is failing; try again later"
        sdk = f"every call fails with {type(error).__name__ if error else 'an error'}: {hint}"
        return [Finding("login", Verdict.BROKEN, assumption, observed, sdk)]
    shape = describe_body(last.body)
    try:
        grant = parse_token_answer((last.status, last.headers, last.body))
    except ResponseDecodeError:
        login = Finding("login", Verdict.BROKEN, assumption, observed, "cannot log in: see token_answer")
        sdk = "finds no token in it: every call fails with ResponseDecodeError"
        return [login, Finding("token_answer", Verdict.BROKEN, ASSUME_SHAPE, shape, sdk)]
    payload = serde.loads(last.body) if last.body.strip().startswith(b"{") else None
    field = next((k for k, v in payload.items() if v == grant.value), None) if isinstance(payload, Mapping) else None
    found = f"reads the token from `{field}`" if field else "reads the whole answer as the token"
    findings = [
        Finding("login", Verdict.OK, assumption, observed, "logs in once and shares the token with every call"),
        Finding("token_answer", Verdict.OK, ASSUME_SHAPE, shape, found),
    ]
    if grant.lifetime is None:
        observed = "no lifetime in the answer (no `expires_in`, `expires`, `exp`, nor a JWT `exp`)"
        sdk = (
            f"assumes {assumed_lifetime:g} s (assumed_token_lifetime=), refreshes before that, and after a 401 "
            "refreshes once and replays"
        )
        findings.append(Finding("token_lifetime", Verdict.DIFFERS, ASSUME_LIFETIME, observed, sdk))
    else:
        margin = min(60.0, grant.lifetime * 0.1)
        observed = f"the token lives {grant.lifetime:.0f} s"
        sdk = f"refreshes it {margin:.0f} s before it expires"
        findings.append(Finding("token_lifetime", Verdict.OK, ASSUME_LIFETIME, observed, sdk))
    return findings


# -- what every answer shows ------------------------------------------------------------------------------


def check_clock(seen: Sequence[Seen]) -> Finding:
    """The server's clock against ours, from the `Date` headers, against the 10-minute login JWT."""
    assumption = (
        f"The server's clock is within {CLOCK_TOLERANCE:g} s of ours; the signed login JWT lives 10 minutes "
        "(documented), measured on Amili's clock"
    )
    offsets = [o for o in (server_clock_offset(s.headers, s.at) for s in seen) if o is not None]
    if not offsets:
        observed = "no answer carried a Date header"
        sdk = "cannot learn the server's clock: a login JWT signed on a clock minutes off would be refused"
        return Finding("clock", Verdict.DIFFERS, assumption, observed, sdk)
    skew = statistics.median(offsets)
    way = "ahead of" if skew > 0 else "behind"
    observed = f"the server's clock is {abs(skew):.0f} s {way} ours (its Date header)"
    if abs(skew) <= CLOCK_TOLERANCE:
        return Finding("clock", Verdict.OK, assumption, observed, "signs the login JWT on our clock")
    sdk = (
        "signs the login JWT on the server's clock (learned from the token answer's Date header) and reads token "
        "expiry times against it; fix whichever clock is wrong"
    )
    return Finding("clock", Verdict.DIFFERS, assumption, observed, sdk)


def check_rate_limits(seen: Sequence[Seen]) -> Finding:
    assumption = "Answers carry Eve's X-RateLimit-Limit/-Remaining/-Reset (observed on Eve; Amili: undocumented)"
    answers = [s for s in seen if s.path != TOKEN_PATH]
    if not answers:
        return Finding("rate_limit_headers", Verdict.NOT_CHECKED, assumption, "no API answer to look at", "-")
    with_headers = [s for s in answers if any(name.startswith("x-ratelimit-") for name in s.headers)]
    if with_headers:
        names = sorted({n for s in with_headers for n in s.headers if n.startswith("x-ratelimit-")})
        observed = f"{len(with_headers)} of {len(answers)} answers carried {', '.join(names)}"
        return Finding("rate_limit_headers", Verdict.OK, assumption, observed, "waits for the reset they announce")
    observed = f"none of the {len(answers)} answers carried X-RateLimit-* headers"
    sdk = "learns about limits only from 429 answers: waits for Retry-After when given, else backs off"
    return Finding("rate_limit_headers", Verdict.DIFFERS, assumption, observed, sdk)


# -- reads ------------------------------------------------------------------------------------------------

LISTS = (
    ("/cases", "amili.cases.list()"),
    ("/creditor--payments", "amili.creditor_payments.list()"),
    ("/creditor--creditings", "amili.creditor_creditings.list()"),
    ("/creditor--cancellations", "amili.creditor_cancellations.list()"),
)


def _failed(exc: AmiliError) -> str:
    return f"{exc.status_code} ({type(exc).__name__})" if exc.status_code else type(exc).__name__


async def check_reads(client: AsyncAmiliClient, case: str | None) -> tuple[list[Finding], Reads]:
    """The reads the SDK offers: the four lists (Eve envelope), one case, and a respite check."""
    findings: list[Finding] = []
    reads = Reads(case=case)
    for path, api in LISTS:
        name = "read " + path.strip("/")
        assumption = f"GET {path} answers an Eve list (_items, _meta) (documented by Amili)"
        try:
            payload = (await client.request("GET", path, params={"max_results": "1"})).payload
        except AmiliError as exc:
            sdk = f"{api} raises {type(exc).__name__}"
            findings.append(Finding(name, Verdict.DIFFERS, assumption, f"answered {_failed(exc)}", sdk))
            continue
        items = payload.get("_items") if isinstance(payload, Mapping) else None
        meta = payload.get("_meta") if isinstance(payload, Mapping) else None
        total = meta.get("total") if isinstance(meta, Mapping) else None
        reads.totals[path] = total if isinstance(total, int) else None
        if not isinstance(items, list):
            sdk = f"{api} raises ResponseDecodeError"
            findings.append(Finding(name, Verdict.DIFFERS, assumption, "answered 200 without _items", sdk))
            continue
        if path == "/cases" and items and isinstance(items[0], Mapping):
            reads.case = reads.case or items[0].get("_id")
        observed = f"answered 200 with _items and _meta.total={total}"
        findings.append(Finding(name, Verdict.OK, assumption, observed, f"{api} pages through it"))
    findings.extend(await _check_case_reads(client, reads))
    return findings, reads


async def _check_case_reads(client: AsyncAmiliClient, reads: Reads) -> list[Finding]:
    get_assumption = "GET /cases/{id} answers the case (documented by Amili)"
    respite_assumption = (
        "GET /domain-actions/cases/respite/{id} answers 200 (allowed) or 206 (not, with issues); respite only "
        "before debt collection (documented by Amili)"
    )
    if reads.case is None:
        observed = "no case to read (give --case)"
        return [
            Finding("read case", Verdict.NOT_CHECKED, get_assumption, observed, "-"),
            Finding("read respite check", Verdict.NOT_CHECKED, respite_assumption, observed, "-"),
        ]
    findings = []
    state = None
    try:
        case = await client.cases.get(reads.case)
    except AmiliError as exc:
        sdk = f"amili.cases.get() raises {type(exc).__name__}"
        findings.append(Finding("read case", Verdict.DIFFERS, get_assumption, f"answered {_failed(exc)}", sdk))
    else:
        state, reads.creditor = case.state, case.creditor
        observed = f"answered 200: state {case.state!r}, closed {case.closed}"
        findings.append(Finding("read case", Verdict.OK, get_assumption, observed, "amili.cases.get() reads it"))
    try:
        check = await client.respite.check(reads.case)
    except AmiliError as exc:
        sdk = f"amili.respite.check() raises {type(exc).__name__}"
        findings.append(Finding("read respite check", Verdict.DIFFERS, respite_assumption, _failed(exc), sdk))
        return findings
    answer = "200: allowed" if check.allowed else f"206: not allowed ({'; '.join(check.issues) or 'no issues'})"
    observed = f"answered {answer}, for a case in state {state!r}"
    verdict, sdk = Verdict.OK, "amili.respite.check() reports it; grants are Amili's to refuse"
    if check.allowed and state == "debt_collection":
        verdict = Verdict.DIFFERS
        sdk = "does not judge states itself: it asks Amili, whose answer differs from its docs here"
    findings.append(Finding("read respite check", verdict, respite_assumption, observed, sdk))
    return findings


# -- lookups by reference ---------------------------------------------------------------------------------


async def check_lookups(client: AsyncAmiliClient, creditor: str | None, reads: Reads) -> list[Finding]:
    """Read-only: each list is asked the SDK's own lookup filter, for a reference (and case) that cannot exist."""
    reference = f"amili-doctor-{secrets.token_hex(8)}"
    nowhere_case = secrets.token_hex(12)
    who = creditor or NOWHERE
    one, now = Decimal("1.00"), datetime.now(timezone.utc)
    payment = CreditorPayment(
        creditor=who, case=nowhere_case, amount=one, currency="SEK", bank_transaction_date=now,
        creditor_payment_reference=reference,
    )  # fmt: skip
    crediting = CreditorCrediting(
        creditor=who, case=nowhere_case, amount=one, currency="SEK", creditor_reference=reference
    )
    probes: list[tuple[str, Any]] = [
        ("payment", payment),
        ("crediting", crediting),
        ("cancellation", CreditorCancellation(creditor=who, case=nowhere_case)),
    ]
    return [await _lookup(client, kind, action, reads.totals.get(action.path)) for kind, action in probes]


async def _lookup(client: AsyncAmiliClient, kind: str, action: Any, total: int | None) -> Finding:
    where = action.lookup_filter()
    name = f"lookup {kind}s"
    assumption = (
        f"GET {action.path}?where={{{', '.join(where)}}} is accepted and honoured: the SDK finds a {kind} "
        "by its reference after a lost answer (our assumption: lists and `where` are documented, these fields "
        "are not)"
    )
    unsafe = f"every {kind} whose answer is lost becomes OutcomeUnknownError: reconcile those yourself"
    try:
        params = {"where": serde.dumps(where).decode(), "max_results": "2"}  # as the pipeline's lookup asks
        payload = (await client.request("GET", action.path, params=params)).payload
    except AmiliError as exc:
        if exc.status_code == 400:
            unsafe += " (after the first refusal the SDK stops asking)"
        return Finding(name, Verdict.BROKEN, assumption, f"refused: {_failed(exc)}", unsafe)
    items = payload.get("_items") if isinstance(payload, Mapping) else None
    if not isinstance(items, list):
        return Finding(name, Verdict.BROKEN, assumption, "answered 200 without _items", unsafe)
    if items:
        observed = f"answered {len(items)}+ records for a reference that cannot exist: the filter is ignored"
        sdk = f"would find another {kind} after a lost answer: never trust a lookup here; " + unsafe
        return Finding(name, Verdict.BROKEN, assumption, observed, sdk)
    if total:
        observed = f"accepted; 0 records match, of {total} on the list: honoured"
    else:
        observed = "accepted; 0 records match (the list is empty, so whether it is honoured cannot be seen)"
    sdk = f"looks a {kind} up by its reference after a lost answer instead of sending it again blindly"
    return Finding(name, Verdict.OK, assumption, observed, sdk)


# -- the write test ---------------------------------------------------------------------------------------

ASSUME_UNIQUE = (
    "A second payment with the same creditor_payment_reference is refused (409, or 422 on the reference) "
    "(our assumption: undocumented)"
)


async def check_duplicates(client: AsyncAmiliClient, case_id: str) -> Finding:
    """Sandbox or loopback only: register one 1.00 payment, then the very same payment again."""
    name = "duplicate reference"
    try:
        case = await client.cases.get(case_id)
        creditor = case.creditor or NOWHERE
        action = CreditorPayment(
            creditor=creditor,
            case=case_id,
            amount=Decimal("1.00"),
            currency=case.currency or "SEK",
            bank_transaction_date=datetime.now(timezone.utc),
            creditor_payment_reference=f"amili-doctor-dup-{secrets.token_hex(6)}",
        )
        first = await client.execute(action)
    except AmiliError as exc:
        return Finding(name, Verdict.NOT_CHECKED, ASSUME_UNIQUE, f"the first test payment failed: {_failed(exc)}", "-")
    body = serde.action_body(action)
    reference = action.creditor_payment_reference
    try:
        second = await client.request("POST", action.path, json=body)
    except ConflictError:
        observed = f"refused the second payment with reference {reference}: 409 (the first is {first.id})"
    except ValidationError as exc:
        if "creditor_payment_reference" not in exc.issues:
            observed = f"refused the second payment for another reason (422 on {', '.join(exc.issues) or '?'})"
            return Finding(name, Verdict.NOT_CHECKED, ASSUME_UNIQUE, observed, "-")
        observed = f"refused the second payment with reference {reference}: 422 on the reference"
    except AmiliError as exc:
        observed = f"the second payment ended with {_failed(exc)}: cannot tell (look up {reference})"
        return Finding(name, Verdict.NOT_CHECKED, ASSUME_UNIQUE, observed, "-")
    else:
        second_id = second.payload.get("_id") if isinstance(second.payload, Mapping) else None
        observed = (
            f"accepted it ({second.status}): two 1.00 {action.currency} payments with reference {reference} are "
            f"now on case {case_id} ({first.id}, {second_id}); credit them back in the sandbox"
        )
        sdk = (
            "is the only guard against a double booking: it resends only what a lookup proved absent, so keep "
            "every reference unique and never resend an OutcomeUnknownError blindly"
        )
        return Finding(name, Verdict.BROKEN, ASSUME_UNIQUE, observed, sdk)
    sdk = "a resend of a payment that was in fact applied is refused by Amili instead of booked twice"
    return Finding(name, Verdict.OK, ASSUME_UNIQUE, observed, sdk)
