"""The chaos batch: 5,000 referenced payments through `execute_many` with ~10% seeded faults of every kind.

The invariants a money SDK owes its caller, whatever the network does:
- one outcome per input (each index exactly once);
- no payment reference is ever held twice by Amili;
- a receipt means "held exactly once, and this is its id";
- a definite error means "not applied"; only `OutcomeUnknownError` may hide an applied payment, and only
  where proof was impossible (the reconciliation look-up failed too);
- every error names its action and reference.

Run with `-s` to see the figures (they are printed, not asserted).
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal

import pytest
from reliability_helpers import BIG_CAPITAL, PAYMENTS, SleepRecorder, payment

from amili_async import RetryPolicy
from amili_async.errors import AmiliError, OutcomeUnknownError
from amili_async.testing import FakeAmili, Fault

PAYMENT_COUNT = 5_000
CASE_COUNT = 200
SEED = 1_234_567

# About 10% of the requests on the payments resource (the POSTs and the reconciliation look-ups alike).
CHAOS = [
    Fault(kind="drop_before_commit", path=PAYMENTS, probability=0.015),
    Fault(kind="drop_after_commit", path=PAYMENTS, probability=0.015),
    Fault(kind="server_error", path=PAYMENTS, status=500, commit=True, probability=0.01),
    Fault(kind="server_error", path=PAYMENTS, status=503, commit=False, probability=0.01),
    Fault(kind="server_error", path=PAYMENTS, status=502, commit=True, probability=0.005),
    Fault(kind="rate_limit", path=PAYMENTS, probability=0.015),
    Fault(kind="malformed_json", path=PAYMENTS, probability=0.01),
    Fault(kind="empty_body", path=PAYMENTS, probability=0.01),
    Fault(kind="connect_error", path=PAYMENTS, probability=0.01),
    Fault(kind="latency", path=PAYMENTS, seconds=0.002, probability=0.01),
    Fault(kind="revoke_token", path=PAYMENTS, probability=0.001),
]


@pytest.mark.chaos
async def test_chaos_batch_of_5000_referenced_payments_never_duplicates_nor_loses_one():
    fake = FakeAmili(seed=SEED)
    creditor = fake.add_creditor()
    cases = [fake.add_case(creditor.id, capital=BIG_CAPITAL) for _ in range(CASE_COUNT)]
    actions = [
        payment(creditor, cases[n % CASE_COUNT], f"CHAOS-{n:05d}", amount=Decimal(f"{1 + n % 97}.{n % 100:02d}"))
        for n in range(PAYMENT_COUNT)
    ]
    for fault in CHAOS:
        fake.inject(fault)
    sleeps = SleepRecorder()

    started = time.perf_counter()
    outcomes = []
    async with fake.client(creditor, retry=RetryPolicy(sleep=sleeps)) as amili:
        async for outcome in amili.execute_many(actions, concurrency=64):
            outcomes.append(outcome)
    elapsed = time.perf_counter() - started

    # One outcome per input, each index once.
    assert len(outcomes) == PAYMENT_COUNT
    assert sorted(o.index for o in outcomes) == list(range(PAYMENT_COUNT))
    assert all(o.action is actions[o.index] for o in outcomes)

    # Amili never holds a reference twice.
    held = Counter(p["creditor_payment_reference"] for p in fake.payments)
    assert max(held.values()) == 1
    stored = {p["creditor_payment_reference"]: p for p in fake.payments}

    unknown_applied = unknown_absent = 0
    for outcome in outcomes:
        reference = outcome.action.creditor_payment_reference
        if outcome.ok:  # a receipt: held exactly once, and it is that record
            assert reference in stored, reference
            assert outcome.receipt.id == stored[reference]["_id"]
            assert outcome.receipt.amount in (None, outcome.action.amount)
            continue
        err = outcome.error
        assert isinstance(err, AmiliError), repr(err)
        assert err.reference == reference and err.action is outcome.action
        if isinstance(err, OutcomeUnknownError):
            # Only where proof was impossible: the look-up that would have settled it failed as well.
            assert "looking the write up" in err.message and isinstance(err.__cause__, AmiliError), err
            if reference in stored:
                unknown_applied += 1
            else:
                unknown_absent += 1
        else:  # a definite error means: not applied
            assert reference not in stored, f"{reference} is held by Amili but was reported as {err!r}"

    ok = sum(o.ok for o in outcomes)
    errors = Counter(type(o.error).__name__ for o in outcomes if not o.ok)
    requests = fake.requests
    figures = {
        "payments": PAYMENT_COUNT,
        "applied (receipt)": ok,
        "errors by class": dict(errors),
        "OutcomeUnknown (applied / not applied, per the fake)": (unknown_applied, unknown_absent),
        "held by Amili": len(fake.payments),
        "requests total": len(requests),
        "POST payments": sum(r.method == "POST" and r.path == PAYMENTS for r in requests),
        "reconciliation look-ups": sum(r.method == "GET" and "where" in r.query for r in requests),
        "retries (policy sleeps)": len(sleeps.calls),
        "faults fired": dict(Counter(r.fault for r in requests if r.fault)),
        "tokens issued": fake.tokens_issued,
        "seconds": round(elapsed, 2),
    }
    print("\nchaos figures:")
    for name, value in figures.items():
        print(f"  {name}: {value}")

    assert ok + sum(errors.values()) == PAYMENT_COUNT
    assert len(fake.payments) == ok + unknown_applied
    assert ok >= PAYMENT_COUNT * 0.99  # reconciliation settles nearly every fault
