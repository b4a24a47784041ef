"""The same emulator behind ASGI, a loopback socket server, and the `serve` command."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time

import httpx
import jwt
import pytest

from amili_async.testing import FakeAmili, FakeCreditor, Fault
from amili_async.testing.asgi import SimulatedDisconnect
from amili_async.testing.server import serve, start_server


async def login(client: httpx.AsyncClient, cred: FakeCreditor) -> dict[str, str]:
    token = jwt.encode({"api_code": cred.api_code, "exp": int(time.time()) + 600}, cred.private_key_pem, cred.algorithm)
    r = await client.get("/authenticates/api-code", headers={"X-API-Key": token})
    assert r.status_code == 200, r.text
    return {"X-API-Key": r.json()["token"]}


# -- ASGI ----------------------------------------------------------------------------------------------


async def test_asgi_app(fake: FakeAmili, cred: FakeCreditor, payment) -> None:
    case = fake.add_case(cred.id, capital="500")
    transport = httpx.ASGITransport(app=fake.asgi_app)
    async with httpx.AsyncClient(transport=transport, base_url=FakeAmili.BASE_URL) as client:
        auth = await login(client, cred)
        r = await client.post("/creditor--payments", json=payment(case, cred.id, amount="500"), headers=auth)
        assert r.status_code == 201
        assert r.headers["Location"].startswith(f"{FakeAmili.BASE_URL}/creditor--payments/")
        listed = await client.get("/cases", params={"where": json.dumps({"closed": True})}, headers=auth)
        assert listed.json()["_meta"]["total"] == 1

        fake.inject(Fault("drop_after_commit", path="/creditor--payments", times=1))
        with pytest.raises(SimulatedDisconnect):
            await client.post("/creditor--payments", json=payment(case, cred.id), headers=auth)
        assert len(fake.payments) == 2

        fake.inject(Fault("latency", path="/cases", seconds=0.03, times=1))
        start = time.perf_counter()
        assert (await client.get("/cases", headers=auth)).status_code == 200
        assert time.perf_counter() - start >= 0.03


# -- loopback server -----------------------------------------------------------------------------------


async def test_server_round_trip(fake: FakeAmili, cred: FakeCreditor, payment) -> None:
    case = fake.add_case(cred.id)
    async with await start_server(fake) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        assert server.port > 0
        auth = await login(client, cred)
        r = await client.post("/creditor--payments", json=payment(case, cred.id, amount="12.50"), headers=auth)
        assert r.status_code == 201
        assert r.headers["Location"] == f"{server.base_url}/creditor--payments/{r.json()['_id']}"
        item = await client.get(f"/cases/{case}", headers=auth)
        assert item.json()["local_remaining_capital_amount"] == 987.5
        assert (await client.get("/cases/nope", headers=auth)).status_code == 404
        assert (await client.get("/cases")).status_code == 401
        assert len(server.connections) == 1  # keep-alive: one connection for everything


async def raw_exchange(port: int, data: bytes, until_closed: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    received = await asyncio.wait_for(reader.read(-1), 2) if until_closed else b""
    writer.close()
    return received


async def test_server_pipelining_and_connection_close(fake: FakeAmili, cred: FakeCreditor) -> None:
    fake.inject(Fault("latency", path="/nowhere", seconds=0.05))  # the slow first answer must still come first
    async with await start_server(fake) as server:
        requests = (
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /authenticates/api-code HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
            b"GET /cases HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = await raw_exchange(server.port, requests)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"404", b"401", b"401"]
    assert data.count(b"Connection: close") == 1


async def test_server_http10_and_bad_requests(fake: FakeAmili) -> None:
    async with await start_server(fake) as server:
        data = await raw_exchange(server.port, b"GET /cases HTTP/1.0\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
        data = await raw_exchange(server.port, b"NONSENSE\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 400 ")
        chunked = b"POST /creditor--payments HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        assert (await raw_exchange(server.port, chunked)).startswith(b"HTTP/1.1 501 ")


async def test_server_faults(fake: FakeAmili, cred: FakeCreditor, payment) -> None:
    case = fake.add_case(cred.id)
    body = payment(case, cred.id)
    async with await start_server(fake) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        auth = await login(client, cred)
        fake.inject(Fault("drop_before_commit", times=1))
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/creditor--payments", json=body, headers=auth)
        fake.inject(Fault("connect_error", times=1))
        with pytest.raises(httpx.TransportError):
            await client.post("/creditor--payments", json=body, headers=auth)
        assert fake.payments == []
        fake.inject(Fault("stall_body", times=1))
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/creditor--payments", json=body, headers=auth, timeout=httpx.Timeout(2, read=0.1))
        assert len(fake.payments) == 1
        fake.inject(Fault("server_error", status=502, times=1))
        r = await client.get("/cases", headers=auth)
        assert r.status_code == 502 and "<html>" in r.text
        assert (await client.get("/cases", headers=auth)).status_code == 200


async def test_serve_until_cancelled(fake: FakeAmili) -> None:
    ports: list[int] = []
    task = asyncio.create_task(serve(fake, port=0, ready=ports.append))
    for _ in range(100):
        if ports:
            break
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}") as client:
        assert (await client.get("/cases")).status_code == 401
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{ports[0]}/cases")


def test_serve_command() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "amili_async.testing", "serve", "--port", "0", "--cases", "3", "--seed", "5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert set(info) >= {
            "base_url",
            "creditor",
            "account",
            "api_code",
            "private_key_pem",
            "algorithm",
            "cases",
        }
        assert len(info["cases"]) == 3
        token = jwt.encode(
            {"api_code": info["api_code"], "exp": int(time.time()) + 600},
            info["private_key_pem"],
            info["algorithm"],
        )
        with httpx.Client(base_url=info["base_url"]) as client:
            r = client.get("/authenticates/api-code", headers={"X-API-Key": token})
            auth = {"X-API-Key": r.json()["token"]}
            cases = client.get("/cases", headers=auth).json()
        assert [c["_id"] for c in cases["_items"]] == info["cases"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
