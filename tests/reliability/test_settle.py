"""An empty lookup is not proof: the settle window, uniqueness refusals, deadlines, and settling in a batch.

Against the in-memory Amili (its `late_commit`, `read_lag` and unique-index faults) and against raw loopback
servers that commit slowly, answer 504 over a backend that goes on, or read from a lagging replica. Each test
asserts what the server STORED and what the SDK said. Windows are short here (`RetryPolicy(settle_window=...)`),
except in the tests of the default window, which run on a virtual clock shared by the fake and the SDK's waits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import aclosing
from decimal import Decimal

import anyio
import anyio.lowlevel
import httpx
import pytest
from loopback_amili import LoopbackAmili, client, payment, record
from reliability_helpers import BIG_CAPITAL, PAYMENTS, VirtualTime, lookups, sent, stored_with_reference
from reliability_helpers import payment as fake_payment

from amili_async import (
    AmiliError,
    ConflictError,
    OutcomeUnknownError,
    ReferenceConflictError,
    RetryPolicy,
    TimeoutError,
    UnprocessableEntityError,
)
from amili_async.bulk import SETTLING_PER_SLOT
from amili_async.testing import FakeAmili, Fault

# -- the window: a slow commit, a gateway, a lagging replica --------------------------------------------


async def test_a_slow_commit_server_ends_in_one_stored_payment_and_its_receipt():
    # The backend commits 1 s after the POST arrived; the client gives up at 0.15 s and finds nothing yet.
    async with LoopbackAmili(commit_delay=1.0) as server, client(server, read=0.15, settle_window=1.5) as amili:
        receipt = await amili.execute(payment("SET-SLOW"))
    assert [r["_id"] for r in server.stored("SET-SLOW")] == [receipt.id]
    assert receipt.recovered and server.posts() == 1


async def test_without_a_settle_window_the_slow_commit_server_stores_the_payment_more_than_once():
    # The control: the same server, one empty lookup taken as proof (what the SDK used to do) duplicates money,
    # and may even end in a "verified not applied" error for a payment stored three times.
    async with LoopbackAmili(commit_delay=1.0) as server, client(server, read=0.15, settle_window=0) as amili:
        with contextlib.suppress(AmiliError):
            await amili.execute(payment("SET-SLOW-NO-WINDOW"))
    assert len(server.stored("SET-SLOW-NO-WINDOW")) > 1


async def test_a_504_gateway_over_a_committing_backend_ends_in_one_stored_payment():
    async with (
        LoopbackAmili(gateway_after=0.05, commit_delay=0.3) as server,
        client(server, settle_window=0.6) as amili,
    ):
        receipt = await amili.execute(payment("SET-GATEWAY"))
    assert [r["_id"] for r in server.stored("SET-GATEWAY")] == [receipt.id]
    assert receipt.recovered and server.posts() == 1


async def test_a_lagging_replica_ends_in_one_stored_payment():
    # Committed, connection dropped, and the replica answering the lookup is 0.3 s behind.
    async with LoopbackAmili(drop="after", read_lag=0.3) as server, client(server, settle_window=0.6) as amili:
        receipt = await amili.execute(payment("SET-LAG"))
    assert [r["_id"] for r in server.stored("SET-LAG")] == [receipt.id]
    assert receipt.recovered and server.posts() == 1


@pytest.mark.parametrize(
    "faults",
    [
        [Fault("late_commit", path=PAYMENTS, method="POST", seconds=0.25, times=1)],  # no answer, commits later
        [Fault("late_commit", path=PAYMENTS, method="POST", seconds=0.25, gateway=True, status=504, times=1)],
        [
            Fault("drop_after_commit", path=PAYMENTS, method="POST", times=1),
            Fault("read_lag", path=PAYMENTS, seconds=0.25),
        ],
    ],
    ids=["late-commit", "gateway-504", "lagging-reads"],
)
async def test_on_the_fake_a_late_or_unseen_commit_ends_in_one_stored_payment(
    fake, creditor, case_id, client_for, faults
):
    for fault in faults:
        fake.inject(fault)
    policy = RetryPolicy(settle_window=0.5, backoff_base=0.001)
    async with client_for(retry=policy, timeout=httpx.Timeout(5, read=0.05)) as amili:
        receipt = await amili.execute(fake_payment(creditor, case_id, "SET-FAKE"))
    fake.commit_pending()
    assert [p["_id"] for p in stored_with_reference(fake, "SET-FAKE")] == [receipt.id]
    assert receipt.recovered and len(sent(fake, "POST", PAYMENTS)) == 1


async def test_absence_is_confirmed_by_a_second_lookup_after_the_window(fake, creditor, case_id, client_for, sleeps):
    fake.inject(Fault("drop_before_commit", path=PAYMENTS, method="POST", times=1))
    async with client_for(retry=RetryPolicy.no_delay(sleep=sleeps, settle_window=7)) as amili:
        receipt = await amili.execute(fake_payment(creditor, case_id, "SET-ABSENT"))
    assert [p["_id"] for p in stored_with_reference(fake, "SET-ABSENT")] == [receipt.id]
    assert not receipt.recovered  # it is the resend's own answer
    [settle, *_] = sleeps.calls
    assert 3.5 < settle <= 7.0  # the window, counted from the moment the attempt ended (minus the lookup's time)
    kinds = [("GET" if r.method == "GET" else r.fault or "POST") for r in fake.requests if r.path == PAYMENTS]
    assert kinds == ["drop_before_commit", "GET", "GET", "POST"]


async def test_a_raw_server_that_never_committed_gets_the_payment_once_after_the_window():
    # The first POST is dropped before committing: not found, not found again after the window, sent again.
    async with LoopbackAmili(drop="before") as server, client(server, settle_window=0.1) as amili:
        receipt = await amili.execute(payment("SET-RAW-ABSENT"))
    assert [r["_id"] for r in server.stored("SET-RAW-ABSENT")] == [receipt.id]
    assert not receipt.recovered and server.posts() == 2 and server.lookups() == 2


# -- the deadline ---------------------------------------------------------------------------------------


async def test_a_deadline_inside_the_window_is_outcome_unknown_never_a_resend(fake, creditor, case_id, client_for):
    fake.inject(Fault("late_commit", path=PAYMENTS, method="POST", seconds=3, gateway=True, status=504, times=1))
    action = fake_payment(creditor, case_id, "SET-NO-ROOM")
    async with client_for(retry=RetryPolicy.no_delay(settle_window=15, deadline=5)) as amili:
        with pytest.raises(OutcomeUnknownError) as caught:
            await amili.execute(action)
    err = caught.value
    assert err.action is action and err.reference == "SET-NO-ROOM"
    assert "settle window" in err.message
    assert len(sent(fake, "POST", PAYMENTS)) == 1 and len(lookups(fake)) == 1
    fake.commit_pending()
    assert len(stored_with_reference(fake, "SET-NO-ROOM")) == 1  # it was applied: "unknown" was the truth


async def test_a_deadline_inside_the_window_on_a_raw_slow_commit_server_is_outcome_unknown():
    async with (
        LoopbackAmili(commit_delay=0.3) as server,
        client(server, read=0.1, settle_window=10, deadline=2) as amili,
    ):
        with pytest.raises(OutcomeUnknownError) as caught:
            await amili.execute(payment("SET-RAW-NO-ROOM"))
    assert caught.value.reference == "SET-RAW-NO-ROOM"
    assert server.posts() == 1 and len(server.stored("SET-RAW-NO-ROOM")) == 1


class _HangingTokenEndpoint(httpx.AsyncBaseTransport):
    """The fake, except that the token endpoint never answers."""

    def __init__(self, fake: FakeAmili) -> None:
        self._inner = fake.transport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/authenticates"):
            await anyio.sleep(30)
        return await self._inner.handle_async_request(request)


async def test_a_deadline_while_only_the_token_was_fetched_is_a_plain_timeout(fake, creditor, case_id, client_for):
    transport = _HangingTokenEndpoint(fake)
    async with client_for(transport=transport, token_timeout=0.5, retry=RetryPolicy.no_delay(deadline=0.2)) as amili:
        with anyio.fail_after(10), pytest.raises(TimeoutError) as caught:
            await amili.execute(fake_payment(creditor, case_id, "SET-TOKEN-ONLY"))
    assert not isinstance(caught.value, OutcomeUnknownError)  # nothing was sent
    assert sent(fake, "POST", PAYMENTS) == [] and fake.payments == []


# -- the default window: 10 s late commits, 5 s lagging reads (virtual time) ----------------------------


@pytest.fixture
def virtual() -> VirtualTime:
    return VirtualTime()


def _virtual_fake(virtual: VirtualTime, **options) -> tuple[FakeAmili, object, str]:
    fake = FakeAmili(seed=9, clock=virtual, **options)
    creditor = fake.add_creditor()
    return fake, creditor, fake.add_case(creditor.id, capital=BIG_CAPITAL)


def test_the_default_settle_window_is_15_seconds():
    assert RetryPolicy().settle_window == 15.0  # 10 s for a late commit + 5 s for lagging list reads
    with pytest.raises(ValueError):
        RetryPolicy(settle_window=-1)


@pytest.mark.parametrize(
    ("faults", "read"),
    [
        # A gateway gives up at once; the backend commits 10 s later; reads lag 5 s: visible after 15 s.
        (
            [
                Fault("late_commit", path=PAYMENTS, method="POST", seconds=10, gateway=True, status=504, times=1),
                Fault("read_lag", path=PAYMENTS, seconds=5),
            ],
            5.0,
        ),
        # The client gives up at its read timeout (0.05 s, real); the commit lands 10 s after it arrived.
        (
            [
                Fault("late_commit", path=PAYMENTS, method="POST", seconds=10, times=1),
                Fault("read_lag", path=PAYMENTS, seconds=5),
            ],
            0.05,
        ),
        # Committed at once, answer lost, reads 5 s behind.
        (
            [
                Fault("drop_after_commit", path=PAYMENTS, method="POST", times=1),
                Fault("read_lag", path=PAYMENTS, seconds=5),
            ],
            5.0,
        ),
    ],
    ids=["gateway-10s-commit-5s-lag", "timeout-10s-commit-5s-lag", "drop-5s-lag"],
)
async def test_the_default_window_covers_a_10s_late_commit_seen_through_5s_lagging_reads(virtual, faults, read):
    fake, creditor, case_id = _virtual_fake(virtual)
    for fault in faults:
        fake.inject(fault)
    timeout = httpx.Timeout(5, read=read)
    async with fake.client(creditor, retry=RetryPolicy(sleep=virtual.sleep), timeout=timeout) as amili:
        receipt = await amili.execute(fake_payment(creditor, case_id, "SET-DEFAULT"))
    fake.commit_pending()
    assert [p["_id"] for p in stored_with_reference(fake, "SET-DEFAULT")] == [receipt.id]
    assert receipt.recovered and len(sent(fake, "POST", PAYMENTS)) == 1
    assert 14.0 < sum(virtual.waits) <= 15.0  # one settle wait: the default window


async def test_beyond_the_default_window_only_a_unique_index_prevents_a_duplicate(virtual):
    # A commit 12 s late, read through 5 s of lag, is visible only at 17 s: after the window. Without a unique
    # index on references the resend is stored as well; that is the documented limit of the window.
    faults = [
        Fault("late_commit", path=PAYMENTS, method="POST", seconds=12, gateway=True, status=504, times=1),
        Fault("read_lag", path=PAYMENTS, seconds=5),
    ]
    fake, creditor, case_id = _virtual_fake(virtual)
    for fault in faults:
        fake.inject(fault)
    async with fake.client(creditor, retry=RetryPolicy(sleep=virtual.sleep)) as amili:
        await amili.execute(fake_payment(creditor, case_id, "SET-BEYOND"))
    fake.commit_pending()
    assert len(stored_with_reference(fake, "SET-BEYOND")) == 2

    # With Amili refusing a stored reference, the resend's refusal is evidence: looked up, found, returned.
    fake, creditor, case_id = _virtual_fake(virtual, unique_references=True)
    for fault in faults:
        fake.inject(fault)
    async with fake.client(creditor, retry=RetryPolicy(sleep=virtual.sleep)) as amili:
        receipt = await amili.execute(fake_payment(creditor, case_id, "SET-BEYOND"))
    fake.commit_pending()
    assert [p["_id"] for p in stored_with_reference(fake, "SET-BEYOND")] == [receipt.id]
    assert receipt.recovered
    assert [r.status for r in sent(fake, "POST", PAYMENTS)] == [504, 422]


# -- a uniqueness refusal is evidence of the earlier write ----------------------------------------------


@pytest.mark.parametrize("status", [422, 409])
async def test_a_resend_refused_as_not_unique_returns_the_earlier_write(status):
    # The first POST is never answered; its commit lands just before the resend arrives, which is refused.
    async with (
        LoopbackAmili(hang_first=True, unique=status) as server,
        client(server, read=0.1, settle_window=0.05) as amili,
    ):
        receipt = await amili.execute(payment("SET-UNIQUE"))
    assert [r["_id"] for r in server.stored("SET-UNIQUE")] == [receipt.id]
    assert receipt.recovered and receipt.provenance == "found" and server.posts() == 2


@pytest.mark.parametrize("status", [422, 409])
async def test_a_first_attempt_refused_as_not_unique_returns_the_matching_record(status):
    # An earlier run stored this very payment: the reference is refused, the record is this action's.
    async with (
        LoopbackAmili(unique=status, records=[record("SET-EARLIER")]) as server,
        client(server) as amili,
    ):
        receipt = await amili.execute(payment("SET-EARLIER"))
    assert [r["_id"] for r in server.stored("SET-EARLIER")] == [receipt.id]
    assert receipt.recovered and server.posts() == 1


@pytest.mark.parametrize("status", [422, 409])
async def test_a_refusal_for_a_reference_held_by_another_payment_is_a_conflict(status):
    async with (
        LoopbackAmili(unique=status, records=[record("SET-REUSED", amount="99.00")]) as server,
        client(server) as amili,
    ):
        with pytest.raises(ReferenceConflictError) as caught:
            await amili.execute(payment("SET-REUSED"))  # 250.00: not the stored payment
    err = caught.value
    assert [r["_id"] for r in err.records] == [r["_id"] for r in server.stored("SET-REUSED")]
    assert err.expected["amount"] == "250.00" and "amount" in err.message
    assert isinstance(err.__cause__, (UnprocessableEntityError, ConflictError))
    assert len(server.records) == 1 and server.posts() == 1


async def test_on_the_fake_a_refusal_as_not_unique_is_looked_up_and_matched():
    fake = FakeAmili(seed=3, unique_references=True)
    creditor = fake.add_creditor()
    case_id = fake.add_case(creditor.id, capital=BIG_CAPITAL)
    async with fake.client(creditor, retry=RetryPolicy.no_delay()) as amili:
        first = await amili.execute(fake_payment(creditor, case_id, "SET-AGAIN"))
        again = await amili.execute(fake_payment(creditor, case_id, "SET-AGAIN"))  # an earlier run's twin
        with pytest.raises(ReferenceConflictError):
            await amili.execute(fake_payment(creditor, case_id, "SET-AGAIN", amount=Decimal("11.00")))
    assert again.id == first.id and again.recovered and not first.recovered
    assert [p["_id"] for p in stored_with_reference(fake, "SET-AGAIN")] == [first.id]


# -- what stays as it was: no reference, a respite ------------------------------------------------------


async def test_an_unreferenced_late_commit_is_outcome_unknown_and_never_resent(fake, creditor, case_id, client_for):
    fake.inject(Fault("late_commit", path=PAYMENTS, method="POST", seconds=1, gateway=True, status=504, times=1))
    async with client_for() as amili:
        with pytest.raises(OutcomeUnknownError) as caught:
            await amili.execute(fake_payment(creditor, case_id, None))
    assert caught.value.reference is None and len(sent(fake, "POST", PAYMENTS)) == 1 and lookups(fake) == []
    fake.commit_pending()
    assert len(fake.payments) == 1


async def test_an_ambiguous_respite_grant_is_outcome_unknown_and_never_resent(fake, creditor, client_for):
    case = fake.add_case(creditor.id)
    path = f"/domain-actions/cases/respite/{case}"
    due = fake.get_case(case)["due_date"]
    fake.inject(Fault("late_commit", path=path, method="POST", seconds=1, gateway=True, status=504, times=1))
    async with client_for() as amili:
        with pytest.raises(OutcomeUnknownError) as caught:
            await amili.respite.grant(case, days=10)
    assert caught.value.reference == case and len(sent(fake, "POST", path)) == 1
    fake.commit_pending()
    assert fake.get_case(case)["due_date"] != due  # granted once, by the one request that was sent


# -- settling in a batch: without a concurrency slot -----------------------------------------------------


class _InFlight(httpx.AsyncBaseTransport):
    """Counts the API requests in flight at once (token requests aside)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.now = 0
        self.most = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/authenticates"):
            return await self._inner.handle_async_request(request)
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await anyio.lowlevel.checkpoint()
            return await self._inner.handle_async_request(request)
        finally:
            self.now -= 1


