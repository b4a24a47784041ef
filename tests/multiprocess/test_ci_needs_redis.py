"""Without a redis-server binary the multi-process tests skip on a laptop, and fail in CI (`CI=true`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ONE_TEST = f"{HERE / 'test_redis_token_store.py'}::test_discard_only_drops_the_refused_token[asyncio]"


def _pytest_without_redis_server(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(tmp_path)  # no redis-server on it
    if ci is not None:
        env["CI"] = ci
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", ONE_TEST]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=HERE.parent.parent, timeout=120)


def test_fails_in_ci(tmp_path: Path):
    proc = _pytest_without_redis_server(tmp_path, "true")
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "CI must run the multi-process tests" in proc.stdout


def test_skips_elsewhere(tmp_path: Path):
    proc = _pytest_without_redis_server(tmp_path, None)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "1 skipped" in proc.stdout
