"""What resources need from the client: the pipeline, typed by a small Protocol (no import of client.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import httpx

from .. import serde
from ..errors import ResponseDecodeError

if TYPE_CHECKING:
    from ..models.actions import Action

T = TypeVar("T")
MAX_PAGE_SIZE = 100


class ApiResponse:
    """An answer read in full: status, headers, raw body, and the decoded JSON once the pipeline decoded it."""

    __slots__ = ("headers", "payload", "raw", "status")

    def __init__(self, status: int, headers: Mapping[str, str], raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw
        self.payload: Any = None

    def json_or_none(self) -> Any:
        if self.payload is not None:
            return self.payload
        if not self.raw:
            return None
        try:
            return serde.loads(self.raw)
        except ValueError:
            return None


class Pipeline(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        write: bool | None = None,
        ok: tuple[int, ...] = (200, 201),
        operation: str = ...,
    ) -> ApiResponse: ...

    async def _execute(self, action: Action, operation: str) -> Any: ...

    def with_options(self, *, timeout: httpx.Timeout | float | None = None) -> Pipeline: ...


def list_params(where: Mapping[str, Any] | None, sort: str | None, max_results: int, page: int) -> dict[str, str]:
    if isinstance(max_results, bool) or not isinstance(max_results, int) or not 1 <= max_results <= MAX_PAGE_SIZE:
        from ..models._validate import fail

        raise fail("max_results", f"must be an int from 1 to {MAX_PAGE_SIZE}, got {max_results!r}")
    params = {"max_results": str(max_results), "page": str(page)}
    if where:
        params["where"] = serde.dumps(where).decode()
    if sort:
        params["sort"] = sort
    return params


class AsyncPager(Generic[T]):
    """`async for item in pager`: every matching document, page after page (Eve `_items` / `_meta`).

    `pager.pages()` yields whole pages (lists) instead. Nothing is fetched until iteration starts.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        path: str,
        cls: type[T],
        *,
        where: Mapping[str, Any] | None = None,
        sort: str | None = None,
        max_results: int = 25,
        limit: int | None = None,
        operation: str = "amili.list",
    ) -> None:
        list_params(where, sort, max_results, 1)  # validate now, before anything is sent
        self._pipeline = pipeline
        self._path = path
        self._cls = cls
        self._where = where
        self._sort = sort
        self._max_results = max_results
        self._limit = limit
        self._operation = operation  # each page is one operation of this name

    def __aiter__(self) -> AsyncIterator[T]:
        return self._items()

    async def _items(self) -> AsyncIterator[T]:
        seen = 0
        async for page in self.pages():
            for item in page:
                if self._limit is not None and seen >= self._limit:
                    return
                seen += 1
                yield item

    async def pages(self) -> AsyncIterator[list[T]]:
        page = 1
        fetched = 0
        while True:
            params = list_params(self._where, self._sort, self._max_results, page)
            response = await self._pipeline.request("GET", self._path, params=params, operation=self._operation)
            payload = response.payload
            items = payload.get("_items") if isinstance(payload, Mapping) else None
            if not isinstance(items, list):
                raise ResponseDecodeError("a list answer without _items", method="GET", path=self._path)
            if not items:
                return
            yield [serde.structure_document(item, self._cls) for item in items]
            fetched += len(items)
            if self._limit is not None and fetched >= self._limit:
                return
            meta = payload.get("_meta")
            total = meta.get("total") if isinstance(meta, Mapping) else None
            if isinstance(total, int) and fetched >= total:
                return
            if len(items) < self._max_results:
                return
            page += 1
