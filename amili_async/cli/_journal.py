"""The results file of `amili bulk` (`--out`): a journal, appended and flushed record by record.

Records (one JSON object per line, `record` says which):

- `run`: a run started: the input's name, the SHA-256 of its bytes and its number of lines, the shard.
- `sending`: an input line is about to be sent. It is written (and flushed) *before* the request leaves, so
  a line with no `sending` record was never sent, and one with `sending` but no `result` was in flight when
  the run stopped: the next run reconciles it. For a respite it holds the case as it was before (due date,
  respites logged), the evidence that later tells whether the grant went through.
- `result`: the outcome of a line: `applied` (`ok` true), `failed` (nothing was applied: a refusal, a bad
  line; `--retry-failed` sends it again), `error_recorded` (Amili recorded the action with status `error`,
  e.g. a payment on a closed case: nothing moved, and it is not sent again) or `unknown` (it may or may not
  have been applied, and it could not be proven: check it in Amili).
- `stop` / `end`: a run was interrupted / finished.

Every `sending` and `result` record carries the line's `digest` (its content, see `_input`) and a `slot`: the
line's number in this journal. The latest record of a slot is its state. A resumed run matches input lines to
slots by digest — content, never position — so reordered or appended input is matched correctly, and a
results file whose lines match no input line is refused instead of silently skipping anything.

Flushed means handed to the operating system: a record survives the process being killed (Ctrl-C, SIGKILL, a
crash), not a power cut of the machine itself.
"""

from __future__ import annotations

import time
from array import array
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import attrs

from .. import _wire
from ._common import UsageError, dumps, error_record, record

FORMAT = 2

PENDING = 1
APPLIED = 2
FAILED = 3
ERROR_RECORDED = 4
UNKNOWN = 5

STATE_OF = {"applied": APPLIED, "failed": FAILED, "error_recorded": ERROR_RECORDED, "unknown": UNKNOWN}
NAME_OF = {PENDING: "in flight", **{code: name for name, code in STATE_OF.items()}}
# The order in which a line takes one of several slots with its content: what was done first, harmless last.
_PRIORITY = {APPLIED: 0, ERROR_RECORDED: 1, UNKNOWN: 2, PENDING: 3, FAILED: 4}


@attrs.define
class JournalState:
    """What a results file says, compactly: per slot its state, input line, and where its latest record is."""

    path: Path
    runs: list[dict[str, Any]] = attrs.field(factory=list)
    states: bytearray = attrs.field(factory=bytearray)
    lines: array[int] = attrs.field(factory=lambda: array("Q"))
    offsets: array[int] = attrs.field(factory=lambda: array("Q"))
    by_digest: dict[bytes, list[int]] = attrs.field(factory=dict)
    evidence: dict[int, dict[str, Any]] = attrs.field(factory=dict)  # `sending` records of in-flight/unknown slots
    good_end: int = 0
    size: int = 0
    mtime: float = 0.0

    @property
    def slots(self) -> int:
        return len(self.states)

    def _slot(self, slot: int, digest: bytes) -> None:
        while slot >= len(self.states):
            self.states.append(0)
            self.lines.append(0)
            self.offsets.append(0)
        if self.states[slot] == 0:
            self.by_digest.setdefault(digest, []).append(slot)

    def add(self, rec: dict[str, Any], offset: int) -> None:
        slot, digest = rec["slot"], bytes.fromhex(rec["digest"])
        self._slot(slot, digest)
        self.lines[slot] = int(rec.get("line", 0))
        self.offsets[slot] = offset
        if rec["record"] == "sending":
            self.states[slot] = PENDING
            self.evidence[slot] = rec
        else:
            self.states[slot] = STATE_OF[rec["outcome"]]
            if self.states[slot] != UNKNOWN:
                self.evidence.pop(slot, None)

    def ordered(self) -> dict[bytes, list[int]]:
        """Digest -> its slots, in the order lines take them."""
        return {d: sorted(s, key=lambda n: _PRIORITY[self.states[n]]) for d, s in self.by_digest.items()}

    def read_record(self, slot: int) -> dict[str, Any]:
        with self.path.open("rb") as fh:
            fh.seek(self.offsets[slot])
            data: dict[str, Any] = _wire.loads(fh.readline())
            return data


