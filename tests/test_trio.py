"""The main flows under trio (through anyio): token, create, list, respite, execute_many, 401 replay."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import anyio
import httpx
import pytest
import sniffio
import trio

from amili_async import (
    ClientStateError,
    CreditorCrediting,
    OutcomeUnknownError,
    RespiteCheck,
    ServerError,
)

CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68e4c40d93ee14723d28fa95"


async def handler(request: httpx.Request) -> httpx.Response:
    await anyio.sleep(0.001)  # a real checkpoint, on trio's clock
    path = request.url.path
    if request.method == "POST" and path == "/creditor--payments":
        body = json.loads(request.content)
        return httpx.Response(201, json={"_id": "68e4cb120da90297b3be0e01", "settled_amount": body["amount"]})
    if request.method == "POST" and path == "/creditor--creditings":
        amount = int(json.loads(request.content)["amount"])
        if amount == 13:
            return httpx.Response(422, json={"_status": "ERR", "_issues": {"amount": "unlucky"}})
        return httpx.Response(201, json={"_id": f"{amount:024x}", "_crediting_status": "completed"})
    if path == "/creditor--payments":
        page = int(request.url.params["page"])
        items = [{"_id": f"{page * 10 + i:024x}"} for i in range(2)] if page <= 2 else []
        return httpx.Response(200, json={"_items": items})
    if path.startswith("/domain-actions/cases/respite/"):
        return httpx.Response(
            206 if request.method == "GET" else 200,
            json={"issues": ["in collection"]} if request.method == "GET" else {},
        )
    return httpx.Response(404, json={"_status": "ERR"})


def test_main_flows_on_trio(make_client):
    client, transport = make_client(handler)

    async def main() -> None:
        assert sniffio.current_async_library() == "trio"
        async with client:
            receipt = await client.creditor_payments.create(
                creditor=CREDITOR,
                case=CASE,
                amount=Decimal("250.10"),
                currency="SEK",
                bank_transaction_date=datetime(2025, 10, 7, tzinfo=timezone.utc),
            )
            assert receipt.settled_amount == Decimal("250.1")
            listed = [p.id async for p in client.creditor_payments.list(max_results=2)]
            assert len(listed) == 4
            assert await client.respite.check(CASE) == RespiteCheck(False, ("in collection",))
            await client.respite.grant(CASE, days=3)
            actions = [CreditorCrediting(case=CASE, amount=Decimal(n), currency="SEK") for n in range(1, 21)]
            outcomes = [o async for o in client.execute_many(actions, concurrency=4)]
            assert sorted(o.index for o in outcomes) == list(range(20))
            failed = [o for o in outcomes if not o.ok]
            assert [o.index for o in failed] == [12]
            assert failed[0].error.issues == {"amount": ("unlucky",)}

    trio.run(main)
    assert len(transport.token_requests) == 1
    assert transport.max_in_flight <= 4
    assert sum(1 for r in transport.api_requests if r.url.path == "/creditor--creditings") == 20


def test_concurrent_first_calls_share_one_token_on_trio(make_client):
    async def token(request: httpx.Request) -> httpx.Response:
        await trio.sleep(0.01)
        return httpx.Response(200, json={"token": "tok-trio", "expires_in": 3600})

    client, transport = make_client(lambda r: httpx.Response(200, json={"_id": CASE}), token_handler=token)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(client.cases.get, CASE)

    trio.run(main)
    assert len(transport.token_requests) == 1
    assert {r.headers["X-API-Key"] for r in transport.api_requests} == {"tok-trio"}


def test_401_replay_and_retries_on_trio(make_client):
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if request.headers["X-API-Key"] == "tok-1":
            return httpx.Response(401, json={"_status": "ERR"})
        if calls == 2:
            return httpx.Response(503, content=b"busy")
        return httpx.Response(200, json={"_id": CASE})

    client, transport = make_client(flaky)

    async def main() -> None:
        case = await client.cases.get(CASE)
        assert case.id == CASE

    trio.run(main)
    assert [r.headers["X-API-Key"] for r in transport.api_requests] == ["tok-1", "tok-2", "tok-2"]


def test_errors_and_deadline_on_trio(make_client):
    from amili_async import RetryPolicy

    async def hang(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/cases/{CASE}":
            return httpx.Response(500, content=b"<html>err</html>")
        await trio.sleep(30)
        raise AssertionError("unreachable")  # pragma: no cover

    client, _ = make_client(hang, retry=RetryPolicy.no_delay(deadline=0.2))

    async def main() -> None:
        with pytest.raises(ServerError):
            await client.cases.get(CASE)
        with trio.fail_after(5), pytest.raises(OutcomeUnknownError):
            await client.creditor_creditings.create(case=CASE, amount=1, currency="SEK")
        await client.aclose()
        with pytest.raises(ClientStateError):
            await client.cases.get(CASE)

    trio.run(main)
