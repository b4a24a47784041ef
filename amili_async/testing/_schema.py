"""A tiny Cerberus-like validator with the schemas of the writable resources.

`validate` returns the normalised document (numbers as `Decimal`, dates re-rendered as RFC 1123) and
the issues found, as field -> list of messages (nested documents give nested dicts, list items are keyed
by their index). Cross-field rules (case XOR invoice_number, ...) live with the endpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._wire import Issues, format_http_date, is_object_id, parse_http_date, to_decimal


@attrs.frozen
class Field:
    type: str  # objectid | string | number | integer | boolean | datetime | dict | list
    required: bool = False
    allowed: tuple[str, ...] | None = None
    positive: bool = False
    readonly: bool = False
    schema: Mapping[str, Field] | None = None
    items: Field | None = None


Schema = Mapping[str, Field]

_TYPE_MESSAGES = {
    "objectid": "value must be an ObjectId",
    "string": "must be of string type",
    "number": "must be of number type",
    "integer": "must be of integer type",
    "boolean": "must be of boolean type",
    "datetime": "must be of datetime type",
    "dict": "must be of dict type",
    "list": "must be of list type",
}


def validate(doc: Mapping[str, Any], schema: Schema) -> tuple[dict[str, Any], Issues]:
    out: dict[str, Any] = {}
    issues: Issues = {}
    for key, value in doc.items():
        field = schema.get(key)
        if field is None:
            issues[key] = ["unknown field"]
            continue
        if field.readonly:
            issues[key] = ["field is read-only"]
            continue
        ok, normalised, problem = _check(value, field)
        if ok:
            out[key] = normalised
        else:
            issues[key] = problem
    for key, field in schema.items():
        if field.required and key not in doc:
            issues[key] = ["required field"]
    return out, issues


def _check(value: Any, field: Field) -> tuple[bool, Any, Any]:
    """(ok, normalised value, issue) for one value."""
    if value is None:
        return False, None, ["null value not allowed"]
    kind = field.type
    normalised: Any = value
    if kind == "objectid":
        ok = is_object_id(value)
    elif kind == "string":
        ok = isinstance(value, str)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        normalised = to_decimal(value)
        ok = normalised is not None
    elif kind == "datetime":
        parsed = parse_http_date(value) if isinstance(value, str) else None
        ok = parsed is not None
        if parsed is not None:
            normalised = format_http_date(parsed.timestamp())
    elif kind == "dict":
        if not isinstance(value, Mapping):
            return False, None, [_TYPE_MESSAGES["dict"]]
        normalised, nested = validate(value, field.schema or {})
        return (not nested), normalised, nested
    elif kind == "list":
        return _check_list(value, field)
    else:  # pragma: no cover - schema typo
        raise AssertionError(kind)
    if not ok:
        return False, None, [_TYPE_MESSAGES[kind]]
    if field.allowed is not None and value not in field.allowed:
        return False, None, [f"unallowed value {value}"]
    if field.positive and normalised <= 0:
        return False, None, ["must be greater than 0"]
    return True, normalised, None


def _check_list(value: Any, field: Field) -> tuple[bool, Any, Any]:
    if not isinstance(value, list):
        return False, None, [_TYPE_MESSAGES["list"]]
    if not value:
        return False, None, ["empty values not allowed"]
    if field.items is None:
        return True, list(value), None
    out: list[Any] = []
    nested: Issues = {}
    for index, item in enumerate(value):
        ok, normalised, problem = _check(item, field.items)
        if ok:
            out.append(normalised)
        else:
            nested[str(index)] = problem
    return (not nested), out, nested


_ORIGIN = Field("string", required=True, allowed=("creditor_system",))
_CURRENCY = Field("string", required=True, allowed=("SEK",))
_DATE = Field("datetime")

PAYMENT: Schema = {
    "creditor": Field("objectid", required=True),
    "case": Field("objectid"),
    "invoice_number": Field("string"),
    "account": Field("objectid", readonly=True),
    "currency": _CURRENCY,
    "amount": Field("number", required=True, positive=True),
    "bank_transaction_date": Field("datetime", required=True),
    "client_registration_date": _DATE,
    "creditor_payment_reference": Field("string"),
    "file_import_report": Field("objectid", readonly=True),
    "origin": _ORIGIN,
}

CREDITING: Schema = {
    "creditor": Field("objectid"),
    "case": Field("objectid"),
    "invoice_number": Field("string"),
    "account": Field("objectid", readonly=True),
    "currency": _CURRENCY,
    "amount": Field("number", required=True, positive=True),
    "credit_invoice": Field("string"),
    "client_registration_date": _DATE,
    "creditor_reference": Field("string"),
    "file_import_report": Field("objectid", readonly=True),
    "origin": _ORIGIN,
}

CANCELLATION: Schema = {
    "creditor": Field("objectid", required=True),
    "case": Field("objectid"),
    "invoice_number": Field("string"),
    "file_import_report": Field("objectid", readonly=True),
    "origin": _ORIGIN,
}

_ADDRESS: Schema = {
    "address_line_1": Field("string"),
    "address_line_2": Field("string"),
    "zip_code": Field("string"),
    "city": Field("string"),
    "country": Field("string"),
}

_CUSTOMER: Schema = {
    "name": Field("string"),
    "id_number": Field("string"),
    "customer_number": Field("string"),
    "is_company": Field("boolean"),
    "is_person": Field("boolean"),
    "is_foreign": Field("boolean"),
    "address": Field("dict", schema=_ADDRESS),
    "mobile_number": Field("string"),
    "email": Field("string"),
}

_DEBT: Schema = {
    "invoice_number": Field("string"),
    "debt_description": Field("string"),
    "debt_reference": Field("string"),
    "payout_reference": Field("string"),
    "invoice_date": _DATE,
    "capital_to_claim": Field("number", required=True, positive=True),
    "invoice_due_days_after_invoice_date": Field("integer"),
    "fees_included_in_capital_to_claim": Field("dict", schema={"invoice_fee": Field("number")}),
    "fees_already_claimed": Field(
        "dict",
        schema={
            "reminder": Field(
                "dict",
                schema={
                    "amount": Field("number", required=True, positive=True),
                    "fee_registration_date": _DATE,
                },
            )
        },
    ),
}

CASE_REGISTRATION: Schema = {
    "account": Field("objectid", required=True),
    "creditor": Field("objectid", required=True),
    "first_action": Field("string", required=True, allowed=("reminder", "debt_collection")),
    "currency": _CURRENCY,
    "customer": Field("dict", schema=_CUSTOMER),
    "debts": Field("list", required=True, items=Field("dict", schema=_DEBT)),
}

RESPITE: Schema = {"days": Field("integer", required=True)}
