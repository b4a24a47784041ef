"""Money writes under transport and server faults: never applied twice, never silently lost (§2.2, §5.3 A/B).

In-memory Amili, in-process transport. A write with a business reference is reconciled by a `GET ?where=`
look-up after an ambiguous failure; without one the caller gets `OutcomeUnknownError`.
"""

from __future__ import annotations

import ssl

import httpx
import pytest
from reliability_helpers import (
    PAYMENTS,
    cancellation,
    crediting,
    lookups,
    payment,
    sent,
    stored_with_reference,
)

from amili_async import RetryPolicy
from amili_async.errors import OutcomeUnknownError, ServerError, TransportError
from amili_async.models.receipts import CancellationReceipt, CreditingReceipt, PaymentReceipt
from amili_async.testing import Fault

# -- dropped connections -------------------------------------------------------------------------------


async def test_drop_after_commit_on_a_referenced_payment_returns_the_stored_record(fake, creditor, case_id, client_for):
    fake.inject(Fault(kind="drop_after_commit", path=PAYMENTS, method="POST", times=1))
    async with client_for() as amili:
        receipt = await amili.execute(payment(creditor, case_id, "PAY-DROP-AFTER"))

    stored = stored_with_reference(fake, "PAY-DROP-AFTER")
    assert len(stored) == 1  # no duplicate
    assert isinstance(receipt, PaymentReceipt)
    assert receipt.id == stored[0]["_id"]
    assert receipt.creditor_payment_reference == "PAY-DROP-AFTER"
    assert len(sent(fake, "POST", PAYMENTS)) == 1  # found by the look-up, never sent again
    assert len(lookups(fake)) == 1


async def test_drop_before_commit_on_a_referenced_payment_is_resent_and_applied_once(
    fake, creditor, case_id, client_for
):
    fake.inject(Fault(kind="drop_before_commit", path=PAYMENTS, method="POST", times=1))
    async with client_for() as amili:
        receipt = await amili.execute(payment(creditor, case_id, "PAY-DROP-BEFORE"))

    stored = stored_with_reference(fake, "PAY-DROP-BEFORE")
    assert [p["_id"] for p in stored] == [receipt.id]
    posts = sent(fake, "POST", PAYMENTS)
    assert [p.fault for p in posts] == ["drop_before_commit", None]  # proven absent, then sent once more
    assert len(lookups(fake)) == 2  # absent: not found, and not found again after the settle window


async def test_drop_after_commit_without_reference_is_outcome_unknown_and_was_applied(
    fake, creditor, case_id, client_for
):
    fake.inject(Fault(kind="drop_after_commit", path=PAYMENTS, method="POST", times=1))
    action = payment(creditor, case_id, reference=None)
    async with client_for() as amili:
        with pytest.raises(OutcomeUnknownError) as caught:
            await amili.execute(action)

    err = caught.value
    assert err.action is action
    assert err.reference is None
    assert err.attempts == 1
    assert len(sent(fake, "POST", PAYMENTS)) == 1  # not retried blindly
    assert len(fake.payments) == 1  # ...and in truth it was applied


async def test_drop_before_commit_without_reference_is_outcome_unknown_and_was_not_applied(
    fake, creditor, case_id, client_for
):
    fake.inject(Fault(kind="drop_before_commit", path=PAYMENTS, method="POST", times=1))
    action = payment(creditor, case_id, reference=None)
    async with client_for() as amili:
        with pytest.raises(OutcomeUnknownError) as caught:
            await amili.execute(action)

    assert caught.value.action is action
    assert caught.value.reference is None
    assert caught.value.attempts == 1
    assert len(sent(fake, "POST", PAYMENTS)) == 1
    assert fake.payments == []  # the SDK cannot know this; the fake can


# -- never sent / never retried ------------------------------------------------------------------------


