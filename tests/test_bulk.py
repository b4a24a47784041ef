"""`execute_many`: any iterable, bounded concurrency, exactly one outcome per action, errors captured."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from decimal import Decimal

import anyio
import httpx
import pytest

from amili_async import (
    CreditingReceipt,
    CreditorCrediting,
    Outcome,
    RespiteGrant,
    RespiteReceipt,
    UnprocessableEntityError,
    ValidationError,
)

CASE = "68e4c40d93ee14723d28fa95"


def crediting(n: int) -> CreditorCrediting:
    # The amount carries the action's number, so the server side can tell them apart.
    return CreditorCrediting(case=CASE, amount=Decimal(n + 1), currency="SEK", creditor_reference=f"CR-{n}")


def numbered(request: httpx.Request) -> int:
    return int(json.loads(request.content)["amount"]) - 1


def make_handler(delay: float = 0.0, bad: frozenset[int] = frozenset()):
    async def handler(request: httpx.Request) -> httpx.Response:
        n = numbered(request)
        if delay:
            await anyio.sleep(delay)
        else:
            await anyio.lowlevel.checkpoint()
        if n in bad:
            return httpx.Response(
                422,
                json={
                    "_status": "ERR",
                    "_issues": {"case": "case is closed"},
                    "_error": {"code": 422, "message": "Insertion failure"},
                },
            )
        return httpx.Response(201, json={"_id": f"{n:024x}", "_status": "OK", "_crediting_status": "completed"})

    return handler


def check_outcomes(outcomes: list[Outcome], count: int, bad: frozenset[int] = frozenset()) -> None:
    assert len(outcomes) == count
    assert sorted(o.index for o in outcomes) == list(range(count))
    for outcome in outcomes:
        assert outcome.action == crediting(outcome.index)
        if outcome.index in bad:
            assert not outcome.ok
            assert outcome.receipt is None
            assert isinstance(outcome.error, UnprocessableEntityError)
            assert outcome.error.issues == {"case": ("case is closed",)}
            assert outcome.error.reference == f"CR-{outcome.index}"
        else:
            assert outcome.ok, outcome.error
            assert outcome.error is None
            assert isinstance(outcome.receipt, CreditingReceipt)
            assert outcome.receipt.id == f"{outcome.index:024x}"


async def test_sync_list(make_client):
    client, transport = make_client(make_handler())
    outcomes = [o async for o in client.execute_many([crediting(n) for n in range(30)], concurrency=4)]
    check_outcomes(outcomes, 30)
    assert len(transport.api_requests) == 30
    assert len(transport.token_requests) == 1


async def test_sync_generator_is_pulled_lazily(make_client):
    pulled = 0

    def source() -> Iterator[CreditorCrediting]:
        nonlocal pulled
        for n in range(40):
            pulled += 1
            yield crediting(n)

    client, _ = make_client(make_handler(delay=0.002))
    outcomes = []
    async for outcome in client.execute_many(source(), concurrency=5):
        outcomes.append(outcome)
        if len(outcomes) == 1:
            # After the first outcome only about `concurrency` actions are out of the generator, not all 40.
            assert pulled <= 5 + 5
    check_outcomes(outcomes, 40)


async def test_async_generator(make_client):
    async def source() -> AsyncIterator[CreditorCrediting]:
        for n in range(25):
            await anyio.lowlevel.checkpoint()
            yield crediting(n)

    client, _ = make_client(make_handler())
    outcomes = [o async for o in client.execute_many(source(), concurrency=3)]
    check_outcomes(outcomes, 25)


@pytest.mark.parametrize("concurrency", [1, 3, 8])
async def test_concurrency_bound(make_client, concurrency):
    client, transport = make_client(make_handler(delay=0.005))
    outcomes = [o async for o in client.execute_many((crediting(n) for n in range(40)), concurrency=concurrency)]
    check_outcomes(outcomes, 40)
    assert transport.max_in_flight == concurrency  # reached, never exceeded


async def test_errors_are_outcomes_and_never_stop_the_run(make_client):
    bad = frozenset({0, 3, 4, 17, 29})
    client, transport = make_client(make_handler(bad=bad))
    outcomes = [o async for o in client.execute_many([crediting(n) for n in range(30)], concurrency=6)]
    check_outcomes(outcomes, 30, bad)
    assert len(transport.api_requests) == 30, "a 422 is not retried"


async def test_mixed_action_types(make_client):
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/domain-actions/"):
            return httpx.Response(200, json={})
        return await make_handler()(request)

    client, _ = make_client(handler)
    actions = [crediting(0), RespiteGrant(case=CASE, days=7), crediting(2)]
    outcomes = sorted([o async for o in client.execute_many(actions)], key=lambda o: o.index)
    assert [type(o.receipt) for o in outcomes] == [CreditingReceipt, RespiteReceipt, CreditingReceipt]
    assert outcomes[1].receipt == RespiteReceipt(case=CASE, days=7)


async def test_empty_input(make_client):
    client, transport = make_client(make_handler())
    assert [o async for o in client.execute_many([])] == []
    assert transport.requests == []


@pytest.mark.parametrize("concurrency", [0, -1, True, 2.0, None])
async def test_bad_concurrency(make_client, concurrency):
    client, transport = make_client(make_handler())
    with pytest.raises(ValidationError) as info:
        async for _ in client.execute_many([crediting(0)], concurrency=concurrency):
            pass
    assert "concurrency" in str(info.value)
    assert transport.requests == []


async def test_stopping_early_with_aclosing(make_client):
    def endless() -> Iterator[CreditorCrediting]:
        n = 0
        while True:
            yield crediting(n % 1000)
            n += 1

    client, transport = make_client(make_handler())
    seen = 0
    with anyio.fail_after(5):
        async with aclosing(client.execute_many(endless(), concurrency=4)) as outcomes:
            async for outcome in outcomes:
                assert outcome.ok
                seen += 1
                if seen == 10:
                    break
    assert seen == 10
    sent = len(transport.api_requests)
    assert sent < 10 + 4 * 3, "the run stopped shortly after the consumer did"
    await anyio.sleep(0.01)
    assert len(transport.api_requests) == sent, "no worker keeps sending after aclose()"


async def test_a_failing_input_iterable_finishes_in_flight_actions_then_raises(make_client):
    client, _transport = make_client(make_handler(delay=0.01))

    def broken() -> Iterator[CreditorCrediting]:
        for n in range(10):
            yield crediting(n)
        raise OSError("the input file went away")

    outcomes: list[Outcome] = []
    async with client:
        with pytest.raises(OSError, match="went away"):
            async for outcome in client.execute_many(broken(), concurrency=4):
                outcomes.append(outcome)
    # Every action that was pulled before the failure got its outcome; none was lost or doubled.
    check_outcomes(outcomes, 10)
