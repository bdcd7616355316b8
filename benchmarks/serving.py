"""Open-loop latency benchmark of online ranking: the predictor alone, the
transformer with Redis, and the naive peer side by side in the same run, plus
a hot swap and a Redis restart under load.

Open loop: request i is *scheduled* at ``i / rate`` seconds and timed from
that moment, whether or not earlier requests have finished, so a server that
falls behind shows its queueing in the latency (a closed-loop client, which
waits for each answer before sending the next, hides it).  Each run is
bounded in count (``rate * duration``) and time (every request has a
timeout, which counts as an error); all servers listen on loopback.

All targets serve the same SavedModel with a 120-candidate request:

* ``predictor``: ``python -m serving.predictor`` (v1 columnar, the user's
  side once, 50-step synthetic histories);
* ``transformer``: ``python -m serving.transformer`` in front of that
  predictor, features from Redis seeded by the bulk loader from ``--log``
  (the log's most active user, its first 120 posts);
* ``naive``: ``benchmarks/naive_predictor.py``: stock kserve v1, one instance
  per candidate row repeating the user's side.

For each offered rate: p50/p95/p99, errors and degraded answers, median over
``--runs`` (a run with errors ends that rate); a target stops at the first
rate it cannot sustain.  The maximum
sustainable rate is the highest with 0 errors, >= 95 % of the offered rate
completed and p99 under ``--slo-ms``.  Then, through the transformer at
``--disrupt-rate``: a hot swap of the model (``hot_swap``) and Redis stopped
for ``--redis-down-s`` and started again (``redis_restart``), each with its
errors (the goal: 0), degraded answers and the versions that answered.

Results go to ``benchmarks/results/serving.json`` and the plot to
``docs/img/serving_latency.png``.  Run it from the repository root with the
pipeline environment's Python (it starts the servers in ``.venv-serving``;
use ``-m``: as a script this file would shadow the ``serving`` package):

    .venv/bin/python -m benchmarks.serving --model-dir model_store/din --log data/demo
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Union

import aiohttp

from benchmarks import serving_stack
from benchmarks.machine import machine_info, repo_relative
from serving import stack as local_stack
from serving.common import procs
from serving.features import declared
from serving.predictor import payloads as P

log = logging.getLogger(__name__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "serving.json")
PLOT = os.path.join(ROOT, "docs", "img", "serving_latency.png")
DEGRADED_HEADER = "X-Feedrank-Degraded"  # serving.transformer.ranker.DEGRADED_HEADER
SETTLE_S = 3.0      # a disrupted load goes on this long after the disruption ended
MAX_EXTRA_S = 60.0  # and at most this long beyond its duration


def naive_body(user: Dict, cands: Dict) -> dict:
    n = len(next(iter(cands.values())))
    return {"instances": [{**user, **{k: v[i] for k, v in cands.items()}} for i in range(n)]}


async def open_loop(url: str, body: Union[bytes, Sequence[bytes]], rate: float, duration_s: float,
                    timeout_s: float, during: Optional[Callable[[], Dict]] = None, at_s: float = 0.0,
                    versions: bool = False) -> Dict:
    """Fires ``rate * duration_s`` requests on schedule; latencies from the scheduled start.

    ``during`` runs in a thread ``at_s`` seconds into the load (a disruption);
    the load then goes on until ``SETTLE_S`` after it finished (at most
    ``MAX_EXTRA_S`` beyond ``duration_s``).  Its answer and the schedule
    offsets of degraded answers come back in the result.  ``versions`` counts
    the ``model_version`` of the answers.  ``body`` is one body for every request, or a
    sequence of bodies, request i sending ``body[i % len(body)]``."""
    latencies: List[float] = []
    errors: Dict[str, int] = {}
    degraded: List[float] = []
    seen: Dict[str, int] = {}
    done: List[float] = []
    tasks: List[asyncio.Task] = []
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=0, force_close=False)) as session:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.05

        async def one(i: int) -> None:
            scheduled = t0 + i / rate
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            try:
                data = body if isinstance(body, bytes) else body[i % len(body)]
                async with session.post(url, data=data, headers=headers) as r:
                    data = await r.read()
                    if r.status != 200:
                        errors[str(r.status)] = errors.get(str(r.status), 0) + 1
                        return
                    if r.headers.get(DEGRADED_HEADER):
                        degraded.append(round(scheduled - t0, 3))
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                return
            latencies.append(loop.time() - scheduled)
            if versions:
                v = str(json.loads(data).get("model_version"))
                seen[v] = seen.get(v, 0) + 1

        async def schedule() -> None:
            i = 0
            while True:
                end = duration_s
                if during:
                    settled = done[0] + SETTLE_S if done else float("inf")
                    end = min(max(end, settled), duration_s + MAX_EXTRA_S)
                if i / rate >= end:
                    return
                tasks.append(asyncio.create_task(one(i)))
                i += 1
                await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))

        async def disrupt() -> Dict:
            await asyncio.sleep(max(0.0, t0 + at_s - loop.time()))
            t = loop.time() - t0
            answer = await asyncio.to_thread(during)
            done.append(loop.time() - t0)
            return {"at_s": round(t, 2), "done_at_s": round(done[0], 2), **answer}

        start = loop.time()
        results = await asyncio.gather(schedule(), *([disrupt()] if during else []))
        await asyncio.gather(*tasks)
        wall = loop.time() - start
        n = len(tasks)
    latencies.sort()

    def q(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3, 2) if latencies else None

    out = {"offered": rate, "sent": n, "ok": len(latencies), "errors": errors, "degraded": len(degraded),
           "achieved_rps": round(len(latencies) / wall, 1), "p50_ms": q(0.50), "p95_ms": q(0.95),
           "p99_ms": q(0.99), "max_ms": round(latencies[-1] * 1e3, 2) if latencies else None}
    if versions:
        out["versions"] = seen
    if during:
        out["load_s"] = round(n / rate, 2)
        out["disruption"] = results[-1]
        out["degraded_at_s"] = [degraded[0], degraded[-1]] if degraded else []
    return out


def summarise(runs: List[Dict]) -> Dict:
    """Median over runs of each percentile; errors and degraded answers summed."""
    out = {"offered": runs[0]["offered"], "runs": len(runs),
           "errors": sum(sum(r["errors"].values()) for r in runs),
           "degraded": sum(r["degraded"] for r in runs),
           "achieved_rps": statistics.median(r["achieved_rps"] for r in runs)}
    for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        vals = [r[k] for r in runs if r[k] is not None]
        out[k] = round(statistics.median(vals), 2) if vals else None
    return out


def sustained(row: Dict, slo_ms: float) -> bool:
    return (row["errors"] == 0 and row["achieved_rps"] >= 0.95 * row["offered"]
            and row["p99_ms"] is not None and row["p99_ms"] <= slo_ms)


def sustainable(rows: List[Dict], slo_ms: float) -> float:
    ok = [r["offered"] for r in rows if sustained(r, slo_ms)]
    return max(ok) if ok else 0.0


def sweep(target: str, url: str, body: bytes, args: argparse.Namespace) -> Dict:
    """Every rate (median over runs) up to the first one the target cannot sustain."""
    asyncio.run(open_loop(url, body, 5, 2, args.timeout))   # warm the connection pool and the server
    rows = []
    for rate in args.rate_list:
        runs: List[Dict] = []
        for _ in range(args.runs):
            runs.append(asyncio.run(open_loop(url, body, rate, args.duration, args.timeout)))
            if runs[-1]["errors"]:  # overloaded: more runs would only queue behind this one's backlog
                break
        rows.append(summarise(runs))
        print(target, json.dumps(rows[-1]), flush=True)
        if not sustained(rows[-1], args.slo_ms):
            time.sleep(args.timeout + 3.0)  # let the server drain what timed out before the next target
            break
        time.sleep(1.0)
    return {"rates": rows, "max_sustainable_rps": sustainable(rows, args.slo_ms)}


def kserve_version() -> Optional[str]:
    """kserve's version in the serving environment (the servers' Python)."""
    try:
        code = "from importlib.metadata import version; print(version('kserve'))"
        out = subprocess.run([procs.SERVING_PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="model_store/din", help="a model directory (newest version) or a version")
    p.add_argument("--log", default="data/demo", help="event log the transformer's Redis is seeded from")
    p.add_argument("--candidates", type=int, default=120)
    p.add_argument("--history", type=int, default=50, help="history length of the predictor's synthetic user")
    p.add_argument("--rates", default="25,50,100,200,300", help="offered req/s, ascending")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=float, default=2.0, help="per-request timeout (an error)")
    p.add_argument("--slo-ms", type=float, default=100.0, help="p99 above this is not sustained")
    p.add_argument("--batch-size", type=int, default=120)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--targets", default="predictor,transformer,naive")
    p.add_argument("--disrupt-rate", type=float, default=50.0, help="req/s through the transformer while "
                   "the model is swapped and Redis restarted (0: skip both)")
    p.add_argument("--disrupt-duration", type=float, default=12.0)
    p.add_argument("--redis-down-s", type=float, default=2.0)
    p.add_argument("--out", default=OUT)
    p.add_argument("--plot", default=PLOT, help="latency plot (PNG); '' for none")
    args = p.parse_args(argv)
    args.rate_list = sorted(float(r) for r in args.rates.split(","))
    args.target_list = args.targets.split(",")
    unknown = set(args.target_list) - {"predictor", "transformer", "naive"}
    if unknown:
        p.error(f"unknown targets {sorted(unknown)}; known: predictor, transformer, naive")
    try:
        serving_stack.version_dir(args.model_dir)
    except FileNotFoundError as e:
        p.error(str(e))
    if "transformer" in args.target_list and not os.path.isdir(args.log):
        p.error(f"event log {args.log} does not exist (make demo simulates data/demo; or pass --log)")
    return args


def disruptions(stack: serving_stack.Stack, body: bytes, args: argparse.Namespace) -> Dict:
    """Hot swap, then Redis down and up again, each under open-loop load through the transformer."""
    url = f"{stack.transformer_url}/v1/models/{serving_stack.MODEL_NAME}:predict"
    out = {}
    swap = asyncio.run(open_loop(url, body, args.disrupt_rate, args.disrupt_duration, args.timeout,
                                 during=stack.hot_swap, at_s=args.disrupt_duration / 4, versions=True))
    out["hot_swap"] = swap
    print("hot_swap", json.dumps(swap), flush=True)
    before = stack.metric("feedrank_degraded_total")

    def restart() -> Dict:
        return {"restart_s": round(stack.restart_redis(args.redis_down_s), 2), "down_s": args.redis_down_s}

    rr = asyncio.run(open_loop(url, body, args.disrupt_rate, args.disrupt_duration, args.timeout,
                               during=restart, at_s=args.disrupt_duration / 4))
    rr["degraded_metric_delta"] = stack.metric("feedrank_degraded_total") - before
    d = rr["disruption"]
    # recovered: no degraded answer in the last second of the load, after Redis came back
    rr["recovered"] = not rr["degraded"] or rr["degraded_at_s"][-1] < rr["load_s"] - 1.0
    rr["last_degraded_after_restart_s"] = round(rr["degraded_at_s"][-1] - d["done_at_s"], 2) if rr["degraded"] else None
    out["redis_restart"] = rr
    print("redis_restart", json.dumps(rr), flush=True)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    spec = declared.spec_from_model(serving_stack.version_dir(args.model_dir))   # the benchmarked model's
    user, cands = P.synthetic(args.candidates, args.history, spec=spec)
    bodies = {"predictor": json.dumps(P.v1_body(user, cands)).encode(),
              "naive": json.dumps(naive_body(user, cands)).encode()}
    workdir = tempfile.mkdtemp(prefix="serving-bench-")
    result = {"candidates": args.candidates, "history": args.history, "duration_s": args.duration,
              "runs": args.runs, "timeout_s": args.timeout, "slo_ms": args.slo_ms,
              "model_dir": repo_relative(serving_stack.version_dir(args.model_dir)), "log": repo_relative(args.log),
              "targets": {},
              "machine": {**machine_info("tensorflow"), "kserve": kserve_version()}}
    ours = {"predictor", "transformer"} & set(args.target_list)
    if ours:
        stack = serving_stack.Stack(args.model_dir, workdir, args.threads, args.batch_size)
        try:
            if "transformer" in ours:
                result["bootstrap_s"] = round(stack.start_features(args.log), 1)
                request = local_stack.example_request(args.log, args.candidates)
                bodies["transformer"] = json.dumps(request).encode()
            stack.wait_predictor()
            if "predictor" in ours:
                url = f"{stack.predictor_url}/v1/models/{serving_stack.MODEL_NAME}:predict"
                result["targets"]["predictor"] = sweep("predictor", url, bodies["predictor"], args)
            if "transformer" in ours:
                stack.start_transformer()
                url = f"{stack.transformer_url}/v1/models/{serving_stack.MODEL_NAME}:predict"
                result["targets"]["transformer"] = sweep("transformer", url, bodies["transformer"], args)
                if args.disrupt_rate > 0:
                    result.update(disruptions(stack, bodies["transformer"], args))
        finally:
            stack.stop()
    if "naive" in args.target_list:
        port = procs.free_port()
        log_path = os.path.join(workdir, "naive.log")
        proc = procs.start_server("benchmarks.naive_predictor", [
            "--model-dir", serving_stack.version_dir(args.model_dir), "--http-port", str(port)], log_path)
        try:
            procs.wait_ready(f"http://127.0.0.1:{port}/v2/models/naive/ready", 300, proc, log_path)
            url = f"http://127.0.0.1:{port}/v1/models/naive:predict"
            result["targets"]["naive"] = sweep("naive", url, bodies["naive"], args)
        finally:
            procs.stop(proc)
    result["request_bytes"] = {k: len(v) for k, v in bodies.items()}
    if {"predictor", "naive"} <= set(result["targets"]):
        a, b = (result["targets"][t]["max_sustainable_rps"] for t in ("predictor", "naive"))
        result["throughput_ratio"] = round(a / b, 2) if b else None
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    if args.plot:
        serving_stack.plot(result, args.plot)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    print(f"results: {repo_relative(args.out)}" + (f"; plot: {repo_relative(args.plot)}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
