"""Concurrency slots a waiting action can step out of.

`execute_many` gives each running action a `Slot` (one unit of its `concurrency`) through a context variable.
An action that has to wait without talking to Amili — reconciliation waiting out its settle window — calls
`outside_slot()`: the slot goes back to the batch for the wait and is taken again before the action sends
anything more. Outside `execute_many` there is no slot and `outside_slot()` does nothing.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

__all__ = ["Slot", "outside_slot"]


class Slot:
    """One unit of a batch's concurrency, held by one action (at most once at any time)."""

    def __init__(self, semaphore: anyio.Semaphore) -> None:
        self._semaphore = semaphore
        self.held = False

    async def acquire(self) -> None:
        await self._semaphore.acquire()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._semaphore.release()


current: contextvars.ContextVar[Slot | None] = contextvars.ContextVar("amili_async_slot", default=None)


@asynccontextmanager
async def outside_slot() -> AsyncIterator[None]:
    """Give the current action's slot back for the duration of the block, and take it again afterwards."""
    slot = current.get()
    if slot is None or not slot.held:
        yield
        return
    slot.release()
    try:
        yield
    finally:
        await slot.acquire()  # when cancelled here, the slot stays released: `held` says so
