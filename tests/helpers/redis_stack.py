"""Test helpers for the online-feature tests: a real ``redis-server`` on a
free loopback port (no persistence), and a small stand-in predictor that
answers the v1 columnar protocol with a score computed from the features it
receives (so transformer tests can check what was sent)."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Iterator, List

import pytest

from feedrank.ports import free_port
from tests.helpers import serving_env
from tests.helpers.serving_env import REDIS_SERVER


class RedisProcess:
    """A private redis-server process."""

    def __init__(self, workdir: str):
        if not os.path.exists(REDIS_SERVER):
            raise RuntimeError("redis-server is missing: apt-get install -y redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc = self._start()
        self.wait()

    def _start(self) -> subprocess.Popen:
        # DEBUG SLEEP (local clients only) lets tests make Redis slow
        return subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.workdir, "--enable-debug-command", "local"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True)

    def wait(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self) -> None:
        """Starts it again on the same port (empty: no persistence)."""
        self.stop()
        self.proc = self._start()
        self.wait()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisProcess]:
    """A real Redis for the module's tests; skipped without ``redis-server`` (failed under ``make test``)."""
    serving_env.require_redis()
    r = RedisProcess(str(tmp_path_factory.mktemp("redis")))
    yield r
    r.stop()


class FeaturePredictor:
    """A v1 columnar predictor stand-in on a free port: the score of a
    candidate is its ``item_hist_ctr`` plus 0.001 per click-history entry
    equal to its ``category_id``; every request body is recorded."""

    def __init__(self, model_name: str = "feedrank", version: str = "7"):
        self.requests: List[Dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                x = body["inputs"]
                history = x["click_category_ids"][0]
                scores = [ctr + 0.001 * sum(1 for c in history if c == cat)
                          for ctr, cat in zip(x["item_hist_ctr"], x["category_id"])]
                data = json.dumps({"outputs": {"probabilities": scores}}).encode()
                ok = self.path == f"/v1/models/{model_name}:predict"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Feedrank-Model-Version", version)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
