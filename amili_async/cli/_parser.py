"""The `amili` command line: every program and its options, each sub-command bound to its function with
`set_defaults(func=...)` (and, for the single actions, `kind=`), so nothing dispatches on command names."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NoReturn

from .. import doctor
from .._version import __version__
from ..errors import ValidationError
from ..retry import RetryPolicy
from . import bulk, demo, single
from ._binding import Shard
from ._common import EXIT_USAGE, PROG
from ._input import parse_amount


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse `type=` from a parser raising ValidationError (argparse then names the option)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(exc.message.split(": ", 1)[-1]) from None

    convert.__name__ = parse.__name__
    return convert


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:40]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text[:40]!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 seconds, got {text[:40]}")
    return value


def _shard(text: str) -> Shard:
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"write it K/N with 1 <= K <= N (e.g. 1/4), got {text[:40]!r}")
    return Shard(int(k) - 1, int(n))


def _connection(parser: argparse.ArgumentParser, *, json_help: str = "print the result as JSON on stdout") -> None:
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--base-url", help="Amili's base URL (default: $AMILI_BASE_URL, else the sandbox)")
    fake = parser.add_argument_group("in-memory Amili")
    fake.add_argument(
        "--fake",
        action="store_true",
        help="run against an in-memory Amili seeded with one creditor and one case (no network); "
        "--creditor and --case may then be left out",
    )
    fake.add_argument(
        "--fake-state",
        choices=("invoice", "reminder", "debt_collection"),
        default="invoice",
        help="state of the seeded case (default: invoice)",
    )
    fake.add_argument(
        "--fake-capital",
        type=_arg(parse_amount),
        default=Decimal("1000.00"),
        help="capital of the seeded case (default: 1000.00)",
    )


def _case_options(parser: argparse.ArgumentParser, *, creditor_help: str) -> None:
    parser.add_argument("--creditor", help=creditor_help)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--case", help="the case's id (24 hex characters)")
    which.add_argument("--invoice-number", help="the case's invoice number (with --creditor)")


def _single_actions(commands: Any) -> None:
    pay = commands.add_parser("pay", help="register a payment the debtor made to you directly")
    pay.set_defaults(func=single.act, kind="payment", options=single.ACTION_OPTIONS)
    _case_options(pay, creditor_help="the creditor's id (24 hex characters)")
    pay.add_argument("--amount", required=True, help="e.g. 250.00 (a dot, at most two decimals)")
    pay.add_argument("--currency", default="SEK", help="ISO 4217 (default: SEK)")
    pay.add_argument(
        "--date",
        help="bank transaction date: 2025-10-07 (UTC), ISO 8601 with an offset, or RFC 1123 (default: now)",
    )
    pay.add_argument(
        "--reference",
        help="your id for the payment (creditor_payment_reference); recommended: it is looked up first, and "
        "a lost answer is then looked up instead of guessed",
    )
    pay.add_argument(
        "--allow-existing-reference",
        action="store_true",
        help="register it even when Amili already has a payment with this reference",
    )
    _connection(pay)

    credit = commands.add_parser("credit", help="credit part of a case's capital")
    credit.set_defaults(func=single.act, kind="crediting", options=single.ACTION_OPTIONS)
    _case_options(credit, creditor_help="the creditor's id (needed with --invoice-number)")
    credit.add_argument("--amount", required=True, help="e.g. 100.00")
    credit.add_argument("--currency", default="SEK", help="ISO 4217 (default: SEK)")
    credit.add_argument("--reference", help="your id for the crediting (creditor_reference); recommended")
    credit.add_argument(
        "--allow-existing-reference",
        action="store_true",
        help="register it even when Amili already has a crediting with this reference",
    )
    _connection(credit)

    cancel = commands.add_parser("cancel", help="cancel a case")
    cancel.set_defaults(func=single.act, kind="cancellation", options=single.ACTION_OPTIONS)
    _case_options(cancel, creditor_help="the creditor's id (24 hex characters)")
    _connection(cancel)

    respite = commands.add_parser("respite", help="check or grant respite (anstånd) on a case")
    respite_commands = respite.add_subparsers(dest="subcommand", required=True, metavar="{check,grant}")
    check = respite_commands.add_parser("check", help="whether a respite may be granted now")
    check.set_defaults(func=single.check_respite, options=single.CASE_OPTIONS)
    check.add_argument("case_id", metavar="CASE", nargs="?", help="the case's id (optional with --fake)")
    _connection(check)
    grant = respite_commands.add_parser("grant", help="postpone the case by --days")
    grant.set_defaults(func=single.act, kind="respite", options=single.CASE_OPTIONS)
    grant.add_argument("case_id", metavar="CASE", nargs="?", help="the case's id (optional with --fake)")
    grant.add_argument("--days", required=True, help="days to postpone by")
    _connection(grant)

    case = commands.add_parser("case", help="read a case")
    case_commands = case.add_subparsers(dest="subcommand", required=True, metavar="{get}")
    get = case_commands.add_parser("get", help="state, balances and due date of a case")
    get.set_defaults(func=single.get_case, options=single.CASE_OPTIONS)
    get.add_argument("case_id", metavar="CASE", nargs="?", help="the case's id (optional with --fake)")
    _connection(get)


def _bulk(commands: Any) -> None:
    parser = commands.add_parser(
        "bulk",
        help="run a CSV or JSONL file of actions, resumably (also: combine the results of shards)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=BULK_HELP,
    )
    parser.set_defaults(func=bulk.run)
    parser.add_argument("file", metavar="FILE", help="a .csv (with a header row) or .jsonl file; - for stdin")
    parser.add_argument("--out", help="the results file: a journal, appended as lines finish (resumable)")
    parser.add_argument("--concurrency", type=_positive_int, default=32, help="actions at once (default: 32)")
    parser.add_argument("--format", choices=("csv", "jsonl"), help="the input format (default: from the name)")
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="send again the lines whose result proves nothing was applied; look up the unknown ones first",
    )
    parser.add_argument(
        "--shard", type=_shard, metavar="K/N", help="run only the K-th of N parts of FILE (each with its own --out)"
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="RESULTS",
        help="send nothing: combine these results files of FILE (e.g. one per shard), report every line "
        "without an outcome, and write one result per line to --out if given",
    )
    settle = RetryPolicy().settle_window  # the SDK's own settle window
    parser.add_argument(
        "--settle",
        type=_seconds,
        default=settle,
        metavar="SECONDS",
        help="after an interruption, how long after the last record of the stopped run the lines it had in "
        f"flight may be looked up (default: {settle:g}, the SDK's settle window)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--base-url", default=None, help="Amili's base URL (default: $AMILI_BASE_URL)")
    parser.add_argument("--fake", action="store_true", help="run against an in-memory Amili (see 'Trying it out')")
    parser.add_argument(
        "--fake-cases", type=_positive_int, default=100, help="cases to seed with --fake (default: 100)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Amili's creditor API from the shell: payments, creditings, cancellations, respite, "
        "bulk files, and a self-contained demo.",
        epilog="Credentials: AMILI_API_CODE and AMILI_PRIVATE_KEY (or AMILI_PRIVATE_KEY_FILE); "
        "AMILI_BASE_URL picks the server. "
        "Exit codes: 0 ok, 1 refused or failed, 2 bad input, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"amili-async {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_demo = commands.add_parser(
        "demo",
        help="run a realistic mix of actions against an in-memory Amili (no network, no configuration)",
        description="Seed an in-memory Amili with cases, run payments, creditings, cancellations and respite "
        "checks and grants through the SDK concurrently, and summarise the outcomes.",
    )
    run_demo.set_defaults(func=demo.run)
    run_demo.add_argument("--cases", type=_positive_int, default=1000, help="cases to seed (default: 1000)")
    run_demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    run_demo.add_argument("--concurrency", type=_positive_int, default=32, help="actions at once (default: 32)")
    run_demo.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    run_demo.add_argument("--quiet", action="store_true", help="no progress bar")
    _single_actions(commands)
    _bulk(commands)
    doctor.add_parser(commands)  # `amili doctor` lives in amili_async/doctor.py (issue 16)
    commands.choices["doctor"].set_defaults(func=doctor.run)
    return parser


BULK_HELP = """\
Run one action per input line, --concurrency at a time, and record each line's outcome in --out.

