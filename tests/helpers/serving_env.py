"""What the serving tests need from the machine: the serving venv and ``redis-server``.

Where one is missing a test is skipped with the reason, or, when the environment
variable ``FEEDRANK_REQUIRE_SERVING`` is set (``make test`` sets it), fails with
that reason: the full suite never passes by skipping the serving half.
"""
from __future__ import annotations

import os
import shutil

import pytest

from serving.common import procs

REQUIRE_SERVING = "FEEDRANK_REQUIRE_SERVING"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def required() -> bool:
    """True where a missing serving dependency is a failure (``FEEDRANK_REQUIRE_SERVING`` set, not 0)."""
    return os.environ.get(REQUIRE_SERVING, "") not in ("", "0")


def skip_or_fail(reason: str) -> None:
    """Skips the running test with ``reason``, or fails it where serving is required."""
    if required():
        pytest.fail(f"{reason} ({REQUIRE_SERVING} is set)", pytrace=False)
    pytest.skip(reason)


def missing_serving_venv() -> str:
    """Why the serving venv is unusable, or '' when its Python is there."""
    if os.access(procs.SERVING_PYTHON, os.X_OK):
        return ""
    return "the serving environment is missing: run `make serving-install`"


def missing_redis() -> str:
    """Why ``redis-server`` cannot be started, or '' when it is installed."""
    if os.access(REDIS_SERVER, os.X_OK):
        return ""
    return "redis-server is missing: apt-get install -y redis-server"


def require_serving_venv() -> None:
    """Skips or fails (see `skip_or_fail`) unless the serving venv is installed."""
    reason = missing_serving_venv()
    if reason:
        skip_or_fail(reason)


def require_redis() -> None:
    """Skips or fails (see `skip_or_fail`) unless ``redis-server`` is installed."""
    reason = missing_redis()
    if reason:
        skip_or_fail(reason)
