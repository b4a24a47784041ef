"""Faults where the socket matters: the fake on a real loopback server, the SDK's default (aiohttp) transport
and httpx's own transport (§5.1-5.3 A: refused, dropped, stalled, cancelled, bad TLS).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from reliability_helpers import PAYMENTS, payment, sent, stored_with_reference

from amili_async import AsyncAmiliClient, RetryPolicy, StaticTokenAuth
from amili_async.errors import AmiliError, OutcomeUnknownError, TimeoutError, TransportError
from amili_async.testing.faults import Fault
from amili_async.testing.server import start_server

_OPENED: list[httpx.AsyncBaseTransport] = []  # transports we hand to clients: theirs to use, ours to close


def _httpx_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    transport = httpx.AsyncHTTPTransport(limits=limits)
    _OPENED.append(transport)
    return transport


TransportFactory = Callable[[httpx.Limits], "httpx.AsyncBaseTransport | None"]
TRANSPORTS: dict[str, TransportFactory] = {
    "aiohttp": lambda limits: None,  # None: the client builds its default, the aiohttp-backed transport
    "httpx": _httpx_transport,
}
both_transports = pytest.mark.parametrize("transport_name", list(TRANSPORTS))


@pytest.fixture(autouse=True)
async def _close_given_transports() -> AsyncIterator[None]:
    yield
    while _OPENED:
        await _OPENED.pop().aclose()


def _client(fake, creditor, server, transport_name="aiohttp", limits=None, **kwargs) -> AsyncAmiliClient:
    limits = limits or httpx.Limits(max_connections=10)
    kwargs.setdefault("retry", RetryPolicy.no_delay())
    return fake.client(
        creditor,
        base_url=server.base_url,
        transport=TRANSPORTS[transport_name](limits),
        limits=limits,
        **kwargs,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- refused, dropped, stalled -------------------------------------------------------------------------


async def test_connection_refused_on_a_post_is_retried_once_the_server_is_up_and_applied_once(fake, creditor, case_id):
    server = await start_server(fake, port=_free_port())
    restarted = []

    async def restart_server(seconds: float) -> None:  # the retry's "sleep": the server comes back
        restarted.append(await start_server(fake, port=server.port))

    try:
        async with _client(fake, creditor, server, retry=RetryPolicy(sleep=restart_server)) as amili:
            await amili.cases.get(case_id)  # token and a pooled connection
            server.close()
            await server.wait_closed()
            await asyncio.sleep(0.05)  # let the client see its pooled connection go
            receipt = await amili.execute(payment(creditor, case_id, reference=None))
    finally:
        for s in [server, *restarted]:
            s.close()

    assert len(restarted) == 1  # one refused attempt, one retry
    assert [p["_id"] for p in fake.payments] == [receipt.id]
    assert len(sent(fake, "POST", PAYMENTS)) == 1  # the refused attempt never reached Amili


@both_transports
async def test_a_connection_dropped_after_commit_over_a_socket_is_reconciled_without_duplicate(
    fake, creditor, case_id, loopback, transport_name
):
    async with _client(fake, creditor, loopback, transport_name) as amili:
        await amili.cases.get(case_id)  # the POST then goes on a reused keep-alive connection
        fake.inject(Fault(kind="drop_after_commit", path=PAYMENTS, method="POST", times=1))
        receipt = await amili.execute(payment(creditor, case_id, "PAY-SOCKET-DROP"))
        again = await amili.cases.get(case_id)  # the broken connection was discarded

    assert [p["_id"] for p in stored_with_reference(fake, "PAY-SOCKET-DROP")] == [receipt.id]
    assert len(sent(fake, "POST", PAYMENTS)) == 1  # no transport-level resend of the POST either
    assert again.id == case_id


@both_transports
async def test_a_connection_dropped_after_commit_over_a_socket_without_reference_is_outcome_unknown(
    fake, creditor, case_id, loopback, transport_name
):
    async with _client(fake, creditor, loopback, transport_name) as amili:
        await amili.cases.get(case_id)
        fake.inject(Fault(kind="drop_after_commit", path=PAYMENTS, method="POST", times=1))
        with pytest.raises(OutcomeUnknownError) as caught:
            await amili.execute(payment(creditor, case_id, reference=None))

    assert caught.value.reference is None and caught.value.attempts == 1
    assert len(sent(fake, "POST", PAYMENTS)) == 1
    assert len(fake.payments) == 1


async def test_a_stalled_body_over_a_socket_with_aiohttp_ends_at_the_read_timeout(fake, creditor, case_id, loopback):
    async with _client(fake, creditor, loopback, timeout=httpx.Timeout(0.2)) as amili:
        await amili.cases.get(case_id)
        fake.inject(Fault(kind="stall_body", path="/cases", method="GET"))
        fake.inject(Fault(kind="stall_body", path=PAYMENTS, method="POST", times=1))

        with pytest.raises(TimeoutError) as caught:  # a read: retried, then TimeoutError
            await amili.cases.get(case_id)
        receipt = await amili.execute(payment(creditor, case_id, "PAY-SOCKET-STALL"))  # a write: reconciled
        fake.clear_faults()
        assert (await amili.cases.get(case_id)).id == case_id  # the stalled connections were not reused

    assert caught.value.attempts == 3
    assert [p["_id"] for p in stored_with_reference(fake, "PAY-SOCKET-STALL")] == [receipt.id]
    assert len(sent(fake, "POST", PAYMENTS)) == 1


# -- cancellation --------------------------------------------------------------------------------------


@both_transports
async def test_cancelling_200_calls_mid_flight_leaves_a_4_connection_pool_healthy(
    fake, creditor, loopback, transport_name
):
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    cases = [fake.add_case(creditor.id) for _ in range(200)]
    # A short pool timeout: a leaked slot would show up as failures in the last round, not as a slow test.
    timeout = httpx.Timeout(5.0, pool=2.0)
    async with _client(fake, creditor, loopback, transport_name, limits=limits, timeout=timeout) as amili:
        await amili.cases.get(cases[0])
        fake.inject(Fault(kind="latency", seconds=0.2, path="/cases", method="GET"))
        for cancel_after in (0.0, 0.01, 0.05, 0.25):  # waiting for a slot, connecting, waiting for headers...
            started = 0
            with anyio.move_on_after(cancel_after):
                async with anyio.create_task_group() as tg:
                    for case in cases:
                        started += 1
                        tg.start_soon(amili.cases.get, case)
            assert started == 200
        fake.clear_faults()

        results = []

        async def one(case: str) -> None:
            results.append(await amili.cases.get(case))

        async with anyio.create_task_group() as tg:
            for case in cases:
                tg.start_soon(one, case)

        transport = amili._bind().transport
        if isinstance(transport, httpx.AsyncHTTPTransport):
            pool = transport._pool
            assert len(pool.connections) <= 4
            assert all(c.is_idle() for c in pool.connections)
            assert not getattr(pool, "_requests", [])  # no request still holds (or waits for) a slot

    assert sorted(r.id for r in results) == sorted(cases)


# -- TLS -----------------------------------------------------------------------------------------------


def _self_signed() -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
    return context


@pytest.fixture
async def untrusted_tls_server() -> AsyncIterator[tuple[str, list[int]]]:
    """An HTTPS endpoint whose certificate no CA vouches for; counts the TCP connections it accepts."""
    context = _self_signed()
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await writer.start_tls(context)
        except (ssl.SSLError, OSError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}", accepted
    finally:
        server.close()


@both_transports
async def test_an_untrusted_certificate_is_a_hard_failure_never_retried(untrusted_tls_server, transport_name):
    base_url, accepted = untrusted_tls_server
    limits = httpx.Limits(max_connections=4)
    transport = TRANSPORTS[transport_name](limits)
    action = payment("674dbeb208847b9501cc9138", "68e4c40d93ee14723d28fa95", "PAY-TLS")
    async with AsyncAmiliClient(
        auth=StaticTokenAuth("static-token-for-tls-test"),
        base_url=base_url,
        transport=transport,
        limits=limits,
        retry=RetryPolicy.no_delay(max_attempts=5),
    ) as amili:
        with pytest.raises(TransportError) as caught:
            await amili.execute(action)

    err = caught.value
    assert not isinstance(err, OutcomeUnknownError)  # nothing was sent: the handshake failed
    assert err.attempts <= 1 and err.reference == "PAY-TLS"
    assert "certificate" in str(err).lower()
    assert len(accepted) == 1  # one handshake, no retry, no fallback


# -- pool exhaustion and closing under load ------------------------------------------------------------


@both_transports
async def test_pool_exhaustion_is_never_sent_so_a_write_that_timed_out_in_the_pool_was_not_applied(
    fake, creditor, case_id, loopback, transport_name
):
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    timeout = httpx.Timeout(5.0, pool=0.05)
    outcomes: list[object] = []
    async with _client(fake, creditor, loopback, transport_name, limits=limits, timeout=timeout) as amili:
        await amili.cases.get(case_id)
        fake.inject(Fault(kind="latency", seconds=0.1, path=PAYMENTS, method="POST"))

        async def one() -> None:
            try:
                outcomes.append(await amili.execute(payment(creditor, case_id, reference=None)))
            except Exception as exc:
                outcomes.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(30):
                tg.start_soon(one)

    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert failures, "the pool never ran dry: the test proves nothing"
    for failure in failures:  # waiting for a connection is "not sent": never an unknown outcome
        assert isinstance(failure, TimeoutError) and not isinstance(failure, OutcomeUnknownError), repr(failure)
    successes = len(outcomes) - len(failures)
    assert len(fake.payments) == successes == len(sent(fake, "POST", PAYMENTS))


@both_transports
async def test_aclose_while_calls_are_in_flight_gives_sdk_errors_and_no_duplicate(
    fake, creditor, case_id, loopback, transport_name, recwarn
):
    gc.collect()  # unclosed sessions other tests left behind warn when collected: not this test's
    recwarn.clear()
    outcomes: list[object] = []
    async with _client(fake, creditor, loopback, transport_name) as amili:
        await amili.cases.get(case_id)
        fake.inject(Fault(kind="latency", seconds=0.2, path=PAYMENTS, method="POST"))

        async def one(n: int) -> None:
            try:
                outcomes.append(await amili.execute(payment(creditor, case_id, f"PAY-CLOSE-{n}")))
            except Exception as exc:
                outcomes.append(exc)

        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(one, n)
            await anyio.sleep(0.05)
            await amili.aclose()

    assert len(outcomes) == 20  # no call vanished with a bare CancelledError (aiohttp cancels pool waiters)
    assert all(isinstance(o, AmiliError) for o in outcomes if isinstance(o, Exception)), outcomes
    references = [p["creditor_payment_reference"] for p in fake.payments]
    assert len(references) == len(set(references))
    for outcome in outcomes:  # "never reached Amili" must be true
        if isinstance(outcome, TransportError) and not isinstance(outcome, OutcomeUnknownError):
            assert outcome.reference not in references
    gc.collect()
    assert not [str(w.message) for w in recwarn if "nclosed" in str(w.message)]
