"""The `amili` command: the demo, one action at a time, and bulk files with progress.

```
python -m amili_async demo [--cases N] [--seed S] [--concurrency C] [--json]
amili pay --creditor ID (--case ID | --invoice-number N) --amount 250.00 [--currency SEK] [--date D]
          [--reference REF [--allow-existing-reference]]
amili credit (--case ID | --invoice-number N) --amount X [--creditor ID] [--reference REF]
amili cancel --creditor ID (--case ID | --invoice-number N)
amili respite check CASE
amili respite grant CASE --days N
amili case get CASE
amili bulk FILE --out results.jsonl [--concurrency N] [--retry-failed] [--shard K/N] [--fake]
amili bulk FILE --merge RESULTS... [--out merged.jsonl]
amili doctor [--case ID] [--write-test CASE] [--json]
```

One module per program — `single` (single actions and reads), `demo`, `bulk` (and `merge`) — beside the
argument parser (`_parser`), input reading and the one way to build an action (`_input`), and output
(`_common`); the bulk results file is `_journal`, its binding to the input `_binding`, reconciliation
`_reconcile`. Credentials come from the environment (`AMILI_BASE_URL`, `AMILI_API_CODE`, `AMILI_PRIVATE_KEY`
or `AMILI_PRIVATE_KEY_FILE`): the client reads them itself. Exit codes: 0 done, 1 Amili refused or failed (or,
for `bulk`, some line was not applied), 2 bad input or configuration, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from .._config import configure_logging_from_env
from ..errors import AmiliError, ConfigurationError, ValidationError
from ._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, UsageError, api_problem, input_problem
from ._parser import build_parser
from .single import prog

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The `amili` console script (also `python -m amili_async`). Returns the exit code."""
    configure_logging_from_env()  # AMILI_LOG: the command sets logging up; the SDK never does by itself
    args = build_parser().parse_args(argv)
    name = prog(args)
    try:
        code: int = args.func(args)
        return code
    except UsageError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigurationError as exc:
        print(f"{name}: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as exc:  # caught before sending: the input is wrong
        print(f"{name}: error: {input_problem(exc, getattr(args, 'options', {}))}", file=sys.stderr)
        return EXIT_USAGE
    except AmiliError as exc:
        print(f"{name}: error: {api_problem(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        hint = f"; rerun the same command to resume from {out}" if out and not getattr(args, "merge", None) else ""
        print(f"\n{name}: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `amili ... | head`: stop quietly
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:  # a file that cannot be read or written (permissions, a full disk)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"{name}: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
