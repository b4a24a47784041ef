from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
import trio

from amili_async.testing import FakeAmili, FakeCreditor, Fault

PAYMENTS = "/creditor--payments"


@pytest.fixture
def case(fake: FakeAmili, cred: FakeCreditor) -> str:
    return fake.add_case(cred.id, capital="100000")


@pytest.fixture
def body(case: str, cred: FakeCreditor, payment) -> dict[str, object]:
    return payment(case, cred.id, amount="10")


async def test_latency_delays_a_committed_write(
    fake: FakeAmili, http: httpx.AsyncClient, headers: dict[str, str], body: dict[str, object]
) -> None:
    fake.inject(Fault("latency", path=PAYMENTS, seconds=0.05))
    start = time.perf_counter()
    r = await http.post(PAYMENTS, json=body, headers=headers)
    assert r.status_code == 201
    assert time.perf_counter() - start >= 0.05
    assert fake.requests[-1].fault == "latency"


async def test_latency_beyond_the_read_timeout(
    fake: FakeAmili, http: httpx.AsyncClient, headers: dict[str, str], body: dict[str, object]
) -> None:
    fake.inject(Fault("latency", path=PAYMENTS, seconds=30))
    start = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        await http.post(PAYMENTS, json=body, headers=headers, timeout=httpx.Timeout(5, read=0.05))
    assert 0.04 <= time.perf_counter() - start < 1
    assert len(fake.payments) == 1  # the write happened; only the answer was late


