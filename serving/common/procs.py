"""Process helpers for launchers, tests and benchmarks (standard library and
``feedrank.ports`` only, so the pipeline environment can import them too).

Both environments have the project installed (``make install``,
``make serving-install``), so a child process imports ``serving`` and
``feedrank`` from any working directory; servers start in the repository
root only so that relative paths (``model_store/``, ``data/``) resolve.
"""
from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from typing import Optional, Sequence

from feedrank.ports import free_port

__all__ = ["REPO_ROOT", "SERVING_PYTHON", "free_port", "serving_env", "start_server", "stop", "wait_ready"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVING_PYTHON = os.path.join(REPO_ROOT, ".venv-serving", "bin", "python")


def serving_env(extra: Optional[dict] = None) -> dict:
    """Environment for a serving process: the caller's, TensorFlow's C++ logging quiet, plus ``extra``."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def start_server(module: str, args: Sequence[str], log_path: str,
                 python: str = SERVING_PYTHON) -> subprocess.Popen:
    """Starts ``python -m module args`` with output to ``log_path``."""
    if not os.path.exists(python):
        raise FileNotFoundError(f"{python} is missing; run `make serving-install` first")
    out = open(log_path, "wb")
    return subprocess.Popen([python, "-m", module, *args], cwd=REPO_ROOT, env=serving_env(),
                            stdout=out, stderr=subprocess.STDOUT)


def wait_ready(url: str, timeout_s: float = 120.0, proc: Optional[subprocess.Popen] = None,
               log_path: Optional[str] = None) -> None:
    """Polls ``url`` until it answers 200; fails early if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = open(log_path, errors="replace").read()[-3000:] if log_path else ""
            raise RuntimeError(f"server exited with code {proc.returncode} before {url} was ready\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s")


def stop(proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if the process lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
