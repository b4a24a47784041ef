"""`FakeAmili`: the in-memory Amili, its seeding helpers, inspection and fault injection.

All state hangs off the instance. Handling a request is synchronous (no awaits between reading and
writing state), so concurrent requests on one event loop never interleave half-way through a write.
"""

from __future__ import annotations

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
from ._limits import RateLimit, RateLimits
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

    `status` is None when no answer was sent (drop, connect error); `fault` names the fault that fired.
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    status: int | None = None
    fault: str | None = None


def _money(value: Decimal | int | str) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


class FakeAmili:
    """An in-memory Amili creditor API (what moto is to boto3).

    ``seed`` makes ids, tokens and probabilistic faults repeatable; ``clock`` (epoch seconds) drives
    ``_created``/``_updated``, token expiry and JWT checks. ``record_requests=False`` and
    ``keep_documents=False`` (action documents and case history entries are not stored; balances still move)
    keep memory flat in long benchmark runs. ``single_active_token=True`` keeps one token active per account:
    a new login revokes the older tokens (so processes that log in on their own knock each other out).
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
        single_active_token: bool = False,
    ) -> None:
        self.seed = seed
        self._store = Store(seed, clock or time.time, token_lifetime, keep_documents, single_active_token)
        self._api = Api(self._store)
        self._faults = FaultBook(random.Random(seed))
        self._limits: RateLimits | None = None
        self._record = record_requests
        self._requests: list[RecordedRequest] = []
        self._asgi: AsgiApp | None = None
        self.statuses: Counter[int] = Counter()  # answers sent, by status (kept even without recording)

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

    def rate_limit(self, rule: RateLimit | None) -> None:
        """Limit every account's request rate like Eve's limiter or a gateway does (see `testing._limits`)."""
        self._limits = None if rule is None else RateLimits(rule, self._store)

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
        return dict(self._store.collections["cases"].docs)

    def get_case(self, case_id: str) -> Doc:
        return self._store.collections["cases"].docs[case_id]

    @property
    def payments(self) -> list[Doc]:
        return list(self._store.collections["creditor--payments"].docs.values())

    @property
    def creditings(self) -> list[Doc]:
        return list(self._store.collections["creditor--creditings"].docs.values())

    @property
    def cancellations(self) -> list[Doc]:
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
            record = RecordedRequest(req.method, req.path, dict(req.query), None if body is MALFORMED else body)
            self._requests.append(record)
        fault = self._faults.pick(req.method, req.path)
        limits = self._limits  # a server-side rate limit, when set, answers before anything else (no fault fired)
        if limits is not None and fault is None:
            outcome = limits.handle(req, lambda: self._run(None, req, body))
        else:
            outcome = self._run(fault, req, body)
        if outcome.reply is not None:
            self.statuses[outcome.reply.status] += 1
        if record is not None:
            record.fault = fault.kind if fault else None
            record.status = outcome.reply.status if outcome.reply is not None else None
        return outcome

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

    def _rate_limited(self, fault: Fault) -> Reply:
        headers = [("X-RateLimit-Limit", str(fault.limit)), ("X-RateLimit-Remaining", "0")]
        if fault.retry_after is not None:
            headers.append(("Retry-After", seconds_header(fault.retry_after)))
        if fault.reset_after is not None:
            headers.append(("X-RateLimit-Reset", seconds_header(self._store.now() + fault.reset_after)))
        return error_reply(429, headers=headers)