async def test_a_settling_action_does_not_hold_a_concurrency_slot(fake, creditor, case_id):
    hit = [f"SLOT-HIT-{n}" for n in range(4)]
    for reference in hit:  # answered 504 and not committed: each settles, then is sent again
        fake.inject(
            Fault("server_error", path=PAYMENTS, status=504, body={"creditor_payment_reference": reference}, times=1)
        )
    references = [*hit, *(f"SLOT-OK-{n}" for n in range(8))]
    released = anyio.Event()

    async def gate(seconds: float) -> None:  # a settle wait lasts until every unhit action is done
        await released.wait()

    transport = _InFlight(fake.transport())
    outcomes = []
    async with fake.client(creditor, transport=transport, retry=RetryPolicy(sleep=gate)) as amili:
        with anyio.fail_after(20):  # a slot held while settling would deadlock here: two slots, four settling
            async for outcome in amili.execute_many(
                (fake_payment(creditor, case_id, r) for r in references), concurrency=2
            ):
                outcomes.append(outcome)
                if sum(o.action.creditor_payment_reference.startswith("SLOT-OK") for o in outcomes) == 8:
                    released.set()
    assert [o.action.creditor_payment_reference.startswith("SLOT-OK") for o in outcomes] == [True] * 8 + [False] * 4
    assert all(o.ok for o in outcomes)
    for reference in references:
        assert len(stored_with_reference(fake, reference)) == 1
    assert transport.most <= 2  # a settled action takes its slot back before it sends anything


