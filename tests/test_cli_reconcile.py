"""Ctrl-C with a write in flight, against a raw Amili-like server on loopback, then resume.

The server (asyncio streams, 127.0.0.1, one request per connection, stops by itself) is made to hold one write
forever, either before it commits (nothing stored) or after (stored, answer never sent): exactly what a user's
Ctrl-C meets. The installed `amili bulk` is interrupted while it waits, then resumed; the test asserts what the
server STORED and how many writes it received. Its cases can hide their `history`, as a real Amili may, so a
respite is proven by the due date alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_cli_support import CSV_HEADER, amili, clean_env, final, start_amili

CREDITOR = "6" * 24
CASES = [f"{n:024x}" for n in range(1, 6)]
LIFETIME = 120.0  # the server stops by itself after this long


class RawAmili:
    """Just enough of Amili: token, payments, cancellations, cases and respite, with a write held on demand."""

    def __init__(self, *, history: bool) -> None:
        due = format_datetime(datetime(2025, 11, 6, tzinfo=timezone.utc), usegmt=True)
        self.cases = {
            case: {"_id": case, "creditor": CREDITOR, "due_date": due, "debt": {"invoice_number": f"INV-{n}"}}
            for n, case in enumerate(CASES)
        }
        if history:
            for case in self.cases.values():
                case["history"] = [{"event": "created"}]
        self.stored: dict[str, list[dict[str, Any]]] = {"creditor--payments": [], "creditor--cancellations": []}
        self.writes: Counter[str] = Counter()  # POSTs received, by first path segment
        self.hold: str | None = None  # "before" / "after" (the commit): the next write never gets its answer
        self.holding = threading.Event()
        self.reads_down = False
        self.empty_answers = False  # writes answer 201 with an empty body: applied, no record to show
        self.port = 0
        self._ids = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ")
            length = next((int(h.split(":")[1]) for h in head if h.lower().startswith("content-length")), 0)
            body = json.loads(await reader.readexactly(length)) if length else None
            status, payload = await self.route(method, urlsplit(target), body)
            data = b"" if method == "POST" and self.empty_answers else json.dumps(payload).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, url: Any, body: Any) -> tuple[int, Any]:
        parts = url.path.strip("/").split("/")
        if parts[0] == "authenticates":
            return 200, {"token": "raw-token", "expires_in": 3600}
        if method == "POST":
            self.writes[parts[0]] += 1
            if self.hold == "before":
                await self.wait_forever()
            answer = self.apply(parts, body)
            if self.hold == "after":
                await self.wait_forever()
            return answer
        if self.reads_down:  # the API user may not read (a 403 is final: no retries to wait for)
            return 403, {"_status": "ERR", "_error": {"code": 403, "message": "reads are not allowed"}}
        if parts[0] == "cases" and len(parts) == 2:
            return 200, self.cases[parts[1]]
        if parts[0] == "domain-actions":
            return 200, {}
        where = json.loads(parse_qs(url.query).get("where", ["{}"])[0])
        docs = list(self.cases.values()) if parts[0] == "cases" else self.stored[parts[0]]
        items = [d for d in docs if all(_at(d, k) == v for k, v in where.items())]
        return 200, {"_items": items, "_meta": {"total": len(items), "page": 1, "max_results": 25}}

    def apply(self, parts: list[str], body: dict[str, Any]) -> tuple[int, Any]:
        if parts[0] == "domain-actions":
            case = self.cases[parts[3]]
            due = parsedate_to_datetime(case["due_date"]) + timedelta(days=body["days"])
            case["due_date"] = format_datetime(due, usegmt=True)
            case.get("history", []).append({"event": "respite", "days": body["days"]})
            return 200, {}
        self._ids += 1
        now = format_datetime(datetime.now(timezone.utc), usegmt=True)
        doc = {"_id": f"{self._ids:024x}", "_created": now, **body}
        if "invoice_number" in doc:
            by_invoice = {c["debt"]["invoice_number"]: c["_id"] for c in self.cases.values()}
            doc["case"] = by_invoice[doc["invoice_number"]]
        self.stored[parts[0]].append(doc)
        return 201, {**doc, "_status": "OK", "status": "completed"}

    async def wait_forever(self) -> None:
        self.hold = None
        self.holding.set()
        await asyncio.sleep(LIFETIME)


def _at(doc: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None  # type: ignore[assignment]
    return doc


@contextlib.contextmanager
def raw_amili(*, history: bool = True) -> Iterator[RawAmili]:
    server = RawAmili(history=history)
    ready = threading.Event()
    stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def main() -> None:
        stop.append((asyncio.get_running_loop(), asyncio.Event()))
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        server.port = listener.sockets[0].getsockname()[1]
        ready.set()
        async with listener:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop[0][1].wait(), LIFETIME)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield server
    finally:
        loop, stopping = stop[0]
        loop.call_soon_threadsafe(stopping.set)
        thread.join(10)


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path_factory.mktemp("key") / "key.pem"
    path.write_bytes(pem)
    return path


def env_for(server: RawAmili, key_file: Path) -> dict[str, str]:
    return clean_env(
        AMILI_BASE_URL=f"http://127.0.0.1:{server.port}", AMILI_API_CODE="raw", AMILI_PRIVATE_KEY_FILE=str(key_file)
    )


def interrupted_then_resumed(
    server: RawAmili, key_file: Path, tmp_path: Path, row: str, hold: str, *, between: Any = None
) -> tuple[Path, str]:
    """Run one line, Ctrl-C while its write is held, optionally change the world, then resume."""
    source, out = tmp_path / "day.csv", tmp_path / "r.jsonl"
    source.write_text(CSV_HEADER + row + "\n")
    env = env_for(server, key_file)
    args = ("bulk", source, "--out", out, "--settle", "0", "--quiet")
    server.hold = hold
    proc = start_amili(*args, env=env)
    assert server.holding.wait(60), proc.communicate()
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert [r["record"] for r in json.loads(f"[{','.join(out.read_text().splitlines())}]")][-2:] == ["sending", "stop"]
    if between is not None:
        between()
    resumed = amili(*args, env=env)
    return out, resumed.stderr + f"\nexit {resumed.returncode}"


def payment_row(reference: str) -> str:
    return f"payment,{CREDITOR},{CASES[0]},,12.50,,2025-10-07,{reference},,"


def test_a_payment_stored_whose_answer_never_came_is_not_sent_again(key_file: Path, tmp_path: Path) -> None:
    with raw_amili() as server:
        out, said = interrupted_then_resumed(server, key_file, tmp_path, payment_row("PAY-1"), "after")
        assert said.endswith("exit 0") and "1 had been applied" in said, said
        assert [p["creditor_payment_reference"] for p in server.stored["creditor--payments"]] == ["PAY-1"]
        assert server.writes["creditor--payments"] == 1
        assert final(out)[2]["reconciled"] is True


def test_a_payment_that_never_committed_is_sent_again_once(key_file: Path, tmp_path: Path) -> None:
    with raw_amili() as server:
        _, said = interrupted_then_resumed(server, key_file, tmp_path, payment_row("PAY-2"), "before")
        assert said.endswith("exit 0") and "(0 had been applied)" in said, said
        assert [p["creditor_payment_reference"] for p in server.stored["creditor--payments"]] == ["PAY-2"]
        assert server.writes["creditor--payments"] == 2


@pytest.mark.parametrize("history", [True, False], ids=["case-history", "due-date-only"])
def test_a_respite_granted_whose_answer_never_came_is_not_sent_again(
    key_file: Path, tmp_path: Path, history: bool
) -> None:
    with raw_amili(history=history) as server:
        _, said = interrupted_then_resumed(server, key_file, tmp_path, f"respite,,{CASES[1]},,,,,,,14", "after")
        assert said.endswith("exit 0") and "1 had been applied" in said, said
        assert server.writes["domain-actions"] == 1
        assert server.cases[CASES[1]]["due_date"] == "Thu, 20 Nov 2025 00:00:00 GMT"  # moved once, by 14 days


def test_a_respite_that_never_committed_is_sent_again_once(key_file: Path, tmp_path: Path) -> None:
    with raw_amili(history=False) as server:
        _, said = interrupted_then_resumed(server, key_file, tmp_path, f"respite,,{CASES[2]},,,,,,,7", "before")
        assert said.endswith("exit 0"), said
        assert server.writes["domain-actions"] == 2
        assert server.cases[CASES[2]]["due_date"] == "Thu, 13 Nov 2025 00:00:00 GMT"


def test_a_respite_whose_case_moved_otherwise_is_unknown_and_never_resent(key_file: Path, tmp_path: Path) -> None:
    with raw_amili(history=False) as server:

        def someone_else_moves_the_due_date() -> None:
            case = server.cases[CASES[3]]
            case["due_date"] = format_datetime(parsedate_to_datetime(case["due_date"]) + timedelta(days=3), usegmt=True)

        row = f"respite,,{CASES[3]},,,,,,,14"
        moves = someone_else_moves_the_due_date
        out, said = interrupted_then_resumed(server, key_file, tmp_path, row, "after", between=moves)
        assert said.endswith("exit 1") and "1 outcomes need checking in Amili: line 2 (respite" in said, said
        assert "not by the 14 days" in final(out)[2]["error"]["message"]
        assert server.writes["domain-actions"] == 1


def test_a_cancellation_by_invoice_number_in_flight_is_found(key_file: Path, tmp_path: Path) -> None:
    with raw_amili() as server:
        row = f"cancellation,{CREDITOR},,INV-4,,,,,,"
        _, said = interrupted_then_resumed(server, key_file, tmp_path, row, "after")
        assert said.endswith("exit 0") and "1 had been applied" in said, said
        assert [c["case"] for c in server.stored["creditor--cancellations"]] == [CASES[4]]
        assert server.writes["creditor--cancellations"] == 1


def test_a_write_applied_without_a_readable_record_counts_as_applied(key_file: Path, tmp_path: Path) -> None:
    with raw_amili() as server:
        server.empty_answers = server.reads_down = True  # 201 with no body, and nothing can be read back
        source, out = tmp_path / "day.csv", tmp_path / "r.jsonl"
        source.write_text(CSV_HEADER + payment_row("PAY-4") + "\n")
        env = env_for(server, key_file)
        done = amili("bulk", source, "--out", out, "--settle", "0", env=env)
        assert done.returncode == 0, done.stderr
        result = final(out)[2]
        assert result["outcome"] == "applied" and result["receipt_unreadable"]["type"] == "AppliedWithoutReceiptError"
        again = amili("bulk", source, "--out", out, "--retry-failed", "--settle", "0", env=env)
        assert again.returncode == 0 and "0 lines processed" in again.stderr
        assert server.writes["creditor--payments"] == 1


def test_when_amili_cannot_be_asked_the_line_is_unknown_until_it_can(key_file: Path, tmp_path: Path) -> None:
    with raw_amili() as server:

        def reads_go_down() -> None:
            server.reads_down = True

        row = payment_row("PAY-3")
        out, said = interrupted_then_resumed(server, key_file, tmp_path, row, "after", between=reads_go_down)
        assert said.endswith("exit 1"), said
        assert "1 outcomes need checking in Amili: line 2 (payment PAY-3)" in said
        assert final(out)[2]["outcome"] == "unknown"
        assert "looking it up in Amili failed (PermissionDeniedError" in final(out)[2]["error"]["message"]
        server.reads_down = False
        args = ("bulk", tmp_path / "day.csv", "--out", out, "--retry-failed", "--settle", "0")
        again = amili(*args, env=env_for(server, key_file))
        assert again.returncode == 0, again.stderr
        assert "1 had been applied" in again.stderr
        assert server.writes["creditor--payments"] == 1
        assert len(server.stored["creditor--payments"]) == 1
