"""What every resource shares: the pager over Eve lists, and the per-call timeout override."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Generic, TypeVar

import httpx

from .. import serde
from .._pipeline import ApiResponse, Pipeline
from ..errors import ResponseDecodeError

__all__ = ["MAX_PAGE_SIZE", "ApiResponse", "AsyncPager", "Timeout", "list_params", "with_timeout"]

T = TypeVar("T")
MAX_PAGE_SIZE = 100
Timeout = httpx.Timeout | float | None


def with_timeout(pipeline: Pipeline, timeout: Timeout) -> Pipeline:
    """The pipeline itself, or a view of it with another timeout for one call."""
    return pipeline if timeout is None else pipeline.with_options(timeout=timeout)


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

    `pager.pages()` yields whole pages (lists) instead, the last one cut to `limit`. Nothing is fetched until
    iteration starts.
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
    ) -> None:
        list_params(where, sort, max_results, 1)  # validate now, before anything is sent
        self._pipeline = pipeline
        self._path = path
        self._cls = cls
        self._where = where
        self._sort = sort
        self._max_results = max_results
        self._limit = limit

    def __aiter__(self) -> AsyncIterator[T]:
        return self._items()

    async def _items(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page:
                yield item

    async def pages(self) -> AsyncIterator[list[T]]:
        page = 1
        fetched = 0
        while True:
            params = list_params(self._where, self._sort, self._max_results, page)
            response = await self._pipeline.request("GET", self._path, params=params)
            payload = response.payload
            items = payload.get("_items") if isinstance(payload, Mapping) else None
            if not isinstance(items, list):
                raise ResponseDecodeError("a list answer without _items", method="GET", path=self._path)
            if not items:
                return
            if self._limit is not None:  # the last page is cut to the limit here, for every consumer
                items = items[: self._limit - fetched]
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
