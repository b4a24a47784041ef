"""Auto-paging over Eve lists: parameters, the three ways a listing ends, `limit`, `pages()`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest

from amili_async import PaymentReceipt, ResponseDecodeError, ServerError, ValidationError

CREDITOR = "674dbeb208847b9501cc9138"


def ids(start: int, count: int) -> list[str]:
    return [f"{n:024x}" for n in range(start, start + count)]


def pages_handler(pages: list[list[str]], *, total: int | None = None, meta: bool = True):
    """Answers page N (1-based) with `pages[N-1]`, and an empty page past the end."""

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        items = pages[page - 1] if page <= len(pages) else []
        body: dict[str, Any] = {"_items": [{"_id": i, "_payment_status": "completed"} for i in items]}
        if meta:
            body["_meta"] = {
                "page": page,
                "max_results": int(request.url.params["max_results"]),
                "total": total if total is not None else sum(len(p) for p in pages),
            }
        return httpx.Response(200, json=body)

    return handler


async def test_three_pages_with_params(make_client):
    pages = [ids(0, 10), ids(10, 10), ids(20, 10)]
    client, transport = make_client(pages_handler(pages, total=30))
    where = {"creditor": CREDITOR, "status": {"$in": ["completed", "warning"]}}
    got = [p async for p in client.creditor_payments.list(where=where, sort="-_created", max_results=10)]
    assert [p.id for p in got] == ids(0, 30)
    assert all(isinstance(p, PaymentReceipt) and p.payment_status == "completed" for p in got)
    assert len(transport.api_requests) == 3, "stops at _meta.total without asking for a fourth page"
    for number, request in enumerate(transport.api_requests, start=1):
        params = request.url.params
        assert request.url.path == "/creditor--payments"
        assert params["page"] == str(number)
        assert params["max_results"] == "10"
        assert params["sort"] == "-_created"
        assert json.loads(params["where"]) == where


async def test_stops_on_an_empty_page_without_meta(make_client):
    client, transport = make_client(pages_handler([ids(0, 5), ids(5, 5)], meta=False))
    got = [p.id async for p in client.creditor_payments.list(max_results=5)]
    assert got == ids(0, 10)
    assert [r.url.params["page"] for r in transport.api_requests] == ["1", "2", "3"]


async def test_stops_on_a_short_page(make_client):
    client, transport = make_client(pages_handler([ids(0, 5), ids(5, 2)], meta=False))
    got = [p.id async for p in client.creditor_payments.list(max_results=5)]
    assert got == ids(0, 7)
    assert len(transport.api_requests) == 2


async def test_stops_on_meta_total_even_with_full_pages(make_client):
    client, transport = make_client(pages_handler([ids(0, 5), ids(5, 5), ids(10, 5)], total=10))
    got = [p.id async for p in client.creditor_payments.list(max_results=5)]
    assert got == ids(0, 10)
    assert len(transport.api_requests) == 2


async def test_empty_listing(make_client):
    client, transport = make_client(pages_handler([]))
    assert [p async for p in client.creditor_payments.list()] == []
    assert len(transport.api_requests) == 1
    assert transport.api_requests[0].url.params["max_results"] == "25"
    assert transport.api_requests[0].url.params["page"] == "1"
    assert "where" not in transport.api_requests[0].url.params
    assert "sort" not in transport.api_requests[0].url.params


async def test_limit(make_client):
    client, transport = make_client(pages_handler([ids(0, 10), ids(10, 10), ids(20, 10)], meta=False))
    got = [p.id async for p in client.creditor_payments.list(max_results=10, limit=15)]
    assert got == ids(0, 15)
    assert len(transport.api_requests) == 2, "no page is fetched past the limit"


async def test_limit_within_the_first_page(make_client):
    client, transport = make_client(pages_handler([ids(0, 10), ids(10, 10)], meta=False))
    got = [p.id async for p in client.creditor_payments.list(max_results=10, limit=3)]
    assert got == ids(0, 3)
    assert len(transport.api_requests) == 1


async def test_pages(make_client):
    client, transport = make_client(pages_handler([ids(0, 4), ids(4, 4), ids(8, 1)], meta=False))
    pages = [[p.id for p in page] async for page in client.creditor_payments.list(max_results=4).pages()]
    assert pages == [ids(0, 4), ids(4, 4), ids(8, 1)]
    assert len(transport.api_requests) == 3


async def test_nothing_is_fetched_before_iteration(make_client):
    client, transport = make_client(pages_handler([ids(0, 1)]))
    pager = client.creditor_payments.list()
    assert transport.requests == []
    assert [p.id async for p in pager] == ids(0, 1)


@pytest.mark.parametrize("max_results", [0, -1, 101, True, 10.0])
async def test_page_size_checked_before_any_request(make_client, max_results):
    client, transport = make_client(pages_handler([ids(0, 1)]))
    with pytest.raises(ValidationError) as info:
        client.creditor_payments.list(max_results=max_results)
    assert "max_results" in str(info.value)
    assert transport.requests == []


@pytest.mark.parametrize("max_results", [1, 100])
async def test_page_size_limits_accepted(make_client, max_results):
    client, transport = make_client(pages_handler([]))
    [p async for p in client.creditor_payments.list(max_results=max_results)]
    assert transport.api_requests[0].url.params["max_results"] == str(max_results)


async def test_a_list_answer_without_items_is_a_decode_error(make_client):
    client, _ = make_client(lambda r: httpx.Response(200, json={"_meta": {"total": 3}}))
    with pytest.raises(ResponseDecodeError):
        [p async for p in client.creditor_payments.list()]


async def test_a_failing_page_is_retried_like_any_read(make_client):
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if request.url.params["page"] == "2" and calls == 2:
            return httpx.Response(503, content=b"busy")
        return pages_handler([ids(0, 2), ids(2, 2)], meta=False)(request)

    client, transport = make_client(handler)
    got = [p.id async for p in client.creditor_payments.list(max_results=2)]
    assert got == ids(0, 4)
    assert [r.url.params["page"] for r in transport.api_requests] == ["1", "2", "2", "3"]


async def test_a_page_that_keeps_failing_raises(make_client):
    client, _ = make_client(lambda r: httpx.Response(500, content=b"<html>oops</html>"))
    with pytest.raises(ServerError):
        [p async for p in client.creditor_payments.list()]


async def test_where_values_are_encoded_like_the_wire(make_client):
    client, transport = make_client(pages_handler([]))
    since = datetime(2025, 10, 7, 10, 15, 30, tzinfo=timezone(timedelta(hours=2)))
    where = {"_created": {"$gte": since}, "settled_amount": {"$gt": Decimal("99.50")}}
    [p async for p in client.creditor_payments.list(where=where)]
    raw = transport.api_requests[0].url.params["where"]
    assert json.loads(raw, parse_float=Decimal) == {
        "_created": {"$gte": "Tue, 07 Oct 2025 08:15:30 GMT"},
        "settled_amount": {"$gt": Decimal("99.50")},
    }