@contextlib.asynccontextmanager
async def connect(
    fake: FakeAmili, cred: FakeCreditor, now: float
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """A raw client on `fake`, logged in as `cred` with a JWT minted for `now`."""
    async with httpx.AsyncClient(transport=fake.transport(), base_url=FakeAmili.BASE_URL) as client:
        token = jwt.encode({"api_code": cred.api_code, "exp": int(now) + 600}, cred.private_key_pem, cred.algorithm)
        r = await client.get("/authenticates/api-code", headers={"X-API-Key": token})
        yield client, {"X-API-Key": r.json()["token"]}


async def test_rate_limit(payment) -> None:
    now = 1_800_000_000.0
    fake = FakeAmili(clock=lambda: now)
    fake.inject(Fault("rate_limit", path=PAYMENTS, retry_after=2, reset_after=1.5, limit=100, times=1))
    cred = fake.add_creditor()
    body = payment(fake.add_case(cred.id), cred.id)
    async with connect(fake, cred, now) as (client, auth):
        r = await client.post(PAYMENTS, json=body, headers=auth)
        assert r.status_code == 429
        assert r.json() == {"_status": "ERR", "_error": {"code": 429, "message": "Rate limit exceeded"}}
        assert r.headers["Retry-After"] == "2"
        assert r.headers["X-RateLimit-Reset"] == "1800000001.5"
        assert (r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"]) == ("100", "0")
        assert fake.payments == []
        assert (await client.post(PAYMENTS, json=body, headers=auth)).status_code == 201


@pytest.mark.parametrize(("commit", "status"), [(False, 503), (True, 500), (False, 502)])
async def test_server_error(
    fake: FakeAmili,
    http: httpx.AsyncClient,
    headers: dict[str, str],
    body: dict[str, object],
    commit: bool,
    status: int,
) -> None:
    fake.inject(Fault("server_error", path=PAYMENTS, status=status, commit=commit))
    r = await http.post(PAYMENTS, json=body, headers=headers)
    assert r.status_code == status
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.text.lstrip().lower().startswith("<!doctype html>") and "</html>" in r.text
    assert len(fake.payments) == (1 if commit else 0)


@pytest.mark.parametrize(("kind", "applied"), [("drop_before_commit", 0), ("drop_after_commit", 1)])
async def test_drops(
    fake: FakeAmili,
    http: httpx.AsyncClient,
    headers: dict[str, str],
    body: dict[str, object],
    kind,
    applied: int,
) -> None:
    fake.inject(Fault(kind, path=PAYMENTS))
    with pytest.raises(httpx.RemoteProtocolError, match="Server disconnected without sending a response"):
        await http.post(PAYMENTS, json=body, headers=headers)
    assert len(fake.payments) == applied
    assert (fake.requests[-1].status, fake.requests[-1].fault) == (None, kind)


async def test_connect_error(
    fake: FakeAmili, http: httpx.AsyncClient, headers: dict[str, str], body: dict[str, object]
) -> None:
    fake.inject(Fault("connect_error", method="post"))
    with pytest.raises(httpx.ConnectError):
        await http.post(PAYMENTS, json=body, headers=headers)
    assert fake.payments == []
    assert (await http.get(PAYMENTS, headers=headers)).status_code == 200  # GET does not match


async def test_stall_body(
    fake: FakeAmili, http: httpx.AsyncClient, headers: dict[str, str], body: dict[str, object]
) -> None:
    fake.inject(Fault("stall_body", path=PAYMENTS))
    timeout = httpx.Timeout(5, read=0.05)
    with pytest.raises(httpx.ReadTimeout):
        await http.post(PAYMENTS, json=body, headers=headers, timeout=timeout)
    assert len(fake.payments) == 1
    fake.clear_faults()
    fake.inject(Fault("stall_body", path=PAYMENTS))
    async with http.stream("POST", PAYMENTS, json=body, headers=headers, timeout=timeout) as r:
        assert r.status_code == 201
        length = int(r.headers["Content-Length"])
        received = b""
        with pytest.raises(httpx.ReadTimeout):
            async for chunk in r.aiter_bytes():
                received += chunk
        assert 0 < len(received) < length


async def test_malformed_and_empty_bodies(
    fake: FakeAmili, http: httpx.AsyncClient, headers: dict[str, str], body: dict[str, object]
) -> None:
    fake.inject(Fault("malformed_json", path=PAYMENTS, times=1))
    fake.inject(Fault("empty_body", path=PAYMENTS, times=1))
    broken = await http.post(PAYMENTS, json=body, headers=headers)
    assert broken.status_code == 201 and broken.content.startswith(b"{")
    with pytest.raises(ValueError):
        broken.json()
    empty = await http.post(PAYMENTS, json=body, headers=headers)
    assert (empty.status_code, empty.content) == (201, b"")
    assert len(fake.payments) == 2
    assert (await http.post(PAYMENTS, json=body, headers=headers)).json()["_status"] == "OK"


async def test_revoke_token(
    fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, headers: dict[str, str], login, body
) -> None:
    fake.inject(Fault("revoke_token", times=1))
    r = await http.post(PAYMENTS, json=body, headers=headers)
    assert r.status_code == 401
    assert fake.payments == []
    assert (await http.get("/cases", headers=headers)).status_code == 401  # revoked for good
    fresh = await login(cred)  # the fault never matches the token endpoint
    assert (await http.post(PAYMENTS, json=body, headers=fresh)).status_code == 201


async def test_token_endpoint_down(fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, mint) -> None:
    fake.inject(Fault("token_endpoint_down", times=1))
    fake.inject(Fault("token_endpoint_down", refuse=True, times=1))
    jwt_header = {"X-API-Key": mint(cred)}
    down = await http.get("/authenticates/api-code", headers=jwt_header)
    assert down.status_code == 503 and down.headers["Content-Type"].startswith("text/html")
    with pytest.raises(httpx.ConnectError):
        await http.get("/authenticates/api-code", headers=jwt_header)
    up = await http.get("/authenticates/api-code", headers=jwt_header)
    assert up.status_code == 200
    assert (fake.token_requests, fake.tokens_issued) == (3, 1)


async def test_times_and_path_matching(
    fake: FakeAmili, http: httpx.AsyncClient, headers: dict[str, str], body: dict[str, object]
) -> None:
    fake.inject(Fault("server_error", path="/creditor--creditings"))
    fake.inject(Fault("server_error", path=PAYMENTS, method="POST", times=2))
    statuses = [(await http.post(PAYMENTS, json=body, headers=headers)).status_code for _ in range(4)]
    assert statuses == [503, 503, 201, 201]
    assert [r.fault for r in fake.requests[-4:]] == ["server_error", "server_error", None, None]


async def run_seeded(seed: int) -> list[int]:
    fake = FakeAmili(seed=seed)
    fake.inject(Fault("server_error", path="/cases", probability=0.5))
    async with connect(fake, fake.add_creditor(), time.time()) as (client, auth):
        return [(await client.get("/cases", headers=auth)).status_code for _ in range(40)]


async def test_seeded_probability_is_deterministic() -> None:
    first = await run_seeded(3)
    assert first == await run_seeded(3)
    assert 5 < first.count(503) < 35
    assert first != await run_seeded(4)


def test_fault_validation() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probability"):
        Fault("latency", probability=1.5)
    with pytest.raises(ValueError, match="5xx"):
        Fault("server_error", status=404)
    assert Fault("latency", method="get").method == "GET"


def test_transport_on_trio(fake: FakeAmili, cred: FakeCreditor, mint) -> None:
    fake.inject(Fault("latency", path="/cases", seconds=0.02, times=1))
    fake.inject(Fault("stall_body", path="/cases", times=1))

    async def main() -> list[object]:
        async with httpx.AsyncClient(transport=fake.transport(), base_url=FakeAmili.BASE_URL) as client:
            r = await client.get("/authenticates/api-code", headers={"X-API-Key": mint(cred)})
            auth = {"X-API-Key": r.json()["token"]}
            slow = await client.get("/cases", headers=auth)
            try:
                await client.get("/cases", headers=auth, timeout=httpx.Timeout(1, read=0.02))
            except httpx.ReadTimeout as exc:
                return [slow.status_code, type(exc)]
            return [slow.status_code, None]

    assert trio.run(main) == [200, httpx.ReadTimeout]
