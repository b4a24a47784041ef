"""`cases` (read only) and `respite` (check and grant)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import serde
from ..errors import normalise_issues
from ..models import _validate
from ..models.actions import RespiteGrant
from ..models.cases import Case, RespiteCheck
from ..models.receipts import RespiteReceipt
from ._base import MAX_PAGES, AsyncPager, Pipeline
from .actions import Timeout, _pipe

__all__ = ["Cases", "Respite"]


class Cases:
    path = "/cases"

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def get(self, case_id: str, *, timeout: Timeout = None) -> Case:
        _validate.object_id("case_id", case_id)
        response = await _pipe(self._pipeline, timeout).request("GET", f"{self.path}/{case_id}")
        return serde.structure_document(response.payload, Case)

    def list(
        self,
        *,
        where: Mapping[str, Any] | None = None,
        sort: str | None = None,
        max_results: int = 25,
        limit: int | None = None,
        max_pages: int | None = MAX_PAGES,
        timeout: Timeout = None,
    ) -> AsyncPager[Case]:
        return AsyncPager(
            _pipe(self._pipeline, timeout),
            self.path,
            Case,
            where=where,
            sort=sort,
            max_results=max_results,
            limit=limit,
            max_pages=max_pages,
        )


class Respite:
    """Postpone a case (anstånd): only before debt collection, within the creditor's day and count limits."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def check(self, case_id: str, *, timeout: Timeout = None) -> RespiteCheck:
        """Whether a respite may be granted now: 200 is yes; 206 is no, with the reasons in `issues`."""
        _validate.object_id("case_id", case_id)
        path = f"/domain-actions/cases/respite/{case_id}"
        response = await _pipe(self._pipeline, timeout).request("GET", path, ok=(200, 206))
        payload = response.payload
        raw_issues = payload.get("issues", payload.get("_issues")) if isinstance(payload, Mapping) else None
        issues = tuple(m for messages in normalise_issues(raw_issues).values() for m in messages)
        return RespiteCheck(allowed=response.status == 200, issues=issues)

    async def grant(self, case_id: str, *, days: int, timeout: Timeout = None) -> RespiteReceipt:
        """Postpone the case by `days`. Raises `RespiteNotAllowedError` (with `issues`) when Amili refuses."""
        action = RespiteGrant(case=case_id, days=days)
        return await _pipe(self._pipeline, timeout).execute(action)  # type: ignore[no-any-return]
