"""The README's quick start works as written, in a new shell, and CI runs exactly its test command; the examples'
extra installs what they need (the FastAPI example served by uvicorn, as its docstring says)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_cli_support import clean_env

ROOT = Path(__file__).resolve().parent.parent


def quick_start() -> tuple[str, str]:
    """The README's two quick-start commands: the demo's and the tests'."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
    demo = [b for b in blocks if b.endswith("python -m amili_async demo")]
    tests = [b for b in blocks if b.endswith("pytest -q")]
    assert len(demo) == 1 and len(tests) == 1, blocks
    return demo[0], tests[0]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    _, tests = quick_start()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert any(line == tests or line.startswith(tests + " ||") for line in ci), f"{tests!r} is not a line of .ci/run"


def fresh_shell_env() -> dict[str, str]:
    """This environment as a new shell has it: no virtualenv active, nothing pointing at this checkout."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in clean_env().items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_the_demo_command_works_in_a_new_shell(tmp_path: Path) -> None:
    demo, _ = quick_start()
    checkout = tmp_path / "amili-async"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False).stdout
    if not tracked:
        pytest.skip("not a git checkout: cannot copy the repository as a user would clone it")
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    for package_file in (ROOT / "amili_async").rglob("*.py"):  # what this change adds, before it is committed
        target = checkout / package_file.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(package_file, target)
    done = subprocess.run(
        ["bash", "-c", demo], cwd=checkout, env=fresh_shell_env(), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    assert "every action produced exactly one outcome: yes" in done.stdout
    assert (checkout / ".venv" / "bin" / "amili").exists()


def test_the_examples_extra_installs_what_the_examples_import() -> None:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[]", requirement)[0] for requirement in extras["examples"]}
    imported = set()
    for example in (ROOT / "examples").glob("*.py"):
        imported |= set(re.findall(r"^(?:from|import) (\w+)", example.read_text(), flags=re.M))
    third_party = imported - set(sys.stdlib_module_names) - {"amili_async", "__future__", "pydantic", "httpx"}
    assert third_party <= names, third_party - names  # pydantic comes with fastapi, httpx with the SDK
    assert "uvicorn" in names and "amili-async[test,docs,examples]" in extras["dev"]


def test_the_fastapi_example_served_by_uvicorn_registers_a_payment() -> None:
    pytest.importorskip("uvicorn", reason="uvicorn is in the examples extra")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT,
        env=clean_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        seeded = url = None
        for line in server.stderr:
            seeded = seeded or re.search(r"creditor (\w{24}), cases (\w{24})", line)
            url = url or re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
            if seeded and url:
                break
        assert seeded and url, "uvicorn did not start the example"
        payment = {
            "creditor": seeded[1],
            "case": seeded[2],
            "amount": "250.00",
            "bank_transaction_date": "2025-10-07T08:15:30+00:00",
            "reference": "UVICORN-1",
        }
        answer = httpx.post(f"{url[1]}/payments", json=payment, timeout=30)
        assert answer.status_code == 201, answer.text
        assert answer.json()["settled_amount"] == "250.00" and answer.json()["reference"] == "UVICORN-1"
    finally:
        server.terminate()
        server.wait(timeout=30)
