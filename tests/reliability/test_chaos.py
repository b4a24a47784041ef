"""The chaos batch: 5,000 referenced payments through `execute_many` with over 10% seeded faults of every kind,
late commits and lagging reads included, next to a fault-free run of the same batch.

The invariants a money SDK owes its caller, whatever the network does (checked once every late write landed):
- one outcome per input (each index exactly once);
- no payment reference is ever held twice by Amili (0 duplicates);
- a receipt means "held exactly once, and this is its record" (0 false successes);
- a definite error means "not applied" (0 false "not applied"); `AppliedWithoutReceiptError` means applied;
  only `OutcomeUnknownError` may hide an applied payment, and only where proof was impossible;
- every error names its action and reference.

Time is real but short: late commits land within 0.1 s, replicas lag 0.05 s, and the settle window is 0.25 s
(it covers both, measured from the moment an attempt ended). Run with `-s` to see the figures (printed, not
asserted).
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal
from typing import Any

import anyio
import httpx
import pytest
from reliability_helpers import BIG_CAPITAL, PAYMENTS, payment

from amili_async import CreditorPayment, RetryPolicy
from amili_async.errors import AmiliError, AppliedWithoutReceiptError, OutcomeUnknownError, ReferenceConflictError
from amili_async.testing import FakeAmili, Fault

PAYMENT_COUNT = 5_000
CASE_COUNT = 200
SEED = 1_234_567
SETTLE_WINDOW = 0.25  # > the latest commit (0.1 s after arrival) + the replica lag (0.05 s)
READ_TIMEOUT = 0.05

# Over 10% of the requests on the payments resource (the POSTs, the lookups and the fetches alike).
CHAOS = [
    Fault(kind="drop_before_commit", path=PAYMENTS, probability=0.012),
    Fault(kind="drop_after_commit", path=PAYMENTS, probability=0.012),
    Fault(kind="server_error", path=PAYMENTS, status=500, commit=True, probability=0.008),
    Fault(kind="server_error", path=PAYMENTS, status=503, commit=False, probability=0.008),
    Fault(kind="server_error", path=PAYMENTS, status=502, commit=True, probability=0.005),
    Fault(kind="late_commit", path=PAYMENTS, method="POST", seconds=0.1, probability=0.012),  # no answer
    Fault(kind="late_commit", path=PAYMENTS, method="POST", seconds=0.08, gateway=True, status=504, probability=0.012),
    Fault(kind="read_lag", path=PAYMENTS, seconds=0.05, probability=0.3),  # most reads hit a lagging replica
    Fault(kind="ignore_where", path=PAYMENTS, probability=0.01),
    Fault(kind="rate_limit", path=PAYMENTS, probability=0.012),
    Fault(kind="malformed_json", path=PAYMENTS, probability=0.008),
    Fault(kind="empty_body", path=PAYMENTS, probability=0.008),
    Fault(kind="connect_error", path=PAYMENTS, probability=0.008),
    Fault(kind="stall_body", path=PAYMENTS, probability=0.004),
    Fault(kind="latency", path=PAYMENTS, seconds=0.002, probability=0.01),
    Fault(kind="revoke_token", path=PAYMENTS, probability=0.001),
]


class RealSleeps:
    """The policy's sleep, for real, counted."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await anyio.sleep(seconds)


def _batch(fake: FakeAmili) -> tuple[Any, list[CreditorPayment]]:
    creditor = fake.add_creditor()
    cases = [fake.add_case(creditor.id, capital=BIG_CAPITAL) for _ in range(CASE_COUNT)]
    actions = [
        payment(creditor, cases[n % CASE_COUNT], f"CHAOS-{n:05d}", amount=Decimal(f"{1 + n % 97}.{n % 100:02d}"))
        for n in range(PAYMENT_COUNT)
    ]
    return creditor, actions


async def _run(
    fake: FakeAmili, creditor: Any, actions: list[CreditorPayment], sleeps: RealSleeps
) -> tuple[list, float]:
    policy = RetryPolicy(sleep=sleeps, backoff_base=0.005, backoff_cap=0.05, settle_window=SETTLE_WINDOW)
    timeout = httpx.Timeout(5.0, read=READ_TIMEOUT)
    outcomes = []
    started = time.perf_counter()
    async with fake.client(creditor, retry=policy, timeout=timeout) as amili:
        async for outcome in amili.execute_many(actions, concurrency=64):
            outcomes.append(outcome)
    return outcomes, time.perf_counter() - started


def _why(message: str) -> str:
    for reason in ("outside its filter", "settle window", "looking the write up", "deadline", "already held"):
        if reason in message:
            return reason
    return message[:60]


