"""`cases` (read only) and `respite` (check and grant)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import serde
from .._call import Call
from .._pipeline import Pipeline
from ..errors import AmiliError, APIStatusError, RespiteNotAllowedError, RespiteValidationError, normalise_issues
from ..models import _validate
from ..models.actions import RespiteGrant
from ..models.cases import Case, RespiteCheck
from ..models.receipts import RespiteReceipt
from ._base import MAX_PAGES, AsyncPager, Timeout, with_timeout

__all__ = ["Cases", "Respite"]


class Cases:
    path = "/cases"

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def get(self, case_id: str, *, timeout: Timeout = None) -> Case:
        _validate.object_id("case_id", case_id)
        pipeline = with_timeout(self._pipeline, timeout)
        response = await pipeline.send(pipeline.call("GET", f"{self.path}/{case_id}", operation="amili.cases.get"))
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
            with_timeout(self._pipeline, timeout),
            self.path,
            Case,
            where=where,
            sort=sort,
            max_results=max_results,
            limit=limit,
            max_pages=max_pages,
            operation="amili.cases.list",
        )


class Respite:
    """Postpone a case (anstånd): only before debt collection, within the creditor's day and count limits."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def check(self, case_id: str, *, timeout: Timeout = None) -> RespiteCheck:
        """Whether a respite may be granted now: 200 is yes; 206 is no, with the reasons in `issues`."""
        _validate.object_id("case_id", case_id)
        path = f"/domain-actions/cases/respite/{case_id}"
        pipeline = with_timeout(self._pipeline, timeout)
        response = await pipeline.send(pipeline.call("GET", path, ok=(200, 206), operation="amili.respite.check"))
        payload = response.payload
        raw_issues = payload.get("issues", payload.get("_issues")) if isinstance(payload, Mapping) else None
        issues = tuple(m for messages in normalise_issues(raw_issues).values() for m in messages)
        return RespiteCheck(allowed=response.status == 200, issues=issues)

    async def grant(self, case_id: str, *, days: int, timeout: Timeout = None) -> RespiteReceipt:
        """Postpone the case by `days`. Raises `RespiteNotAllowedError` (with `issues`) when Amili refuses."""
        return await self._execute(RespiteGrant(case=case_id, days=days), timeout, "amili.respite.grant")

    async def execute(self, action: RespiteGrant, *, timeout: Timeout = None) -> RespiteReceipt:
        """Send a grant. A refusal (206, or a 400/409/422 with issues) is a `RespiteNotAllowedError`; a 422 one is
        a `RespiteValidationError`, which is also a `ValidationError`."""
        return await self._execute(action, timeout, "amili.respite.execute")

    async def _execute(self, action: RespiteGrant, timeout: Timeout, operation: str) -> RespiteReceipt:
        pipeline = with_timeout(self._pipeline, timeout)
        body = serde.action_body(action)
        # No reconcile (no `action`): a respite is relative (+N days), so a lost answer cannot be looked up.
        call = pipeline.call(
            "POST", action.path, json=body, ok=(200, 201, 204), needs_body=False, operation=operation, kind=action.kind
        )
        with call:
            try:
                return await self._grant(action, pipeline, call)
            except AmiliError as exc:
                exc.action = action
                exc.reference = action.reference
                raise

    async def _grant(self, action: RespiteGrant, pipeline: Pipeline, call: Call) -> RespiteReceipt:
        try:
            response = await pipeline.run(call)
        except APIStatusError as exc:
            if exc.status_code in (400, 409, 422) and exc.issues:
                # A 422 refusal is a validation error too (`except ValidationError` catches it); see errors.py.
                refusal = RespiteValidationError if exc.status_code == 422 else RespiteNotAllowedError
                raise refusal(
                    exc.message,
                    status_code=exc.status_code,
                    issues=exc.issues,
                    method=exc.method,
                    path=exc.path,
                    body=exc.body,
                    attempts=exc.attempts,
                ) from exc
            raise
        if response.status == 206:
            payload = response.json_or_none()
            issues = normalise_issues(payload.get("issues") if isinstance(payload, Mapping) else None)
            raise RespiteNotAllowedError(
                "respite not allowed", status_code=206, issues=issues, method="POST", path=action.path
            )
        return RespiteReceipt(
            case=action.case, days=action.days, request_id=call.request_id, server_request_id=call.server_request_id
        )
