"""The fake's state: accounts and their API users, creditors, customers, documents, tokens, ids and time.

Ids are ObjectId-shaped and deterministic: a fixed time part, a seed-derived machine part and a counter,
so the same seed and the same calls give the same ids. One signing key per algorithm is generated per
store and shared by the accounts that use that algorithm (each account still has its own API code).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .._wire import JWT_ALGORITHMS
from . import _rules
from ._wire import format_http_date, parse_http_date

Doc = dict[str, Any]

RESOURCES = (
    "cases",
    "creditors",
    "creditor--payments",
    "creditor--creditings",
    "creditor--cancellations",
    "case--registrations",
)
ALGORITHMS = JWT_ALGORITHMS
_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}
_TIME_PART = 0x674DBEAF


@attrs.define
class Account:
    id: str
    api_code: str
    algorithm: str
    private_key_pem: str = attrs.field(repr=False)
    public_key: Any = attrs.field(repr=False)
    allow_simple_auth: bool


@attrs.frozen
class RespiteLimits:
    max_days: int
    max_per_case: int
    max_per_customer: int


class Collection:
    """Documents of one resource, in insertion order, with the account each belongs to and when it committed.

    `references` maps each business reference stored so far to its documents' ids: the optional unique index,
    and the fast path of lookups by reference.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.docs: dict[str, Doc] = {}
        self.owner: dict[str, str] = {}
        self.committed: dict[str, float] = {}
        self.references: dict[str, list[str]] = {}
        self._by_account: defaultdict[str, list[Doc]] = defaultdict(list)

    def insert(self, doc: Doc, account: str, at: float = 0.0) -> None:
        self.docs[doc["_id"]] = doc
        self.owner[doc["_id"]] = account
        self.committed[doc["_id"]] = at
        self._by_account[account].append(doc)

    def visible(self, account: str, before: float | None = None, reference: str | None = None) -> list[Doc]:
        """The account's documents; with `before`, only those committed at or before that time (a replica);
        with `reference`, only those stored under that business reference (a lookup, through the index)."""
        if reference is not None:
            ids = self.references.get(reference, ())
            docs = [self.docs[i] for i in ids if i in self.docs and self.owner[i] == account]
        else:
            docs = self._by_account.get(account, [])
        if before is None:
            return docs
        committed = self.committed
        return [d for d in docs if committed[d["_id"]] <= before]


