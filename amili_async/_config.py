"""Configuration from the environment, base URL checks and logging set-up.

Nothing here runs as a side effect of constructing a client: the client asks for credentials from the
environment only when none were passed, and logging is configured only by whoever calls
`configure_logging_from_env()` (the `amili` command does; a library user configures logging their own way).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

import httpx

from ._version import __version__
from .auth import ApiCodeJwtAuth
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .auth import Auth

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "SANDBOX_URL",
    "auth_from_env",
    "base_url_from",
    "configure_logging_from_env",
    "user_agent",
]

SANDBOX_URL = "https://api-sandbox.amili.se"
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=10.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=15.0)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def user_agent() -> str:
    v = sys.version_info
    return f"amili-async/{__version__} python/{v.major}.{v.minor}.{v.micro} httpx/{httpx.__version__}"


def base_url_from(raw: str | None) -> str:
    """The checked base URL: the argument, else `AMILI_BASE_URL`, else the sandbox."""
    raw = raw or os.environ.get("AMILI_BASE_URL") or SANDBOX_URL
    url = httpx.URL(raw)
    if url.scheme not in ("https", "http"):
        raise ConfigurationError(
            f"base_url must start with https:// (or http://localhost, http://127.0.0.1 for a local server), got {raw!r}"
        )
    if url.scheme == "http" and url.host not in LOCAL_HOSTS:
        raise ConfigurationError(
            "base_url must use https:// (plain http only for a local server: http://localhost, http://127.0.0.1)"
        )
    if url.userinfo:
        raise ConfigurationError("base_url must not contain a user name or password")
    if url.query or url.fragment:
        raise ConfigurationError("base_url must not contain a query string or fragment")
    return str(url).rstrip("/")


def auth_from_env() -> Auth:
    """Credentials from `AMILI_API_CODE` and `AMILI_PRIVATE_KEY` (or `AMILI_PRIVATE_KEY_FILE`)."""
    api_code = os.environ.get("AMILI_API_CODE")
    key = os.environ.get("AMILI_PRIVATE_KEY")
    key_file = os.environ.get("AMILI_PRIVATE_KEY_FILE")
    missing = []
    if not api_code:
        missing.append("AMILI_API_CODE")
    if not key and not key_file:
        missing.append("AMILI_PRIVATE_KEY or AMILI_PRIVATE_KEY_FILE")
    if missing:
        raise ConfigurationError(
            "no credentials: pass auth=... or set " + " and ".join(missing) + " in the environment"
        )
    if not key:
        assert key_file
        try:
            with open(key_file, encoding="ascii") as fh:
                key = fh.read()
        except OSError as exc:
            raise ConfigurationError(f"AMILI_PRIVATE_KEY_FILE could not be read: {exc.strerror}") from None
    algorithm = os.environ.get("AMILI_JWT_ALGORITHM", "ES256")
    return ApiCodeJwtAuth(api_code=api_code, private_key=key, algorithm=algorithm)


def configure_logging_from_env() -> None:
    """`AMILI_LOG=DEBUG|INFO|WARNING`: give the `amili_async` logger that level and a stderr handler."""
    level = os.environ.get("AMILI_LOG", "").strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING"):
        return
    logger = logging.getLogger("amili_async")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