async def test_connect_error_on_a_post_is_retried_and_applied_once(fake, creditor, case_id, client_for):
    fake.inject(Fault(kind="connect_error", path=PAYMENTS, method="POST", times=1))
    async with client_for() as amili:
        receipt = await amili.execute(payment(creditor, case_id, reference=None))

    assert [p["_id"] for p in fake.payments] == [receipt.id]
    assert [p.fault for p in sent(fake, "POST", PAYMENTS)] == ["connect_error", None]
    assert lookups(fake) == []  # nothing to reconcile: provably never sent


class _RaisingTransport(httpx.AsyncBaseTransport):
    """Answers the token endpoint, raises `error()` for everything else, and counts."""

    def __init__(self, error):
        self.error = error
        self.api_calls = 0

    async def handle_async_request(self, request):
        if request.url.path.startswith("/authenticates"):
            return httpx.Response(200, json={"token": "tok-raising-1", "expires_in": 3600})
        self.api_calls += 1
        raise self.error()


def _certificate_error():
    exc = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    exc.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    return exc


@pytest.mark.parametrize(
    "error",
    [
        _certificate_error,
        lambda: httpx.LocalProtocolError("Illegal header value"),
        lambda: httpx.UnsupportedProtocol("Request URL has an unsupported protocol"),
        lambda: httpx.ProxyError("proxy refused"),
    ],
    ids=["tls-certificate", "local-protocol", "unsupported-protocol", "proxy"],
)
async def test_tls_and_protocol_class_errors_are_never_retried(fake, creditor, case_id, client_for, error):
    transport = _RaisingTransport(error)
    async with client_for(transport=transport, retry=RetryPolicy.no_delay(max_attempts=5)) as amili:
        with pytest.raises(TransportError) as caught:
            await amili.execute(payment(creditor, case_id, "PAY-TLS"))
        with pytest.raises(TransportError):
            await amili.cases.get(case_id)

    assert not isinstance(caught.value, OutcomeUnknownError)
    assert caught.value.reference == "PAY-TLS"
    assert transport.api_calls == 2  # one per call: no retry, no look-up


# -- 5xx with an HTML page on writes -------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_html_5xx_after_commit_on_a_referenced_payment_is_reconciled_to_the_record(
    fake, creditor, case_id, client_for, status
):
    fake.inject(Fault(kind="server_error", status=status, commit=True, path=PAYMENTS, method="POST", times=1))
    async with client_for() as amili:
        receipt = await amili.execute(payment(creditor, case_id, f"PAY-{status}-C"))

    stored = stored_with_reference(fake, f"PAY-{status}-C")
    assert [p["_id"] for p in stored] == [receipt.id]
    assert len(sent(fake, "POST", PAYMENTS)) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_html_5xx_before_commit_on_a_referenced_payment_is_resent_and_applied_once(
    fake, creditor, case_id, client_for, status
):
    fake.inject(Fault(kind="server_error", status=status, commit=False, path=PAYMENTS, method="POST", times=1))
    async with client_for() as amili:
        receipt = await amili.execute(payment(creditor, case_id, f"PAY-{status}-N"))

    stored = stored_with_reference(fake, f"PAY-{status}-N")
    assert [p["_id"] for p in stored] == [receipt.id]
    assert [p.status for p in sent(fake, "POST", PAYMENTS)] == [status, 201]


async def test_html_5xx_on_an_unreferenced_payment_is_outcome_unknown_with_the_server_error_as_cause(
    fake, creditor, case_id, client_for
):
    fake.inject(Fault(kind="server_error", status=502, commit=True, path=PAYMENTS, method="POST", times=1))
    async with client_for() as amili:
        with pytest.raises(OutcomeUnknownError) as caught:
            await amili.execute(payment(creditor, case_id, reference=None))

    assert isinstance(caught.value.__cause__, ServerError)
    assert caught.value.__cause__.status_code == 502
    assert len(fake.payments) == 1 and len(sent(fake, "POST", PAYMENTS)) == 1


