"""Open-loop latency of the session endpoint (``python -m serving.sessions``) on loopback.

Request i is scheduled at ``i / rate`` seconds and timed from that moment
(`benchmarks.serving.open_loop`), so queueing shows in the latency.  Each
request is one shopper's next event: ``--users`` shoppers browse in turn, a
page view with its dwell time per request, an add-to-cart every
``--cart-every`` pages and a 31-minute pause (a new session) every
``--session-pages`` pages, so the endpoint runs its whole path: the Redis
state transaction (WATCH/MULTI, the event logged to ``fr:events``), the
SavedModel call on up to 50 pages plus the purchase history, the answer.
Every run sends fresh event ids (nothing is a duplicate).

The model: ``--model-dir`` (a pushed session model with the raw signature),
else a DRNN of the demo's shape (configs/session.yaml: 3,000 items, about
3,040 pages, width 5, length 2, height 1, 64 GRU units, full softmax, top 20)
with random weights, exported with the raw signature
(`feedrank.sessions.random_model`): the latency does not depend on what the weights learnt.

    .venv/bin/python -m benchmarks.session_serving [--rate 100 --duration 20 --runs 3]

Writes ``benchmarks/results/session_serving.json`` (each run, the median over
runs, the server's mean time in the state transaction and in the model, the CPU
time the server and Redis spent per request, which other jobs on the machine
hardly change, unlike the wall-clock percentiles; the machine).  Target: p99 <= 10 ms at 100 req/s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from typing import Dict, List, Optional

import numpy as np

from benchmarks.machine import machine_info, repo_relative
from benchmarks.serving import kserve_version, open_loop, summarise
from feedrank.events.stream import local_redis_url
from feedrank.sessions import random_model
from serving import stack
from serving.common import procs

log = logging.getLogger(__name__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "session_serving.json")
NAME = "session"
DEMO_DRNN = {"width": 5, "length": 2, "height": 1, "units": 64, "cell": "gru", "page_dim": 32,
             "fnn_units": [64]}
T0 = 1_760_000_000


def demo_model(path: str, n_items: int = 3000, n_categories: int = 40, k: int = 20) -> Dict:
    """Exports the demo-shaped DRNN (random weights) with the raw signature to ``path``."""
    items = [f"i{i:04d}" for i in range(n_items)]
    pages = ["x0"] + [f"c{c:02d}" for c in range(n_categories)] + items
    random_model.export_random_raw(path, pages, items, DEMO_DRNN, k=k)
    return {"pages": pages, "items": items}


def bodies(run: int, n: int, users: int, vocab: Dict, session_pages: int, cart_every: int,
           seed: int = 0) -> List[bytes]:
    """``n`` request bodies: shopper ``i % users`` makes its next view or add-to-cart."""
    rng = np.random.default_rng(seed + run)
    pages, items = vocab["pages"], vocab["items"]
    steps = [0] * users
    out = []
    for i in range(n):
        u = i % users
        s = steps[u]
        steps[u] += 1
        ts = T0 + run * 10_000_000 + s * 40 + (s // session_pages) * 31 * 60
        ev_id = f"bench-{run}-{i}"
        if s % cart_every == cart_every - 1:
            ev = {"type": "purchase", "item_id": items[int(rng.integers(len(items)))], "ts": ts, "event_id": ev_id}
        else:
            ev = {"page_id": pages[int(rng.integers(len(pages)))], "ts": ts,
                  "dwell_s": round(float(rng.exponential(30.0)), 1), "event_id": ev_id}
        out.append(json.dumps({"user_id": f"bench-u{u:04d}", "event": ev}).encode())
    return out


def histogram_means(url: str) -> Dict[str, float]:
    """Mean seconds of the server's state transaction and model call so far (from /metrics)."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    sums: Dict[str, float] = {}
    for line in text.splitlines():
        for name in ("feedrank_session_state_seconds", "feedrank_session_model_seconds"):
            for part in ("_sum", "_count"):
                if line.startswith(name + part + "{"):
                    sums[name + part] = sums.get(name + part, 0.0) + float(line.rsplit(" ", 1)[1])
    return sums


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server-args", default="", help="extra flags of the endpoint, e.g. '--no-uvloop --tf-threads 0'")
    p.add_argument("--model-dir", default="", help="a pushed session model (default: the demo-shaped DRNN)")
    p.add_argument("--rate", type=float, default=100.0, help="offered requests per second")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--session-pages", type=int, default=12, help="pages per session before a 31-minute pause")
    p.add_argument("--cart-every", type=int, default=12, help="every n-th event is an add-to-cart")
    p.add_argument("--timeout", type=float, default=2.0, help="per-request timeout (an error)")
    p.add_argument("--target-ms", type=float, default=10.0, help="the p99 target")
    p.add_argument("--out", default=OUT)
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="session-bench-")
    machine = {**machine_info("tensorflow"), "kserve": kserve_version()}
    if args.model_dir:
        model_dir = args.model_dir
        vocab = None
    else:
        model_dir = os.path.join(workdir, "session")
        vocab = demo_model(os.path.join(model_dir, "1"))
    if vocab is None:   # a pushed model: page ids in the simulator's scheme
        items = [f"i{i:04d}" for i in range(3000)]
        vocab = {"pages": ["x0"] + [f"c{c:02d}" for c in range(40)] + items, "items": items}
    redis_port = procs.free_port()
    redis_proc = stack.start_redis(redis_port, workdir)
    port = procs.free_port()
    log_path = os.path.join(workdir, "sessions.log")
    server = procs.start_server("serving.sessions", [
        "--model-dir", model_dir, "--redis", local_redis_url(redis_port), "--http-port", str(port),
        *args.server_args.split()],
        log_path)
    url = f"http://127.0.0.1:{port}"
    n = int(args.rate * args.duration)
    runs = []
    try:
        procs.wait_ready(f"{url}/v1/models/{NAME}", 300, server, log_path)
        predict = f"{url}/v1/models/{NAME}:predict"
        asyncio.run(open_loop(predict, bodies(1000, 200, 50, vocab, args.session_pages, args.cart_every),
                              50, 4, args.timeout))   # warm-up
        before = histogram_means(url)
        cpu0 = {"server": cpu_seconds(server.pid), "redis": cpu_seconds(redis_proc.pid) if redis_proc else 0.0}
        for r in range(args.runs):
            load = os.getloadavg()[0]
            row = asyncio.run(open_loop(predict, bodies(r, n, args.users, vocab, args.session_pages,
                                                        args.cart_every), args.rate, args.duration, args.timeout))
            row["load_avg_1m_before"] = round(load, 2)
            runs.append(row)
            print(json.dumps(row), flush=True)
            time.sleep(1.0)
        after = histogram_means(url)
        cpu1 = {"server": cpu_seconds(server.pid), "redis": cpu_seconds(redis_proc.pid) if redis_proc else 0.0}
    finally:
        procs.stop(server)
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
    summary = summarise(runs)
    server_ms = {}
    for part in ("state", "model"):
        name = f"feedrank_session_{part}_seconds"
        cnt = after.get(name + "_count", 0) - before.get(name + "_count", 0)
        if cnt:
            server_ms[f"{part}_mean_ms"] = round(1e3 * (after[name + "_sum"] - before[name + "_sum"]) / cnt, 3)
    result = {"server_args": args.server_args, "rate": args.rate, "duration_s": args.duration, "runs": args.runs,
              "users": args.users,
              "session_pages": args.session_pages, "cart_every": args.cart_every, "timeout_s": args.timeout,
              "model": repo_relative(args.model_dir) if args.model_dir else
              "demo-shaped DRNN, random weights (3000 items, width 5, length 2, height 1, 64 GRU units, top 20)",
              "target_p99_ms": args.target_ms, "median": summary,
              "p99_runs_ms": [r["p99_ms"] for r in runs],
              "target_met": summary["errors"] == 0 and summary["p99_ms"] is not None
              and summary["p99_ms"] <= args.target_ms,
              "server_mean_ms": server_ms,
              "cpu_ms_per_request": {k: round(1e3 * (cpu1[k] - cpu0[k]) / max(1, sum(r["sent"] for r in runs)), 3)
                                     for k in cpu0},
              "per_run": runs, "machine": machine,
              "elapsed_s": round(time.perf_counter() - started, 1)}
    result["median_p99_of_runs_ms"] = statistics.median(result["p99_runs_ms"]) if runs else None
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "per_run")}, indent=1))
    print(f"results: {repo_relative(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
