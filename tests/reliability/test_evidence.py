"""The rule of evidence, row by row (`amili_async/_evidence.py`): what an attempt proves decides what may follow.

Every row is tried against the in-memory Amili and against a raw loopback server (`loopback_amili.py`), and
every test asserts what the server STORED (exactly once, or not at all) and that the SDK told the truth.
"""

from __future__ import annotations

import socket
from decimal import Decimal

import httpx
import pytest
from loopback_amili import TOKEN, LoopbackAmili, client, payment
from reliability_helpers import BIG_CAPITAL, PAYMENTS, VirtualTime, lookups, sent, stored_with_reference
from reliability_helpers import payment as fake_payment

from amili_async import (
    AppliedWithoutReceiptError,
    AsyncAmiliClient,
    OutcomeUnknownError,
    PermissionDeniedError,
    RespiteNotAllowedError,
    RespiteValidationError,
    ResponseDecodeError,
    RetryPolicy,
    StaticTokenAuth,
    UnprocessableEntityError,
    ValidationError,
)
from amili_async._evidence import (
    APPLIED,
    FINAL,
    NEVER_LEAVES,
    NEVER_LEFT,
    REFUSED_BEFORE,
    UNKNOWN,
    of_answer,
    of_failure,
)
from amili_async.testing import FakeAmili, Fault

# -- the table itself -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "evidence"),
    [
        (200, APPLIED),
        (201, APPLIED),
        (204, APPLIED),
        (206, APPLIED),
        (401, REFUSED_BEFORE),
        (429, REFUSED_BEFORE),
        (301, FINAL),
        (400, FINAL),
        (403, FINAL),
        (404, FINAL),
        (409, FINAL),
        (422, FINAL),
        (500, UNKNOWN),
        (502, UNKNOWN),
        (503, UNKNOWN),
        (504, UNKNOWN),
    ],
)
def test_what_an_answer_proves(status, evidence):
    assert of_answer(status) == evidence


@pytest.mark.parametrize(
    ("failure", "evidence"),
    [
        (httpx.ConnectError("refused"), NEVER_LEFT),
        (httpx.ConnectTimeout("connect"), NEVER_LEFT),
        (httpx.PoolTimeout("pool"), NEVER_LEFT),
        (httpx.LocalProtocolError("bad header"), NEVER_LEAVES),
        (httpx.ReadTimeout("read"), UNKNOWN),
        (httpx.ReadError("reset"), UNKNOWN),
        (httpx.RemoteProtocolError("disconnected"), UNKNOWN),
        (httpx.WriteTimeout("write"), UNKNOWN),
    ],
    ids=lambda v: type(v).__name__,
)
def test_what_a_failure_proves(failure, evidence):
    assert of_failure(failure) == evidence


# -- never left: not applied, resend ---------------------------------------------------------------------


async def test_never_left_on_the_fake_is_resent_and_stored_once(fake, creditor, case_id, client_for):
    fake.inject(Fault("connect_error", path=PAYMENTS, method="POST", times=1))
    async with client_for() as amili:
        receipt = await amili.execute(fake_payment(creditor, case_id, "EV-NEVER-LEFT"))
    assert [p["_id"] for p in stored_with_reference(fake, "EV-NEVER-LEFT")] == [receipt.id]
    assert [r.fault for r in sent(fake, "POST", PAYMENTS)] == ["connect_error", None]
    assert lookups(fake) == [] and not receipt.recovered


async def test_never_left_on_a_refused_port_is_resent_once_the_server_listens():
    with socket.socket() as probe:  # a port nobody listens on: the first connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = LoopbackAmili(port=port)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # the backoff: the server comes up meanwhile
        waits.append(seconds)
        if len(waits) == 1:
            await server.__aenter__()

    amili = AsyncAmiliClient(
        auth=StaticTokenAuth(TOKEN), base_url=f"http://127.0.0.1:{port}", retry=RetryPolicy(sleep=sleep)
    )
    try:
        receipt = await amili.execute(payment("EV-REFUSED-PORT"))
    finally:
        await amili.aclose()
        await server.__aexit__(None, None, None)
    assert [r["_id"] for r in server.stored("EV-REFUSED-PORT")] == [receipt.id]
    assert server.posts() == 1 and server.lookups() == 0 and len(waits) == 1


# -- refused before processing: not applied, resend after the wait ---------------------------------------


@pytest.mark.parametrize("kind", ["rate_limit", "revoke_token"])
async def test_refused_before_processing_on_the_fake_is_resent_and_stored_once(
    fake, creditor, case_id, client_for, kind
):
    fake.inject(Fault(kind, path=PAYMENTS, method="POST", times=1))
    async with client_for() as amili:
        receipt = await amili.execute(fake_payment(creditor, case_id, f"EV-{kind}"))
    assert [p["_id"] for p in stored_with_reference(fake, f"EV-{kind}")] == [receipt.id]
    assert [r.status for r in sent(fake, "POST", PAYMENTS)] == [429 if kind == "rate_limit" else 401, 201]
    assert lookups(fake) == []