@pytest.mark.parametrize("commit", [True, False], ids=["committed", "not-committed"])
async def test_html_5xx_on_a_crediting_with_creditor_reference_is_reconciled(
    fake, creditor, case_id, client_for, commit
):
    path = "/creditor--creditings"
    fake.inject(Fault(kind="server_error", status=500, commit=commit, path=path, method="POST", times=1))
    async with client_for() as amili:
        receipt = await amili.execute(crediting(creditor, case_id, "CRED-500"))

    stored = [c for c in fake.creditings if c.get("creditor_reference") == "CRED-500"]
    assert isinstance(receipt, CreditingReceipt)
    assert [c["_id"] for c in stored] == [receipt.id]
    assert len(sent(fake, "POST", path)) == (1 if commit else 2)
    assert len(lookups(fake, path)) == (1 if commit else 2)  # absence is confirmed after the settle window


@pytest.mark.parametrize("commit", [True, False], ids=["committed", "not-committed"])
async def test_html_5xx_on_a_cancellation_is_reconciled_via_the_cases_cancellation(
    fake, creditor, case_id, client_for, commit
):
    path = "/creditor--cancellations"
    fake.inject(Fault(kind="server_error", status=503, commit=commit, path=path, method="POST", times=1))
    async with client_for() as amili:
        receipt = await amili.execute(cancellation(creditor, case_id))

    assert isinstance(receipt, CancellationReceipt)
    assert [c["_id"] for c in fake.cancellations] == [receipt.id]  # exactly one cancellation of the case
    assert fake.get_case(case_id)["closed"] is True
    assert len(sent(fake, "POST", path)) == (1 if commit else 2)
    found = lookups(fake, path)
    assert len(found) == (1 if commit else 2)  # absence is confirmed after the settle window
    assert all(case_id in lookup.query["where"] for lookup in found)


# -- 201 with an unreadable body -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["malformed_json", "empty_body"])
async def test_unreadable_201_on_a_referenced_payment_is_reconciled_to_the_stored_record(
    fake, creditor, case_id, client_for, kind
):
    fake.inject(Fault(kind=kind, path=PAYMENTS, method="POST", times=1))
    async with client_for() as amili:
        receipt = await amili.execute(payment(creditor, case_id, f"PAY-{kind}"))

    stored = stored_with_reference(fake, f"PAY-{kind}")
    assert [p["_id"] for p in stored] == [receipt.id]
    assert receipt.amount == stored[0]["amount"]
    assert len(sent(fake, "POST", PAYMENTS)) == 1


# -- stalled bodies and deadlines ----------------------------------------------------------------------


async def test_a_stalled_body_on_a_referenced_payment_ends_at_the_read_timeout_and_is_reconciled(
    fake, creditor, case_id, client_for
):
    fake.inject(Fault(kind="stall_body", path=PAYMENTS, method="POST", times=1))
    async with client_for(timeout=httpx.Timeout(0.2)) as amili:
        receipt = await amili.execute(payment(creditor, case_id, "PAY-STALL"))

    assert [p["_id"] for p in stored_with_reference(fake, "PAY-STALL")] == [receipt.id]
    assert len(sent(fake, "POST", PAYMENTS)) == 1


async def test_the_deadline_ends_a_slow_unreferenced_write_as_outcome_unknown(fake, creditor, case_id, client_for):
    fake.inject(Fault(kind="latency", seconds=30, path=PAYMENTS, method="POST"))
    action = payment(creditor, case_id, reference=None)
    async with client_for(retry=RetryPolicy.no_delay(deadline=0.2)) as amili:
        with pytest.raises(OutcomeUnknownError) as caught:
            await amili.execute(action)

    assert caught.value.action is action
    assert caught.value.reference is None
    assert caught.value.attempts == 1
    assert len(sent(fake, "POST", PAYMENTS)) == 1