@pytest.mark.chaos
async def test_chaos_batch_of_5000_referenced_payments_never_duplicates_nor_loses_one():
    warm = FakeAmili(seed=SEED)  # first use builds the converter and the codecs: kept out of both timings
    warm_creditor, warm_actions = _batch(warm)
    await _run(warm, warm_creditor, warm_actions[:300], RealSleeps())

    calm = FakeAmili(seed=SEED)
    calm_creditor, calm_actions = _batch(calm)
    calm_outcomes, calm_elapsed = await _run(calm, calm_creditor, calm_actions, RealSleeps())
    assert all(o.ok for o in calm_outcomes) and len(calm.payments) == PAYMENT_COUNT

    fake = FakeAmili(seed=SEED)
    creditor, actions = _batch(fake)
    for fault in CHAOS:
        fake.inject(fault)
    sleeps = RealSleeps()
    outcomes, elapsed = await _run(fake, creditor, actions, sleeps)
    pending_at_end = fake.pending_writes
    fake.commit_pending()  # what Amili holds once every write in progress has landed

    # One outcome per input, each index once.
    assert len(outcomes) == PAYMENT_COUNT
    assert sorted(o.index for o in outcomes) == list(range(PAYMENT_COUNT))
    assert all(o.action is actions[o.index] for o in outcomes)

    # Amili never holds a reference twice.
    held = Counter(p["creditor_payment_reference"] for p in fake.payments)
    duplicates = sum(n - 1 for n in held.values())
    assert duplicates == 0
    stored = {p["creditor_payment_reference"]: p for p in fake.payments}

    unknown_applied = unknown_absent = applied_unread = recovered = 0
    false_success: list[str] = []  # a receipt for a payment Amili does not hold, or holds as another record
    false_not_applied: list[str] = []  # a definite error for a payment Amili holds
    unknown_why: Counter[str] = Counter()
    for outcome in outcomes:
        reference = outcome.action.creditor_payment_reference
        if outcome.ok:
            receipt = outcome.receipt
            if reference not in stored or receipt.id != stored[reference]["_id"]:
                false_success.append(reference)
            assert receipt.amount in (None, outcome.action.amount)
            recovered += receipt.recovered
            continue
        err = outcome.error
        assert isinstance(err, AmiliError), repr(err)
        assert err.reference == reference and err.action is outcome.action
        assert not isinstance(err, ReferenceConflictError), err  # every reference is used once
        if isinstance(err, AppliedWithoutReceiptError):  # says "applied": it must be
            assert reference in stored, err
            applied_unread += 1
        elif isinstance(err, OutcomeUnknownError):  # proof was impossible: either may be true
            unknown_why[_why(err.message)] += 1
            if reference in stored:
                unknown_applied += 1
            else:
                unknown_absent += 1
        elif reference in stored:  # a definite error means: not applied
            false_not_applied.append(reference)

    ok = sum(o.ok for o in outcomes)
    errors = Counter(type(o.error).__name__ for o in outcomes if not o.ok)
    requests = fake.requests
    faulted = sum(1 for r in requests if r.fault)
    mixed = sum(1 for r in requests if r.fault and r.fault != "read_lag")
    figures = {
        "payments": PAYMENT_COUNT,
        "applied (receipt)": ok,
        "  of which recovered (found or fetched after a lost answer)": recovered,
        "errors by class": dict(errors),
        "OutcomeUnknown (applied / not applied, per the fake)": (unknown_applied, unknown_absent),
        "duplicates": duplicates,
        "false successes / false not-applied": (len(false_success), len(false_not_applied)),
        "OutcomeUnknown, why": dict(unknown_why),
        "held by Amili": len(fake.payments),
        "late writes still in progress when the batch ended": pending_at_end,
        "requests total": len(requests),
        "requests with a fault": f"{faulted} ({faulted / len(requests):.1%})",
        "  not counting read lag": f"{mixed} ({mixed / len(requests):.1%})",
        "POST payments": sum(r.method == "POST" and r.path == PAYMENTS for r in requests),
        "reconciliation look-ups": sum(r.method == "GET" and "where" in r.query for r in requests),
        "retries and settle waits (policy sleeps)": len(sleeps.calls),
        "faults fired": dict(Counter(r.fault for r in requests if r.fault)),
        "tokens issued": fake.tokens_issued,
        "seconds (chaos / fault-free)": (round(elapsed, 2), round(calm_elapsed, 2)),
        "payments per second (chaos / fault-free)": (
            round(PAYMENT_COUNT / elapsed),
            round(PAYMENT_COUNT / calm_elapsed),
        ),
    }
    print("\nchaos figures:")
    for name, value in figures.items():
        print(f"  {name}: {value}")

    assert false_success == [] and false_not_applied == []
    assert mixed / len(requests) >= 0.10
    assert ok + sum(errors.values()) == PAYMENT_COUNT
    assert len(fake.payments) == ok + unknown_applied + applied_unread
    assert ok >= PAYMENT_COUNT * 0.98  # reconciliation settles nearly every fault
