"""The examples run as documented (`python examples/<file>.py`, no network), and the FastAPI app behaves."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from amili_async import AsyncAmiliClient, RetryPolicy
from amili_async.testing import FakeAmili, FakeCreditor, Fault

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # FastAPI/pydantic resolve the (string) annotations through it
    spec.loader.exec_module(module)
    return module


def run_example(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=EXAMPLES.parent, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- as scripts ------------------------------------------------------------------------------------------


def test_fastapi_app_script() -> None:
    pytest.importorskip("fastapi", reason="fastapi is in the test extra")
    out = run_example("examples/fastapi_app.py")
    assert out.startswith("201 ")
    assert "'settled_amount': '250.00'" in out
    assert "payments recorded by Amili: 1; capital left on the case: 750.00" in out


def test_trio_script() -> None:
    pytest.importorskip("trio", reason="trio is in the test extra")
    out = run_example("examples/trio_script.py")
    assert "completed, settled 250.00 SEK" in out
    assert "750.00 SEK left" in out


def test_bulk_payments_script() -> None:
    out = run_example("examples/bulk_payments.py", "--concurrency", "4")
    assert "payments.csv: 11 payments sent" in out
    assert "settled    4875.75 SEK" in out
    assert "line 8 not sent: amount: must have at most two decimals" in out
    assert "in-memory Amili recorded 11 payments" in out


# -- bulk, imported --------------------------------------------------------------------------------------


async def test_bulk_payments_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bulk = load("bulk_payments")
    csv_file = tmp_path / "export.csv"
    csv_file.write_text(
        "invoice_number,amount,currency,bank_transaction_date,reference\n"
        "INV-1,400.00,SEK,2025-10-01,R-1\n"
        "INV-1,700.00,SEK,2025-10-02,R-2\n"
        "INV-2,12.50,SEK,2025-10-02,R-3\n"
        "INV-3,1.5e3,SEK,not a date,R-4\n"
        "INV-4,-5,SEK,2025-10-02,R-5\n",
        encoding="utf-8",
    )
    summary = await bulk.main([str(csv_file), "--concurrency", "1"])
    assert summary["sent"] == 3
    assert summary["rejected"] == 2
    # 400 + 600 (of 700: an overpayment, settled up to what remained) + 12.50
    assert summary["settled"] == Decimal("1012.50")
    assert summary["statuses"] == {"completed": 2, "warning": 1}
    out = capsys.readouterr().out
    assert "R-2: warning: creditor_payment.overpayment" in out
    assert "line 5 not sent" in out and "line 6 not sent" in out


# -- the FastAPI app, driven through httpx.ASGITransport ------------------------------------------------


@pytest.fixture
def fastapi_example() -> ModuleType:
    pytest.importorskip("fastapi", reason="fastapi is in the test extra")
    return load("fastapi_app")


class Bound:
    """A FakeAmili with a creditor and a case, and a counting client factory bound to it."""

    def __init__(self) -> None:
        self.fake = FakeAmili(seed=0)
        self.creditor: FakeCreditor = self.fake.add_creditor()
        self.case_id = self.fake.add_case(creditor=self.creditor.id, capital=Decimal("1000.00"))
        self.clients: list[AsyncAmiliClient] = []

    def factory(self) -> AsyncAmiliClient:
        client = self.fake.client(self.creditor, retry=RetryPolicy.no_delay())
        self.clients.append(client)
        return client

    def payment(self, **changes: Any) -> dict[str, Any]:
        body = {
            "creditor": self.creditor.id,
            "case": self.case_id,
            "amount": "250.00",
            "bank_transaction_date": "2025-10-07T08:15:30+02:00",
            "reference": "PAY-1",
        }
        body.update(changes)
        return body


@pytest.fixture
def bound() -> Bound:
    return Bound()


@pytest.fixture
async def http(fastapi_example: ModuleType, bound: Bound) -> AsyncIterator[httpx.AsyncClient]:
    app = fastapi_example.create_app(bound.factory)
    async with app.router.lifespan_context(app):  # ASGITransport does not run the lifespan itself
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    # The lifespan closed the shared client.
    from amili_async import ClientStateError

    with pytest.raises(ClientStateError):
        await bound.clients[0].cases.get(bound.case_id)


async def test_post_payment_registers_it(http: httpx.AsyncClient, bound: Bound) -> None:
    answer = await http.post("/payments", json=bound.payment())
    assert answer.status_code == 201, answer.text
    body = answer.json()
    [payment] = bound.fake.payments
    assert body["id"] == payment["_id"]
    assert body["status"] == "completed"
    assert body["settled_amount"] == "250.00"
    assert body["reference"] == "PAY-1"
    assert payment["amount"] == Decimal("250.00")
    assert payment["creditor_payment_reference"] == "PAY-1"
    assert payment["bank_transaction_date"] == "Tue, 07 Oct 2025 06:15:30 GMT"


async def test_one_client_for_all_requests(http: httpx.AsyncClient, bound: Bound) -> None:
    for n in range(5):
        answer = await http.post("/payments", json=bound.payment(amount="10.00", reference=f"PAY-{n}"))
        assert answer.status_code == 201
    assert len(bound.clients) == 1
    assert bound.clients[0].token_requests == 1
    assert len(bound.fake.payments) == 5


async def test_sdk_validation_becomes_422(http: httpx.AsyncClient, bound: Bound) -> None:
    answer = await http.post("/payments", json=bound.payment(case="not-an-object-id"))
    assert answer.status_code == 422
    assert answer.json()["error"] == "ValidationError"
    assert "case" in answer.json()["issues"]
    assert bound.fake.payments == []


async def test_lost_answer_is_reconciled(http: httpx.AsyncClient, bound: Bound) -> None:
    bound.fake.inject(Fault("drop_after_commit", path="/creditor--payments", method="POST", times=1))
    answer = await http.post("/payments", json=bound.payment())
    assert answer.status_code == 201
    assert [p["_id"] for p in bound.fake.payments] == [answer.json()["id"]]


async def test_unknown_outcome_is_504_with_the_reference(http: httpx.AsyncClient, bound: Bound) -> None:
    # The write is applied but answered 502, and every lookup fails too: nobody can tell.
    bound.fake.inject(Fault("server_error", path="/creditor--payments", status=502, commit=True))
    answer = await http.post("/payments", json=bound.payment(reference="PAY-LOST"))
    assert answer.status_code == 504
    assert answer.json() == {
        "error": "OutcomeUnknownError",
        "message": answer.json()["message"],
        "reference": "PAY-LOST",
    }


def test_module_level_app_needs_no_credentials(fastapi_example: ModuleType) -> None:
    # `uvicorn examples.fastapi_app:app` works out of the box: the in-memory Amili stands in.
    assert fastapi_example.app.title == "payments"
    client = fastapi_example.default_client_factory()
    assert client.base_url == FakeAmili.BASE_URL
