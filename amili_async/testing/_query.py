"""List queries the way Eve serves them from MongoDB: `where`, `sort`, `projection`, `page`, `max_results`.

`where` is a JSON Mongo query: equality (a list field matches when any element is equal), dot paths into
sub-documents and lists, ``$in``, ``$nin``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$exists``,
``$and``, ``$or``. ``$regex`` (and any other operator) is refused with 400, as Eve does for ``$regex``.
RFC 1123 strings compare as dates. Eve's Python-like `where` syntax is not supported (400).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from ._wire import BadJson, loads, parse_http_date

DEFAULT_MAX_RESULTS = 25
MAX_RESULTS_LIMIT = 100

Doc = dict[str, Any]
Predicate = Callable[[Doc], bool]


class BadQuery(ValueError):
    """The query string cannot be honoured (the caller answers 400)."""


def _values(doc: Any, parts: list[str]) -> list[Any]:
    """Every value at a dot path; lists fan out like MongoDB's."""
    if not parts:
        return [doc]
    if isinstance(doc, list):
        out: list[Any] = []
        for item in doc:
            out.extend(_values(item, parts))
        return out
    if isinstance(doc, Mapping) and parts[0] in doc:
        return _values(doc[parts[0]], parts[1:])
    return []


def _candidates(doc: Doc, path: str) -> list[Any]:
    found = _values(doc, path.split("."))
    flat: list[Any] = []
    for value in found:
        flat.append(value)
        if isinstance(value, list):
            flat.extend(value)
    return flat


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        parsed = parse_http_date(value)
        if parsed is not None:
            return parsed
    return value


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(_norm(a) == _norm(b))


def _ordered(a: Any, b: Any, op: str) -> bool:
    x, y = _norm(a), _norm(b)
    if isinstance(x, bool) or isinstance(y, bool):
        return False
    numeric = (int, float, Decimal)
    same = (isinstance(x, numeric) and isinstance(y, numeric)) or (
        type(x) is type(y) and isinstance(x, (str, datetime))
    )
    if not same:
        return False
    if op == "$gt":
        return bool(x > y)
    if op == "$gte":
        return bool(x >= y)
    if op == "$lt":
        return bool(x < y)
    return bool(x <= y)


def _field_predicate(path: str, cond: Any) -> Predicate:
    if not (isinstance(cond, Mapping) and cond and all(str(k).startswith("$") for k in cond)):
        return lambda doc: any(_equal(v, cond) for v in _candidates(doc, path))
    checks: list[Predicate] = []
    for op, arg in cond.items():
        checks.append(_operator(path, op, arg))
    return lambda doc: all(check(doc) for check in checks)


def _operator(path: str, op: str, arg: Any) -> Predicate:
    if op in ("$in", "$nin"):
        if not isinstance(arg, list):
            raise BadQuery(f"{op} needs a list")
        hit: Predicate = lambda doc: any(_equal(v, a) for v in _candidates(doc, path) for a in arg)  # noqa: E731
        return hit if op == "$in" else (lambda doc: not hit(doc))
    if op == "$ne":
        return lambda doc: not any(_equal(v, arg) for v in _candidates(doc, path))
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return lambda doc: any(_ordered(v, arg, op) for v in _candidates(doc, path))
    if op == "$exists":
        return lambda doc: bool(_values(doc, path.split("."))) == bool(arg)
    raise BadQuery(f"operator {op} is not allowed")


def _combine(how: Callable[[Iterable[bool]], bool], parts: list[Predicate]) -> Predicate:
    return lambda doc: how(p(doc) for p in parts)


def compile_where(query: Mapping[str, Any]) -> Predicate:
    checks: list[Predicate] = []
    for key, cond in query.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not all(isinstance(c, Mapping) for c in cond):
                raise BadQuery(f"{key} needs a list of queries")
            checks.append(_combine(all if key == "$and" else any, [compile_where(c) for c in cond]))
        elif key.startswith("$"):
            raise BadQuery(f"operator {key} is not allowed")
        else:
            checks.append(_field_predicate(key, cond))
    return lambda doc: all(check(doc) for check in checks)


