"""The release artefacts work: build the sdist and wheel, `twine check` them, install the wheel into a fresh
virtualenv (its dependencies resolved by pip, not borrowed from this environment) and use it from there.

Needs `build` and `twine` (the dev extra); skipped with a reason without them. pip's cache and configured
indexes are used as they are, so a warm run takes a few seconds.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("build") is None,
        reason="`build` is not installed (pip install build, or the dev extra)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("twine") is None,
        reason="`twine` is not installed (pip install twine, or the dev extra)",
    ),
]


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def clean_env() -> dict[str, str]:
    """This environment minus what would let the fresh venv see the source tree or this venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "AMILI_"))}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def version() -> str:
    text = (ROOT / "amili_async" / "_version.py").read_text(encoding="utf-8")
    found = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", text)
    assert found, "amili_async/_version.py has no __version__"
    return found[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", out, ROOT, cwd=ROOT)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    [found] = dist.glob("amili_async-*.whl")
    return found


@pytest.fixture(scope="module")
def fresh_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv (no system site-packages) with the wheel and its dependencies installed by pip."""
    venv = tmp_path_factory.mktemp("venv")
    # No pip inside (ensurepip is the slow part): this interpreter's pip installs into it with --python.
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--quiet",
        wheel,
        cwd=venv,
        env=clean_env(),
    )
    return python


def test_artefacts_are_built_and_pass_twine_check(dist: Path) -> None:
    names = sorted(p.name for p in dist.iterdir())
    v = version()
    assert names == [f"amili_async-{v}-py3-none-any.whl", f"amili_async-{v}.tar.gz"]
    run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()), cwd=dist)


def test_wheel_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "amili_async/py.typed" in names
    assert "amili_async/testing/pytest_plugin.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/", "docs/")) for n in names)
    assert "Requires-Python: >=3.10" in metadata
    assert "amili_async = amili_async.testing.pytest_plugin" in entry_points
    assert "amili = amili_async.cli:main" in entry_points


def test_fresh_venv_imports_the_installed_wheel(fresh_python: Path, tmp_path: Path) -> None:
    code = (
        "import sys, amili_async\n"
        "from amili_async import AsyncAmiliClient, AmiliClient, CreditorPayment, OutcomeUnknownError\n"
        "from amili_async.testing import FakeAmili, Fault\n"
        "assert sys.prefix != sys.base_prefix\n"
        "print(amili_async.__version__)\n"
        "print(amili_async.__file__)\n"
    )
    out = run(fresh_python, "-c", code, cwd=tmp_path, env=clean_env()).stdout.split()
    assert out[0] == version()
    installed = Path(out[1]).resolve()
    assert fresh_python.parent.parent.resolve() in installed.parents, f"imported from {installed}, not the venv"
    assert ROOT not in installed.parents


def test_fresh_venv_runs_a_payment(fresh_python: Path, tmp_path: Path) -> None:
    code = """
import asyncio
from datetime import datetime, timezone
from decimal import Decimal
from amili_async.testing import FakeAmili

async def main():
    fake = FakeAmili(seed=0)
    creditor = fake.add_creditor()
    case = fake.add_case(creditor=creditor.id)
    async with fake.client(creditor) as amili:
        receipt = await amili.creditor_payments.create(
            creditor=creditor.id, case=case, amount=Decimal("10.00"), currency="SEK",
            bank_transaction_date=datetime(2025, 10, 7, tzinfo=timezone.utc),
            creditor_payment_reference="R-1",
        )
    assert receipt.status == "completed" and len(fake.payments) == 1
    print("ok")

asyncio.run(main())
"""
    assert run(fresh_python, "-c", code, cwd=tmp_path, env=clean_env()).stdout.strip() == "ok"


def test_fresh_venv_runs_the_demo(fresh_python: Path, wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        if "amili_async/__main__.py" not in zf.namelist():
            pytest.skip("amili_async/__main__.py (the demo) is not in the wheel yet")
    result = run(fresh_python, "-m", "amili_async", "demo", "--cases", "50", cwd=tmp_path, env=clean_env())
    assert "every action produced exactly one outcome: yes" in result.stdout + result.stderr
