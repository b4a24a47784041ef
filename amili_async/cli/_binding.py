"""Binding a results file to its input: which input line is which result, and refusing results of other input.

A pass over the input (before anything is sent, before the results file is touched) digests every line and
the whole file, and counts how many lines carry each digest the results file knows. Results whose content no
input line has are **leftovers**: the results file was written for other input (yesterday's file, an edited
line, a truncated file). Leftovers that prove nothing was applied (`failed`) are harmless — an edited bad
line is simply a new line now — but any other leftover makes the run refuse, naming them: skipping by
position, or guessing, could skip a payment that was never sent.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator

import attrs

from ..errors import ValidationError
from ._input import InputFile, Line, parse_item, shard_of
from ._journal import FAILED, NAME_OF, PENDING, UNKNOWN, JournalState


@attrs.frozen
class Shard:
    index: int  # 0-based
    count: int

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


def shard_lines(source: InputFile, shard: Shard | None, hasher: object = None) -> Iterator[Line]:
    for line in source.lines(hasher):
        if shard is None or shard_of(line, shard.count) == shard.index:
            yield line


@attrs.define
class Binding:
    sha256: str = ""
    lines: int = 0  # lines of this shard
    new: int = 0  # lines with no slot yet
    matched: Counter[int] = attrs.field(factory=Counter)  # state -> lines matched to a slot in that state
    leftovers: list[int] = attrs.field(factory=list)  # slots no input line took, harmful ones first
    harmless: int = 0  # leftovers that are failures (nothing applied)

    def work(self, retry_failed: bool) -> int:
        """Lines this run will send or reconcile."""
        todo = self.new + self.matched[PENDING]
        return todo + (self.matched[FAILED] + self.matched[UNKNOWN] if retry_failed else 0)


def bind(source: InputFile, shard: Shard | None, state: JournalState) -> Binding:
    binding = Binding()
    hasher = hashlib.sha256()
    seen: Counter[bytes] = Counter()
    for line in shard_lines(source, shard, hasher):
        binding.lines += 1
        if line.digest in state.by_digest:
            seen[line.digest] += 1
        else:
            binding.new += 1
    binding.sha256 = hasher.hexdigest()
    for digest, slots in state.ordered().items():
        taken = min(seen[digest], len(slots))
        binding.new += seen[digest] - taken
        for slot in slots[:taken]:
            binding.matched[state.states[slot]] += 1
        binding.leftovers.extend(slots[taken:])
    binding.leftovers.sort(key=lambda s: (state.states[s] == FAILED, s))
    binding.harmless = sum(1 for s in binding.leftovers if state.states[s] == FAILED)
    return binding


def foreign_message(state: JournalState, binding: Binding, source: InputFile, shard: Shard | None) -> str | None:
    """Why the results file cannot belong to this input, or None when it can."""
    harmful = [s for s in binding.leftovers if state.states[s] != FAILED]
    if not harmful:
        return None
    examples = []
    for slot in harmful[:3]:
        rec = state.read_record(slot)
        what = rec.get("kind") or "line"
        reference = rec.get("reference")
        named = f"{what} {reference}" if reference else what
        examples.append(f"line {rec.get('line')} ({named}, {NAME_OF[state.states[slot]]})")
    where = f" (shard {shard})" if shard else ""
    more = f" and {len(harmful) - 3:,} more" if len(harmful) > 3 else ""
    return (
        f"{state.path} holds results for other input: {len(harmful):,} of its results match no line of "
        f"{source.path}{where}, e.g. {'; '.join(examples)}{more}. The input was edited, truncated or swapped "
        f"after those lines were sent. Use a new --out for new input, or rerun with the input it was written for."
    )


def describe(line: Line) -> str:
    """`line 12 (payment PAY-12)`: how the end-of-run lists name a line."""
    try:
        row = parse_item(line.item)
    except ValidationError:
        return f"line {line.number}"
    kind = row.get("kind") if isinstance(row.get("kind"), str) else "line"
    for key in ("creditor_payment_reference", "creditor_reference", "case", "invoice_number"):
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return f"line {line.number} ({kind} {value.strip()})"
    return f"line {line.number} ({kind})"
