"""A record found is the action's only if it matches it: the reference, and every identifying field it carries.

A reused reference, a server that ignores `where`, several records under one reference: never a false success,
never a resend, and the records in the error. Against the in-memory Amili, raw loopback servers, and the
matching rules field by field.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from loopback_amili import CREDITOR, OTHER_CASE, LoopbackAmili, client, payment, record
from reliability_helpers import PAYMENTS, sent, stored_with_reference
from reliability_helpers import payment as fake_payment

from amili_async import (
    CreditorCancellation,
    CreditorCrediting,
    OutcomeUnknownError,
    ReferenceConflictError,
    ValidationError,
)
from amili_async._evidence import Identity
from amili_async.testing import Fault

# -- a reused reference -----------------------------------------------------------------------------------


@pytest.mark.parametrize("drop", ["after", "before"])
async def test_a_reused_reference_on_a_raw_server_is_a_conflict_never_the_other_payments_receipt(drop):
    earlier = record("PAY-REF-001", case=OTHER_CASE, amount="99.00")  # the docs' example reference, used before
    async with LoopbackAmili(drop=drop, records=[earlier]) as server, client(server) as amili:
        with pytest.raises(ReferenceConflictError) as caught:
            await amili.execute(payment("PAY-REF-001"))
    err = caught.value
    held = server.stored("PAY-REF-001")
    assert {r["_id"] for r in err.records} == {r["_id"] for r in held}  # every record Amili holds under it
    assert err.expected["case"] != OTHER_CASE and err.reference == "PAY-REF-001"
    assert "amount" in err.message and "case" in err.message
    assert server.posts() == 1  # never resent
    assert len(held) == (2 if drop == "after" else 1)  # ours is stored once, or not at all: "unknown" is the truth


async def test_a_reused_reference_on_the_fake_is_a_conflict(fake, creditor, case_id, client_for):
    other_case = fake.add_case(creditor.id, capital=Decimal("1000"))
    async with client_for() as amili:
        earlier = await amili.execute(fake_payment(creditor, other_case, "REUSED-1", amount=Decimal("7.00")))
        fake.inject(Fault("drop_after_commit", path=PAYMENTS, method="POST", times=1))
        with pytest.raises(ReferenceConflictError) as caught:
            await amili.execute(fake_payment(creditor, case_id, "REUSED-1"))
    held = stored_with_reference(fake, "REUSED-1")
    assert len(held) == 2 and {r["_id"] for r in caught.value.records} == {r["_id"] for r in held}
    assert earlier.id in {r["_id"] for r in caught.value.records}
    assert len(sent(fake, "POST", PAYMENTS)) == 2  # one each, never a resend


async def test_several_records_matching_the_action_are_reported_not_picked(fake, creditor, case_id, client_for):
    async with client_for() as amili:
        await amili.execute(fake_payment(creditor, case_id, "TWICE"))
        await amili.execute(fake_payment(creditor, case_id, "TWICE"))  # a caller sent it twice, long ago
        fake.inject(Fault("drop_after_commit", path=PAYMENTS, method="POST", times=1))
        with pytest.raises(ReferenceConflictError) as caught:
            await amili.execute(fake_payment(creditor, case_id, "TWICE"))
    assert len(caught.value.records) == 3 and "3 records matching" in caught.value.message
    assert len(stored_with_reference(fake, "TWICE")) == 3


# -- a server that ignores `where` ------------------------------------------------------------------------


async def test_a_raw_server_ignoring_where_never_lends_another_payments_receipt():
    others = [record(f"OTHER-{n}", record_id=f"68e4cb120da90297b3be0f{n:02x}") for n in range(3)]
    async with (
        LoopbackAmili(drop="before", ignore_where=True, records=others) as server,
        client(server) as amili,
    ):
        with pytest.raises(OutcomeUnknownError) as caught:
            await amili.execute(payment("IGNORED-WHERE"))
    assert not isinstance(caught.value, ReferenceConflictError)
    assert "outside its filter" in caught.value.message
    assert server.stored("IGNORED-WHERE") == [] and server.posts() == 1  # not stored, and not sent again


async def test_a_raw_server_ignoring_where_still_yields_the_actions_own_record():
    others = [record("OTHER-A"), record("OTHER-B")]
    async with LoopbackAmili(drop="after", ignore_where=True, records=others) as server, client(server) as amili:
        receipt = await amili.execute(payment("IGNORED-BUT-THERE"))
    [mine] = server.stored("IGNORED-BUT-THERE")
    assert receipt.id == mine["_id"] and receipt.recovered and server.posts() == 1


async def test_on_the_fake_a_lookup_without_its_filter_proves_nothing(fake, creditor, case_id, client_for):
    async with client_for() as amili:
        await amili.execute(fake_payment(creditor, case_id, "NEIGHBOUR"))
        fake.inject(Fault("drop_before_commit", path=PAYMENTS, method="POST", times=1))
        fake.inject(Fault("ignore_where", path=PAYMENTS))
        with pytest.raises(OutcomeUnknownError):
            await amili.execute(fake_payment(creditor, case_id, "UNSEEN"))
    assert stored_with_reference(fake, "UNSEEN") == [] and len(fake.payments) == 1
    assert len(sent(fake, "POST", PAYMENTS)) == 2  # the neighbour's and ours, once


# -- the rules, field by field ----------------------------------------------------------------------------

WHEN = datetime(2025, 10, 7, 8, 15, 30, tzinfo=timezone.utc)


def _sort(identity: Identity, *records: dict, total: int | None = None):
    payload: dict = {"_items": list(records)}
    if total is not None:
        payload["_meta"] = {"total": total}
    return identity.sort(payload)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": 250.01}, "amount"),
        ({"amount": "250.10"}, "amount"),
        ({"currency": "EUR"}, "currency"),
        ({"case": OTHER_CASE}, "case"),
        ({"creditor": "674dbeb208847b9501cc9139"}, None),  # outside the filter (creditor is in `where`)
        ({"bank_transaction_date": "Wed, 08 Oct 2025 08:15:30 GMT"}, "bank_transaction_date"),
        ({"amount": None}, "amount"),
    ],
)
def test_a_record_differing_on_an_identifying_field_is_not_the_actions(change, field):
    identity = Identity.of(payment("FIELD-1"))
    assert identity is not None
    found = _sort(identity, {**record("FIELD-1", record_id="68e4cb120da90297b3be0001"), **change})
    assert found.found is None
    if field is None:
        assert found.unfiltered and not found.absent
    else:
        assert found.conflict and identity.differences(found.different[0]) == [field]


def test_equal_values_in_other_spellings_match():
    identity = Identity.of(payment("FIELD-2"))
    assert identity is not None
    same = {
        **record("FIELD-2", record_id="68e4cb120da90297b3be0002"),
        "amount": 250.0,  # a JSON double
        "bank_transaction_date": "2025-10-07T08:15:30+00:00",  # ISO 8601
    }
    assert _sort(identity, same).found == same


def test_fields_a_record_does_not_carry_are_not_held_against_it_but_the_reference_is():
    identity = Identity.of(payment("FIELD-3"))
    assert identity is not None
    bare = {"_id": "68e4cb120da90297b3be0003", "creditor_payment_reference": "FIELD-3"}
    assert _sort(identity, bare).found == bare
    anonymous = {"_id": "68e4cb120da90297b3be0004", "creditor": CREDITOR, "amount": 250}  # no reference
    assert _sort(identity, anonymous).unfiltered


def test_an_empty_answer_is_absent_only_from_a_server_that_counts_nothing_more():
    identity = Identity.of(payment("FIELD-4"))
    assert identity is not None
    assert _sort(identity).absent
    assert not _sort(identity, total=1).absent  # it says one exists, but did not show it
    two = [record("FIELD-4", record_id=f"68e4cb120da90297b3be00{n:02x}") for n in (5, 6)]
    assert _sort(identity, *two).conflict
    assert _sort(identity, two[0], total=2).conflict  # one shown, two counted


def test_an_answer_that_is_not_a_list_is_refused():
    identity = Identity.of(payment("FIELD-5"))
    assert identity is not None
    with pytest.raises(ValueError):
        identity.sort({"_id": "68e4cb120da90297b3be0007"})


def test_the_identity_of_each_kind():
    crediting = CreditorCrediting(
        case="68e4c40d93ee14723d28fa95", amount=Decimal("5"), currency="SEK", creditor_reference="CR-9"
    )
    identity = Identity.of(crediting)
    assert identity is not None and identity.key == "creditor_reference" and identity.reference == "CR-9"
    assert identity.differences({"creditor_reference": "CR-9", "amount": 6}) == ["amount"]
    cancellation = CreditorCancellation(creditor=CREDITOR, case="68e4c40d93ee14723d28fa95")
    identity = Identity.of(cancellation)
    assert (
        identity is not None
        and identity.key == "case"
        and identity.where == {"creditor": CREDITOR, "case": cancellation.case}
    )
    assert Identity.of(CreditorCancellation(creditor=CREDITOR, invoice_number="INV-1")) is None  # nothing to find
    assert Identity.of(payment(None)) is None


def test_a_payment_by_invoice_number_matches_the_cases_invoice_number():
    action = payment("INV-PAY")
    by_invoice = type(action)(
        creditor=CREDITOR,
        invoice_number="INV-2025-003",
        amount=Decimal("10"),
        currency="SEK",
        bank_transaction_date=WHEN + timedelta(microseconds=250),  # sent as whole seconds
        creditor_payment_reference="INV-PAY",
    )
    identity = Identity.of(by_invoice)
    assert identity is not None
    stored = {
        "_id": "68e4cb120da90297b3be0008",
        "creditor": CREDITOR,
        "case": "68e4c40d93ee14723d28fa95",
        "case_invoice_number": "INV-2025-003",
        "amount": 10,
        "currency": "SEK",
        "bank_transaction_date": "Tue, 07 Oct 2025 08:15:30 GMT",
        "creditor_payment_reference": "INV-PAY",
    }
    assert _sort(identity, stored).found == stored
    assert identity.differences({**stored, "case_invoice_number": "INV-2025-004"}) == ["invoice_number"]


# -- `find(action)`: the same rule, for reconciling an unknown outcome later ----------------------------


async def test_find_returns_only_the_actions_own_record(fake, creditor, case_id, client_for):
    other_case = fake.add_case(creditor.id, capital=Decimal("1000"))
    async with client_for() as amili:
        mine = await amili.execute(fake_payment(creditor, case_id, "FIND-1"))
        await amili.execute(fake_payment(creditor, other_case, "FIND-2"))
        found = await amili.creditor_payments.find(fake_payment(creditor, case_id, "FIND-1"))
        missing = await amili.creditor_payments.find(fake_payment(creditor, case_id, "FIND-NEVER"))
        with pytest.raises(ReferenceConflictError) as caught:  # FIND-2 is held, but by another case's payment
            await amili.creditor_payments.find(fake_payment(creditor, case_id, "FIND-2"))
        with pytest.raises(ValidationError):
            await amili.creditor_payments.find(fake_payment(creditor, case_id, None))
    assert found is not None and found.id == mine.id and found.provenance == "found"
    assert missing is None
    assert caught.value.reference == "FIND-2" and len(caught.value.records) == 1


async def test_find_on_a_raw_server_ignoring_where_does_not_claim_absence():
    async with LoopbackAmili(ignore_where=True, records=[record("FIND-OTHER")]) as server, client(server) as amili:
        with pytest.raises(OutcomeUnknownError) as caught:
            await amili.creditor_payments.find(payment("FIND-ABSENT"))
        assert caught.value.reference == "FIND-ABSENT"
        found = await amili.creditor_payments.find(payment("FIND-OTHER"))  # on the unfiltered page: matched
    assert found is not None and found.id == server.stored("FIND-OTHER")[0]["_id"]
