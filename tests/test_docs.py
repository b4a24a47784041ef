"""Every Python code block of the documentation runs, against the in-memory Amili.

The convention (also told to readers in docs/index.md, "About the examples"):

- Every fenced block whose info string is exactly ``python`` runs: the blocks of one file in order, in one
  shared namespace, so a later block may use what an earlier one defined. Each file starts afresh.
- The namespace starts with a preamble, as if the reader had just set things up:

  ``fake``         a `FakeAmili(seed=0)`
  ``creditor``     the `FakeCreditor` added to it; ``creditor_id`` its id
  ``case_id``      an open case of that creditor (1000.00 SEK, state ``invoice``, invoice ``INV-2025-003``)
  ``case_ids``     ten more open cases of 1000.00 SEK (invoices ``INV-2`` .. ``INV-11``)
  ``amili``        an open `AsyncAmiliClient` logged in as the creditor, `RetryPolicy.no_delay()`
  ``pem``, ``api_code``   the creditor's private key (PEM) and API code

  Nothing is imported for the blocks: they import what they use, so they can be copied as they are.
- Top-level ``await`` / ``async with`` / ``async for`` work: blocks are compiled with
  `ast.PyCF_ALLOW_TOP_LEVEL_AWAIT` and awaited on an asyncio event loop running in a helper thread. The
  blocks themselves run in the test's thread, where no loop runs, so blocking code (the `AmiliClient`
  facade, ``asyncio.run(main())`` in a script-style block) works too.
- A block is skipped only when the line before its fence is ``<!-- no-run: REASON -->`` (invisible when
  rendered). Keep it for snippets that need real credentials or a real network; shell goes in ``bash``
  blocks, which are never run. ``python no-run`` as an info string is refused: MkDocs would not render it.
- Blocks run with a temporary directory as the working directory and ``AMILI_*`` variables cleared; the
  environment, the ``amili_async`` logger's level and handlers, and OpenTelemetry's global providers are
  restored afterwards.

README.md follows the convention when it contains the line ``<!-- docs-test -->``; until then it is skipped.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import os
import re
import threading
from collections.abc import Coroutine, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest

from amili_async import RetryPolicy
from amili_async.testing import FakeAmili

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
README = ROOT / "README.md"
README_OPT_IN = "<!-- docs-test -->"
PYTHON = {"python", "py", "python3"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*?)[ \t]*$")
NO_RUN = re.compile(r"^\s*<!--\s*no-run:\s*(?P<reason>\S.*?)\s*-->\s*$")
BLOCK_TIMEOUT = 60.0
T = TypeVar("T")


class Block(NamedTuple):
    path: Path
    line: int  # 1-based line of the first line of code
    language: str
    info: str  # what follows the language in the info string
    source: str
    no_run: str | None  # the reason, when the block is marked no-run

    @property
    def where(self) -> str:
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path.name
        return f"{shown}:{self.line}"


def blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language, _, info = opening["info"].partition(" ")
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = NO_RUN.match(previous)
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = lines[j].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        yield Block(path, i + 2, language.lower(), info.strip(), "\n".join(body) + "\n", marker and marker["reason"])
        i = j + 1


def python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.language in PYTHON]


def documents() -> list[Any]:
    params: list[Any] = [pytest.param(p, id=p.name) for p in DOCS]
    if README.exists():
        marks = []
        if README_OPT_IN not in README.read_text(encoding="utf-8"):
            marks.append(pytest.mark.skip(reason=f"README.md does not opt in ({README_OPT_IN}); see test_docs.py"))
        params.append(pytest.param(README, id="README.md", marks=marks))
    return params


class LoopThread:
    """An asyncio event loop in a helper thread: the blocks' coroutines run there, the blocks run here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="docs-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(BLOCK_TIMEOUT)

    def close(self) -> None:
        async def shutdown() -> None:
            await self.loop.shutdown_asyncgens()

        self.run(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def preamble() -> dict[str, Any]:
    fake = FakeAmili(seed=0)
    creditor = fake.add_creditor()
    case_id = fake.add_case(creditor=creditor.id, capital=Decimal("1000.00"), invoice_number="INV-2025-003")
    case_ids = [fake.add_case(creditor=creditor.id, capital=Decimal("1000.00")) for _ in range(10)]
    amili = fake.client(creditor, retry=RetryPolicy.no_delay())
    await amili.__aenter__()
    return {
        "__name__": "__docs__",
        "fake": fake,
        "creditor": creditor,
        "creditor_id": creditor.id,
        "case_id": case_id,
        "case_ids": case_ids,
        "amili": amili,
        "pem": creditor.private_key_pem,
        "api_code": creditor.api_code,
    }


def run_blocks(path: Path) -> int:
    """Run the file's blocks; return how many ran."""
    runnable = [b for b in python_blocks(path) if b.no_run is None]
    if not runnable:
        return 0
    loop = LoopThread()
    namespace = loop.run(preamble())
    amili = namespace["amili"]
    ran = 0
    try:
        for block in runnable:
            # Padding keeps the Markdown file's line numbers in tracebacks.
            source = "\n" * (block.line - 1) + block.source
            try:
                code = compile(source, str(block.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
                result = eval(code, namespace)
                if inspect.iscoroutine(result):
                    loop.run(result)
            except Exception as exc:
                raise AssertionError(f"the block at {block.where} failed: {type(exc).__name__}: {exc}") from exc
            ran += 1
    finally:
        try:
            loop.run(amili.aclose())
        finally:
            loop.close()
    return ran


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_otel_globals: None) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    logger = logging.getLogger("amili_async")  # a page may turn on debug logging, as readers would
    monkeypatch.setattr(logger, "level", logger.level)
    monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("AMILI_"):
            monkeypatch.delenv(name)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("path", documents())
def test_python_blocks_run(path: Path, sandbox: None) -> None:
    run_blocks(path)


@pytest.mark.parametrize("path", documents())
def test_fences_follow_the_convention(path: Path) -> None:
    for block in blocks(path):
        if block.language in PYTHON:
            assert not block.info, (
                f"{block.where}: a python fence takes no options ({block.info!r}); to skip a block put "
                "'<!-- no-run: REASON -->' on the line before it"
            )
        elif block.no_run is not None:
            pytest.fail(f"{block.where}: only python blocks run, '<!-- no-run -->' is not needed on {block.language}")
        if block.language in PYTHON and block.no_run is None:
            ast.parse(block.source, str(block.path), feature_version=(3, 10))


def test_every_page_has_running_examples() -> None:
    """The pages about using the SDK show code that runs; skipped blocks stay the exception."""
    total = skipped = 0
    for path in DOCS:
        found = python_blocks(path)
        total += len(found)
        skipped += sum(b.no_run is not None for b in found)
    assert total >= 30
    assert skipped <= total // 5, f"{skipped} of {total} python blocks are marked no-run"


def test_the_harness_reports_the_failing_block(tmp_path: Path, sandbox: None) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n```python\nx = await amili.cases.get(case_id)\n```\n\n"
        "<!-- no-run: needs real credentials -->\n```python\nraise SystemExit\n```\n\n"
        "```bash\nexit 1\n```\n\n```python\nassert x.id == case_id\nassert False, 'boom'\n```\n",
        encoding="utf-8",
    )
    found = python_blocks(page)
    assert [b.line for b in found] == [4, 9, 17]
    assert found[1].no_run == "needs real credentials"
    with pytest.raises(AssertionError, match=r"page\.md:17 failed: AssertionError: boom"):
        run_blocks(page)
