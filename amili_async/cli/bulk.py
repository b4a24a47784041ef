"""`amili bulk FILE --out RESULTS`: one action per input line, concurrently, resumable, bound to its input.

The safety of a resumed run rests on three things (docs/bulk.md tells users the same):

1. The results file is a journal (`_journal`): a `sending` record is flushed before each request leaves, so
   after any interruption the lines in flight are exactly the ones with `sending` and no `result`.
2. Results are matched to input lines by content digest (`_binding`), and results of other input are refused.
3. Lines in flight, and with `--retry-failed` lines that ended unknown, are reconciled by what Amili shows
   (`_reconcile`) before anything is sent again; a line proven applied is never sent again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs

from .._flow import stop_probe
from .._progress import Progress, format_duration
from ..bulk import StopOn, run_many
from ..client import AsyncAmiliClient
from ..errors import (
    AmiliError,
    APIStatusError,
    AppliedWithoutReceiptError,
    AuthenticationError,
    NotSentError,
    OutcomeUnknownError,
    RespiteNotAllowedError,
    TransportError,
    ValidationError,
)
from ..models.actions import Action, RespiteGrant
from ..models.receipts import Receipt
from . import merge
from ._binding import Binding, Shard, bind, describe, foreign_message, shard_lines
from ._common import EXIT_FAILED, EXIT_OK, Seeded, UsageError, error_record, open_client, seed_fake, warn
from ._input import KIND_FIELDS, InputFile, Line, build_action, parse_item
from ._journal import (
    APPLIED,
    ERROR_RECORDED,
    FAILED,
    PENDING,
    UNKNOWN,
    Journal,
    JournalState,
    read_journal,
    settle_wait,
    truncate_tail,
)
from ._reconcile import reconcile, respite_evidence

_LISTED = 20


def run(args: argparse.Namespace) -> int:
    with _input_path(args.file) as path:
        source = InputFile(path, _format(args))
        if args.merge:
            return merge.run(args, source)
        if not args.out:
            raise UsageError("--out is required: the results file (or --merge RESULTS... to combine results files)")
        return _run(args, source, Path(args.out))


@contextlib.contextmanager
def _input_path(name: str) -> Iterator[Path]:
    """The input as a file: stdin (`-`) is spooled to a temporary file first, as every run reads it twice."""
    if name != "-":
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"{name}: no such file")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="amili-bulk-") as tmp:
        path = Path(tmp) / "stdin"
        with path.open("wb") as fh:
            shutil.copyfileobj(sys.stdin.buffer, fh)
        yield path


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    suffix = Path(args.file).suffix.lower()
    if suffix in (".csv", ".jsonl", ".ndjson"):
        return "csv" if suffix == ".csv" else "jsonl"
    raise UsageError(f"cannot tell the format of {args.file!r} from its name: pass --format csv or --format jsonl")


def _run(args: argparse.Namespace, source: InputFile, out: Path) -> int:
    if out.exists() and not out.is_file():
        raise UsageError(f"--out {out}: not a regular file")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: no such directory {out.parent}")
    if out.exists() and out.samefile(source.path):
        raise UsageError("--out must not be the input file")
    source.check_header()  # before the results file is created or touched
    state = read_journal(out)
    shard: Shard | None = args.shard
    earlier = {str(r.get("shard")) for r in state.runs}
    if earlier and earlier != {str(shard)}:
        raise UsageError(f"{out} was written for shard {', '.join(sorted(earlier))}, not {shard}; use its own --out")
    binding = bind(source, shard, state)
    refusal = foreign_message(state, binding, source, shard)
    if refusal:
        raise UsageError(refusal)
    if state.runs and state.runs[-1].get("input_sha256") != binding.sha256:
        warn(f"{source.path} changed since the last run into {out}; its results are matched to lines by content")
    if binding.harmless:
        warn(f"{binding.harmless:,} failed results in {out} match no line of the input any more (edited lines?)")
    seeded = seed_fake(args.fake_cases) if args.fake else None
    checking = binding.matched[PENDING] + (binding.matched[UNKNOWN] if args.retry_failed else 0)
    wait = settle_wait(state, args.settle) if checking and seeded is None else 0.0
    if wait > 0:
        warn(f"waiting {wait:.1f} s before looking up {checking:,} lines the interrupted run may have sent")
        time.sleep(wait)
    if truncate_tail(state):
        warn(f"{out}: removing an incomplete last line left by an interrupted run")
    started = time.perf_counter()
    work = binding.work(args.retry_failed)
    progress = Progress(work, label="bulk", unit="lines", enabled=not args.quiet and work > 0)
    with out.open("ab") as fh:
        journal = Journal(fh, state.slots)
        journal.run(
            input=str(args.file),
            input_sha256=binding.sha256,
            input_lines=binding.lines,
            format=source.format,
            shard=None if shard is None else str(shard),
            retry_failed=args.retry_failed,
        )
        batch = _Batch(args, source, state, binding, journal, seeded, progress)
        try:
            asyncio.run(batch.run())
        except KeyboardInterrupt:
            journal.stop("interrupted")
            raise
        journal.end()
    progress.close()
    return batch.report(out, time.perf_counter() - started)


@attrs.define
class _Task:
    line: Line
    slot: int
    action: Action
    check_first: bool  # in flight when a run stopped, or unknown (with --retry-failed): reconcile first
    evidence: dict[str, Any] | None = None


class _Batch:
    def __init__(
        self,
        args: argparse.Namespace,
        source: InputFile,
        state: JournalState,
        binding: Binding,
        journal: Journal,
        seeded: Seeded | None,
        progress: Progress,
    ) -> None:
        self.args = args
        self.source = source
        self.state = state
        self.binding = binding
        self.journal = journal
        self.seeded = seeded
        self.progress = progress
        self.before: dict[int, int] = {APPLIED: 0, FAILED: 0, ERROR_RECORDED: 0, UNKNOWN: 0}
        self.unknown: list[str] = []  # lines that need checking in Amili, described
        self.retryable = 0
        self.reconciled = 0
        self.recovered = 0
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}
        self.changed = False  # the input changed between the binding pass and this run
        self.stopped: AuthenticationError | None = None  # Amili refused the credentials: start no more lines
        self.halted: AmiliError | None = None  # issue 10: the run stopped (Amili unreachable, credentials refused)
        self.interrupted = 0  # lines stopped while they only waited (a token, their turn): failed, nothing sent

    # -- which lines, and what to do with each ---------------------------------------------------------

    def tasks(self) -> Iterator[_Task]:
        slots = self.state.ordered()
        retry = self.args.retry_failed
        hasher = hashlib.sha256()
        yield from self._tasks(slots, retry, hasher)
        if self.stopped is None and self.halted is None:  # a stopped run read only part of the input
            self.changed = hasher.hexdigest() != self.binding.sha256

    def _tasks(self, slots: dict[bytes, list[int]], retry: bool, hasher: Any) -> Iterator[_Task]:
        for line in shard_lines(self.source, self.args.shard, hasher):
            if self.stopped is not None or self.halted is not None:
                return
            taken = slots.get(line.digest)
            slot = taken.pop(0) if taken else None
            state = 0 if slot is None else self.state.states[slot]
            if state in (APPLIED, ERROR_RECORDED) or (state in (FAILED, UNKNOWN) and not retry):
                self.before[state] += 1
                self.retryable += state == FAILED
                if state == UNKNOWN:
                    self.unknown.append(describe(line))
                continue
            if slot is None:
                slot = self.journal.new_slot()
            row: dict[str, Any] | None = None
            try:
                row = parse_item(line.item)
                action = build_action(row, self.seeded)
            except ValidationError as exc:
                kind = row.get("kind") if row is not None else None
                kind = kind if isinstance(kind, str) and kind in KIND_FIELDS else None
                self.journal.result(slot, line.number, line.digest, kind, None, FAILED, error=exc)
                self.retryable += 1
                self.progress.advance(failed=1)
                continue
            # With --fake, the in-memory Amili of the interrupted run is gone, and with it anything it applied.
            check = state in (PENDING, UNKNOWN) and self.seeded is None
            yield _Task(line, slot, action, check, self.state.evidence.get(slot, {}).get("evidence"))

    # -- one line ------------------------------------------------------------------------------------

    async def run(self) -> None:
        async with open_client(self.args, self.seeded) as client:
            one = functools.partial(self._one, client)
            # issue 10: a run that cannot succeed (Amili unreachable, credentials refused) stops within seconds
            probe = stop_probe(client._pipeline.connection)
            lines = run_many(one, self.tasks(), concurrency=self.args.concurrency, stop_on=StopOn(), probe=probe)
            async for outcome in lines:
                if isinstance(outcome.error, NotSentError):  # never started: no record, a rerun sends it
                    self.halted = self.halted or outcome.error.reason
                elif outcome.error is not None:  # not a line's failure: the results file or the input broke
                    raise outcome.error

    async def _one(self, client: AsyncAmiliClient, task: _Task) -> None:
        line, action = task.line, task.action
        if task.check_first:
            verdict = await reconcile(client, action, task.evidence)
            self.reconciled += 1
            if verdict.receipt is not None:
                self.recovered += 1
                self._result(task, APPLIED, receipt=verdict.receipt, reconciled=True)
                return
            if verdict.unknown is not None:
                error = OutcomeUnknownError(verdict.unknown, action=action, reference=action.reference)
                self._result(task, UNKNOWN, error=error, reconciled=True)
                return
        if isinstance(action, RespiteGrant):
            async with self._case_lock(action.case):  # the evidence must be about this grant alone
                try:
                    evidence = await respite_evidence(client, action.case)
                except AmiliError as exc:
                    exc.message = f"the case could not be read before the respite (nothing was sent): {exc.message}"
                    self._result(task, FAILED, error=exc)
                    return
                self.journal.sending(task.slot, line.number, line.digest, action.kind, action.reference, evidence)
                await self._send(client, task)
            return
        self.journal.sending(task.slot, line.number, line.digest, action.kind, action.reference, None)
        await self._send(client, task)

    async def _send(self, client: AsyncAmiliClient, task: _Task) -> None:
        try:
            receipt = await client.execute(task.action)
        except AppliedWithoutReceiptError as exc:  # applied for sure; only its record could not be read
            self._result(task, APPLIED, receipt_unreadable=error_record(exc), record_id=exc.record_id)
            return
        except NotSentError as exc:  # issue 10: stopped while it only waited (a token, its turn): not applied
            self.halted = self.halted or exc.reason
            self.interrupted += 1
            self._result(task, FAILED, error=exc)
            return
        except AmiliError as exc:
            self._result(task, _state_of(exc), error=exc)
            return
        if isinstance(receipt, Receipt) and not receipt.applied:
            error = {
                "type": "BusinessError",
                "message": receipt.status_reason_locale or "Amili reported the action as an error",
                "status_code": 201,
                "reference": task.action.reference,
            }
            self._result(task, ERROR_RECORDED, receipt=receipt, error=error)
        else:
            self._result(task, APPLIED, receipt=receipt)

    def _result(self, task: _Task, state: int, **fields: Any) -> None:
        if isinstance(fields.get("error"), AuthenticationError):
            # Every further line would be refused the same way (slowly, each after its own login): stop here.
            self.stopped = fields["error"]
        line, action = task.line, task.action
        self.journal.result(task.slot, line.number, line.digest, action.kind, action.reference, state, **fields)
        if state == UNKNOWN:
            self.unknown.append(describe(task.line))
        self.retryable += state == FAILED
        self.progress.advance(failed=state != APPLIED)

    @contextlib.asynccontextmanager
    async def _case_lock(self, case: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(case) or (anyio.Lock(), 0)
        self._locks[case] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[case]
            if users == 1:
                del self._locks[case]
            else:
                self._locks[case] = (lock, users - 1)

    # -- the end -------------------------------------------------------------------------------------

    def report(self, out: Path, elapsed: float) -> int:
        j, binding = self.journal, self.binding
        done = j.applied + j.failed + j.unknown
        parts = [
            f"bulk: {done:,} lines processed ({j.applied:,} ok, {j.failed:,} failed, {j.unknown:,} unknown) "
            f"in {format_duration(elapsed)}"
        ]
        skipped = sum(self.before.values())
        if skipped:
            bad, unknown = self.before[FAILED] + self.before[ERROR_RECORDED], self.before[UNKNOWN]
            parts.append(f"{skipped:,} already in {out} skipped ({bad:,} of them failed, {unknown:,} unknown)")
        if self.reconciled:
            parts.append(f"{self.reconciled:,} lines looked up in Amili first ({self.recovered:,} had been applied)")
        print("; ".join(parts) + f"; results in {out}", file=sys.stderr, flush=True)
        if self.unknown:
            listed = ", ".join(self.unknown[:_LISTED])
            more = f" and {len(self.unknown) - _LISTED:,} more (see {out})" if len(self.unknown) > _LISTED else ""
            warn(f"{len(self.unknown):,} outcomes need checking in Amili: {listed}{more}")
        if self.retryable:
            warn(f"{self.retryable:,} lines failed, nothing applied: fix the cause, then rerun with --retry-failed")
        if self.stopped is not None:
            warn(
                f"stopped: Amili refused the credentials ({self.stopped.message}); no further line was sent. "
                "Fix AMILI_API_CODE or the key, then run the same command again (with --retry-failed for the "
                "lines refused so far)"
            )
        if self.halted is not None and self.stopped is None:  # issue 10
            warn(
                f"stopped: {self.halted}; no further line was sent. Fix the cause, then run the same command again "
                f"(with --retry-failed for the {self.interrupted:,} lines stopped while they waited)"
            )
        if self.changed:
            warn(f"{self.source.path} changed while it was being run: run the same command again to be sure")
        applied = j.applied + self.before[APPLIED]
        return EXIT_OK if applied == binding.lines else EXIT_FAILED


def _state_of(exc: AmiliError) -> int:
    """What an error proves about a write: FAILED (not applied, may be sent again) or UNKNOWN."""
    if isinstance(exc, OutcomeUnknownError):
        return UNKNOWN
    if isinstance(exc, (TransportError, RespiteNotAllowedError)):
        return FAILED  # a transport error on a write means it never reached Amili
    if isinstance(exc, ValidationError) and exc.status_code is None:
        return FAILED  # refused before sending
    if isinstance(exc, APIStatusError) and exc.status_code is not None and 400 <= exc.status_code < 500:
        return UNKNOWN if exc.status_code == 409 else FAILED  # a conflict may be the earlier write
    return UNKNOWN
