"""`benchmarks/scale_out.py` at toy size: real worker processes, a real redis-server, the served in-memory Amili.

Nothing here asserts on timings; it asserts what must hold at any size: every payment stored exactly once,
and with the Redis stores one login for all the processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from amili_async.testing.redis_server import RedisServer

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scale_out.py"


def test_scale_out_at_toy_size(redis_server: RedisServer):  # the fixture: fail in CI without redis-server
    argv = [sys.executable, str(SCRIPT), "--workers", "3", "--payments", "90", "--limit", "60", "--startup", "2"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {row["mode"]: row for row in map(json.loads, proc.stdout.splitlines())}
    assert set(rows) == {"redis", "local"}
    for row in rows.values():
        assert row["lost"] == 0 and row["duplicates"] == 0 and row["payments"] == 90
        assert set(row) >= {"workers", "failed", "token_requests", "wall_s", "ideal_s", "rate_fraction", "http_429"}
    assert rows["redis"]["failed"] == 0
    assert rows["redis"]["token_requests"] == 1  # three processes, one login
