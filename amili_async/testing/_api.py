"""The emulated HTTP API: routing, authentication, Eve reads and the write endpoints.

Routing comes first (unknown path 404, wrong method 405), then authentication (401), then the body (400
when it is not a JSON object), then validation (422), then ownership (403: a caller only sees its own
account's documents) and finally the business rules in `_rules`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jwt

from .._wire import TOKEN_PATH
from . import _rules
from ._query import BadQuery, run_list
from ._schema import CANCELLATION, CASE_REGISTRATION, CREDITING, PAYMENT, RESPITE, Schema, validate
from ._store import ALGORITHMS, Account, Doc, Store
from ._wire import (
    Issues,
    Reply,
    WireRequest,
    error_reply,
    is_object_id,
    json_reply,
    render_issues,
    unauthorized,
    validation_reply,
)

RESPITE_PREFIX = ("domain-actions", "cases", "respite")
JWT_LEEWAY = 5.0
JWT_MAX_AHEAD = 3600.0

_ACTIONS: dict[str, tuple[Schema, str]] = {
    "creditor--payments": (PAYMENT, "_payment_status"),
    "creditor--creditings": (CREDITING, "_crediting_status"),
    "creditor--cancellations": (CANCELLATION, "_cancellation_status"),
}
_WRITABLE = frozenset({*_ACTIONS, "case--registrations"})
# The business reference of each action resource (what the optional unique index covers).
REFERENCE_FIELD = {"creditor--payments": "creditor_payment_reference", "creditor--creditings": "creditor_reference"}


def _reference_in(resource: str, query: Mapping[str, str]) -> str | None:
    """The reference a `where` pins by plain equality (a lookup), so the list can start from the index."""
    field = REFERENCE_FIELD.get(resource)
    where = query.get("where")
    if field is None or where is None or field not in where:
        return None
    try:
        parsed = json.loads(where)
    except ValueError:
        return None  # run_list answers the 400
    value = parsed.get(field) if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else None


class Malformed:
    """Marker for a request body that is not valid JSON."""


MALFORMED = Malformed()


def _item_title(resource: str) -> str:
    return resource.rstrip("s").capitalize()


class Api:
    """`unique`: None, or the status (422 like Cerberus' `unique` rule, 409 like a MongoDB unique index) with
    which a write whose reference is already stored is refused."""

    def __init__(self, store: Store, unique: int | None = None) -> None:
        self.store = store
        self.unique = unique

    def dispatch(self, req: WireRequest, body: Any, *, lag: float = 0.0, account: str | None = None) -> Reply:
        """Answer one request; `body` is the parsed JSON, None when empty, or `MALFORMED`.

        `lag`: reads miss what committed less than `lag` seconds ago. `account`: already authenticated (a late
        write landing after its token was checked).
        """
        before = self.store.now() - lag if lag > 0 else None
        path = req.path.rstrip("/") or "/"
        if path == TOKEN_PATH:
            if req.method not in ("GET", "POST"):
                return error_reply(405, headers=[("Allow", "GET, POST")])
            return self._token(req, body)
        parts = path.strip("/").split("/")
        if parts[0] in self.store.collections and len(parts) <= 2:
            item = len(parts) == 2
            allowed = "GET" if item or parts[0] not in _WRITABLE else "GET, POST"
            if req.method not in allowed.split(", "):
                return error_reply(405, headers=[("Allow", allowed)])
            account = account or self.store.token_account(req.headers.get("x-api-key"))
            if account is None:
                return unauthorized()
            if item:
                return self._get_item(parts[0], parts[1], account, req, before)
            if req.method == "GET":
                return self._get_list(parts[0], account, req, before)
            if not isinstance(body, dict):
                return error_reply(400)
            if parts[0] == "case--registrations":
                return self._register_cases(account, body, req)
            return self._post_action(parts[0], account, body, req)
        if tuple(parts[:3]) == RESPITE_PREFIX and len(parts) == 4:
            if req.method not in ("GET", "POST"):
                return error_reply(405, headers=[("Allow", "GET, POST")])
            account = account or self.store.token_account(req.headers.get("x-api-key"))
            if account is None:
                return unauthorized()
            return self._respite(parts[3], account, req, body)
        return error_reply(404)

    # -- authentication -----------------------------------------------------------------------------

    def _token(self, req: WireRequest, body: Any) -> Reply:
        if req.method == "GET":
            account = self._verify_jwt(req.headers.get("x-api-key"))
        else:
            if body is MALFORMED:
                return error_reply(400)
            code = body.get("api_code") if isinstance(body, dict) else None
            account = self.store.accounts_by_code.get(code) if isinstance(code, str) else None
            if account is not None and not account.allow_simple_auth:
                account = None
        if account is None:
            return unauthorized()
        return json_reply(200, self.store.issue_token(account))

    def _verify_jwt(self, token: str | None) -> Account | None:
        if not token:
            return None
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
            code = unverified.get("api_code")
            account = self.store.accounts_by_code.get(code) if isinstance(code, str) else None
            if account is None:
                return None
            claims = jwt.decode(
                token,
                account.public_key,
                algorithms=list(ALGORITHMS),
                options={"require": ["exp"], "verify_exp": False},
            )
        except jwt.PyJWTError:
            return None
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            return None
        now = self.store.now()
        if exp < now - JWT_LEEWAY or exp > now + JWT_MAX_AHEAD + JWT_LEEWAY:
            return None
        return account

    # -- reads --------------------------------------------------------------------------------------

    def _owned(self, resource: str, doc_id: str, account: str, before: float | None = None) -> Doc | Reply:
        """The document, or the 404/403 reply explaining why the caller cannot have it (or cannot see it yet:
        committed after `before`)."""
        collection = self.store.collections[resource]
        doc = collection.docs.get(doc_id) if is_object_id(doc_id) else None
        if doc is None or (before is not None and collection.committed[doc_id] > before):
            return error_reply(404)
        if collection.owner[doc_id] != account:
            return error_reply(403)
        return doc

    def _get_item(self, resource: str, doc_id: str, account: str, req: WireRequest, before: float | None) -> Reply:
        found = self._owned(resource, doc_id, account, before)
        if isinstance(found, Reply):
            return found
        etag = f'"{found["_etag"]}"'
        match = req.headers.get("if-none-match")
        if match is not None and match.strip().removeprefix("W/") in (etag, found["_etag"]):
            return Reply(304, [("ETag", etag)], b"")
        return json_reply(200, found, [("ETag", etag)])

    def _get_list(self, resource: str, account: str, req: WireRequest, before: float | None) -> Reply:
        try:
            docs = self.store.collections[resource].visible(account, before, _reference_in(resource, req.query))
            body, total = run_list(resource, docs, req.query)
        except BadQuery as exc:
            return error_reply(400, f"Bad query: {exc}")
        return json_reply(200, body, [("X-Total-Count", str(total))])

    # -- creditor actions ---------------------------------------------------------------------------

    def _post_action(self, resource: str, account: str, body: dict[str, Any], req: WireRequest) -> Reply:
        schema, status_key = _ACTIONS[resource]
        doc, issues = validate(body, schema)
        self._case_identity(body, issues)
        taken = self._taken(resource, doc)
        if taken and self.unique == 422:  # Cerberus' `unique` rule: one more validation issue
            issues.setdefault(REFERENCE_FIELD[resource], []).append(f"value '{taken}' is not unique")
        if issues:
            return validation_reply(issues)
        if taken:  # a unique index: MongoDB's duplicate key error, which Eve answers with 409
            return error_reply(409, f"Duplicate key error: E11000 duplicate key on {REFERENCE_FIELD[resource]}")
        creditor_id: str | None = doc.get("creditor")
        if creditor_id is not None:
            owner = self.store.creditor_account(creditor_id)
            if owner is None:
                return validation_reply({"creditor": [f"value '{creditor_id}' must exist in resource 'creditors'"]})
            if owner != account:
                return error_reply(403)
        if "case" in doc:
            cases = self.store.collections["cases"]
            case = cases.docs.get(doc["case"])
            if case is None:
                return validation_reply({"case": [f"value '{doc['case']}' must exist in resource 'cases'"]})
            if cases.owner[case["_id"]] != account:
                return error_reply(403)
            if creditor_id is not None and case["creditor"] != creditor_id:
                return validation_reply({"creditor": ["does not match the creditor of the case"]})
        else:
            assert creditor_id is not None
            case_id = self.store.invoice_index.get((creditor_id, doc["invoice_number"]))
            if case_id is None:
                message = f"value '{doc['invoice_number']}' must exist in resource 'cases' for this creditor"
                return validation_reply({"invoice_number": [message]})
            case = self.store.collections["cases"].docs[case_id]
        return self._apply_action(resource, status_key, account, doc, case, req)

    def _taken(self, resource: str, doc: Doc) -> str | None:
        """The write's reference when the unique index is on and already holds it."""
        field = REFERENCE_FIELD.get(resource)
        reference = doc.get(field) if field else None
        if self.unique is None or not isinstance(reference, str):
            return None
        return reference if reference in self.store.collections[resource].references else None

    @staticmethod
    def _case_identity(body: Mapping[str, Any], issues: Issues) -> None:
        has_case, has_invoice = "case" in body, "invoice_number" in body
        if has_case and has_invoice:
            issues.setdefault("case", []).append("must not be present with 'invoice_number'")
            issues.setdefault("invoice_number", []).append("must not be present with 'case'")
        elif not has_case and not has_invoice:
            issues.setdefault("case", []).append("required field unless 'invoice_number' is given")
        if has_invoice and "creditor" not in body and "creditor" not in issues:
            issues["creditor"] = ["required field with 'invoice_number'"]

    def _apply_action(
        self, resource: str, status_key: str, account: str, doc: Doc, case: Doc, req: WireRequest
    ) -> Reply:
        store = self.store
        meta = store.new_meta()
        now = meta["_created"]
        events = len(case["history"])
        if resource == "creditor--payments":
            outcome = _rules.apply_payment(case, doc["amount"], now, meta["_id"])
        elif resource == "creditor--creditings":
            outcome = _rules.apply_crediting(case, doc["amount"], now, meta["_id"])
        else:
            outcome = _rules.apply_cancellation(case, now, meta["_id"])
        if len(case["history"]) != events:
            store.touch(case)
            if not store.keep_documents:
                del case["history"][events:]  # flat memory for million-action runs: balances only
        result: Doc = {
            "status": outcome.status,
            "status_reason_locale": outcome.reason,
            "case_invoice_number": case["debt"]["invoice_number"],
            "case_reference_number": case["reference_number"],
        }
        if resource != "creditor--cancellations":
            result["settled_amount"] = outcome.settled
            doc.setdefault("client_registration_date", now)
        stored = {
            **meta,
            **doc,
            "case": case["_id"],
            "creditor": case["creditor"],
            "account": account,
            **result,
        }
        collection = store.collections[resource]
        if store.keep_documents:
            collection.insert(stored, account, store.now())
        reference = doc.get(REFERENCE_FIELD.get(resource, ""))
        if isinstance(reference, str):
            collection.references.setdefault(reference, []).append(meta["_id"])
        return self._created(resource, meta, req, {status_key: "completed", **result})

    def _created(self, resource: str, meta: Doc, req: WireRequest, extras: Doc) -> Reply:
        href = f"{resource}/{meta['_id']}"
        body = {
            **meta,
            "_links": {"self": {"title": _item_title(resource), "href": href}},
            "_status": "OK",
            **extras,
        }
        return json_reply(201, body, [("Location", f"{req.base_url}/{href}")])

    # -- case registration --------------------------------------------------------------------------

    def _register_cases(self, account: str, body: dict[str, Any], req: WireRequest) -> Reply:
        doc, issues = validate(body, CASE_REGISTRATION)
        if issues:
            return validation_reply(issues)
        if doc["account"] != account:
            return error_reply(403)
        owner = self.store.creditor_account(doc["creditor"])
        if owner is None:
            return validation_reply({"creditor": [f"value '{doc['creditor']}' must exist in resource 'creditors'"]})
        if owner != account:
            return error_reply(403)
        store = self.store
        meta = store.new_meta()
        person = doc.get("customer", {})
        customer = store.customer(None, person.get("name"), person.get("id_number"))
        case_ids: list[str] = []
        for debt in doc["debts"]:
            reminder = debt.get("fees_already_claimed", {}).get("reminder", {})
            extra = {k: v for k, v in debt.items() if k not in ("invoice_number", "invoice_date", "capital_to_claim")}
            case = store.create_case(
                doc["creditor"],
                capital=debt["capital_to_claim"],
                costs=reminder.get("amount", _rules.ZERO),
                interest=_rules.ZERO,
                state=doc["first_action"],
                invoice_number=debt.get("invoice_number"),
                customer=customer,
                closed=False,
                due_date=None,
                invoice_date=debt.get("invoice_date"),
                registration=meta["_id"],
                debt_extra=extra,
            )
            case_ids.append(case["_id"])
        extras = {
            "_cases": case_ids,
            "_ocr_numbers": [store.new_id() for _ in case_ids],
            "_ocr_numbers_ocr": [store.collections["cases"].docs[c]["reference_number"] for c in case_ids],
        }
        store.collections["case--registrations"].insert({**meta, **doc, **extras}, account, store.now())
        return self._created("case--registrations", meta, req, extras)

    # -- respite ------------------------------------------------------------------------------------

    def _respite(self, case_id: str, account: str, req: WireRequest, body: Any) -> Reply:
        found = self._owned("cases", case_id, account)
        if isinstance(found, Reply):
            return found
        case = found
        store = self.store
        limits = store.respite_limits[case["creditor"]]
        reasons = _rules.respite_issues(
            case,
            store.case_respites[case["_id"]],
            store.customer_respites[case["customer"]],
            limits.max_per_case,
            limits.max_per_customer,
        )
        if req.method == "GET":
            return json_reply(206 if reasons else 200, {"issues": reasons})
        if not isinstance(body, dict):
            return error_reply(400)
        doc, issues = validate(body, RESPITE)
        days = doc.get("days")
        if isinstance(days, int) and not 1 <= days <= limits.max_days:
            issues["days"] = [f"must be between 1 and {limits.max_days}"]
        if issues or reasons:
            rendered = render_issues(issues)
            if reasons:
                rendered["respite"] = reasons
            envelope = {
                "_status": "ERR",
                "_issues": rendered,
                "_error": {"code": 422, "message": "Respite cannot be granted"},
            }
            return json_reply(422, envelope)
        assert isinstance(days, int)
        _rules.grant_respite(case, days, store.stamp())
        store.touch(case)
        store.case_respites[case["_id"]] += 1
        store.customer_respites[case["customer"]] += 1
        return json_reply(200, {})
