"""`AmiliClient`: a blocking facade over `AsyncAmiliClient`, a convenience for scripts and notebooks.

```python
with AmiliClient(auth=ApiCodeJwtAuth(api_code=..., private_key=pem)) as amili:
    receipt = amili.creditor_payments.create(...)
    for case in amili.cases.list(where={"state": "open"}):
        ...
```

It runs one `AsyncAmiliClient` on an event loop in a background thread (an anyio blocking portal) and
waits for each call, so errors, retries, token handling and validation are exactly the async client's.
Because the work runs on that thread, it also works where the calling thread already runs an event loop
(a Jupyter cell, IPython's autoawait, a blocking library called from async code): the caller's loop waits,
like it would for any blocking call. For services, use `AsyncAmiliClient`: it is the typed, primary API and
never blocks a loop. The resources here are thin proxies, typed `Any` at the proxy boundary.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar, overload

import anyio
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal

from .bulk import Outcome, StopOn
from .client import AsyncAmiliClient
from .errors import ClientStateError, ConfigurationError
from .models.actions import (
    Action,
    CreditorCancellation,
    CreditorCrediting,
    CreditorPayment,
    RespiteGrant,
)
from .models.receipts import CancellationReceipt, CreditingReceipt, PaymentReceipt, Receipt, RespiteReceipt
from .resources._base import AsyncPager
from .retry import RetryPolicy

__all__ = ["AmiliClient", "SyncPager"]

T = TypeVar("T")
_BACKENDS = ("asyncio", "trio")


class AmiliClient:
    """A blocking client for Amili's creditor API: a convenience for scripts and notebooks.

    Takes the same arguments as `AsyncAmiliClient` (plus `backend`, the anyio backend of its private
    event loop) and offers the same resources and methods, minus the `await`. Missing credentials or a bad
    base URL raise `ConfigurationError` right here; the background event loop thread starts on first use
    (or on `with`) and stops on `close()`. Safe to share between threads.

    It works in a thread that already runs an event loop too (Jupyter, IPython, a sync library called from
    async code): the calls run on the client's own thread while the calling thread waits, blocking its loop
    for that long. For services use `AsyncAmiliClient`: it is the typed primary API and never blocks a loop;
    the resource proxies here are typed `Any`.
    """

    def __init__(self, *args: Any, backend: str = "asyncio", **kwargs: Any) -> None:
        if backend not in _BACKENDS:
            raise ConfigurationError(f"backend must be one of {', '.join(_BACKENDS)}, got {backend!r}")
        # Building the async client does no I/O and binds no loop: it is entered inside the portal later.
        self._client = AsyncAmiliClient(*args, **kwargs)
        self._backend = backend
        self._lock = threading.Lock()
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._closed = False
        self.creditor_payments: Any = _SyncResource(self, self._client.creditor_payments)
        self.creditor_creditings: Any = _SyncResource(self, self._client.creditor_creditings)
        self.creditor_cancellations: Any = _SyncResource(self, self._client.creditor_cancellations)
        self.cases: Any = _SyncResource(self, self._client.cases)
        self.respite: Any = _SyncResource(self, self._client.respite)

    def __repr__(self) -> str:
        return f"AmiliClient(base_url={self.base_url!r}, backend={self._backend!r})"

    @property
    def base_url(self) -> str:
        return self._client.base_url

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._client.retry_policy

    @property
    def token_requests(self) -> int:
        """How many token requests the underlying client has sent."""
        return self._client.token_requests

    # -- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> AmiliClient:
        self._running_portal()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the async client's connections, then stop the event loop thread. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            portal, self._portal = self._portal, None
            portal_cm, self._portal_cm = self._portal_cm, None
        if portal is None or portal_cm is None:
            return
        try:
            portal.call(self._client.aclose)
        finally:
            with contextlib.suppress(RuntimeError):
                # Cancel whatever is still running there (an abandoned `execute_many`, a call from a thread
                # that lost the race with close()), rather than wait for it forever.
                portal.call(portal.stop, True)
            portal_cm.__exit__(None, None, None)  # joins the loop's thread

    def _running_portal(self) -> BlockingPortal:
        # No check for an event loop running in the calling thread: the work runs on the portal's own loop,
        # so a running loop here (Jupyter's, a caller's asyncio.run) only waits, it is never re-entered.
        with self._lock:
            if self._closed:
                raise ClientStateError("the client is closed")
            if self._portal is None:
                portal_cm = start_blocking_portal(self._backend)
                portal = portal_cm.__enter__()
                try:
                    portal.call(self._client.__aenter__)  # binds the async client to the portal's loop
                except BaseException:
                    portal_cm.__exit__(None, None, None)
                    raise
                self._portal_cm, self._portal = portal_cm, portal
            return self._portal

    def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `func(*args, **kwargs)` on the portal's loop (awaiting it if it is async) and wait for it."""
        portal = self._running_portal()
        future = portal.start_task_soon(functools.partial(func, *args, **kwargs))
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._closed:
                raise ClientStateError("the client was closed while this call was running") from None
            raise
        except BaseException:
            future.cancel()  # Ctrl-C while waiting: cancel the call on the loop too (no-op once done)
            raise

    # -- actions ---------------------------------------------------------------------------------------

    @overload
    def execute(self, action: CreditorPayment) -> PaymentReceipt: ...
    @overload
    def execute(self, action: CreditorCrediting) -> CreditingReceipt: ...
    @overload
    def execute(self, action: CreditorCancellation) -> CancellationReceipt: ...
    @overload
    def execute(self, action: RespiteGrant) -> RespiteReceipt: ...

    def execute(self, action: Action) -> Receipt | RespiteReceipt:
        """Run one action (see `AsyncAmiliClient.execute`)."""
        result: Receipt | RespiteReceipt = self._call(self._client.execute, action)
        return result

    def execute_many(
        self, actions: Iterable[Action], *, concurrency: int = 16, stop_on: StopOn | None = None
    ) -> Generator[Outcome[Action], None, None]:
        """Run many actions, at most `concurrency` at once; one `Outcome` per action, in completion order.

        Outcomes stream as they complete (nothing is collected up front). `actions` is iterated on the
        background event loop thread, so it must not call this client. Stop early with `.close()` on the
        returned iterator (or by leaving a `for` loop): the actions still in flight are cancelled.
        """
        return self._stream(lambda: self._client.execute_many(actions, concurrency=concurrency, stop_on=stop_on))

    def _stream(self, open_stream: Callable[[], AsyncIterator[T]]) -> Generator[T, None, None]:
        """Drive an async iterator in one task on the loop (it may hold a task group), handing items over."""
        portal = self._running_portal()
        send, receive = anyio.create_memory_object_stream[T](0)

        async def drive(*, task_status: TaskStatus[anyio.CancelScope] = anyio.TASK_STATUS_IGNORED) -> None:
            with anyio.CancelScope() as scope:
                task_status.started(scope)
                async with send:
                    items = open_stream()
                    try:
                        async for item in items:
                            await send.send(item)
                    finally:
                        # Close it in this task: an async generator holding a task group must not be
                        # finalised from another task (or by the garbage collector).
                        try:
                            await _aclose(items)
                        except BaseException as exc:
                            # `run_many` closed mid-run lets its task group re-raise the GeneratorExit in a
                            # group; its workers are done by then. Anything else is real.
                            if not _only(exc, (GeneratorExit, anyio.get_cancelled_exc_class())):
                                raise

        future, scope = portal.start_task(drive)
        finished = False
        try:
            while True:
                try:
                    item = self._call(receive.receive)
                except anyio.EndOfStream:
                    finished = True
                    break
                yield item
        finally:
            if not finished:
                with contextlib.suppress(Exception):
                    portal.call(scope.cancel)
                concurrent.futures.wait([future])  # the actions in flight are cancelled before we return
            try:
                portal.call(receive.aclose)
            except RuntimeError:  # the loop is gone (the client was closed): nothing can race us now
                receive.close()
        future.result()  # an error raised by the run itself (a bad `concurrency`, a failing `actions`)


