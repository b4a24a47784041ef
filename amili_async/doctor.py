"""`amili doctor`: check what the SDK assumes about Amili against the server you point it at.

The SDK's safety rests on behaviour Amili's public pages do not state (docs/assumptions.md lists them): the
token answer's shape and lifetime, a server clock close to ours, action lists that accept the `where` filters
the SDK looks lost writes up with, rate-limit headers, the reads it offers, and — with `--write-test CASE`,
sandbox or loopback only — whether a second payment with the same reference is refused.

Every check goes through the SDK's own public client (`AsyncAmiliClient.request`, `execute`, the token flow);
doctor only watches the answers through a transport wrapper. Each check gives a `Finding`: the assumption,
what the server showed, what the SDK will do about it, and a verdict. Nothing secret is kept in a finding:
token answers are described by their field names, never their values.

Exit code: 0 every assumption holds; 1 a safety assumption does not (rows marked BROKEN: money or logins at
risk); 3 the safety assumptions hold but the server differs elsewhere (rows marked differs: the SDK copes as
the row says); 2 bad input or configuration (for example `--write-test` against production).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import textwrap
import time
from typing import Any

import attrs
import httpx
import sniffio

from ._doctor_checks import (
    Finding,
    Seen,
    Verdict,
    check_clock,
    check_duplicates,
    check_login,
    check_lookups,
    check_rate_limits,
    check_reads,
)
from .auth import Auth
from .client import DEFAULT_LIMITS, AsyncAmiliClient
from .errors import AmiliError, ConfigurationError
from .models import _validate
from .retry import RetryPolicy
from .transports import build_default_transport

__all__ = [
    "EXIT_DIFFERS",
    "EXIT_OK",
    "EXIT_UNSAFE",
    "Finding",
    "Report",
    "Verdict",
    "add_parser",
    "diagnose",
    "run",
    "write_test_allowed",
]

EXIT_OK = 0
EXIT_UNSAFE = 1
EXIT_DIFFERS = 3
WRITE_TEST_HOSTS = frozenset({"api-sandbox.amili.se", "localhost", "127.0.0.1", "::1"})
MAX_SEEN = 500


@attrs.frozen
class Report:
    """The findings for one server, and what they add up to."""

    base_url: str
    findings: tuple[Finding, ...]

    @property
    def exit_code(self) -> int:
        verdicts = {f.verdict for f in self.findings}
        if Verdict.BROKEN in verdicts:
            return EXIT_UNSAFE
        return EXIT_DIFFERS if Verdict.DIFFERS in verdicts else EXIT_OK

    def as_json(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "exit_code": self.exit_code,
            "safety_assumptions_hold": self.exit_code != EXIT_UNSAFE,
            "checks": [{**attrs.asdict(f), "verdict": f.verdict.value} for f in self.findings],
        }

    def render(self, width: int | None = None) -> str:
        """A plain-text table: result, check, assumption, what the server showed, what the SDK will do."""
        width = max(100, width or shutil.get_terminal_size((120, 24)).columns)
        flexible = (width - 11 - 22 - 4 * 2) // 3
        widths = (11, 22, flexible, flexible, flexible)
        header = ("RESULT", "CHECK", "ASSUMPTION", "SERVER SHOWED", "THE SDK WILL")
        lines = [f"amili doctor: {self.base_url}", "", _row(header, widths)]
        for f in self.findings:
            shown = f.verdict.value.upper() if f.verdict is Verdict.BROKEN else f.verdict.value
            lines += ["", _row((shown, f.check, f.assumption, f.observed, f.consequence), widths)]
        lines += ["", textwrap.fill(self.summary(), width)]
        return "\n".join(lines)

    def summary(self) -> str:
        count = collections.Counter(f.verdict for f in self.findings)
        if self.exit_code == EXIT_UNSAFE:
            return (
                f"Exit code 1: {count[Verdict.BROKEN]} safety assumption(s) do not hold (BROKEN above); the SDK "
                "cannot keep its promises there."
            )
        if self.exit_code == EXIT_DIFFERS:
            return (
                f"Exit code 3: the safety assumptions hold; {count[Verdict.DIFFERS]} other(s) differ from what we "
                "assume, and the SDK copes as the table says."
            )
        return "Exit code 0: every assumption holds."


def _row(cells: tuple[str, ...], widths: tuple[int, ...]) -> str:
    wrapped = [textwrap.wrap(cell, w, break_on_hyphens=False) or [""] for cell, w in zip(cells, widths, strict=True)]
    height = max(len(w) for w in wrapped)
    lines = []
    for i in range(height):
        parts = [(col[i] if i < len(col) else "").ljust(w) for col, w in zip(wrapped, widths, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


class _Watcher(httpx.AsyncBaseTransport):
    """Passes every request to the real transport and keeps what came back (status, headers, body, time)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.seen: collections.deque[Seen] = collections.deque(maxlen=MAX_SEEN)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        try:
            raw = await response.aread()
        finally:
            await response.aclose()
        at = time.time()
        headers = {name.lower(): value for name, value in response.headers.items()}
        self.seen.append(Seen(request.method, request.url.path, response.status_code, headers, raw, at))
        # The body is handed on decoded: drop the headers that describe its encoding on the wire.
        wire_only = ("content-encoding", "content-length")
        passed = [(k, v) for k, v in response.headers.items() if k.lower() not in wire_only]
        return httpx.Response(response.status_code, headers=passed, content=raw, request=request)


