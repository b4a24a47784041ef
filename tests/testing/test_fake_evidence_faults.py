"""The in-memory Amili's faults for the rule of evidence: late commits, lagging reads, a dropped `where`, a
unique index on references, and faults matched by body field or by rank. Driven over raw httpx (no SDK)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from amili_async.testing import FakeAmili, FakeCreditor, Fault
from amili_async.testing.server import start_server

PAYMENTS = "/creditor--payments"


class Clock:
    """The fake's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> FakeAmili:
    return FakeAmili(seed=0, clock=clock)


@pytest.fixture
def case(fake: FakeAmili, cred: FakeCreditor) -> str:
    return fake.add_case(cred.id, capital="100000")


def lookup(reference: str) -> dict[str, str]:
    return {"where": json.dumps({"creditor_payment_reference": reference})}


async def login(http: httpx.AsyncClient, cred: FakeCreditor, clock: Clock, mint: Any) -> dict[str, str]:
    r = await http.get("/authenticates/api-code", headers={"X-API-Key": mint(cred, now=clock.now)})
    assert r.status_code == 200, r.text
    return {"X-API-Key": r.json()["token"]}


async def test_late_commit_without_gateway_never_answers_and_commits_later(
    fake: FakeAmili, cred: FakeCreditor, case: str, clock: Clock, http: httpx.AsyncClient, payment: Any, mint: Any
) -> None:
    auth = await login(http, cred, clock, mint)
    fake.inject(Fault("late_commit", path=PAYMENTS, method="POST", seconds=10, times=1))
    with pytest.raises(httpx.ReadTimeout):
        await http.post(PAYMENTS, json=payment(case, cred.id), headers=auth, timeout=httpx.Timeout(5, read=0.05))
    assert fake.payments == [] and fake.pending_writes == 1  # still being processed
    clock.now += 9.9
    assert fake.payments == []
    clock.now += 0.1
    [stored] = fake.payments  # committed 10 s after it arrived, with that time on it
    assert stored["_created"] == "Fri, 15 Jan 2027 08:00:10 GMT"
    assert fake.pending_writes == 0
    assert fake.requests[-1].fault == "late_commit" and fake.requests[-1].status is None


async def test_late_commit_behind_a_gateway_answers_504_at_once(
    fake: FakeAmili, cred: FakeCreditor, case: str, clock: Clock, http: httpx.AsyncClient, payment: Any, mint: Any
) -> None:
    auth = await login(http, cred, clock, mint)
    fake.inject(Fault("late_commit", path=PAYMENTS, seconds=2, gateway=True, status=504, times=1))
    r = await http.post(PAYMENTS, json=payment(case, cred.id), headers=auth)
    assert r.status_code == 504 and r.headers["content-type"].startswith("text/html")
    assert fake.payments == []
    clock.now += 2
    # The next request sees the commit that landed meanwhile.
    found = await http.get(PAYMENTS, headers=auth)
    assert len(found.json()["_items"]) == 1


async def test_commit_pending_lands_every_write_in_progress(
    fake: FakeAmili, cred: FakeCreditor, case: str, clock: Clock, http: httpx.AsyncClient, payment: Any, mint: Any
) -> None:
    auth = await login(http, cred, clock, mint)
    fake.inject(Fault("late_commit", path=PAYMENTS, seconds=60, gateway=True, status=504))
    for n in range(3):
        await http.post(PAYMENTS, json=payment(case, cred.id, creditor_payment_reference=f"L-{n}"), headers=auth)
    assert fake.pending_writes == 3
    fake.commit_pending()
    assert sorted(p["creditor_payment_reference"] for p in fake.payments) == ["L-0", "L-1", "L-2"]


async def test_a_late_commit_needs_a_valid_token_when_it_arrives(
    fake: FakeAmili, cred: FakeCreditor, case: str, http: httpx.AsyncClient, payment: Any
) -> None:
    fake.inject(Fault("late_commit", path=PAYMENTS, seconds=1, gateway=True, status=504))
    r = await http.post(PAYMENTS, json=payment(case, cred.id), headers={"X-API-Key": "not-a-token"})
    assert r.status_code == 401
    fake.commit_pending()
    assert fake.payments == []


async def test_read_lag_hides_young_records_from_lists_and_item_reads(
    fake: FakeAmili, cred: FakeCreditor, case: str, clock: Clock, http: httpx.AsyncClient, payment: Any, mint: Any
) -> None:
    auth = await login(http, cred, clock, mint)
    created = await http.post(PAYMENTS, json=payment(case, cred.id, creditor_payment_reference="LAG"), headers=auth)
    record_id = created.json()["_id"]
    fake.inject(Fault("read_lag", path=PAYMENTS, seconds=5))
    clock.now += 4.9
    assert (await http.get(PAYMENTS, params=lookup("LAG"), headers=auth)).json()["_items"] == []
    assert (await http.get(f"{PAYMENTS}/{record_id}", headers=auth)).status_code == 404
    clock.now += 0.1
    assert len((await http.get(PAYMENTS, params=lookup("LAG"), headers=auth)).json()["_items"]) == 1
    assert (await http.get(f"{PAYMENTS}/{record_id}", headers=auth)).status_code == 200


