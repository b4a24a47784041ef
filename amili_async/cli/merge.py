"""`amili bulk FILE --merge RESULTS... [--out MERGED]`: the results of every shard, as one, per input line.

Each results file is read and bound to FILE the way a resumed run binds it (by content digest); results of
other input are refused. Then each input line gets the latest outcome of its slot, whichever file it is in,
or is reported as having none: its shard was not run, or was interrupted with the line in flight (resume that
shard). Two shards with an outcome for the same line would leave one of them over, which is refused too.
`--out` writes one `result` per input line, in input order, numbered as the input is now.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from .. import _wire
from ..errors import ValidationError
from ._binding import bind, describe, foreign_message
from ._common import EXIT_FAILED, EXIT_OK, UsageError, dumps, warn
from ._input import InputFile, parse_item
from ._journal import NAME_OF, PENDING, read_journal

_LISTED = 20


def run(args: argparse.Namespace, source: InputFile) -> int:
    source.check_header()
    paths = [Path(p) for p in args.merge]
    if args.out and any(Path(args.out).resolve() == p.resolve() for p in [source.path, *paths]):
        raise UsageError("--out must be a new file, not the input or one of the results files")
    states = []
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        state = read_journal(path)
        # Bound to the whole input: a line of another shard simply has no slot in this file.
        refusal = foreign_message(state, bind(source, None, state), source, None)
        if refusal:
            raise UsageError(refusal)
        states.append(state)
    shards = sorted({str(r.get("shard")) for s in states for r in s.runs})
    pool: dict[bytes, list[tuple[int, int]]] = {}
    for n, state in enumerate(states):
        for digest, slots in state.ordered().items():
            pool.setdefault(digest, []).extend((n, slot) for slot in slots)
    counts: Counter[str] = Counter()
    missing: list[str] = []
    with contextlib.ExitStack() as files:
        sink = files.enter_context(open(args.out, "wb")) if args.out else None
        journals = [files.enter_context(path.open("rb")) for path in paths]
        for line in source.lines():
            taken = pool.get(line.digest)
            found = taken.pop(0) if taken else None
            code = 0 if found is None else states[found[0]].states[found[1]]
            if code in (0, PENDING):
                counts["no outcome"] += 1
                missing.append(describe(line) + (" (in flight when its shard stopped)" if code else ""))
                rec: dict[str, Any] = {"record": "result", "line": line.number, "digest": line.digest.hex()}
                rec.update(ok=False, outcome="missing", kind=_kind(line.item))
            else:
                counts[NAME_OF[code]] += 1
                assert found is not None
                journals[found[0]].seek(states[found[0]].offsets[found[1]])
                rec = _wire.loads(journals[found[0]].readline())
                rec.pop("slot", None)
                rec.update(line=line.number, source=str(paths[found[0]]))
            if sink is not None:
                sink.write(dumps(rec))
    extra = sum(len(v) for v in pool.values())
    total = sum(counts.values())
    summary = ", ".join(f"{counts[k]:,} {k}" for k in ("applied", "failed", "error_recorded", "unknown", "no outcome"))
    where = f"; written to {args.out}" if args.out else ""
    print(f"merge: {total:,} lines in {source.path}: {summary} (shards: {', '.join(shards)}){where}", file=sys.stderr)
    if missing:
        listed = ", ".join(missing[:_LISTED])
        more = f" and {len(missing) - _LISTED:,} more" if len(missing) > _LISTED else ""
        warn(f"{len(missing):,} lines have no outcome: {listed}{more}")
    if extra:
        warn(f"{extra:,} results are left over: more than one results file holds an outcome for the same line")
    return EXIT_OK if counts["applied"] == total and not extra else EXIT_FAILED


def _kind(item: Any) -> str | None:
    try:
        kind = parse_item(item).get("kind")
    except ValidationError:
        return None
    return kind if isinstance(kind, str) else None
