"""`execute_many(stop_on=StopOn())`: a run that cannot succeed stops sending, says "not sent" for every action
it did not send, and never interrupts a write whose fate is still being settled (issue 10)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import anyio
import httpx
import pytest

from amili_async import (
    ApiCodeJwtAuth,
    AuthenticationError,
    CreditorPayment,
    NotSentError,
    RetryPolicy,
    StopOn,
    TransportError,
)
from amili_async._flow import CURRENT_STOP, StopSwitch
from amili_async.testing import FakeAmili

PAID = datetime(2025, 10, 7, tzinfo=timezone.utc)
CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68e4c40d93ee14723d28fa95"
RID = "68e4cb120da90297b3be0e01"


def pay(case: str, creditor: str = CREDITOR, ref: str = "R") -> CreditorPayment:
    return CreditorPayment(
        creditor=creditor,
        case=case,
        amount=Decimal("1.00"),
        currency="SEK",
        bank_transaction_date=PAID,
        creditor_payment_reference=ref,
    )


async def test_wrong_credentials_stop_the_run_one_login_every_action_not_sent():
    fake = FakeAmili(seed=1)
    creditor = fake.add_creditor()
    case = fake.add_case(creditor.id)
    wrong = ApiCodeJwtAuth(api_code="not-the-code", private_key=creditor.private_key_pem)
    actions = [pay(case, creditor.id, f"R-{i}") for i in range(300)]
    async with _client(fake, wrong) as amili:
        outcomes = [o async for o in amili.execute_many(actions, concurrency=16, stop_on=StopOn())]

    assert sorted(o.index for o in outcomes) == list(range(300))
    assert {type(o.error) for o in outcomes} == {NotSentError}
    assert all(isinstance(o.error.reason, AuthenticationError) for o in outcomes)  # type: ignore[union-attr]
    assert [o.error.reference for o in outcomes][:3] == [o.action.reference for o in outcomes][:3]  # type: ignore[union-attr]
    assert fake.token_requests == 1 and fake.payments == []


async def test_without_stop_on_a_refused_run_still_costs_one_login_not_one_per_action():
    fake = FakeAmili(seed=2)
    creditor = fake.add_creditor()
    case = fake.add_case(creditor.id)
    wrong = ApiCodeJwtAuth(api_code="not-the-code", private_key=creditor.private_key_pem)
    async with _client(fake, wrong) as amili:
        outcomes = [o async for o in amili.execute_many([pay(case, creditor.id)] * 200, concurrency=16)]
    assert {type(o.error) for o in outcomes} == {AuthenticationError}
    assert fake.token_requests == 1


def _client(fake: FakeAmili, auth: Any) -> Any:
    from amili_async import AsyncAmiliClient

    return AsyncAmiliClient(auth=auth, base_url=fake.BASE_URL, transport=fake.transport(), retry=RetryPolicy.no_delay())


async def test_a_stop_interrupts_a_throttled_call_but_never_a_write_being_settled(make_client):
    looked_up = anyio.Event()
    release = anyio.Event()
    posts: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        ref = request.url.params.get("where", "") or (request.content.decode())
        if request.method == "POST":
            posts.append(ref)
            if "SETTLE" in ref:
                raise httpx.ReadTimeout("read timed out")  # sent, answer lost: it must be looked up
            return httpx.Response(429, json={"_status": "ERR"}, headers={"Retry-After": "30"})
        looked_up.set()
        await release.wait()
        return httpx.Response(200, json={"_items": [{"_id": RID, "creditor_payment_reference": "SETTLE"}]})

    client, _ = make_client(handler, retry=RetryPolicy(deadline=120))
    switch = StopSwitch()
    results: dict[str, Any] = {}

    async def run(ref: str) -> None:
        CURRENT_STOP.set(switch)
        try:
            results[ref] = await client.creditor_payments.create(**_payment_kwargs(ref))
        except Exception as exc:
            results[ref] = exc

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "SETTLE")
            tg.start_soon(run, "THROTTLED")
            await looked_up.wait()
            await anyio.wait_all_tasks_blocked()  # THROTTLED sleeps its 30 s, SETTLE waits for its look-up
            switch.stop(TransportError("Amili could not be reached for 5.0 s"))
            await anyio.wait_all_tasks_blocked()
            assert isinstance(results.get("THROTTLED"), NotSentError)  # ended at once, not after 30 s
            assert "SETTLE" not in results  # still settling
            release.set()
    assert results["SETTLE"].id == RID  # its look-up finished: the receipt, not "not sent"


def _payment_kwargs(ref: str) -> dict[str, Any]:
    return dict(
        creditor=CREDITOR,
        case=CASE,
        amount=Decimal("1.00"),
        currency="SEK",
        bank_transaction_date=PAID,
        creditor_payment_reference=ref,
    )


async def test_stop_on_defaults_and_no_stop_without_a_reason(make_client):
    assert StopOn() == StopOn(credential_refusal=True, unreachable_for=5.0)
    client, _ = make_client(lambda r: httpx.Response(201, json={"_id": RID, "_status": "OK"}))
    outcomes = [o async for o in client.execute_many([pay(CASE, ref=f"R{i}") for i in range(50)], stop_on=StopOn())]
    assert all(o.ok for o in outcomes) and len(outcomes) == 50


@pytest.mark.parametrize("unreachable_for", [None, 3600.0])
async def test_unreachable_for_none_or_long_does_not_stop_a_short_outage(make_client, unreachable_for):
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:  # within max_attempts: the call itself survives it
            raise httpx.ConnectError("refused")
        return httpx.Response(201, json={"_id": RID, "_status": "OK"})

    client, _ = make_client(handler)
    stop_on = StopOn(unreachable_for=unreachable_for)
    outcomes = [o async for o in client.execute_many([pay(CASE)], stop_on=stop_on)]
    assert outcomes[0].ok
