"""Loopback ports for the local servers (MLflow, Redis, the predictors, the transformer).

Standard library only, so both environments (the pipeline's and the serving
one), the launchers, the benchmarks and the tests take ports from here.
"""
from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now (the OS picks it; another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
