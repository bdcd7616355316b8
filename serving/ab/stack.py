"""The local serving stack as a context manager, for the A/B demo and the online benchmarks.

    with serving_stack(log_dir, workdir, ["--model", "models:/m@champion"]) as (endpoint, redis_url):
        ...   # rank at endpoint, send events to redis_url's fr:events

Starts ``python -m serving.stack`` (Redis, the bulk load of the log,
the feature updater, the predictor(s), the transformer, optionally the log
sink) on free loopback ports, waits until it prints that it is up, and stops
it with SIGINT on exit (after waiting for the log sink to drain, when one runs).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Iterator, List, Sequence, Tuple

from feedrank.events import stream
from feedrank.ports import free_port

log = logging.getLogger(__name__)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
READY_LINE = "Ctrl-C stops the stack"


class StackError(RuntimeError):
    """The serving stack did not start."""


def wait_drained(redis_url: str, streams: Sequence[str], timeout_s: float = 120.0) -> None:
    """Waits until the log sink's group has read and acknowledged every entry of ``streams``."""
    import redis

    from serving.features import sink

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + timeout_s
    while True:
        left = 0
        for s in streams:
            try:
                groups = {g["name"]: g for g in client.xinfo_groups(s)}
            except redis.ResponseError:   # no such stream: nothing was served
                continue
            g = groups.get(sink.GROUP)
            left += (g.get("lag") or 0) + g["pending"] if g else client.xlen(s)
        if left == 0:
            return
        if time.monotonic() > deadline:
            raise StackError(f"the log sink still has {left} entries to write after {timeout_s:.0f} s")
        time.sleep(0.5)


@contextlib.contextmanager
def serving_stack(log_dir: str, workdir: str, extra: List[str], echo: bool = True,
                  sink_dir: str = "") -> Iterator[Tuple[str, str]]:
    """Runs the local stack on free ports; yields ``(transformer URL, Redis URL)``."""
    from serving.features import sink

    ports = {k: free_port() for k in ("redis", "predictor", "challenger", "transformer")}
    redis_url = stream.local_redis_url(ports["redis"])
    cmd = [sys.executable, "-m", "serving.stack", "--log", log_dir, "--workdir", workdir,
           "--redis-port", str(ports["redis"]), "--predictor-port", str(ports["predictor"]),
           "--challenger-port", str(ports["challenger"]), "--transformer-port", str(ports["transformer"]),
           *(["--sink-dir", sink_dir] if sink_dir else []), *extra]
    if echo:
        print("$ " + " ".join(cmd), flush=True)
    stack = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in stack.stdout:
            if echo:
                print("  " + line.rstrip(), flush=True)
            if READY_LINE in line:
                break
        if stack.poll() is not None:
            raise StackError(f"the serving stack did not start (exit {stack.returncode}; logs under {workdir})")
        yield f"http://127.0.0.1:{ports['transformer']}", redis_url
        if sink_dir:
            wait_drained(redis_url, [stream.DEFAULT_STREAM, sink.REQUESTS_STREAM])
    finally:
        if stack.poll() is None:
            stack.send_signal(signal.SIGINT)
            try:
                stack.wait(timeout=60)
            except subprocess.TimeoutExpired:
                stack.kill()