async def test_settling_actions_are_bounded_so_memory_stays_flat(fake, creditor, case_id):
    fake.inject(Fault("server_error", path=PAYMENTS, method="POST", status=504, times=100))
    waiting = 0
    most_waiting = 0
    pulled = 0
    pulled_at_release = 0
    released = anyio.Event()
    limit = 1 + SETTLING_PER_SLOT  # concurrency 1: one action talking, the rest settling

    async def gate(seconds: float) -> None:
        nonlocal waiting, most_waiting, pulled_at_release
        waiting += 1
        most_waiting = max(most_waiting, waiting)
        if waiting == limit:  # every place is taken by a settling action: the batch must not pull more
            await anyio.sleep(0.05)
            pulled_at_release = pulled
            released.set()
        await released.wait()
        waiting -= 1

    def actions() -> Iterator:
        nonlocal pulled
        for n in range(30):
            pulled += 1
            yield fake_payment(creditor, case_id, f"STORM-{n}")

    async with fake.client(creditor, retry=RetryPolicy(sleep=gate, max_attempts=1)) as amili:
        with anyio.fail_after(20):
            async with aclosing(amili.execute_many(actions(), concurrency=1)) as outcomes:
                async for outcome in outcomes:
                    assert released.is_set() and outcome.error is not None  # settled, proven absent, no attempt left
                    break
    assert most_waiting == limit and pulled_at_release == limit
