"""Helpers shared by the benchmark scripts: paths, child-process environment, machine facts, RSS."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

# The names the SDK scenarios need; if any is missing the SDK is "not there yet" and they are skipped.
SDK_NAMES = ("AsyncAmiliClient", "StaticTokenAuth", "ApiCodeJwtAuth")
PACKAGES = (
    "amili-async",
    "httpx",
    "httpcore",
    "h11",
    "aiohttp",
    "httpx-aiohttp",
    "orjson",
    "uvloop",
    "anyio",
    "sniffio",
    "trio",
    "attrs",
    "cattrs",
    "tenacity",
    "PyJWT",
)


def child_env() -> dict[str, str]:
    """The environment for every child process: the repository root first on the import path, so the
    in-tree ``amili_async`` is what gets measured even when it is not installed."""
    env = dict(os.environ)
    parts = [str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def probe(code: str, timeout: float = 60.0) -> tuple[bool, str]:
    """Run ``code`` in a fresh interpreter with :func:`child_env`; return (succeeded, last line of output)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env(),
            cwd=REPO_ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"probe timed out after {timeout:.0f} s"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode == 0, lines[-1] if lines else ""


def sdk_available(extra_names: Sequence[str] = ()) -> tuple[bool, str]:
    names = (*SDK_NAMES, *extra_names)
    code = (
        "import amili_async as m\n"
        f"missing = [n for n in {list(names)!r} if not hasattr(m, n)]\n"
        "assert not missing, 'amili_async lacks ' + ', '.join(missing)\n"
    )
    return probe(code)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float | None:
    """Current resident set size in MiB where ``/proc`` is available, else None."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of another process, from ``/proc/<pid>/stat`` (None where unavailable)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; everything after the last ')' is well formed.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the full line)
    except (IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions["amili-async"] is None:
        # Not installed: read the in-tree version file instead.
        version_file = REPO_ROOT / "amili_async" / "_version.py"
        if version_file.exists():
            for line in version_file.read_text().splitlines():
                if line.startswith("__version__"):
                    versions["amili-async"] = line.split("=", 1)[1].strip().strip("\"'") + " (in tree)"
    return versions


def git_revision() -> str | None:
    """The checked-out commit, read-only and best effort (None before the first commit)."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    try:
        usable_cpus: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cpus = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "load_average_1_5_15": load,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "packages": package_versions(),
        "git_revision": git_revision(),
    }


def median(values: Iterable[float]) -> float | None:
    data = list(values)
    return statistics.median(data) if data else None


def parse_int_list(text: str) -> list[int]:
    values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"expected a comma-separated list of positive integers, got {text!r}")
    return values


def parse_name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def last_json_line(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that parses as a JSON object (children may print notes before it)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


def fetch_access_token(base_url: str, api_code: str, private_key_pem: str, algorithm: str) -> str:
    """Log in the way Amili documents it (``GET /authenticates/api-code`` with a signed JWT in
    ``X-API-Key``) and return the access token, for the raw-client scenarios against the fake server."""
    import jwt  # PyJWT, a dependency of the SDK; imported lazily because only this path needs it

    signed = jwt.encode({"api_code": api_code, "exp": int(time.time()) + 600}, private_key_pem, algorithm=algorithm)
    request = urllib.request.Request(
        base_url.rstrip("/") + "/authenticates/api-code", headers={"X-API-Key": signed}, method="GET"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body: bytes = response.read()
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return body.decode().strip()
    if isinstance(payload, str):
        return payload
    if isinstance(payload, dict):
        for key in ("token", "access_token", "accessToken", "api_key", "_token"):
            value = payload.get(key)
            if isinstance(value, str) and value:
                return value
    raise RuntimeError(f"could not find an access token in the login response: {body[:200]!r}")
