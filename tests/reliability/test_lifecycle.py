"""A client's event loop and process: a clear error on another loop, fresh sockets after fork (§3.1, §5.3 E48)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from typing import Any

import anyio.to_thread
import pytest
from reliability_helpers import payment

from amili_async import RetryPolicy
from amili_async.errors import ClientStateError


def test_a_client_used_from_a_second_asyncio_run_raises_client_state_error(fake, creditor, case_id):
    # Many rounds: the loop of a finished asyncio.run is freed, and a new loop often lands at its address.
    for _ in range(50):
        amili = fake.client(creditor, retry=RetryPolicy.no_delay())
        assert asyncio.run(amili.cases.get(case_id)).id == case_id
        with pytest.raises(ClientStateError, match="another event loop"):
            asyncio.run(amili.cases.get(case_id))


def _in_forked_child(amili: Any, case_id: str, creditor_id: str, pipe: Any) -> None:
    """Runs in the child: the inherited client must build its own connections, on its own loop."""
    try:
        inherited = amili._runtime

        async def main() -> dict[str, Any]:
            case = await amili.cases.get(case_id)
            receipt = await amili.execute(payment(creditor_id, case_id, "PAY-CHILD"))
            runtime = amili._runtime
            return {
                "case": case.id,
                "receipt": receipt.id,
                "fresh_runtime": runtime is not inherited,
                "fresh_transport": runtime.transport is not inherited.transport,
                "pid_is_child": runtime.pid == os.getpid(),
            }

        pipe.send(("ok", asyncio.run(main())))
    except BaseException as exc:
        pipe.send(("error", repr(exc)))
    finally:
        pipe.close()


async def test_a_client_inherited_across_fork_reconnects_in_the_child_and_still_works_in_the_parent(
    fake, creditor, case_id, loopback
):
    async with fake.client(creditor, base_url=loopback.base_url, transport=None, retry=RetryPolicy.no_delay()) as amili:
        await amili.execute(payment(creditor, case_id, "PAY-PARENT-1"))
        runtime = amili._bind()
        tokens_before = fake.tokens_issued

        context = multiprocessing.get_context("fork")
        ours, theirs = context.Pipe(duplex=False)
        child = context.Process(target=_in_forked_child, args=(amili, case_id, creditor.id, theirs))
        child.start()
        theirs.close()
        # The loopback server runs on this loop: wait for the child without blocking it.
        assert await anyio.to_thread.run_sync(ours.poll, 60), "the child did not answer"
        status, result = ours.recv()
        await anyio.to_thread.run_sync(child.join, 60)

        receipt = await amili.execute(payment(creditor, case_id, "PAY-PARENT-2"))  # the parent's pool is intact
        assert amili._bind() is runtime

    assert status == "ok", result
    assert result == {
        "case": case_id,
        "receipt": result["receipt"],
        "fresh_runtime": True,
        "fresh_transport": True,
        "pid_is_child": True,
    }
    assert child.exitcode == 0
    references = sorted(p["creditor_payment_reference"] for p in fake.payments)
    assert references == ["PAY-CHILD", "PAY-PARENT-1", "PAY-PARENT-2"]
    assert receipt.id == fake.payments[-1]["_id"]
    assert fake.tokens_issued == tokens_before + 1  # the child's token cache is its own, too
