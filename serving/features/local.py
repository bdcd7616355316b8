"""Local online-feature stack: Redis, the bulk load and the feature updater,
plus the transformer when a predictor URL is given (``make serve``).

    python -m serving.features.local --log data/demo \
        [--predictor-url http://127.0.0.1:8080 --model-name feedrank --transformer-port 8081]

Starts ``redis-server`` on loopback (no persistence) unless one already
answers on ``--redis-port``, seeds it from ``--log`` (skipped when already
seeded), starts the updater on the ``fr:events`` stream and, with
``--predictor-url``, the transformer (serving environment).  Prints the URLs
and a ready-to-paste ``curl``; Ctrl-C stops what it started.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from typing import List, Optional

import redis

from feedrank.events import contract, io
from serving.common import procs
from serving.features import bootstrap, schema, stream, writer

log = logging.getLogger(__name__)
INSTALL_HINT = "redis-server is missing: install it with `sudo apt-get install -y redis-server` (Debian/Ubuntu)"


def start_redis(port: int, workdir: str) -> Optional[subprocess.Popen]:
    """A loopback redis-server on ``port`` (None if one already answers)."""
    url = f"redis://127.0.0.1:{port}/0"
    try:
        writer.redis_client(url, 1.0).ping()
        log.info("using the Redis already on port %d", port)
        return None
    except redis.RedisError:
        pass
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError(INSTALL_HINT)
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir],
                            stdout=open(os.path.join(workdir, "redis.log"), "wb"), stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            writer.redis_client(url, 1.0).ping()
            return proc
        except redis.RedisError:
            time.sleep(0.1)
    raise RuntimeError(f"redis-server did not start on port {port}; see {workdir}/redis.log")


def example_request(log_dir: str, n: int = 5) -> dict:
    """A request for the log's most active user and ``n`` posts."""
    ev = io.read_events(log_dir)
    user = ev.loc[ev["event"] == contract.CLICK, "user_id"].value_counts().index[0]
    items = list(io.read_table(log_dir, contract.ITEMS)["item_id"][:n])
    return {"user_id": str(user), "candidates": [str(i) for i in items]}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.features.local", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", required=True, help="event log to seed Redis from")
    p.add_argument("--redis-port", type=int, default=6379)
    p.add_argument("--workdir", default="runs/serve", help="logs of the started processes")
    p.add_argument("--predictor-url", default="", help="start the transformer against this predictor")
    p.add_argument("--model-name", default="feedrank")
    p.add_argument("--transformer-port", type=int, default=8081)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.makedirs(args.workdir, exist_ok=True)
    url = f"redis://127.0.0.1:{args.redis_port}/0"
    started: List[subprocess.Popen] = []
    try:
        r = start_redis(args.redis_port, os.path.abspath(args.workdir))
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    if r is not None:
        started.append(r)
    try:
        client = writer.redis_client(url)
        try:
            bootstrap.bootstrap(client, args.log, schema.Keys())
        except bootstrap.AlreadySeeded as e:
            log.info("%s", e)
        updater_log = os.path.join(args.workdir, "updater.log")
        started.append(subprocess.Popen(
            [sys.executable, "-m", "serving.features.updater", "--redis", url, "--stream", stream.DEFAULT_STREAM],
            stdout=open(updater_log, "wb"), stderr=subprocess.STDOUT, cwd=procs.REPO_ROOT,
            env=procs.serving_env()))
        print(f"redis:   {url}  (events: XADD {stream.DEFAULT_STREAM}; updater log {updater_log})")
        if args.predictor_url:
            t_log = os.path.join(args.workdir, "transformer.log")
            started.append(procs.start_server("serving.transformer", [
                "--model-name", args.model_name, "--predictor-url", args.predictor_url, "--redis", url,
                "--http-port", str(args.transformer_port)], t_log))
            t_url = f"http://127.0.0.1:{args.transformer_port}"
            procs.wait_ready(f"{t_url}/v1/models/{args.model_name}", 120, started[-1], t_log)
            body = json.dumps(example_request(args.log))
            print(f"ranking: {t_url}/v1/models/{args.model_name}:predict  (log {t_log})")
            print(f"try:     curl -s -H 'Content-Type: application/json' -d '{body}' "
                  f"{t_url}/v1/models/{args.model_name}:predict")
        print("Ctrl-C stops the stack.")
        while all(proc.poll() is None for proc in started):
            time.sleep(1.0)
        log.error("a process of the stack exited; stopping the rest (logs in %s)", args.workdir)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(started):
            procs.stop(proc)


if __name__ == "__main__":
    sys.exit(main())