def read_journal(path: Path) -> JournalState:
    """Read a results file. A last line cut short by a killed run is ignored (see `good_end`); anything that is
    not a results file of this version is refused with a UsageError."""
    state = JournalState(path)
    if not path.exists():
        return state
    stat = path.stat()
    state.size, state.mtime = stat.st_size, stat.st_mtime
    offset = 0
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            try:
                rec = _wire.loads(raw)
                kind = rec["record"] if isinstance(rec, dict) else None
                if kind == "run":
                    state.runs.append(rec)
                elif kind in ("sending", "result"):
                    state.add(rec, offset)
                elif kind not in ("stop", "end"):
                    raise KeyError(kind)
            except (KeyError, TypeError, ValueError):  # orjson's decode error is a ValueError
                raise UsageError(_not_ours(path, raw)) from None
            offset += len(raw)
    state.good_end = offset
    return state


def _not_ours(path: Path, raw: bytes) -> str:
    try:
        old = _wire.loads(raw)
    except ValueError:
        old = None
    if isinstance(old, dict) and "line" in old and "ok" in old and "record" not in old:
        return (
            f"{path} was written by an earlier amili bulk, whose results are not bound to their input; "
            "finish it with that version, or start a new --out"
        )
    if isinstance(old, dict) and old.get("record") == "result" and "slot" not in old:
        return f"{path} is a merged report of amili bulk, which cannot be resumed; pick another --out"
    return f"{path} is not a results file of amili bulk; pick another --out"


class Journal:
    """Appends records to the results file, each one flushed before the next step (see the module doc)."""

    def __init__(self, fh: IO[bytes], next_slot: int) -> None:
        self._fh = fh
        self.next_slot = next_slot
        self.applied = 0
        self.failed = 0
        self.unknown = 0

    def new_slot(self) -> int:
        self.next_slot += 1
        return self.next_slot - 1

    def _write(self, rec: dict[str, Any]) -> None:
        self._fh.write(dumps(rec))
        self._fh.flush()

    def run(self, **fields: Any) -> None:
        self._write({"record": "run", "amili_bulk": FORMAT, "started": _now(), **fields})

    def stop(self, reason: str) -> None:
        self._write({"record": "stop", "at": _now(), "reason": reason})

    def end(self) -> None:
        self._write({"record": "end", "at": _now(), "applied": self.applied, "failed": self.failed})

    def sending(
        self, slot: int, line: int, digest: bytes, kind: str, reference: str | None, evidence: dict[str, Any] | None
    ) -> None:
        rec: dict[str, Any] = {"record": "sending", "slot": slot, "line": line, "digest": digest.hex(), "kind": kind}
        rec["reference"] = reference
        if evidence is not None:
            rec["evidence"] = evidence
        self._write(rec)

    def result(
        self,
        slot: int,
        line: int,
        digest: bytes,
        kind: str | None,
        reference: str | None,
        state: int,
        *,
        receipt: Any = None,
        error: dict[str, Any] | BaseException | None = None,
        **extra: Any,
    ) -> None:
        rec: dict[str, Any] = {
            "record": "result",
            "slot": slot,
            "line": line,
            "digest": digest.hex(),
            "ok": state == APPLIED,
            "outcome": NAME_OF[state],
            "kind": kind,
            "reference": reference,
        }
        if receipt is not None:
            rec["receipt"] = record(receipt)
        if error is not None:
            rec["error"] = error if isinstance(error, dict) else error_record(error)
        rec.update(extra)
        self._write(rec)
        if state == APPLIED:
            self.applied += 1
        elif state == UNKNOWN:
            self.unknown += 1
        else:
            self.failed += 1


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)  # written as RFC 1123, like Amili's dates


def truncate_tail(state: JournalState) -> bool:
    """Cut a last line left incomplete by a killed run, so new records start on a line of their own."""
    if state.good_end < state.size:
        with state.path.open("r+b") as fh:
            fh.truncate(state.good_end)
        return True
    return False


def settle_wait(state: JournalState, settle: float) -> float:
    """Seconds still to wait before lines in flight in the interrupted run may be looked up (see docs/bulk.md)."""
    if not state.size:
        return 0.0
    return max(0.0, state.mtime + settle - time.time())
