"""Process helpers for launchers, tests and benchmarks (standard library and
``feedrank.ports`` only, so the pipeline environment can import them too).

Both environments have the project installed (``make install``,
``make serving-install``), so a child process imports ``serving`` and
``feedrank`` from any working directory; servers start in the repository
root only so that relative paths (``model_store/``, ``data/``) resolve.
`Supervisor` keeps a launcher's processes running (a stack survives the exit
of one of its parts).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Callable, List, Optional, Sequence

from feedrank.ports import free_port

__all__ = ["REPO_ROOT", "SERVING_PYTHON", "Child", "CrashLoop", "Supervisor", "free_port", "redis_ping",
           "serving_env", "spawn_redis", "start_server", "stop", "wait_ready", "wait_redis"]
log = logging.getLogger(__name__)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVING_PYTHON = os.path.join(REPO_ROOT, ".venv-serving", "bin", "python")


def serving_env(extra: Optional[dict] = None) -> dict:
    """Environment for a serving process: the caller's, TensorFlow's C++ logging quiet, plus ``extra``."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def start_server(module: str, args: Sequence[str], log_path: str,
                 python: str = SERVING_PYTHON, append: bool = False) -> subprocess.Popen:
    """Starts ``python -m module args`` with output to ``log_path`` (``append``: after what is there)."""
    if not os.path.exists(python):
        raise FileNotFoundError(f"{python} is missing; run `make serving-install` first")
    out = open(log_path, "ab" if append else "wb")
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


def redis_ping(port: int, timeout_s: float = 1.0) -> str:
    """The answer of a Redis on loopback ``port`` to ``PING``: ``"PONG"``, an error reply such
    as ``"LOADING ..."`` (still reading its data), or ``""`` when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(512).decode(errors="replace").strip()
    except OSError:
        return ""
    return reply[1:] if reply[:1] in ("+", "-") else reply


def spawn_redis(exe: str, port: int, data_dir: str, log_path: str) -> subprocess.Popen:
    """Starts ``redis-server`` on loopback ``port`` with an append-only file in ``data_dir``
    (fsynced every second; no RDB snapshots), its output appended to ``log_path``; does not wait."""
    os.makedirs(data_dir, exist_ok=True)
    return subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                             "--appendfsync", "everysec", "--dir", data_dir],
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)


def wait_redis(port: int, timeout_s: float = 60.0, proc: Optional[subprocess.Popen] = None,
               log_path: str = "") -> None:
    """Waits until the Redis on ``port`` answers ``PONG`` (its data loaded); fails early if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {proc.returncode}; see {log_path or 'its log'}")
        if redis_ping(port) == "PONG":
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer on port {port} within {timeout_s:.0f} s; "
                       f"see {log_path or 'its log'}")


class CrashLoop(RuntimeError):
    """A supervised process kept exiting (more restarts than the supervisor allows)."""


@dataclasses.dataclass
class Child:
    """A supervised process: its name, how to start it again (None: not restarted) and its log."""

    name: str
    proc: subprocess.Popen
    restart: Optional[Callable[[], subprocess.Popen]] = None
    log_path: str = ""
    exits: List[float] = dataclasses.field(default_factory=list)   # monotonic times of its recent exits
    due: Optional[float] = None   # when the exited process is started again
    restarted: int = 0


class Supervisor:
    """Keeps a set of processes running: a process that exits is started again after a
    backoff (``backoff_s`` doubled per recent exit, at most ``max_backoff_s``) while the
    others go on; more than ``max_restarts`` exits of one process within ``window_s``
    seconds, or the exit of a process without a restart function, raises `CrashLoop`."""

    def __init__(self, max_restarts: int = 5, window_s: float = 300.0, backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0):
        self.children: List[Child] = []
        self.max_restarts, self.window_s = max_restarts, window_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s

    def add(self, name: str, proc: subprocess.Popen, restart: Optional[Callable[[], subprocess.Popen]] = None,
            log_path: str = "") -> subprocess.Popen:
        """Supervises ``proc`` (``restart`` starts its replacement); returns ``proc``."""
        self.children.append(Child(name, proc, restart, log_path))
        return proc

    def restarts(self, name: str) -> int:
        """How many times ``name`` was started again so far."""
        return sum(c.restarted for c in self.children if c.name == name)

    def check(self) -> None:
        """Notes exited processes and starts those whose backoff has passed."""
        now = time.monotonic()
        for c in self.children:
            if c.due is None and c.proc.poll() is not None:
                c.exits = [t for t in c.exits if now - t < self.window_s] + [now]
                where = f" (log {c.log_path})" if c.log_path else ""
                if c.restart is None or len(c.exits) > self.max_restarts:
                    raise CrashLoop(f"{c.name} exited with code {c.proc.returncode} {len(c.exits)} time(s) in "
                                    f"{self.window_s:.0f} s{where}")
                wait = min(self.max_backoff_s, self.backoff_s * 2 ** (len(c.exits) - 1))
                log.warning("%s exited with code %s; starting it again in %.1f s (exit %d in %.0f s)%s",
                            c.name, c.proc.returncode, wait, len(c.exits), self.window_s, where)
                c.due = now + wait
            if c.due is not None and now >= c.due:
                c.due = None
                c.proc = c.restart()
                c.restarted += 1
                log.warning("%s started again (pid %d)", c.name, c.proc.pid)

    def run(self, poll_s: float = 0.2, until: Optional[Callable[[], bool]] = None) -> None:
        """`check` every ``poll_s`` seconds until ``until()`` (default: forever; Ctrl-C ends it)."""
        while until is None or not until():
            self.check()
            time.sleep(poll_s)

    def stop_all(self) -> None:
        """Stops every process, the last added first."""
        for c in reversed(self.children):
            stop(c.proc)
