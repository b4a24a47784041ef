"""What the `amili` command's tests share (no tests here): running the installed command, serving the in-memory
Amili on loopback, reading results files, and reading what the served Amili stored through its own read API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from amili_async import ApiCodeJwtAuth, AsyncAmiliClient

AMILI = Path(sys.executable).with_name("amili")  # the console script pip installed beside this interpreter
CSV_HEADER = (
    "kind,creditor,case,invoice_number,amount,currency,bank_transaction_date,creditor_payment_reference,"
    "creditor_reference,days\n"
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMILI_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def amili(
    *args: str | Path, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the installed `amili` command as a user does, and wait for it."""
    assert AMILI.exists(), f"the amili command is not installed at {AMILI} (pip install -e .)"
    return subprocess.run(
        [str(AMILI), *map(str, args)],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        input=stdin,
        timeout=timeout,
        check=False,
    )


def start_amili(*args: str | Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(AMILI), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def assert_clean_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """Exit `code`, no traceback, exactly one error line, and it holds every word."""
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, done.stderr
    for word in words:
        assert word in errors[0], done.stderr


# -- results files ---------------------------------------------------------------------------------------


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line, parse_float=Decimal) for line in path.read_text().splitlines()]


def results(path: Path) -> list[dict[str, Any]]:
    return [r for r in records(path) if r["record"] == "result"]


def final(path: Path) -> dict[int, dict[str, Any]]:
    """Input line -> its outcome now (the latest record of its slot). Asserts no line has two slots."""
    latest: dict[int, dict[str, Any]] = {}
    for rec in records(path):
        if rec["record"] in ("sending", "result"):
            latest[rec["slot"]] = rec
    lines = Counter(rec["line"] for rec in latest.values())
    doubled = [line for line, n in lines.items() if n > 1]
    assert not doubled, f"lines with more than one slot: {doubled[:10]}"
    return {rec["line"]: rec for rec in latest.values()}


# -- the in-memory Amili on loopback ------------------------------------------------------------------------


@attrs.frozen
class Served:
    info: dict[str, Any]
    env: dict[str, str]

    @property
    def creditor(self) -> str:
        return str(self.info["creditor"])

    @property
    def cases(self) -> list[str]:
        return list(self.info["cases"])

    def client(self) -> AsyncAmiliClient:
        auth = ApiCodeJwtAuth(
            api_code=self.info["api_code"], private_key=self.info["private_key_pem"], algorithm=self.info["algorithm"]
        )
        return AsyncAmiliClient(auth=auth, base_url=self.info["base_url"])

    def stored(self) -> Stored:
        """Everything the served Amili holds, read through its API (as the SDK reads it)."""
        return asyncio.run(self._stored())

    async def _stored(self) -> Stored:
        async with self.client() as client:
            payments = [p async for p in client.creditor_payments.list(max_results=100)]
            creditings = [c async for c in client.creditor_creditings.list(max_results=100)]
            cancellations = [c async for c in client.creditor_cancellations.list(max_results=100)]
            cases = {c.id: c async for c in client.cases.list(max_results=100)}
        return Stored(payments, creditings, cancellations, cases)


@attrs.frozen
class Stored:
    payments: list[Any]
    creditings: list[Any]
    cancellations: list[Any]
    cases: dict[str, Any]

    def respites(self) -> dict[str, list[dict[str, Any]]]:
        """Case id -> the respite entries its history logs."""
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for case in self.cases.values():
            for entry in case.extra.get("history", []):
                if entry.get("event") == "respite":
                    found[case.id].append(entry)
        return found


@contextlib.contextmanager
def serve(tmp_path: Path, *, cases: int = 5, latency: float = 0.0) -> Iterator[Served]:
    """`python -m amili_async.testing serve` on a free loopback port, and the environment that points at it."""
    args = [sys.executable, "-m", "amili_async.testing", "serve", "--cases", str(cases)]
    if latency:
        args += ["--latency", str(latency)]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=clean_env())
    try:
        assert server.stdout is not None
        info: dict[str, Any] = json.loads(server.stdout.readline())
        key = tmp_path / "key.pem"
        key.write_text(info["private_key_pem"])
        env = clean_env(
            AMILI_BASE_URL=info["base_url"],
            AMILI_API_CODE=info["api_code"],
            AMILI_PRIVATE_KEY_FILE=str(key),
            AMILI_JWT_ALGORITHM=info["algorithm"],
        )
        yield Served(info, env)
    finally:
        server.terminate()
        server.wait(timeout=30)
