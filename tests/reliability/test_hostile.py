"""Hostile or broken servers (issue 11): bodies without end, pagers without end, money that must stay exact.

Every server here is a raw loopback server (`raw_server.py`) that writes its answers byte by byte the way a
misbehaving proxy or API would; the assertions are on what it stored and on what the SDK raised. Memory is
bounded by construction, and shown so by the error raised at the cap and by how little of the 50 MB the
server managed to hand over, never by timing.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from decimal import Decimal
from typing import Any

import httpx
import pytest
from raw_server import RawServer, Seen, respond
from reliability_helpers import PAID_AT

from amili_async import AsyncAmiliClient, RetryPolicy, StaticTokenAuth
from amili_async.errors import ResponseDecodeError, TransportError
from amili_async.models.cases import Case
from amili_async.resources._base import MAX_PAGES, ApiResponse, AsyncPager
from amili_async.testing import FakeAmili

CASE = "68e4c40d93ee14723d28fa95"
CREDITOR = "674dbeb208847b9501cc9138"
MB = 1024 * 1024
FIFTY_MB = 50 * MB
TRANSPORTS = ["aiohttp", "httpx"]


_GIVEN: dict[int, httpx.AsyncBaseTransport] = {}  # client id -> the transport we gave it (ours to close)


def _client(server: RawServer, transport_name: str, **kwargs: Any) -> AsyncAmiliClient:
    kwargs.setdefault("retry", RetryPolicy.no_delay(max_attempts=1))
    transport = httpx.AsyncHTTPTransport() if transport_name == "httpx" else None
    client = AsyncAmiliClient(
        auth=StaticTokenAuth("tok-hostile-0001"), base_url=server.base_url, transport=transport, **kwargs
    )
    if transport is not None:
        _GIVEN[id(client)] = transport
    return client


async def _close(client: AsyncAmiliClient) -> None:
    await client.aclose()
    transport = _GIVEN.pop(id(client), None)
    if transport is not None:
        await transport.aclose()


class BigBody:
    """Answers with up to `total` bytes in the given framing and counts what it managed to write."""

    def __init__(self, framing: str, total: int = FIFTY_MB, status: int = 200) -> None:
        self.framing = framing
        self.total = total
        self.status = status
        self.written = 0

    async def __call__(self, seen: Seen, writer: asyncio.StreamWriter) -> bool:
        head = f"HTTP/1.1 {self.status} OK\r\nContent-Type: application/json\r\n"
        if self.framing == "chunked":
            head += "Transfer-Encoding: chunked\r\n"
        elif self.framing == "content-length":
            head += f"Content-Length: {self.total}\r\n"
        else:  # close-delimited: the body ends when the connection does
            head += "Connection: close\r\n"
        writer.write((head + "\r\n").encode())
        piece = b"[" + b"0," * (MB // 2 - 1) + b"0]"  # 1 MiB of valid JSON, again and again
        try:
            while self.written < self.total:
                data = piece[: self.total - self.written]
                writer.write(b"%x\r\n%s\r\n" % (len(data), data) if self.framing == "chunked" else data)
                await writer.drain()
                self.written += len(data)
            if self.framing == "chunked":
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        return False


# -- bounded reads on every framing ---------------------------------------------------------------------


@pytest.mark.parametrize("transport_name", TRANSPORTS)
@pytest.mark.parametrize("framing", ["chunked", "close"])
async def test_a_50_mb_body_is_cut_at_the_configured_cap_in_every_framing(transport_name, framing):
    big = BigBody(framing)
    async with RawServer(big) as server:
        client = _client(server, transport_name, max_response_bytes=MB)
        try:
            with pytest.raises(TransportError) as caught:
                await client.cases.get(CASE)
        finally:
            await _close(client)

    assert f"larger than the {MB}-byte cap" in str(caught.value)
    assert caught.value.status_code is None
    # The client stopped reading at the cap and hung up: the server could not hand over the 50 MB.
    assert MB < big.written < 25 * MB, big.written
    assert server.paths("GET") == [f"/cases/{CASE}"]


async def test_an_endless_close_delimited_body_hits_the_default_16_mib_cap():
    endless = BigBody("close", total=10**12)  # it would never end by itself
    async with RawServer(endless) as server:
        client = _client(server, "aiohttp")
        try:
            with pytest.raises(TransportError) as caught:
                await client.cases.get(CASE)
        finally:
            await _close(client)
    assert "larger than the 16777216-byte cap" in str(caught.value)
    assert endless.written < 48 * MB


@pytest.mark.parametrize("transport_name", TRANSPORTS)
async def test_a_content_length_over_the_cap_is_refused_before_reading(transport_name):
    big = BigBody("content-length")
    async with RawServer(big) as server:
        client = _client(server, transport_name, max_response_bytes=MB)
        try:
            with pytest.raises(TransportError, match="cap"):
                await client.cases.get(CASE)
        finally:
            await _close(client)
    assert big.written < 25 * MB


@pytest.mark.parametrize("transport_name", TRANSPORTS)
async def test_a_small_gzip_body_that_inflates_to_50_mb_is_cut_at_the_cap(transport_name):
    bomb = gzip.compress(b" " * FIFTY_MB)

    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        return await respond(writer, 200, bomb, headers={"Content-Encoding": "gzip"})

    async with RawServer(handler) as server:
        client = _client(server, transport_name, max_response_bytes=MB)
        try:
            with pytest.raises(TransportError, match="cap"):
                await client.cases.get(CASE)
        finally:
            await _close(client)
    assert len(bomb) < MB  # what came over the wire was small: the cap is on what it inflates to


async def test_an_answer_at_the_cap_is_read_and_one_byte_more_is_not():
    body = b'{"_id": "' + CASE.encode() + b'", "pad": "' + b"x" * 1000 + b'"}'

    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        return await respond(writer, 200, body)

    async with RawServer(handler) as server:
        exact = _client(server, "aiohttp", max_response_bytes=len(body))
        short = _client(server, "httpx", max_response_bytes=len(body) - 1)
        try:
            assert (await exact.cases.get(CASE)).id == CASE
            with pytest.raises(TransportError, match="cap"):
                await short.cases.get(CASE)
        finally:
            await _close(exact)
            await _close(short)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "16"])
def test_max_response_bytes_must_be_a_positive_int(bad):
    from amili_async.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="max_response_bytes"):
        AsyncAmiliClient(auth=StaticTokenAuth("tok-hostile-0001"), max_response_bytes=bad)


async def test_a_write_answered_with_an_oversized_body_is_looked_up_not_sent_again():
    record = {
        "_id": "68e4cb120da90297b3be0e01",
        "creditor": CREDITOR,
        "case": CASE,
        "amount": Decimal("10.00"),
        "currency": "SEK",
        "creditor_payment_reference": "PAY-BIG-1",
    }
    big = BigBody("chunked", status=201)

    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.method == "POST":
            return await big(seen, writer)
        return await respond(writer, 200, {"_items": [record], "_meta": {"total": 1}})

    async with RawServer(handler) as server:
        client = _client(server, "aiohttp", max_response_bytes=MB, retry=RetryPolicy.no_delay())
        try:
            receipt = await client.creditor_payments.create(
                creditor=CREDITOR,
                case=CASE,
                amount=Decimal("10.00"),
                currency="SEK",
                bank_transaction_date=PAID_AT,
                creditor_payment_reference="PAY-BIG-1",
            )
        finally:
            await _close(client)
    assert receipt.id == record["_id"]
    assert server.paths("POST") == ["/creditor--payments"]  # applied once, never sent again


# -- a pager that always ends ---------------------------------------------------------------------------


def _doc(page: int, i: int) -> dict[str, Any]:
    return {"_id": f"{page:012x}{i:012x}", "state": "open"}


class Pages:
    """A list endpoint; `mode` picks how it misbehaves."""

    def __init__(self, mode: str, size: int = 25) -> None:
        self.mode = mode
        self.size = size

    async def __call__(self, seen: Seen, writer: asyncio.StreamWriter) -> bool:
        page = int(seen.query.get("page", "1"))
        size = int(seen.query.get("max_results", "25"))
        meta: dict[str, Any] = {"total": 10**12, "max_results": size}
        if self.mode == "endless":  # fresh, full pages forever, and a total no list will ever reach
            items = [_doc(page, i) for i in range(size)]
            meta["page"] = page
        elif self.mode == "repeat":  # ignores `page`: the same full page every time
            items = [_doc(1, i) for i in range(size)]
        elif self.mode == "stuck":  # fresh documents, but always says it answered page 1
            items = [_doc(page, i) for i in range(size)]
            meta["page"] = 1
        else:  # "shift": two records inserted meanwhile push page 1's last two onto page 2; 40 in all
            start = 0 if page == 1 else size - 2
            items = [_doc(0, i) for i in range(start, min(start + size, 40))]
            meta = {"total": 40, "page": page, "max_results": size}
        return await respond(writer, 200, {"_items": items, "_meta": meta})


async def _list_all(server: RawServer, **kwargs: Any) -> tuple[list[Case], AsyncPager[Case]]:
    client = _client(server, "aiohttp")
    try:
        pager = client.cases.list(**kwargs)
        return [case async for case in pager], pager
    finally:
        await _close(client)


async def test_an_endless_pager_stops_at_max_pages_and_says_why(caplog):
    caplog.set_level(logging.WARNING, logger="amili_async")
    async with RawServer(Pages("endless")) as server:
        cases, pager = await _list_all(server, where={"customer_id_number": "19121212-1212"}, max_pages=40)
    assert len(cases) == 40 * 25
    assert len(server.requests) == 40  # and not one more
    assert pager.stopped_early is not None and "max_pages" in pager.stopped_early
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "where={customer_id_number}" in warning[0]
    assert "19121212-1212" not in warning[0]


async def test_a_server_that_repeats_a_page_is_noticed_on_the_second_page():
    async with RawServer(Pages("repeat")) as server:
        cases, pager = await _list_all(server)
    assert len(cases) == 25
    assert len({c.id for c in cases}) == 25
    assert [r.query["page"] for r in server.requests] == ["1", "2"]
    assert pager.stopped_early == "page 2 repeats the documents of page 1"


async def test_a_server_that_answers_another_page_than_asked_is_noticed():
    async with RawServer(Pages("stuck")) as server:
        cases, pager = await _list_all(server)
    assert len(cases) == 25
    assert len(server.requests) == 2
    assert pager.stopped_early == "asked for page 2, the server answered page 1"


async def test_documents_pushed_onto_the_next_page_are_yielded_once_and_the_list_ends_normally():
    async with RawServer(Pages("shift")) as server:
        cases, pager = await _list_all(server)
    assert [c.id for c in cases] == [_doc(0, i)["_id"] for i in range(40)]
    assert pager.stopped_early is None
    assert len(server.requests) == 2


async def test_the_default_bound_ends_an_endless_list_of_small_pages_in_memory():
    class Endless:  # the pipeline, in memory: a full, fresh page for every page number
        requests = 0

        def call(self, method: str, path: str, **kwargs: Any) -> Any:
            return kwargs["params"]  # all `send` needs of the call here

        async def send(self, params: Any) -> ApiResponse:
            self.requests += 1
            page = int(params["page"])
            response = ApiResponse(200, {}, b"")
            response.payload = {"_items": [_doc(page, 0)], "_meta": {"total": 10**12}}
            return response

    pipeline = Endless()
    pager: AsyncPager[Case] = AsyncPager(pipeline, "/cases", Case, max_results=1)  # type: ignore[arg-type]
    count = 0
    async for _ in pager:
        count += 1
    assert count == pipeline.requests == MAX_PAGES
    assert pager.stopped_early is not None


async def test_a_normal_list_on_the_in_memory_amili_ends_without_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger="amili_async")
    fake = FakeAmili(seed=11)
    creditor = fake.add_creditor()
    ids = {fake.add_case(creditor.id) for _ in range(7)}
    async with fake.client(creditor, retry=RetryPolicy.no_delay()) as amili:
        pager = amili.cases.list(max_results=3)
        seen = [case.id async for case in pager]
    assert set(seen) == ids and len(seen) == 7
    assert pager.stopped_early is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- exact money on the way in --------------------------------------------------------------------------

RECEIPT = (
    b'{"_id": "68e4cb120da90297b3be0e01", "_status": "OK", "status": "completed", '
    b'"amount": AMOUNT, "settled_amount": SETTLED, "currency": "SEK"}'
)


async def _payment_receipt(amount: bytes, settled: bytes = b"250.00") -> Any:
    raw = RECEIPT.replace(b"AMOUNT", amount).replace(b"SETTLED", settled)

    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        return await respond(writer, 201, raw)

    async with RawServer(handler) as server:
        client = _client(server, "aiohttp")
        try:
            return await client.creditor_payments.create(
                creditor=CREDITOR, case=CASE, amount=Decimal("1"), currency="SEK", bank_transaction_date=PAID_AT
            )
        finally:
            await _close(client)


@pytest.mark.parametrize(
    "wire, exact",
    [
        (b"99999999999999.99", "99999999999999.99"),
        (b"12345678901234567.89", "12345678901234567.89"),
        (b"250.00", "250.00"),
        (b"0.10", "0.10"),
        (b"250", "250"),
        (b"1E+3", "1E+3"),
        (b'"250.00"', "250.00"),
        (b'"99999999999999.99"', "99999999999999.99"),
    ],
)
async def test_money_from_amili_is_the_exact_decimal_of_its_json_text(wire, exact):
    receipt = await _payment_receipt(wire)
    assert isinstance(receipt.amount, Decimal)
    assert str(receipt.amount) == exact  # the value and its scale
    assert str(receipt.settled_amount) == "250.00"


@pytest.mark.parametrize("wire", [b'"NaN"', b'"Infinity"', b'"-Infinity"', b'"sNaN"', b'"1_000"', b'"ten"'])
async def test_an_amount_that_is_not_a_finite_number_is_refused(wire):
    with pytest.raises(ResponseDecodeError, match="amount"):
        await _payment_receipt(wire)


@pytest.mark.parametrize("wire", [b"NaN", b"Infinity", b"-Infinity", b'"NaN"', b"1e99999"])
async def test_a_case_whose_remaining_amount_is_not_a_finite_number_is_refused(wire):
    raw = b'{"_id": "' + CASE.encode() + b'", "local_remaining_transaction_amount": ' + wire + b"}"

    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        return await respond(writer, 200, raw)

    async with RawServer(handler) as server:
        client = _client(server, "httpx")
        try:
            if wire == b"1e99999":  # a finite number after all, and exact: no float to overflow
                case = await client.cases.get(CASE)
                assert case.remaining == Decimal("1e99999")
                return
            with pytest.raises(ResponseDecodeError):
                await client.cases.get(CASE)
        finally:
            await _close(client)


async def test_amounts_read_from_the_in_memory_amili_keep_their_scale():
    fake = FakeAmili(seed=12)
    creditor = fake.add_creditor()
    case_id = fake.add_case(creditor.id, capital=Decimal("1000.00"))
    async with fake.client(creditor, retry=RetryPolicy.no_delay()) as amili:
        receipt = await amili.creditor_payments.create(
            creditor=creditor.id, case=case_id, amount=Decimal("250.00"), currency="SEK", bank_transaction_date=PAID_AT
        )
        case = await amili.cases.get(case_id)
        listed = [p async for p in amili.creditor_payments.list(where={"case": case_id})]
    assert str(receipt.settled_amount) == "250.00"  # was "250.0" through a float
    assert [(str(p.amount), str(p.settled_amount)) for p in listed] == [("250.00", "250.00")]
    assert str(case.local_remaining_capital_amount) == "750.00"
    assert str(case.remaining) == "750.00"