Each line (JSONL) or row (CSV, with a header) has a `kind` and the action's fields:
  payment       creditor, case | invoice_number, amount, currency (SEK), bank_transaction_date,
                creditor_payment_reference
  crediting     case | invoice_number (+ creditor), amount, currency (SEK), creditor_reference
  cancellation  creditor, case | invoice_number
  respite       case, days
Amounts are exact decimals (`250.00`, or a JSON number); dates are 2025-10-07 (UTC), ISO 8601 with an offset
or RFC 1123. A CSV row must have as many values as the header has names. Blank lines are ignored.

Results (--out) are a journal: {"record": "result", "line": N, "ok": true, "outcome": "applied", "kind": ...,
"receipt": {...}} per line ("outcome" also "failed", "error_recorded" or "unknown", with an "error"), plus
"sending" records written before each request and "run" records naming the input (its SHA-256). N is the line
number in FILE (for a CSV the header is line 1). Exit code 0 when every line was applied, 1 otherwise.

Resuming: run the same command again. Results are matched to lines by content (a digest of each line), so
lines may be appended or reordered; a results file of other input is refused. Lines that were in flight are
looked up in Amili first (payments and creditings by reference, cancellations by case, respites by the case's
due date and history) and never sent twice; what cannot be proven is recorded "unknown" and listed at the end.
--retry-failed sends again the lines that failed without anything applied, after checking the unknown ones.

Sharding: --shard K/N runs only the lines whose reference (or case, or content) hashes to part K of N, each
shard with its own --out; `amili bulk FILE --merge R1 R2 ... --out all.jsonl` combines the shards' results
and names every line that has no outcome.

Trying it out: with --fake the file runs against an in-memory Amili seeded with one creditor and
--fake-cases cases of 10000.00 SEK. There, creditor `@` is the seeded creditor, case `@0`, `@1`, ... the
i-th seeded case, and invoice number INV-i belongs to case @i:
  kind,creditor,case,amount,bank_transaction_date,creditor_payment_reference
  payment,@,@0,250.00,2025-10-07,PAY-1
"""
