"""`AmiliClient` in a real Jupyter kernel, where every cell runs inside the kernel's asyncio event loop.

The kernel is a separate process (ipykernel, started by jupyter_client) speaking ZeroMQ over loopback; the
cell uses the blocking client against the in-memory Amili, exactly as a notebook user would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent

CELL = """
import asyncio
from datetime import datetime, timezone
from decimal import Decimal

from amili_async import AmiliClient, ApiCodeJwtAuth
from amili_async.testing import FakeAmili

loop = asyncio.get_running_loop()  # a notebook cell runs inside the kernel's event loop: this does not raise
fake = FakeAmili(seed=0)
creditor = fake.add_creditor()
case_id = fake.add_case(creditor=creditor.id, capital=Decimal("1000.00"))
with AmiliClient(
    auth=ApiCodeJwtAuth(api_code=creditor.api_code, private_key=creditor.private_key_pem),
    base_url=fake.BASE_URL,
    transport=fake.transport(),
) as amili:
    receipt = amili.creditor_payments.create(
        creditor=creditor.id, case=case_id, amount=Decimal("250.00"), currency="SEK",
        bank_transaction_date=datetime(2025, 10, 7, tzinfo=timezone.utc),
        creditor_payment_reference="NB-1",
    )
    case = amili.cases.get(case_id)
print(receipt.status, case.local_remaining_capital_amount == Decimal("750"), len(fake.payments))
print("loop still running:", loop.is_running())
"""


@pytest.fixture
def kernel() -> Iterator[Any]:
    manager, client = jupyter_client.manager.start_new_kernel(kernel_name="python3", startup_timeout=60, cwd=str(ROOT))
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_blocking_client_in_a_notebook_cell(kernel: Any) -> None:
    output: list[str] = []
    errors: list[str] = []

    def collect(message: dict[str, Any]) -> None:
        content = message["content"]
        if message["msg_type"] == "stream":
            output.append(content["text"])
        elif message["msg_type"] == "error":
            errors.append(f"{content['ename']}: {content['evalue']}")

    reply = kernel.execute_interactive(CELL, timeout=60, output_hook=collect)
    assert reply["content"]["status"] == "ok", errors
    lines = "".join(output).splitlines()
    assert lines[0] == "completed True 1"  # applied once; the in-memory Amili (in the kernel) stored one payment
    assert lines[1] == "loop still running: True"