def _sort_key(path: str) -> Callable[[Doc], tuple[int, Any]]:
    def key(doc: Doc) -> tuple[int, Any]:
        found = _values(doc, path.split("."))
        value = _norm(found[0]) if found else None
        if value is None:
            return (0, 0)
        if isinstance(value, bool):
            return (1, value)
        if isinstance(value, (int, float, Decimal)):
            return (2, value)
        if isinstance(value, str):
            return (3, value)
        if isinstance(value, datetime):
            return (4, value)
        return (5, str(value))

    return key


def _int_arg(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise BadQuery(f"{name} must be an integer") from exc


def _project(doc: Doc, projection: Mapping[str, Any]) -> Doc:
    include = {k for k, v in projection.items() if v}
    exclude = {k for k, v in projection.items() if not v}
    if include:
        out: Doc = {k: v for k, v in doc.items() if k in ("_id", "_created", "_updated", "_etag")}
        for path in include:
            _copy_path(doc, out, path.split("."))
        return out
    return {k: v for k, v in doc.items() if k not in exclude}


def _copy_path(src: Any, dst: Doc, parts: list[str]) -> None:
    if not isinstance(src, Mapping) or parts[0] not in src:
        return
    head, rest = parts[0], parts[1:]
    if not rest:
        dst[head] = src[head]
        return
    sub = dst.setdefault(head, {})
    if isinstance(sub, dict):
        _copy_path(src[head], sub, rest)


def run_list(resource: str, docs: Iterable[Doc], query: Mapping[str, str]) -> tuple[dict[str, Any], int]:
    """Filter, sort and page `docs`; returns the Eve list body and the total before paging."""
    selected = list(docs)
    where_raw = query.get("where")
    if where_raw:
        try:
            where = loads(where_raw)
        except BadJson as exc:
            raise BadQuery("where must be a JSON object") from exc
        if not isinstance(where, Mapping):
            raise BadQuery("where must be a JSON object")
        predicate = compile_where(where)
        selected = [d for d in selected if predicate(d)]
    sort_raw = query.get("sort")
    if sort_raw:
        for part in reversed([p.strip() for p in sort_raw.split(",") if p.strip()]):
            descending = part.startswith("-")
            selected.sort(key=_sort_key(part.lstrip("-")), reverse=descending)
    projection: Mapping[str, Any] | None = None
    if query.get("projection"):
        try:
            projection = loads(query["projection"])
        except BadJson as exc:
            raise BadQuery("projection must be a JSON object") from exc
        if not isinstance(projection, Mapping):
            raise BadQuery("projection must be a JSON object")
    page = max(_int_arg(query, "page", 1), 1)
    max_results = _int_arg(query, "max_results", DEFAULT_MAX_RESULTS)
    if max_results < 1:
        max_results = DEFAULT_MAX_RESULTS
    max_results = min(max_results, MAX_RESULTS_LIMIT)
    total = len(selected)
    start = (page - 1) * max_results
    items = selected[start : start + max_results]
    if projection is not None:
        items = [_project(d, projection) for d in items]
    body = {
        "_items": items,
        "_links": _links(resource, query, page, max_results, total),
        "_meta": {"page": page, "max_results": max_results, "total": total},
    }
    return body, total


def _links(resource: str, query: Mapping[str, str], page: int, max_results: int, total: int) -> dict[str, Any]:
    keep = {k: v for k, v in query.items() if k != "page"}

    def href(p: int | None) -> str:
        args = dict(keep)
        if p is not None:
            args["page"] = str(p)
        return f"{resource}?{urlencode(args)}" if args else resource

    last = max((total + max_results - 1) // max_results, 1)
    links: dict[str, Any] = {
        "parent": {"title": "home", "href": "/"},
        "self": {"title": resource, "href": href(None)},
    }
    if page < last:
        links["next"] = {"title": "next page", "href": href(page + 1)}
        links["last"] = {"title": "last page", "href": href(last)}
    if page > 1:
        links["prev"] = {"title": "previous page", "href": href(page - 1)}
    return links