async def _aclose(iterator: object) -> None:
    """Close an async generator (any async iterator with an `aclose`)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def _only(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether `exc` (or every leaf of an exception group) is one of `kinds`."""
    inner: tuple[BaseException, ...] | None = getattr(exc, "exceptions", None)
    if inner is None:
        return isinstance(exc, kinds)
    return all(_only(e, kinds) for e in inner)


class SyncPager(Generic[T]):
    """`for item in pager`: every matching document, fetched page by page as you iterate.

    `pager.pages()` yields whole pages (lists). Nothing is fetched until iteration starts, and each page is
    fetched only when the previous one has been used up.
    """

    def __init__(self, client: AmiliClient, pager: AsyncPager[T]) -> None:
        self._client = client
        self._pager = pager

    def __iter__(self) -> Iterator[T]:
        for page in self.pages():  # the async pager already cuts the last page to the limit
            yield from page

    def pages(self) -> Generator[list[T], None, None]:
        pages = self._pager.pages()
        while True:
            try:
                page: list[T] = self._client._call(anext, pages)
            except StopAsyncIteration:
                return
            try:
                yield page
            except BaseException:  # closed early (GeneratorExit) or an error thrown in: stop the async pager
                with contextlib.suppress(Exception):  # the client may be closed already
                    self._client._call(_aclose, pages)
                raise


class _SyncResource:
    """A resource of the async client with its coroutine methods turned into blocking calls.

    Every method runs on the client's event loop thread; a `list(...)` pager comes back as a `SyncPager`.
    """

    def __init__(self, client: AmiliClient, resource: object) -> None:
        self._client = client
        self._resource = resource

    def __repr__(self) -> str:
        return f"<sync {type(self._resource).__name__}>"

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *(n for n in dir(self._resource) if not n.startswith("_"))})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._resource, name)
        if not callable(attr):
            return attr
        client = self._client

        @functools.wraps(attr)
        def blocking(*args: Any, **kwargs: Any) -> Any:
            result = client._call(attr, *args, **kwargs)
            if isinstance(result, AsyncPager):
                return SyncPager(client, result)
            return result

        return blocking