class Store:
    def __init__(
        self,
        seed: int,
        clock: Callable[[], float],
        token_lifetime: float,
        keep_documents: bool = True,
        single_active_token: bool = False,
    ) -> None:
        self.keep_documents = keep_documents
        self.single_active_token = single_active_token
        self.clock = clock
        self.landing_at: float | None = None
        self.token_lifetime = token_lifetime
        self._seed = seed
        self._counter = 0
        self._machine = random.Random(f"machine:{seed}").getrandbits(40)
        self._secrets = random.Random(f"secrets:{seed}")
        self._keys: dict[str, tuple[str, Any]] = {}
        self._stamp_cache: tuple[int, str] = (-1, "")
        self.accounts: dict[str, Account] = {}
        self.accounts_by_code: dict[str, Account] = {}
        self.respite_limits: dict[str, RespiteLimits] = {}
        self.collections = {name: Collection(name) for name in RESOURCES}
        self.customers: dict[str, Doc] = {}
        self._customers_by_number: dict[str, str] = {}
        self.invoice_index: dict[tuple[str, str], str] = {}
        self.case_respites: Counter[str] = Counter()
        self.customer_respites: Counter[str] = Counter()
        self.tokens: dict[str, tuple[str, float]] = {}
        self.active_token: dict[str, str] = {}  # account -> its newest token (single-active-token mode)
        self.tokens_issued = 0
        self.token_requests = 0

    # -- ids, tags and time -------------------------------------------------------------------------

    def new_id(self) -> str:
        self._counter += 1
        n = self._counter
        return f"{_TIME_PART + (n >> 24):08x}{self._machine:010x}{n & 0xFFFFFF:06x}"

    def new_etag(self, doc_id: str) -> str:
        self._counter += 1
        return hashlib.sha1(f"{self._seed}:{doc_id}:{self._counter}".encode()).hexdigest()

    def new_secret(self, bits: int = 160) -> str:
        return f"{self._secrets.getrandbits(bits):0{bits // 4}x}"

    def now(self) -> float:
        return self.clock() if self.landing_at is None else self.landing_at

    @contextlib.contextmanager
    def at(self, moment: float) -> Iterator[None]:
        """Handle a request as of `moment` (a late write landing at the time it committed)."""
        self.landing_at = moment
        try:
            yield
        finally:
            self.landing_at = None

    def stamp(self, epoch: float | None = None) -> str:
        """The current time as RFC 1123 (cached per second: this runs on every write)."""
        t = int(self.now() if epoch is None else epoch)
        if self._stamp_cache[0] != t:
            self._stamp_cache = (t, format_http_date(t))
        return self._stamp_cache[1]

    def new_meta(self) -> Doc:
        doc_id = self.new_id()
        now = self.stamp()
        return {"_id": doc_id, "_created": now, "_updated": now, "_etag": self.new_etag(doc_id)}

    def touch(self, doc: Doc) -> None:
        doc["_updated"] = self.stamp()
        doc["_etag"] = self.new_etag(doc["_id"])

    # -- accounts and creditors ---------------------------------------------------------------------

    def _key(self, algorithm: str) -> tuple[str, Any]:
        if algorithm not in self._keys:
            private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
            if algorithm in _CURVES:
                private = ec.generate_private_key(_CURVES[algorithm])
            else:
                private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
            self._keys[algorithm] = (pem, private.public_key())
        return self._keys[algorithm]

    def create_account(self, algorithm: str, allow_simple_auth: bool) -> Account:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}")
        pem, public = self._key(algorithm)
        account = Account(
            id=self.new_id(),
            api_code=f"fake-{self.new_secret(64)}",
            algorithm=algorithm,
            private_key_pem=pem,
            public_key=public,
            allow_simple_auth=allow_simple_auth,
        )
        self.accounts[account.id] = account
        self.accounts_by_code[account.api_code] = account
        return account

    def create_creditor(self, name: str, account: Account, limits: RespiteLimits) -> Doc:
        meta = self.new_meta()
        number = 2000000 + len(self.collections["creditors"].docs) + 1
        doc = {
            **meta,
            "account": account.id,
            "name": name,
            "organization_no": f"556{number:07d}",
            "creditor_number": number,
            "is_active": True,
            "case_config": {
                "respite": {
                    "max_days": limits.max_days,
                    "max_per_case": limits.max_per_case,
                    "max_per_customer": limits.max_per_customer,
                }
            },
        }
        self.collections["creditors"].insert(doc, account.id)
        self.respite_limits[meta["_id"]] = limits
        return doc

    def creditor_account(self, creditor_id: str) -> str | None:
        return self.collections["creditors"].owner.get(creditor_id)

    # -- customers and cases ------------------------------------------------------------------------

    def customer(self, customer_id: str | None, name: str | None, id_number: str | None) -> Doc:
        """An existing customer (by id, else by id number) or a new one."""
        if customer_id is None and id_number is not None:
            customer_id = self._customers_by_number.get(id_number)
        if customer_id is not None and customer_id in self.customers:
            return self.customers[customer_id]
        n = len(self.customers) + 1
        doc = {
            "_id": customer_id or self.new_id(),
            "name": name or f"Customer {n}",
            "id_number": id_number or f"{198001010000 + n}",
        }
        self.customers[doc["_id"]] = doc
        self._customers_by_number[doc["id_number"]] = doc["_id"]
        return doc

    def _reference_number(self) -> str:
        digits = f"{7000000 + self._counter:09d}"
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if i % 2 == 0 else 1)
            total += d - 9 if d > 9 else d
        return digits + str((10 - total % 10) % 10)

    def create_case(
        self,
        creditor_id: str,
        *,
        capital: Decimal,
        costs: Decimal,
        interest: Decimal,
        state: str,
        invoice_number: str | None,
        customer: Doc,
        closed: bool,
        due_date: str | None,
        invoice_date: str | None = None,
        registration: str | None = None,
        debt_extra: Doc | None = None,
    ) -> Doc:
        account = self.creditor_account(creditor_id)
        if account is None:
            raise KeyError(f"unknown creditor {creditor_id}")
        creditor = self.collections["creditors"].docs[creditor_id]
        meta = self.new_meta()
        now = meta["_created"]
        number = len(self.collections["cases"].docs) + 1
        invoice_number = invoice_number or f"INV-{number}"
        invoice_date = invoice_date or now
        if due_date is None:
            start = parse_http_date(invoice_date)
            assert start is not None
            due_date = format_http_date((start + timedelta(days=30)).timestamp())
        status = "debt_collection_active" if state == "debt_collection" else "initialized"
        case: Doc = {
            **meta,
            "creditor": creditor_id,
            "creditor_name": creditor["name"],
            "customer": customer["_id"],
            "customer_name": customer["name"],
            "customer_id_number": customer["id_number"],
            "customer_status": "initialized",
            "reference_number": self._reference_number(),
            "currency": "SEK",
            "state": state,
            "state_history": [{"state": state, "state_date": now}],
            "status": status,
            "status_history": [{"status": status, "status_date": now}],
            "latest_state_date": now,
            "closed": False,
            "case_registration": registration,
            "debt": {
                "invoice_number": invoice_number,
                "invoice_date": invoice_date,
                "initial_capital": capital,
                "capital_to_claim": capital,
                **(debt_extra or {}),
            },
            "due_date": due_date,
            "history": [{"event": "created", "date": now}],
        }
        _rules.open_balances(case, capital, costs, interest)
        if closed:
            case["closed"] = True
            case["status"] = "closed"
            case["status_history"].append({"status": "closed", "status_date": now})
        self.collections["cases"].insert(case, account)
        self.invoice_index[(creditor_id, invoice_number)] = meta["_id"]
        return case

    # -- tokens -------------------------------------------------------------------------------------

    def issue_token(self, account: Account) -> Doc:
        token = self.new_secret()
        expires = self.now() + self.token_lifetime
        self.tokens[token] = (account.id, expires)
        if self.single_active_token:
            # A new login revokes the account's older tokens: only the newest one is active.
            older = self.active_token.get(account.id)
            if older is not None:
                self.tokens.pop(older, None)
            self.active_token[account.id] = token
        self.tokens_issued += 1
        return {"token": token, "expires": format_http_date(expires)}

    def token_account(self, token: str | None) -> str | None:
        entry = self.tokens.get(token) if token else None
        if entry is None or self.now() >= entry[1]:
            return None
        return entry[0]


def as_http_date(value: datetime | str | None) -> str | None:
    """Accept an aware datetime or an RFC 1123 string (what `FakeAmili.add_case` takes for dates)."""
    if value is None or isinstance(value, str):
        if isinstance(value, str) and parse_http_date(value) is None:
            raise ValueError(f"not an RFC 1123 date: {value!r}")
        return value
    if value.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; give a timezone")
    return format_http_date(value.timestamp())
