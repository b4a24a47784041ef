from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from amili_async.testing import FakeAmili, FakeCreditor


@pytest.fixture
def cases(fake: FakeAmili, cred: FakeCreditor) -> list[str]:
    states = ["invoice", "reminder", "debt_collection"]
    return [
        fake.add_case(cred.id, capital=Decimal(100 + i), state=states[i % 3], invoice_number=f"INV-{i:03d}")
        for i in range(30)
    ]


async def listing(http: httpx.AsyncClient, headers: dict[str, str], path: str = "/cases", **params: Any) -> Any:
    query = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()}
    r = await http.get(path, params=query, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["X-Total-Count"] == str(r.json()["_meta"]["total"])
    return r.json()


async def test_default_page(http: httpx.AsyncClient, headers: dict[str, str], cases: list[str]) -> None:
    body = await listing(http, headers)
    assert body["_meta"] == {"page": 1, "max_results": 25, "total": 30}
    assert [c["_id"] for c in body["_items"]] == cases[:25]
    assert body["_links"]["next"]["href"] == "cases?page=2"
    assert body["_links"]["last"]["href"] == "cases?page=2"
    assert body["_links"]["parent"] == {"title": "home", "href": "/"}
    assert "prev" not in body["_links"]


async def test_paging(http: httpx.AsyncClient, headers: dict[str, str], cases: list[str]) -> None:
    second = await listing(http, headers, page="2", max_results="25")
    assert [c["_id"] for c in second["_items"]] == cases[25:]
    assert "next" not in second["_links"] and "prev" in second["_links"]
    zero = await listing(http, headers, page="0", max_results="10")
    assert zero["_meta"]["page"] == 1 and len(zero["_items"]) == 10
    past = await listing(http, headers, page="9")
    assert past["_items"] == [] and past["_meta"]["total"] == 30
    capped = await listing(http, headers, max_results="1000")
    assert capped["_meta"]["max_results"] == 100 and len(capped["_items"]) == 30
    r = await http.get("/cases", params={"page": "two"}, headers=headers)
    assert r.status_code == 400


async def test_where_equality_in_and_dot_path(
    http: httpx.AsyncClient, headers: dict[str, str], cases: list[str]
) -> None:
    invoice = await listing(http, headers, where={"state": "invoice"}, max_results="100")
    assert invoice["_meta"]["total"] == 10
    assert all(c["state"] == "invoice" for c in invoice["_items"])
    some = await listing(http, headers, where={"_id": {"$in": cases[:3]}})
    assert [c["_id"] for c in some["_items"]] == cases[:3]
    by_invoice = await listing(http, headers, where={"debt.invoice_number": "INV-007"})
    assert [c["_id"] for c in by_invoice["_items"]] == [cases[7]]
    both = await listing(
        http, headers, where={"state": "reminder", "debt.invoice_number": {"$in": ["INV-001", "INV-002"]}}
    )
    assert [c["_id"] for c in both["_items"]] == [cases[1]]
    money = await listing(http, headers, where={"local_remaining_capital_amount": {"$gte": 127}})
    assert money["_meta"]["total"] == 3
    through_lists = await listing(http, headers, where={"state_history.state": "debt_collection"})
    assert through_lists["_meta"]["total"] == 10
    closed = await listing(http, headers, where={"closed": False})
    assert closed["_meta"]["total"] == 30
    assert (await listing(http, headers, where={"closed": 0}))["_meta"]["total"] == 0


@pytest.mark.parametrize(
    "where",
    [
        '{"debt.invoice_number": {"$regex": "^INV"}}',
        "{not json",
        "[1]",
        'state=="invoice"',
        '{"$where": "1"}',
    ],
)
async def test_refused_where(http: httpx.AsyncClient, headers: dict[str, str], cases: list[str], where: str) -> None:
    r = await http.get("/cases", params={"where": where}, headers=headers)
    assert r.status_code == 400
    assert r.json()["_error"]["code"] == 400


async def test_sort(http: httpx.AsyncClient, headers: dict[str, str], cases: list[str]) -> None:
    desc = await listing(http, headers, sort="-debt.invoice_number", max_results="3")
    assert [c["_id"] for c in desc["_items"]] == [cases[29], cases[28], cases[27]]
    multi = await listing(http, headers, sort="state,-local_added_capital_amount", max_results="100")
    states = [c["state"] for c in multi["_items"]]
    assert states == sorted(states)
    first_group = [c["local_added_capital_amount"] for c in multi["_items"] if c["state"] == "debt_collection"]
    assert first_group == sorted(first_group, reverse=True)


async def test_projection(http: httpx.AsyncClient, headers: dict[str, str], cases: list[str]) -> None:
    body = await listing(http, headers, projection={"state": 1, "debt.invoice_number": 1}, max_results="1")
    assert set(body["_items"][0]) == {"_id", "_created", "_updated", "_etag", "state", "debt"}
    assert body["_items"][0]["debt"] == {"invoice_number": "INV-000"}


async def test_accounts_are_isolated(
    fake: FakeAmili, http: httpx.AsyncClient, headers: dict[str, str], cases: list[str], login, payment
) -> None:
    stranger = fake.add_creditor(name="Other AB")
    theirs = fake.add_case(stranger.id)
    other = await login(stranger)
    assert [c["_id"] for c in (await listing(http, other))["_items"]] == [theirs]
    r = await http.get(f"/cases/{cases[0]}", headers=other)
    assert r.status_code == 403
    assert r.json()["_status"] == "ERR" and r.json()["_error"]["code"] == 403
    assert (await http.get(f"/domain-actions/cases/respite/{cases[0]}", headers=other)).status_code == 403
    mine = fake.get_case(cases[0])["creditor"]
    assert (await http.post("/creditor--payments", json=payment(cases[0], mine), headers=other)).status_code == 403
    # Their own creditor on my case: still 403, nothing applied.
    r = await http.post("/creditor--payments", json=payment(cases[0], stranger.id), headers=other)
    assert r.status_code == 403
    # My creditor with an invoice number: 403 too.
    body = payment(None, mine, invoice_number="INV-000")
    assert (await http.post("/creditor--payments", json=body, headers=other)).status_code == 403
    assert fake.payments == []
    creditors = await listing(http, other, "/creditors")
    assert [c["_id"] for c in creditors["_items"]] == [stranger.id]


@pytest.mark.parametrize("case_id", ["674dbeaf08847b9501cc9132", "674DBEAF08847B9501CC9132", "short"])
async def test_unknown_items_are_404(http: httpx.AsyncClient, headers: dict[str, str], case_id: str) -> None:
    r = await http.get(f"/cases/{case_id}", headers=headers)
    assert r.status_code == 404
    assert r.json()["_status"] == "ERR" and r.json()["_error"]["code"] == 404


async def test_uppercase_id_of_a_real_case_is_404(
    http: httpx.AsyncClient, headers: dict[str, str], cases: list[str]
) -> None:
    assert (await http.get(f"/cases/{cases[0].upper()}", headers=headers)).status_code == 404


async def test_etag_and_if_none_match(
    fake: FakeAmili, http: httpx.AsyncClient, headers: dict[str, str], cases: list[str]
) -> None:
    r = await http.get(f"/cases/{cases[0]}", headers=headers)
    etag = r.headers["ETag"]
    assert etag == f'"{fake.get_case(cases[0])["_etag"]}"'
    cached = await http.get(f"/cases/{cases[0]}", headers={**headers, "If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""


async def test_routing_errors(http: httpx.AsyncClient, headers: dict[str, str], cases: list[str]) -> None:
    assert (await http.get("/nowhere", headers=headers)).status_code == 404
    assert (await http.post("/cases", json={}, headers=headers)).status_code == 405
    r = await http.delete(f"/cases/{cases[0]}", headers=headers)
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
    assert (await http.get("/cases/", headers=headers)).status_code == 200
