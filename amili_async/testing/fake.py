"""`FakeAmili`: the in-memory Amili, its seeding helpers, inspection and fault injection.

All state hangs off the instance. Handling a request is synchronous (no awaits between reading and
writing state), so concurrent requests on one event loop never interleave half-way through a write.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import httpx

from .._wire import TOKEN_PATH
from ._api import MALFORMED, Api
from ._limits import FixedWindowLimit, RateLimit, RateLimits
from ._store import Doc, RespiteLimits, Store, as_http_date
from ._wire import BadJson, Outcome, Reply, WireRequest, error_reply, html_error_reply, loads
from .faults import Fault, FaultBook, seconds_header

if TYPE_CHECKING:
    from amili_async.client import AsyncAmiliClient

    from .asgi import AsgiApp


@attrs.frozen
class FakeCreditor:
    """A creditor and the credentials of its account's API user."""

    id: str
    account: str
    name: str
    api_code: str = attrs.field(repr=False)
    private_key_pem: str = attrs.field(repr=False)
    algorithm: str


@attrs.define
class RecordedRequest:
    """One request as the fake received it. `json` holds floats as `Decimal`; `X-API-Key` is never kept.

    `status` is None when no answer was sent (drop, connect error); `fault` names the fault that fired;
    `request_id` is the `X-Request-ID` header it came with (every attempt of one SDK call sends the same).
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    status: int | None = None
    fault: str | None = None
    request_id: str | None = None


def _money(value: Decimal | int | str) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


class FakeAmili:
    """An in-memory Amili creditor API (what moto is to boto3).

    ``seed`` makes ids, tokens and probabilistic faults repeatable; ``clock`` (epoch seconds) drives
    ``_created``/``_updated``, token expiry, JWT checks, late commits and read lag. ``record_requests=False``
    and ``keep_documents=False`` (action documents and case history entries are not stored; balances still
    move) keep memory flat in long benchmark runs. ``rate_limit=(limit, period)`` turns on an Eve-style
    limiter: ``X-RateLimit-*`` headers on every API answer, 429 (without ``Retry-After``) over the limit; a
    `RateLimit` limits per account instead (see `set_rate_limit`). Every
    answer carries a ``Date`` header from ``clock``, so a fake with a skewed clock shows its skew as a server
    would. ``unique_references=True`` puts a unique index on payment and crediting references: a write whose
    reference is already stored is refused with ``unique_status`` (422 ``value '...' is not unique``, as Eve's
    `unique` rule answers, or 409, as a MongoDB index does). ``single_active_token=True`` keeps one token
    active per account: a new login revokes the older tokens (so processes that log in on their own knock each
    other out). `statuses` counts the answers sent, by status.
    """

    BASE_URL: ClassVar[str] = "https://fake.amili.test"

    def __init__(
        self,
        seed: int = 0,
        token_lifetime: float = 3600.0,
        clock: Callable[[], float] | None = None,
        *,
        record_requests: bool = True,
        keep_documents: bool = True,
        rate_limit: RateLimit | tuple[int, float] | None = None,
        unique_references: bool = False,
        unique_status: int = 422,
        single_active_token: bool = False,
    ) -> None:
        if unique_status not in (409, 422):
            raise ValueError("unique_status must be 409 or 422")
        self.seed = seed
        self._store = Store(seed, clock or time.time, token_lifetime, keep_documents, single_active_token)
        self._api = Api(self._store, unique_status if unique_references else None)
        # Late writes (a `late_commit` fault): due time, arrival number, request, body, account.
        self._pending: list[tuple[float, int, WireRequest, Any, str]] = []
        self._arrivals = itertools.count()
        self._faults = FaultBook(random.Random(seed))
        self._record = record_requests
        self._requests: list[RecordedRequest] = []
        self._asgi: AsgiApp | None = None
        self.statuses: Counter[int] = Counter()  # answers sent, by status (kept even without recording)
        self.set_rate_limit(rate_limit)

    # -- seeding ------------------------------------------------------------------------------------

    def add_creditor(
        self,
        name: str = "Acme AB",
        account: str | None = None,
        respite_max_days: int = 30,
        respite_max_per_case: int = 1,
        respite_max_per_customer: int = 3,
        allow_simple_auth: bool = False,
        algorithm: str = "ES256",
    ) -> FakeCreditor:
        """Add a creditor, in a new account (with its own API user) or in an existing one.

        With ``account`` given, the account keeps its API code, key, algorithm and simple-auth setting.
        """
        if account is None:
            acct = self._store.create_account(algorithm, allow_simple_auth)
        elif account in self._store.accounts:
            acct = self._store.accounts[account]
        else:
            raise ValueError(f"unknown account {account!r}")
        limits = RespiteLimits(respite_max_days, respite_max_per_case, respite_max_per_customer)
        doc = self._store.create_creditor(name, acct, limits)
        return FakeCreditor(
            id=doc["_id"],
            account=acct.id,
            name=name,
            api_code=acct.api_code,
            private_key_pem=acct.private_key_pem,
            algorithm=acct.algorithm,
        )

    def add_case(
        self,
        creditor: str,
        capital: Decimal | int | str = Decimal("1000.00"),
        costs: Decimal | int | str = Decimal("0"),
        interest: Decimal | int | str = Decimal("0"),
        state: str = "invoice",
        invoice_number: str | None = None,
        customer_id: str | None = None,
        customer_name: str | None = None,
        closed: bool = False,
        due_date: datetime | str | None = None,
    ) -> str:
        """Add a case and return its id. The same ``customer_id`` on two cases means the same debtor.

        ``invoice_number`` defaults to ``INV-<n>``; ``due_date`` (aware datetime or RFC 1123) to 30 days
        after creation. A later case with the same invoice number wins look-ups by invoice number.
        """
        if self._store.creditor_account(creditor) is None:
            raise ValueError(f"unknown creditor {creditor!r}")
        customer = self._store.customer(customer_id, customer_name, None)
        case = self._store.create_case(
            creditor,
            capital=_money(capital),
            costs=_money(costs),
            interest=_money(interest),
            state=state,
            invoice_number=invoice_number,
            customer=customer,
            closed=closed,
            due_date=as_http_date(due_date),
        )
        return str(case["_id"])

    # -- frontends ----------------------------------------------------------------------------------

    def transport(self) -> httpx.AsyncBaseTransport:
        """An in-process httpx transport (no sockets) speaking to this fake."""
        from .transport import FakeTransport

        return FakeTransport(self)

    @property
    def asgi_app(self) -> AsgiApp:
        """An ASGI 3 application speaking to this fake."""
        if self._asgi is None:
            from .asgi import AsgiApp

            self._asgi = AsgiApp(self)
        return self._asgi

    def client(self, creditor: FakeCreditor | None = None, **kwargs: Any) -> AsyncAmiliClient:
        """An SDK client wired to this fake (a new creditor is added when none is given)."""
        from amili_async.auth import ApiCodeJwtAuth
        from amili_async.client import AsyncAmiliClient

        creditor = creditor or self.add_creditor()
        auth = ApiCodeJwtAuth(
            api_code=creditor.api_code, private_key=creditor.private_key_pem, algorithm=creditor.algorithm
        )
        kwargs.setdefault("base_url", self.BASE_URL)
        kwargs.setdefault("transport", self.transport())
        return AsyncAmiliClient(auth=auth, **kwargs)

    # -- faults and tokens --------------------------------------------------------------------------

    def inject(self, fault: Fault) -> Fault:
        """Arm a fault (see `amili_async.testing.faults`); returns it for convenience."""
        self._faults.add(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def set_rate_limit(self, rule: RateLimit | tuple[int, float] | None) -> None:
        """Limit the request rate like Eve's limiter or a gateway does (see `amili_async.testing._limits`):
        a `RateLimit` per account, or `(limit, period)` for one Eve-style limiter over the whole fake."""
        self._limit: FixedWindowLimit | RateLimits | None
        if rule is None:
            self._limit = None
        elif isinstance(rule, RateLimit):
            self._limit = RateLimits(rule, self._store)
        else:
            self._limit = FixedWindowLimit(*rule)

    @property
    def pending_writes(self) -> int:
        """Writes accepted by a `late_commit` fault that have not committed yet."""
        self._land(self._store.now())
        return len(self._pending)

    def commit_pending(self) -> None:
        """Land every write still in progress now (each as of the moment it was due), as if time had passed."""
        self._land(float("inf"))

    def _land(self, until: float) -> None:
        while self._pending and self._pending[0][0] <= until:
            due, _, req, body, account = heapq.heappop(self._pending)
            with self._store.at(due):
                self._api.dispatch(req, body, account=account)

    def revoke_tokens(self) -> None:
        """Every token issued so far answers 401 from now on."""
        self._store.tokens.clear()
        self._store.active_token.clear()

    # -- inspection ---------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._requests

    @property
    def cases(self) -> dict[str, Doc]:
        self._land(self._store.now())
        return dict(self._store.collections["cases"].docs)

    def get_case(self, case_id: str) -> Doc:
        self._land(self._store.now())
        return self._store.collections["cases"].docs[case_id]

    @property
    def payments(self) -> list[Doc]:
        self._land(self._store.now())
        return list(self._store.collections["creditor--payments"].docs.values())

    @property
    def creditings(self) -> list[Doc]:
        self._land(self._store.now())
        return list(self._store.collections["creditor--creditings"].docs.values())

    @property
    def cancellations(self) -> list[Doc]:
        self._land(self._store.now())
        return list(self._store.collections["creditor--cancellations"].docs.values())

    @property
    def case_registrations(self) -> list[Doc]:
        return list(self._store.collections["case--registrations"].docs.values())

    @property
    def tokens_issued(self) -> int:
        return self._store.tokens_issued

    @property
    def token_requests(self) -> int:
        return self._store.token_requests

    # -- the one entry point of every frontend ------------------------------------------------------

    def handle(self, req: WireRequest) -> Outcome:
        """Record the request, pick a fault, run the API, and say how the frontend must answer."""
        self._land(self._store.now())  # late writes whose time has come commit before anything else is seen
        if req.path.rstrip("/") == TOKEN_PATH:
            self._store.token_requests += 1
        body: Any = None
        if req.body:
            try:
                body = loads(req.body)
            except BadJson:
                body = MALFORMED
        record: RecordedRequest | None = None
        if self._record:
            record = RecordedRequest(
                req.method,
                req.path,
                dict(req.query),
                None if body is MALFORMED else body,
                request_id=req.headers.get("x-request-id"),
            )
            self._requests.append(record)
        refusal, limit_headers = self._admit(req)
        fault = None if refusal is not None else self._faults.pick(req.method, req.path, body)
        outcome = Outcome("respond", refusal) if refusal is not None else self._run(fault, req, body)
        if outcome.reply is not None:  # what a server adds to every answer: its clock, and its limiter's count
            outcome.reply.headers.append(("Date", self._store.stamp()))
            outcome.reply.headers.extend(limit_headers)
        if outcome.reply is not None:
            self.statuses[outcome.reply.status] += 1
        if record is not None:
            record.fault = fault.kind if fault else None
            record.status = outcome.reply.status if outcome.reply is not None else None
        return outcome

    def _admit(self, req: WireRequest) -> tuple[Reply | None, list[tuple[str, str]]]:
        """(the 429 to answer, or None; the limiter's headers for the answer): never limited without a rate limit
        or at the token endpoint."""
        limit = self._limit
        if limit is None or req.path.rstrip("/") == TOKEN_PATH:
            return None, []
        if isinstance(limit, RateLimits):
            return limit.admit(req)
        allowed, headers = limit.admit(self._store.now())
        return (None if allowed else error_reply(429)), headers

    def _run(self, fault: Fault | None, req: WireRequest, body: Any) -> Outcome:
        if fault is None:
            return Outcome("respond", self._api.dispatch(req, body))
        kind = fault.kind
        # Faults that stop the request before anything is applied.
        if kind == "connect_error" or (kind == "token_endpoint_down" and fault.refuse):
            return Outcome("connect_error")
        if kind == "token_endpoint_down" or (kind == "server_error" and not fault.commit):
            return Outcome("respond", html_error_reply(fault.status))
        if kind == "rate_limit":
            return Outcome("respond", self._rate_limited(fault))
        if kind == "drop_before_commit":
            return Outcome("drop")
        if kind == "late_commit":
            return self._accept_late(fault, req, body)
        if kind == "read_lag":
            return Outcome("respond", self._api.dispatch(req, body, lag=fault.seconds))
        if kind == "ignore_where":
            query = {k: v for k, v in req.query.items() if k != "where"}
            return Outcome("respond", self._api.dispatch(attrs.evolve(req, query=query), body))
        if kind == "revoke_token":
            self.revoke_tokens()
        reply = self._api.dispatch(req, body)
        # Faults that strike after the request was applied.
        if kind == "server_error":
            return Outcome("respond", html_error_reply(fault.status))
        if kind == "drop_after_commit":
            return Outcome("drop")
        if kind == "latency":
            return Outcome("respond", reply, delay=fault.seconds)
        if kind == "stall_body":
            return Outcome("stall", reply, stall_at=len(reply.body) // 2)
        if kind == "malformed_json":
            reply.body = reply.body[: max(len(reply.body) // 2, 1)] if len(reply.body) > 1 else b"{"
        elif kind == "empty_body":
            reply.body = b""
        return Outcome("respond", reply)

    def _accept_late(self, fault: Fault, req: WireRequest, body: Any) -> Outcome:
        """A busy backend: the write (if authenticated) commits `fault.seconds` from now; the answer is lost."""
        account = self._store.token_account(req.headers.get("x-api-key"))
        if account is None:
            return Outcome("respond", self._api.dispatch(req, body))  # refused at the door (401)
        if req.method != "GET":
            heapq.heappush(self._pending, (self._store.now() + fault.seconds, next(self._arrivals), req, body, account))
        return Outcome("respond", html_error_reply(fault.status)) if fault.gateway else Outcome("hang")

    def _rate_limited(self, fault: Fault) -> Reply:
        headers = [("X-RateLimit-Limit", str(fault.limit)), ("X-RateLimit-Remaining", "0")]
        if fault.retry_after is not None:
            headers.append(("Retry-After", seconds_header(fault.retry_after)))
        if fault.reset_after is not None:
            headers.append(("X-RateLimit-Reset", seconds_header(self._store.now() + fault.reset_after)))
        return error_reply(429, headers=headers)