async def test_read_lag_and_ignore_where_never_touch_writes(
    fake: FakeAmili, cred: FakeCreditor, case: str, clock: Clock, http: httpx.AsyncClient, payment: Any, mint: Any
) -> None:
    auth = await login(http, cred, clock, mint)
    fake.inject(Fault("read_lag", seconds=5))
    fake.inject(Fault("ignore_where"))
    r = await http.post(PAYMENTS, json=payment(case, cred.id), headers=auth)
    assert r.status_code == 201 and fake.requests[-1].fault is None


async def test_ignore_where_serves_the_first_page_of_everything(
    fake: FakeAmili, cred: FakeCreditor, case: str, clock: Clock, http: httpx.AsyncClient, payment: Any, mint: Any
) -> None:
    auth = await login(http, cred, clock, mint)
    for reference in ("A", "B", "C"):
        await http.post(PAYMENTS, json=payment(case, cred.id, creditor_payment_reference=reference), headers=auth)
    fake.inject(Fault("ignore_where", path=PAYMENTS, times=1))
    ignored = (await http.get(PAYMENTS, params=lookup("C"), headers=auth)).json()["_items"]
    assert [p["creditor_payment_reference"] for p in ignored] == ["A", "B", "C"]
    honoured = (await http.get(PAYMENTS, params=lookup("C"), headers=auth)).json()["_items"]
    assert [p["creditor_payment_reference"] for p in honoured] == ["C"]


@pytest.mark.parametrize("status", [422, 409])
async def test_a_unique_index_refuses_a_stored_reference(payment: Any, mint: Any, status: int) -> None:
    fake = FakeAmili(seed=0, unique_references=True, unique_status=status)
    cred = fake.add_creditor()
    case = fake.add_case(cred.id, capital="1000")
    async with httpx.AsyncClient(transport=fake.transport(), base_url=FakeAmili.BASE_URL) as http:
        token = (await http.get("/authenticates/api-code", headers={"X-API-Key": mint(cred)})).json()["token"]
        auth = {"X-API-Key": token}
        body = payment(case, cred.id, amount=10.0, creditor_payment_reference="UNIQ-1")
        assert (await http.post(PAYMENTS, json=body, headers=auth)).status_code == 201
        again = await http.post(PAYMENTS, json=body, headers=auth)
        other = await http.post(PAYMENTS, json={**body, "creditor_payment_reference": "UNIQ-2"}, headers=auth)
    assert again.status_code == status
    if status == 422:  # Eve's `unique` rule, in Eve's words
        assert again.json()["_issues"] == {"creditor_payment_reference": "value 'UNIQ-1' is not unique"}
    assert other.status_code == 201
    assert [p["creditor_payment_reference"] for p in fake.payments] == ["UNIQ-1", "UNIQ-2"]
    assert fake.get_case(case)["local_remaining_capital_amount"] == 980  # the refused one moved no money


def test_unique_status_is_checked() -> None:
    with pytest.raises(ValueError):
        FakeAmili(unique_references=True, unique_status=500)


async def test_a_fault_matched_by_a_body_field_and_by_rank(
    fake: FakeAmili, cred: FakeCreditor, case: str, clock: Clock, http: httpx.AsyncClient, payment: Any, mint: Any
) -> None:
    auth = await login(http, cred, clock, mint)
    fake.inject(Fault("server_error", path=PAYMENTS, body={"creditor_payment_reference": "HIT"}, status=502))
    fake.inject(Fault("drop_before_commit", path=PAYMENTS, method="POST", nth=3))
    statuses = []
    for reference in ("MISS-1", "HIT", "MISS-2", "MISS-3"):
        body = payment(case, cred.id, creditor_payment_reference=reference)
        try:
            statuses.append((await http.post(PAYMENTS, json=body, headers=auth)).status_code)
        except httpx.RemoteProtocolError:
            statuses.append(None)
    # "HIT" matched by its field; the drop fired on the third POST the second fault saw (MISS-3: the second
    # fault never saw HIT, which the first one took).
    assert statuses == [201, 502, 201, None]
    assert [r.fault for r in fake.requests if r.method == "POST"] == [None, "server_error", None, "drop_before_commit"]


def test_nth_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Fault("drop_before_commit", nth=0)


async def test_a_late_commit_over_a_socket_leaves_the_connection_silent(
    fake: FakeAmili, cred: FakeCreditor, case: str, clock: Clock, payment: Any, mint: Any
) -> None:
    fake.inject(Fault("late_commit", path=PAYMENTS, method="POST", seconds=1, times=1))
    async with await start_server(fake) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        auth = await login(http, cred, clock, mint)
        with pytest.raises(httpx.ReadTimeout):
            await http.post(PAYMENTS, json=payment(case, cred.id), headers=auth, timeout=httpx.Timeout(5, read=0.1))
        assert fake.payments == []
        clock.now += 1
        assert len(fake.payments) == 1