async def test_a_429_from_a_raw_server_is_resent_and_stored_once():
    async with LoopbackAmili(throttle_first=True) as server, client(server) as amili:
        receipt = await amili.execute(payment("EV-429"))
    assert [r["_id"] for r in server.stored("EV-429")] == [receipt.id]
    assert server.posts() == 2 and server.lookups() == 0 and not receipt.recovered


# -- any 2xx: applied, never resent -------------------------------------------------------------------------


async def test_a_readable_2xx_is_the_receipt(fake, creditor, case_id, client_for):
    async with client_for() as amili:
        receipt = await amili.execute(fake_payment(creditor, case_id, "EV-201"))
    assert receipt.provenance == "answer" and not receipt.recovered
    assert receipt.payment_status == "completed"
    assert [p["_id"] for p in stored_with_reference(fake, "EV-201")] == [receipt.id]


@pytest.mark.parametrize("kind", ["empty_body", "malformed_json"])
@pytest.mark.parametrize("reference", ["EV-UNREADABLE", None], ids=["referenced", "unreferenced"])
async def test_an_unreadable_2xx_on_the_fake_is_fetched_by_its_id(fake, creditor, case_id, client_for, kind, reference):
    # empty_body: the id is in the Location header; malformed_json: in the first half of the cut body.
    fake.inject(Fault(kind, path=PAYMENTS, method="POST", times=1))
    async with client_for() as amili:
        receipt = await amili.execute(fake_payment(creditor, case_id, reference))
    assert [p["_id"] for p in fake.payments] == [receipt.id]
    assert receipt.provenance == "fetched" and receipt.recovered
    assert receipt.amount == Decimal("10.00")
    assert len(sent(fake, "POST", PAYMENTS)) == 1 and lookups(fake) == []
    assert len(sent(fake, "GET", f"{PAYMENTS}/{receipt.id}")) == 1


async def test_an_unreadable_2xx_whose_record_lags_is_fetched_after_the_settle_window():
    virtual = VirtualTime()  # the fake's clock and the SDK's waits, shared: the default window, no waiting
    fake = FakeAmili(seed=5, clock=virtual)
    creditor = fake.add_creditor()
    case_id = fake.add_case(creditor.id, capital=BIG_CAPITAL)
    fake.inject(Fault("empty_body", path=PAYMENTS, method="POST", times=1))
    fake.inject(Fault("read_lag", path=PAYMENTS, seconds=5))
    async with fake.client(creditor, retry=RetryPolicy(sleep=virtual.sleep)) as amili:
        receipt = await amili.execute(fake_payment(creditor, case_id, "EV-LAGGING-FETCH"))
    assert [p["_id"] for p in fake.payments] == [receipt.id] and receipt.provenance == "fetched"
    fetches = sent(fake, "GET", f"{PAYMENTS}/{receipt.id}")
    assert [f.status for f in fetches] == [404, 200]  # not visible yet; visible after the window
    assert len(sent(fake, "POST", PAYMENTS)) == 1


@pytest.mark.parametrize("reference", ["EV-UNREADABLE-DOWN", None], ids=["referenced", "unreferenced"])
async def test_an_unreadable_2xx_that_cannot_be_read_back_says_it_was_applied(
    fake, creditor, case_id, client_for, reference
):
    fake.inject(Fault("empty_body", path=PAYMENTS, method="POST", times=1))
    fake.inject(Fault("server_error", path=PAYMENTS, method="GET", status=503))  # reads are down
    action = fake_payment(creditor, case_id, reference)
    async with client_for() as amili:
        with pytest.raises(AppliedWithoutReceiptError) as caught:
            await amili.execute(action)
    err = caught.value
    [stored] = fake.payments
    assert err.record_id == stored["_id"]  # from the Location header
    assert "WAS applied" in str(err) and err.status_code == 201
    assert isinstance(err, ResponseDecodeError) and not isinstance(err, OutcomeUnknownError)
    assert err.action is action and err.reference == reference
    assert len(sent(fake, "POST", PAYMENTS)) == 1  # never resent


async def test_the_deadline_after_a_2xx_says_the_write_was_applied(fake, creditor, case_id, client_for):
    fake.inject(Fault("empty_body", path=PAYMENTS, method="POST", times=1))
    fake.inject(Fault("latency", path=PAYMENTS, method="GET", seconds=30))
    async with client_for(retry=RetryPolicy.no_delay(deadline=0.3)) as amili:
        with pytest.raises(AppliedWithoutReceiptError):
            await amili.execute(fake_payment(creditor, case_id, "EV-2XX-DEADLINE"))
    assert len(fake.payments) == 1 and len(sent(fake, "POST", PAYMENTS)) == 1


