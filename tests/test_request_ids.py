"""Request ids: one `X-Request-ID` per SDK call, the same on every attempt, on receipts, errors and logs.

A raw loopback server (asyncio streams) stores the headers of every request it gets and answers from a
script, so the assertions are about what really went over the socket; the in-memory Amili records the id of
every request it gets too (`RecordedRequest.request_id`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from amili_async import (
    AsyncAmiliClient,
    CreditorPayment,
    OutcomeUnknownError,
    RetryPolicy,
    StaticTokenAuth,
    UnprocessableEntityError,
)
from amili_async.testing import FakeAmili, Fault

PAID_AT = datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc)
CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68e4c40d93ee14723d28fa95"
HEX32 = re.compile(r"[0-9a-f]{32}")

Answer = tuple[int, dict[str, str], Any]


class RawServer:
    """HTTP/1.1 on 127.0.0.1: stores each request (method, path, headers, body), answers the next scripted
    answer, and stops answering (closes) once the script is used up. Connections idle out after 5 s."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = list(answers)
        self.stored: list[dict[str, Any]] = []
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while self.answers:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                first, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = first.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.stored.append({"method": method, "target": target, "headers": headers, "body": body})
                status, extra, payload = self.answers.pop(0)
                raw = orjson.dumps(payload)
                out = [f"HTTP/1.1 {status} Scripted", f"Content-Length: {len(raw)}", "Content-Type: application/json"]
                out += [f"{name}: {value}" for name, value in extra.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + raw)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()

    def ids(self) -> list[str | None]:
        return [r["headers"].get("x-request-id") for r in self.stored]


@asynccontextmanager
async def raw_server(answers: list[Answer]) -> AsyncIterator[RawServer]:
    server = RawServer(answers)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


def client_for(server: RawServer) -> AsyncAmiliClient:
    return AsyncAmiliClient(
        auth=StaticTokenAuth("tok-secret-123"), base_url=f"http://127.0.0.1:{server.port}", retry=RetryPolicy.no_delay()
    )


def receipt_json(**extra: Any) -> dict[str, Any]:
    return {"_id": "5f" + "1" * 22, "_status": "OK", "status": "completed", **extra}


def payment(reference: str | None = "PAY-1") -> CreditorPayment:
    return CreditorPayment(
        creditor=CREDITOR,
        case=CASE,
        amount=Decimal("250.00"),
        currency="SEK",
        bank_transaction_date=PAID_AT,
        creditor_payment_reference=reference,
    )


async def test_every_attempt_sends_the_same_id_and_the_receipt_records_both_ids() -> None:
    answers: list[Answer] = [
        (429, {"Retry-After": "0"}, {"_status": "ERR", "_error": {"code": 429, "message": "slow down"}}),
        (201, {"X-Request-ID": "amili-7f3a"}, receipt_json()),
    ]
    async with raw_server(answers) as server, client_for(server) as amili:
        receipt = await amili.execute(payment())
    sent = server.ids()
    assert len(sent) == 2 and sent[0] == sent[1]  # a resend is the same logical call
    assert sent[0] is not None and HEX32.fullmatch(sent[0])
    assert receipt.request_id == sent[0]
    assert receipt.server_request_id == "amili-7f3a"  # what Amili (or its proxy) answered with, beside ours


async def test_an_error_carries_the_id_that_was_sent_and_the_one_answered() -> None:
    refusal = {"_status": "ERR", "_issues": {"case": "unknown case"}, "_error": {"code": 422, "message": "invalid"}}
    async with raw_server([(422, {"X-Request-ID": "amili-err-1"}, refusal)]) as server, client_for(server) as amili:
        with pytest.raises(UnprocessableEntityError) as caught:
            await amili.execute(payment())
    (sent,) = server.ids()
    assert caught.value.request_id == sent
    assert caught.value.server_request_id == "amili-err-1"


async def test_every_call_gets_its_own_id() -> None:
    answers: list[Answer] = [(201, {}, receipt_json()), (201, {}, receipt_json()), (200, {}, {"_id": CASE})]
    async with raw_server(answers) as server, client_for(server) as amili:
        first = await amili.execute(payment("A"))
        second = await amili.creditor_payments.create(
            creditor=CREDITOR, case=CASE, amount=Decimal("1"), currency="SEK", bank_transaction_date=PAID_AT
        )
        await amili.cases.get(CASE)
    sent = server.ids()
    assert len(set(sent)) == 3
    assert [first.request_id, second.request_id] == sent[:2]
    assert first.server_request_id is None  # nothing was answered with one
    assert first == second  # the ids describe the call, not the record: receipts still compare by content


async def test_the_in_memory_amili_records_the_id_of_every_request() -> None:
    fake = FakeAmili(seed=3)
    creditor = fake.add_creditor()
    case_id = fake.add_case(creditor.id)
    fake.inject(Fault("drop_after_commit", path="/creditor--payments", method="POST", times=1))
    async with fake.client(creditor, retry=RetryPolicy.no_delay()) as amili:
        receipt = await amili.creditor_payments.create(
            creditor=creditor.id,
            case=case_id,
            amount=Decimal("10"),
            currency="SEK",
            bank_transaction_date=PAID_AT,
            creditor_payment_reference="R-1",
        )
        grant = await amili.respite.grant(case_id, days=10)
        with pytest.raises(OutcomeUnknownError) as caught:
            fake.inject(Fault("drop_after_commit", path="/creditor--payments", method="POST", times=1))
            await amili.execute(
                CreditorPayment(
                    creditor=creditor.id,
                    case=case_id,
                    amount=Decimal("1"),
                    currency="SEK",
                    bank_transaction_date=PAID_AT,
                )
            )
    by_path = [(r.method, r.path, r.request_id) for r in fake.requests if r.path != "/authenticates/api-code"]
    # The lost POST and the lookup that found it belong to one call: one id.
    assert [(m, p) for m, p, _ in by_path[:2]] == [("POST", "/creditor--payments"), ("GET", "/creditor--payments")]
    assert {rid for _, _, rid in by_path[:2]} == {receipt.request_id}
    assert by_path[2] == ("POST", f"/domain-actions/cases/respite/{case_id}", grant.request_id)
    assert by_path[3][2] == caught.value.request_id
    assert len({receipt.request_id, grant.request_id, caught.value.request_id}) == 3


async def test_pages_of_a_list_are_calls_of_their_own() -> None:
    fake = FakeAmili(seed=4)
    creditor = fake.add_creditor()
    for _ in range(3):
        fake.add_case(creditor.id)
    async with fake.client(creditor, retry=RetryPolicy.no_delay()) as amili:
        cases = [c async for c in amili.cases.list(max_results=2)]
    assert len(cases) == 3
    pages = [r.request_id for r in fake.requests if r.path == "/cases"]
    assert len(pages) == 2 and len(set(pages)) == 2 and all(p and HEX32.fullmatch(p) for p in pages)
