"""Fixtures for the multi-process tests: a real redis-server per test, the in-memory Amili, stores.

Without `redis-server` these tests skip on a developer machine and FAIL in CI (`CI=true`), where `.ci/run`
installs it first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from amili_async.testing.redis_server import RedisServer, redis_server_binary


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if redis_server_binary() is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if in_ci():
            pytest.fail(message + ": CI must run the multi-process tests")
        pytest.skip(message)
    with RedisServer() as server:
        yield server