@pytest.mark.parametrize(
    ("answer", "reference", "provenance"),
    [
        ("no_id", "EV-NO-ID", "fetched"),  # a Location header: fetched by id
        ("no_id", None, "fetched"),
        ("no_id_no_location", "EV-NO-ID-NO-LOCATION", "found"),  # nothing but the reference: found by it
        ("not_json", "EV-NOT-JSON", "found"),
    ],
)
async def test_a_201_without_id_from_a_raw_server_is_read_back(answer, reference, provenance):
    async with LoopbackAmili(answer=answer) as server, client(server) as amili:
        receipt = await amili.execute(payment(reference))
    assert [r["_id"] for r in server.records] == [receipt.id]  # stored once, and that is its receipt
    assert receipt.provenance == provenance and receipt.amount == Decimal("250.00")
    assert server.posts() == 1


@pytest.mark.parametrize("answer", ["no_id_no_location", "not_json"])
async def test_a_201_without_id_or_reference_is_applied_without_receipt(answer):
    async with LoopbackAmili(answer=answer) as server, client(server) as amili:
        with pytest.raises(AppliedWithoutReceiptError) as caught:
            await amili.execute(payment(None))
    assert len(server.records) == 1 and server.posts() == 1  # applied once, never resent
    assert caught.value.record_id is None and "WAS applied" in str(caught.value)


# -- other 4xx: not applied, final -----------------------------------------------------------------------


async def test_a_4xx_on_the_fake_is_final_and_nothing_is_stored(fake, creditor, client_for):
    async with client_for() as amili:
        with pytest.raises(ValidationError) as caught:
            await amili.execute(fake_payment(creditor, "0" * 24, "EV-422"))  # no such case
    assert caught.value.status_code == 422 and not isinstance(caught.value, OutcomeUnknownError)
    assert fake.payments == [] and len(sent(fake, "POST", PAYMENTS)) == 1 and lookups(fake) == []


@pytest.mark.parametrize(("status", "error"), [(422, UnprocessableEntityError), (403, PermissionDeniedError)])
async def test_a_4xx_from_a_raw_server_is_final_and_nothing_is_stored(status, error):
    async with LoopbackAmili(refuse=status) as server, client(server) as amili:
        with pytest.raises(error):
            await amili.execute(payment("EV-RAW-4XX"))
    assert server.records == [] and server.posts() == 1 and server.lookups() == 0


# -- sent, no definite answer: nothing proven, reconcile -------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault("drop_after_commit", path=PAYMENTS, method="POST", times=1),
        Fault("server_error", path=PAYMENTS, method="POST", status=500, commit=True, times=1),
        Fault("server_error", path=PAYMENTS, method="POST", status=504, commit=True, times=1),
        Fault("stall_body", path=PAYMENTS, method="POST", times=1),
        Fault("late_commit", path=PAYMENTS, method="POST", gateway=True, status=504, times=1),
    ],
    ids=lambda f: f"{f.kind}-{f.status}" if f.kind in ("server_error", "late_commit") else f.kind,
)
async def test_an_unanswered_write_on_the_fake_is_reconciled_to_its_record(fake, creditor, case_id, client_for, fault):
    fake.inject(fault)
    async with client_for(timeout=httpx.Timeout(5, read=0.2)) as amili:
        receipt = await amili.execute(fake_payment(creditor, case_id, "EV-UNANSWERED"))
    assert [p["_id"] for p in stored_with_reference(fake, "EV-UNANSWERED")] == [receipt.id]
    assert receipt.provenance == "found" and receipt.recovered
    assert len(sent(fake, "POST", PAYMENTS)) == 1


@pytest.mark.parametrize(
    "knobs",
    [{"drop": "after"}, {"truncate": True}, {"gateway_after": 0.0}],
    ids=["reset-after-send", "truncated-answer", "504"],
)
async def test_an_unanswered_write_on_a_raw_server_is_reconciled_to_its_record(knobs):
    async with LoopbackAmili(**knobs) as server, client(server) as amili:
        receipt = await amili.execute(payment("EV-RAW-UNANSWERED"))
    assert [r["_id"] for r in server.stored("EV-RAW-UNANSWERED")] == [receipt.id]
    assert receipt.recovered and server.posts() == 1


# -- a respite refused with 422 is a ValidationError; a 206 refusal is not -------------------------------


async def test_a_respite_refused_with_422_is_also_a_validation_error(fake, creditor, client_for):
    case = fake.add_case(creditor.id)
    async with client_for() as amili:
        with pytest.raises(ValidationError) as caught:
            await amili.respite.grant(case, days=31)  # over the maximum (30): Amili answers 422
    assert isinstance(caught.value, RespiteValidationError) and isinstance(caught.value, RespiteNotAllowedError)
    assert caught.value.status_code == 422 and "days" in caught.value.issues


async def test_a_respite_refused_with_206_is_not_a_validation_error(make_client):
    case = "68e4c40d93ee14723d28fa95"
    client, _ = make_client(lambda request: httpx.Response(206, json={"issues": ["respite.case_closed"]}))
    with pytest.raises(RespiteNotAllowedError) as caught:
        await client.respite.grant(case, days=5)
    assert not isinstance(caught.value, ValidationError) and caught.value.status_code == 206
