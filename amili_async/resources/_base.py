"""What every resource shares: the pager over Eve lists, and the per-call timeout override."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Generic, TypeVar

import httpx

from .. import serde
from .._call import ApiResponse
from .._pipeline import Pipeline
from .._redact import describe_query
from ..errors import ResponseDecodeError

__all__ = ["MAX_PAGES", "MAX_PAGE_SIZE", "ApiResponse", "AsyncPager", "Timeout", "list_params", "with_timeout"]

T = TypeVar("T")
MAX_PAGE_SIZE = 100
#: How many pages a pager reads at most unless told otherwise (`max_pages=`): 250,000 documents at the
#: default page size, 1,000,000 at 100 a page. A bound that holds whatever `_meta.total` claims.
MAX_PAGES = 10_000
Timeout = httpx.Timeout | float | None
logger = logging.getLogger("amili_async")


def with_timeout(pipeline: Pipeline, timeout: Timeout) -> Pipeline:
    """The pipeline itself, or a view of it with another timeout for one call."""
    return pipeline if timeout is None else pipeline.with_options(timeout=timeout)


def list_params(where: Mapping[str, Any] | None, sort: str | None, max_results: int, page: int) -> dict[str, str]:
    """The query of one page; every bad argument is a `ValidationError` here, before anything is sent."""
    from ..models._validate import fail, query_text

    if isinstance(max_results, bool) or not isinstance(max_results, int) or not 1 <= max_results <= MAX_PAGE_SIZE:
        raise fail("max_results", f"must be an int from 1 to {MAX_PAGE_SIZE}, got {_shown(max_results)}")
    params = {"max_results": str(max_results), "page": str(page)}
    if where:
        if not isinstance(where, Mapping):
            raise fail("where", f"must be a mapping (a dict), got {type(where).__name__}")
        try:
            params["where"] = serde.dumps(where).decode()
        except TypeError as exc:  # orjson: lone surrogates, non-str keys, types JSON cannot hold
            raise fail("where", f"cannot be written as JSON ({str(exc)[:120]})") from None
    if sort:
        params["sort"] = query_text("sort", sort)
    return params


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, (int, float)) else type(value).__name__


def _id_of(item: Any) -> str | None:
    value = item.get("_id") if isinstance(item, Mapping) else None
    return value if isinstance(value, str) else None


def _bound(field: str, value: Any, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        from ..models._validate import fail

        raise fail(field, f"must be None or an int of at least {minimum}, got {_shown(value)}")
    return value


class AsyncPager(Generic[T]):
    """`async for item in pager`: every matching document, page after page (Eve `_items` / `_meta`).

    `pager.pages()` yields whole pages (lists) instead, the last one cut to `limit`. Nothing is fetched until
    iteration starts.

    The pager always ends. It stops at an empty or short page, once it has received `_meta.total` documents,
    and — early, with the reason in `stopped_early` and a warning in the `amili_async` log — when a page
    repeats the previous page's documents or the server answers another page than the one asked for (a
    server that ignores `page`), or after `max_pages` pages, whatever `_meta.total` claims. Documents the
    previous page already gave (pages shift when records are added meanwhile) are not yielded twice.
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
        max_pages: int | None = MAX_PAGES,
        operation: str = "amili.list",
    ) -> None:
        list_params(where, sort, max_results, 1)  # validate now, before anything is sent
        self._pipeline = pipeline
        self._path = path
        self._cls = cls
        self._where = where
        self._sort = sort
        self._max_results = max_results
        self._limit = _bound("limit", limit, 0)
        self._max_pages = _bound("max_pages", max_pages, 1)
        #: Why the last iteration ended before the list did (None when it ran to the end, or has not run).
        self.stopped_early: str | None = None
        self._operation = operation  # each page is one operation of this name (spans, logs)

    def __aiter__(self) -> AsyncIterator[T]:
        return self._items()

    async def _items(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page:
                yield item

    async def pages(self) -> AsyncIterator[list[T]]:
        self.stopped_early = None
        page = 1
        fetched = 0
        previous: set[str | None] = set()  # the ids of the previous page only: memory stays flat on long lists
        while True:
            if self._limit is not None and fetched >= self._limit:
                return
            if self._max_pages is not None and page > self._max_pages:
                self._stop(f"read {self._max_pages} pages (max_pages); pass a larger max_pages to read on")
                return
            params = list_params(self._where, self._sort, self._max_results, page)
            pipeline = self._pipeline
            response = await pipeline.send(pipeline.call("GET", self._path, params=params, operation=self._operation))
            payload = response.payload
            items = payload.get("_items") if isinstance(payload, Mapping) else None
            if not isinstance(items, list):
                raise ResponseDecodeError("a list answer without _items", method="GET", path=self._path)
            if not items:
                return
            meta = payload.get("_meta")
            meta = meta if isinstance(meta, Mapping) else {}
            answered = meta.get("page")
            if isinstance(answered, int) and not isinstance(answered, bool) and answered != page:
                self._stop(f"asked for page {page}, the server answered page {answered}")
                return
            ids = [_id_of(item) for item in items]
            if previous and all(i in previous for i in ids):
                self._stop(f"page {page} repeats the documents of page {page - 1}")
                return
            fresh = [item for i, item in zip(ids, items, strict=True) if i is None or i not in previous]
            if self._limit is not None:  # the last page is cut to the limit here, for every consumer
                fresh = fresh[: self._limit - fetched]
            yield [serde.structure_document(item, self._cls) for item in fresh]
            fetched += len(fresh)
            if self._limit is not None and fetched >= self._limit:
                return
            total = meta.get("total")
            if isinstance(total, int) and fetched >= total:
                return
            if len(items) < self._max_results:
                return
            previous = {i for i in ids if i is not None}
            page += 1

    def _stop(self, reason: str) -> None:
        self.stopped_early = reason
        params = list_params(self._where, self._sort, self._max_results, 1)
        query = describe_query({k: v for k, v in params.items() if k != "page"})
        logger.warning("GET %s%s: stopped early: %s", self._path, query, reason)
