"""Loopback servers for the benchmarks, each in its own process, started and stopped by the runner."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from _util import BENCH_DIR, REPO_ROOT, child_env, probe, process_cpu_seconds


class ServerStartError(RuntimeError):
    pass


class ServerProcess:
    """A running server child. ``info`` is what it announced when ready (for the fixed server: its port)."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        stderr_file: IO[bytes],
        is_ready_line: Callable[[bytes], bool],
    ) -> None:
        self.name = name
        self._is_ready_line = is_ready_line
        self.proc = proc
        self.info: dict[str, Any] = {}
        self._stderr_file = stderr_file
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._drain_stdout, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    # stdout is read by a thread for the whole life of the child: the first useful line is the readiness
    # announcement, and everything after it is discarded so that a chatty server never blocks on a full pipe.
    def _drain_stdout(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        ready_seen = False
        for line in iter(stdout.readline, b""):
            if not ready_seen:
                self._lines.put(line)
                ready_seen = self._is_ready_line(line)
        self._lines.put(None)

    def wait_ready(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerStartError(f"{self.name} server did not announce itself within {timeout:.0f} s")
            try:
                line = self._lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=5)
                raise ServerStartError(
                    f"{self.name} server exited with code {self.proc.returncode} before it was ready: "
                    f"{self.stderr_tail()}"
                )
            if self._is_ready_line(line):
                return line.strip()

    def stderr_tail(self, limit: int = 1500) -> str:
        try:
            self._stderr_file.flush()
            data = Path(self._stderr_file.name).read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode(errors="replace").strip()

    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        proc = self.proc
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._stderr_file.close()
        with contextlib.suppress(OSError):
            os.unlink(self._stderr_file.name)


def _is_port_line(line: bytes) -> bool:
    return line.strip().isdigit()


def _is_announcement_line(line: bytes) -> bool:
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and "base_url" in value


def _spawn(name: str, argv: list[str], is_ready_line: Callable[[bytes], bool]) -> ServerProcess:
    # Closed (and removed) by ServerProcess.stop(): it has to live as long as the child does.
    stderr_file = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,  # the fixed server exits when this pipe closes, even if we are SIGKILLed
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        env=child_env(),
        cwd=REPO_ROOT,
        start_new_session=True,  # a Ctrl-C in the terminal reaches only the runner, which stops us cleanly
    )
    return ServerProcess(name, proc, stderr_file, is_ready_line)


def start_fixed(timeout: float = 30.0) -> ServerProcess:
    server = _spawn("fixed", [sys.executable, str(BENCH_DIR / "fixed_server.py"), "--port", "0"], _is_port_line)
    try:
        port = int(server.wait_ready(timeout))
    except BaseException:
        server.stop()
        raise
    server.info = {"base_url": f"http://127.0.0.1:{port}", "port": port}
    return server


def amili_module_available() -> tuple[bool, str]:
    """Whether ``python -m amili_async.testing`` can run at all (the package and its ``__main__``)."""
    return probe(
        "import importlib.util, sys\n"
        "for name in ('amili_async.testing', 'amili_async.testing.__main__'):\n"
        "    if importlib.util.find_spec(name) is None:\n"
        "        sys.exit(name + ' is not importable')\n"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_amili(cases: int = 1000, timeout: float = 90.0) -> ServerProcess:
    """Start ``python -m amili_async.testing serve``; try ``--port 0`` first, then a port chosen here."""
    errors: list[str] = []
    for port in (0, _free_port()):
        argv = [
            sys.executable,
            "-m",
            "amili_async.testing",
            "serve",
            "--port",
            str(port),
            "--cases",
            str(cases),
        ]
        server = _spawn("amili", argv, _is_announcement_line)
        try:
            line = server.wait_ready(timeout)
        except ServerStartError as exc:
            server.stop()
            errors.append(f"--port {port}: {exc}")
            continue
        except BaseException:
            server.stop()
            raise
        server.info = json.loads(line)
        return server
    raise ServerStartError("; ".join(errors))
