"""A throw-away `redis-server` for tests and benchmarks: its own unix socket in a temporary directory, no
persistence, killed (not shut down politely) by `stop()`, as a crash would.

```python
with RedisServer() as redis_server:   # needs the redis-server binary (Debian: apt-get install redis-server)
    store = RedisTokenStore(redis_server.url, base_url=..., auth=...)
```

Nothing here imports redis-py: the readiness check speaks RESP over the socket itself.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["RedisServer", "redis_server_binary"]


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer:
    """One redis-server process on a unix socket; `stop()` and `start()` again keep the same address."""

    def __init__(self, directory: str | None = None) -> None:
        self._own_dir = directory is None
        # Unix socket paths are limited to ~100 bytes: a short directory under /tmp.
        self.directory = Path(directory or tempfile.mkdtemp(prefix="amili-redis-", dir="/tmp"))
        self.socket = self.directory / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = redis_server_binary()
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [
                binary,
                "--port", "0",
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--loglevel", "warning",
                "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self._ping():
                return self
            time.sleep(0.01)
        self.stop()
        raise TimeoutError("redis-server did not start")

    def _ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(str(self.socket))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()  # as a crash would: no goodbye to the clients
            process.wait(timeout=10)
        self.socket.unlink(missing_ok=True)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
