"""Reads under faults: retried (they move no money), then a precise, typed error (§1.4, §5.3 B20-22)."""

from __future__ import annotations

import json

import httpx
import pytest
from reliability_helpers import sent

from amili_async import RetryPolicy
from amili_async.errors import ResponseDecodeError, ServerError, TimeoutError
from amili_async.testing import Fault


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_html_5xx_on_a_get_is_retried_then_server_error_with_a_short_excerpt(fake, case_id, client_for, status):
    fake.inject(Fault(kind="server_error", status=status, path="/cases", method="GET"))
    async with client_for() as amili:
        with pytest.raises(ServerError) as caught:
            await amili.cases.get(case_id)

    err = caught.value
    assert err.status_code == status
    assert err.attempts == 3
    assert len(sent(fake, "GET", f"/cases/{case_id}")) == 3
    assert isinstance(err.body, str) and "<html>" in err.body
    assert len(err.body) <= 201 and "\n" not in err.body  # a short, single-line excerpt
    chain, link = [], err
    while link is not None:
        chain.append(link)
        link = link.__cause__ or link.__context__
    assert not any(isinstance(e, json.JSONDecodeError) for e in chain)


async def test_html_5xx_on_a_get_then_success_returns_the_case(fake, case_id, client_for):
    fake.inject(Fault(kind="server_error", status=502, path="/cases", method="GET", times=2))
    async with client_for() as amili:
        case = await amili.cases.get(case_id)
    assert case.id == case_id
    assert [r.status for r in sent(fake, "GET", f"/cases/{case_id}")] == [502, 502, 200]


@pytest.mark.parametrize("kind", ["drop_before_commit", "drop_after_commit", "connect_error"])
async def test_a_dropped_or_refused_get_is_retried(fake, case_id, client_for, kind):
    fake.inject(Fault(kind=kind, path="/cases", method="GET", times=2))
    async with client_for() as amili:
        case = await amili.cases.get(case_id)
    assert case.id == case_id
    assert len(sent(fake, "GET", f"/cases/{case_id}")) == 3


@pytest.mark.parametrize("kind", ["malformed_json", "empty_body"])
async def test_an_unreadable_200_on_a_get_is_retried_then_response_decode_error(fake, case_id, client_for, kind):
    fake.inject(Fault(kind=kind, path="/cases", method="GET"))
    async with client_for() as amili:
        with pytest.raises(ResponseDecodeError) as caught:
            await amili.cases.get(case_id)

    assert caught.value.status_code == 200
    assert caught.value.attempts == 3
    assert len(sent(fake, "GET", f"/cases/{case_id}")) == 3


@pytest.mark.parametrize("kind", ["malformed_json", "empty_body"])
async def test_an_unreadable_200_on_a_list_is_retried_then_succeeds(fake, creditor, case_id, client_for, kind):
    fake.inject(Fault(kind=kind, path="/creditor--payments", method="GET", times=2))
    async with client_for() as amili:
        found = [p async for p in amili.creditor_payments.list(where={"case": case_id})]
    assert found == []
    assert len(sent(fake, "GET", "/creditor--payments")) == 3


async def test_a_stalled_body_on_a_get_ends_at_the_read_timeout_retried_then_timeout_error(fake, case_id, client_for):
    fake.inject(Fault(kind="stall_body", path="/cases", method="GET"))
    async with client_for(timeout=httpx.Timeout(0.2)) as amili:
        with pytest.raises(TimeoutError) as caught:
            await amili.cases.get(case_id)
    assert caught.value.attempts == 3
    assert len(sent(fake, "GET", f"/cases/{case_id}")) == 3


async def test_the_deadline_ends_a_slow_read_with_timeout_error(fake, case_id, client_for):
    fake.inject(Fault(kind="latency", seconds=30, path="/cases", method="GET"))
    async with client_for(retry=RetryPolicy.no_delay(deadline=0.2)) as amili:
        with pytest.raises(TimeoutError) as caught:
            await amili.cases.get(case_id)
    assert "deadline" in caught.value.message
    assert caught.value.attempts == 1
