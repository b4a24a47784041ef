from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from amili_async.testing import FakeAmili, FakeCreditor

TOKEN = "/authenticates/api-code"
UNAUTHORIZED = {"_status": "ERR", "_error": {"code": 401, "message": "Please provide proper credentials"}}


def assert_401(r: httpx.Response) -> None:
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED
    assert r.headers["WWW-Authenticate"] == 'Basic realm="eve"'


async def test_jwt_token_success(fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, mint) -> None:
    before = time.time()
    r = await http.get(TOKEN, headers={"X-API-Key": mint(cred)})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"token", "expires"}
    expires = parsedate_to_datetime(body["expires"]).timestamp()
    assert before + 3600 - 2 <= expires <= time.time() + 3600
    cases = await http.get("/cases", headers={"X-API-Key": body["token"]})
    assert cases.status_code == 200
    assert fake.tokens_issued == 1
    assert fake.token_requests == 1


@pytest.mark.parametrize("algorithm", ["ES384", "ES512", "RS256"])
async def test_other_algorithms(fake: FakeAmili, http: httpx.AsyncClient, mint, algorithm: str) -> None:
    cred = fake.add_creditor(algorithm=algorithm)
    assert cred.algorithm == algorithm
    assert cred.private_key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    r = await http.get(TOKEN, headers={"X-API-Key": mint(cred)})
    assert r.status_code == 200


async def test_missing_header(fake: FakeAmili, http: httpx.AsyncClient) -> None:
    assert_401(await http.get(TOKEN))
    assert fake.token_requests == 1
    assert fake.tokens_issued == 0


@pytest.mark.parametrize("exp_in", [-10, 3700])
async def test_expired_or_too_far_ahead(cred: FakeCreditor, http: httpx.AsyncClient, mint, exp_in: int) -> None:
    assert_401(await http.get(TOKEN, headers={"X-API-Key": mint(cred, exp_in=exp_in)}))


async def test_small_clock_skew_is_tolerated(cred: FakeCreditor, http: httpx.AsyncClient, mint) -> None:
    r = await http.get(TOKEN, headers={"X-API-Key": mint(cred, exp_in=-2)})
    assert r.status_code == 200


async def test_wrong_key(cred: FakeCreditor, http: httpx.AsyncClient, mint) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert_401(await http.get(TOKEN, headers={"X-API-Key": mint(cred, key=other.decode())}))


@pytest.mark.parametrize("problem", ["unknown code", "no exp", "exp not a number", "code not a string"])
async def test_bad_claims(cred: FakeCreditor, http: httpx.AsyncClient, problem: str) -> None:
    exp = int(time.time()) + 600
    payload = {
        "unknown code": {"api_code": "nope", "exp": exp},
        "no exp": {"api_code": cred.api_code},
        "exp not a number": {"api_code": cred.api_code, "exp": "soon"},
        "code not a string": {"api_code": 5, "exp": exp},
    }[problem]
    token = jwt.encode(payload, cred.private_key_pem, algorithm=cred.algorithm)
    assert_401(await http.get(TOKEN, headers={"X-API-Key": token}))


async def test_garbage_jwt(http: httpx.AsyncClient) -> None:
    assert_401(await http.get(TOKEN, headers={"X-API-Key": "not-a-jwt"}))


async def test_endpoints_need_an_issued_token(cred: FakeCreditor, http: httpx.AsyncClient, mint) -> None:
    assert_401(await http.get("/cases"))
    assert_401(await http.get("/cases", headers={"X-API-Key": "made-up"}))
    # The signed JWT itself is not an access token.
    assert_401(await http.get("/cases", headers={"X-API-Key": mint(cred)}))


async def test_revoked_tokens(fake: FakeAmili, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    assert (await http.get("/cases", headers=headers)).status_code == 200
    fake.revoke_tokens()
    assert_401(await http.get("/cases", headers=headers))


async def test_token_expiry_follows_the_clock(mint) -> None:
    now = [1_800_000_000.0]
    fake = FakeAmili(token_lifetime=60, clock=lambda: now[0])
    cred = fake.add_creditor()
    async with httpx.AsyncClient(transport=fake.transport(), base_url=FakeAmili.BASE_URL) as http:
        r = await http.get(TOKEN, headers={"X-API-Key": mint(cred, now=now[0])})
        assert r.json()["expires"] == "Fri, 15 Jan 2027 08:01:00 GMT"
        token = {"X-API-Key": r.json()["token"]}
        now[0] += 59
        assert (await http.get("/cases", headers=token)).status_code == 200
        now[0] += 1
        assert_401(await http.get("/cases", headers=token))
        # The JWT check uses the same clock: a JWT minted for "now" is stale an hour later.
        jwt_now = mint(cred, now=now[0])
        now[0] += 3600
        assert_401(await http.get(TOKEN, headers={"X-API-Key": jwt_now}))


async def test_simple_auth(fake: FakeAmili, http: httpx.AsyncClient) -> None:
    allowed = fake.add_creditor(allow_simple_auth=True)
    refused = fake.add_creditor()
    r = await http.post(TOKEN, json={"api_code": allowed.api_code})
    assert r.status_code == 200
    assert (await http.get("/cases", headers={"X-API-Key": r.json()["token"]})).status_code == 200
    assert_401(await http.post(TOKEN, json={"api_code": refused.api_code}))
    assert_401(await http.post(TOKEN, json={"api_code": "unknown"}))
    assert_401(await http.post(TOKEN, json={}))
    bad = await http.post(TOKEN, content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400


async def test_accounts_share_one_api_user(fake: FakeAmili, cred: FakeCreditor, http: httpx.AsyncClient, login) -> None:
    sibling = fake.add_creditor(name="Acme Finans AB", account=cred.account)
    assert sibling.account == cred.account
    assert (sibling.api_code, sibling.private_key_pem) == (cred.api_code, cred.private_key_pem)
    assert sibling.id != cred.id
    other = fake.add_creditor()
    assert other.api_code != cred.api_code
    case = fake.add_case(sibling.id)
    headers = await login(cred)
    assert (await http.get(f"/cases/{case}", headers=headers)).status_code == 200
    with pytest.raises(ValueError, match="unknown account"):
        fake.add_creditor(account="0" * 24)


async def test_api_key_is_never_recorded(fake: FakeAmili, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    await http.get("/cases", headers=headers)
    secret = headers["X-API-Key"]
    assert all(secret not in repr(r) for r in fake.requests)
    assert [(r.method, r.path, r.status) for r in fake.requests] == [
        ("GET", TOKEN, 200),
        ("GET", "/cases", 200),
    ]


def test_creditor_repr_hides_secrets(fake: FakeAmili, cred: FakeCreditor) -> None:
    assert cred.api_code not in repr(cred)
    assert "PRIVATE KEY" not in repr(cred)


def test_many_creditors_are_cheap() -> None:
    fake = FakeAmili()
    start = time.perf_counter()
    creditors = [fake.add_creditor(name=f"C{i}") for i in range(1000)]
    assert time.perf_counter() - start < 2.0
    assert len({c.api_code for c in creditors}) == 1000
    assert len({c.id for c in creditors}) == 1000


def test_ids_are_deterministic() -> None:
    def ids(seed: int) -> list[str]:
        fake = FakeAmili(seed=seed)
        cred = fake.add_creditor()
        return [cred.id, cred.account, cred.api_code, fake.add_case(cred.id)]

    first = ids(7)
    assert first == ids(7)
    assert first != ids(8)
    assert all(len(i) == 24 and i == i.lower() for i in first[:2] + first[3:])