def write_test_allowed(base_url: str) -> bool:
    return httpx.URL(base_url).host in WRITE_TEST_HOSTS


async def diagnose(
    *,
    auth: Auth | None = None,
    base_url: str | None = None,
    creditor: str | None = None,
    case: str | None = None,
    write_test: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    assumed_token_lifetime: float = 300.0,
) -> Report:
    """Run every check against `base_url` (default: `AMILI_BASE_URL`, else the sandbox) and report.

    `auth` defaults to the `AMILI_*` environment variables, as for `AsyncAmiliClient`. `write_test` is a
    case id: it registers two 1.00 payments with one reference there, and is refused (`ConfigurationError`)
    unless the base URL is the sandbox or loopback.
    """
    for field, value in (("creditor", creditor), ("case", case), ("write_test", write_test)):
        if value is not None:
            _validate.object_id(field, value)
    inner = transport or build_default_transport(sniffio.current_async_library(), limits=DEFAULT_LIMITS)
    watcher = _Watcher(inner)
    try:
        client = AsyncAmiliClient(
            auth=auth,
            base_url=base_url,
            transport=watcher,
            retry=RetryPolicy(max_attempts=2, deadline=60.0),
            assumed_token_lifetime=assumed_token_lifetime,
        )
        if write_test is not None and not write_test_allowed(client.base_url):
            raise ConfigurationError(
                f"--write-test registers payments: it runs only against the sandbox or loopback, not {client.base_url}"
            )
        async with client:
            findings = await _run(client, watcher, creditor, case, write_test, assumed_token_lifetime)
    finally:
        if transport is None:
            await inner.aclose()
    return Report(client.base_url, tuple(findings))


async def _run(
    client: AsyncAmiliClient,
    watcher: _Watcher,
    creditor: str | None,
    case: str | None,
    write_test: str | None,
    assumed_lifetime: float,
) -> list[Finding]:
    error: AmiliError | None = None
    try:
        await client.request("GET", "/cases", params={"max_results": "1"})  # the first call logs in
    except AmiliError as exc:
        error = exc
    login = check_login(list(watcher.seen), error, assumed_lifetime)
    findings = list(login)
    if any(f.verdict is Verdict.BROKEN for f in login):
        skipped = Finding("everything else", Verdict.NOT_CHECKED, "-", "needs a login", "-")
        return [*findings, check_clock(list(watcher.seen)), skipped]
    reads_found, reads = await check_reads(client, case)
    lookups = await check_lookups(client, creditor or reads.creditor, reads)
    if write_test is not None:
        duplicates = await check_duplicates(client, write_test)
    else:
        duplicates = Finding(
            "duplicate reference",
            Verdict.NOT_CHECKED,
            "A second payment with the same reference is refused (our assumption: undocumented)",
            "not tried: it writes (run with --write-test CASE against the sandbox)",
            "-",
        )
    seen = list(watcher.seen)
    return [*findings, check_clock(seen), check_rate_limits(seen), *reads_found, *lookups, duplicates]


# -- the `amili doctor` command ---------------------------------------------------------------------------

DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else None


def add_parser(commands: Any) -> None:
    """Add `doctor` to the `amili` command's subparsers."""
    doctor = commands.add_parser(
        "doctor",
        help="check what the SDK assumes about Amili against a server (read-only unless --write-test)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor.add_argument("--base-url", help="Amili's base URL (default: $AMILI_BASE_URL, else the sandbox)")
    doctor.add_argument("--creditor", help="your creditor id, for the lookup checks (default: the first case's)")
    doctor.add_argument("--case", help="a case to read (default: the first listed); nothing is written to it")
    doctor.add_argument(
        "--write-test",
        metavar="CASE",
        help="register two 1.00 payments with one reference on CASE to see whether the second is refused "
        "(sandbox or loopback only)",
    )
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")


def run(args: argparse.Namespace) -> int:
    """`amili doctor`: print the report; the exit code says whether the safety assumptions hold."""
    report = asyncio.run(
        diagnose(base_url=args.base_url, creditor=args.creditor, case=args.case, write_test=args.write_test)
    )
    print(json.dumps(report.as_json(), indent=2) if args.json else report.render())
    return report.exit_code
