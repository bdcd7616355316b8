"""Open-loop latency benchmark of the predictor against the naive peer, side by side.

Open loop: request i is *scheduled* at ``i / rate`` seconds and timed from
that moment, whether or not earlier requests have finished, so a server that
falls behind shows its queueing in the latency (a closed-loop client, which
waits for each answer before sending the next, hides it).  Each run is
bounded in count and time; every request has a timeout that counts as an
error.

Both servers serve the same SavedModel with the same 120-candidate,
50-step-history request:

* ``ours``: ``python -m serving.predictor`` (v1 columnar, the user's side once);
* ``naive``: ``benchmarks/naive_predictor.py``: stock kserve v1, one instance
  per candidate row repeating the user's side.

For each offered rate: p50/p95/p99 and errors, median over ``--runs``; the
maximum sustainable rate is the highest one with 0 errors, ≥ 95 % of the
offered rate completed, and p99 under ``--slo-ms``.  (Run it with ``-m``: as a
script, this file would shadow the ``serving`` package.)

    PYTHONPATH=. .venv-serving/bin/python -m benchmarks.serving --model-dir model_store/din \\
        --rates 25,50,100,150 --duration 10 --runs 3
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
from typing import Dict, List

import aiohttp

from benchmarks.machine import machine_info, repo_relative
from serving.common import procs
from serving.predictor import payloads as P

log = logging.getLogger(__name__)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "serving.json")


def naive_body(user: Dict, cands: Dict) -> dict:
    n = len(next(iter(cands.values())))
    return {"instances": [{**user, **{k: v[i] for k, v in cands.items()}} for i in range(n)]}


async def open_loop(url: str, body: bytes, rate: float, duration_s: float, timeout_s: float) -> Dict:
    """Fires ``rate * duration_s`` requests on schedule; latencies from the scheduled start."""
    n = max(1, int(rate * duration_s))
    latencies: List[float] = []
    errors: Dict[str, int] = {}
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
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors[str(r.status)] = errors.get(str(r.status), 0) + 1
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                return
            latencies.append(loop.time() - scheduled)

        start = loop.time()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = loop.time() - start
    latencies.sort()

    def q(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3, 2) if latencies else None

    return {"offered": rate, "sent": n, "ok": len(latencies), "errors": errors,
            "achieved_rps": round(len(latencies) / wall, 1), "p50_ms": q(0.50), "p95_ms": q(0.95),
            "p99_ms": q(0.99), "max_ms": round(latencies[-1] * 1e3, 2) if latencies else None}


def summarise(runs: List[Dict]) -> Dict:
    """Median over runs of each percentile; errors summed."""
    out = {"offered": runs[0]["offered"], "runs": len(runs),
           "errors": sum(sum(r["errors"].values()) for r in runs),
           "achieved_rps": statistics.median(r["achieved_rps"] for r in runs)}
    for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        vals = [r[k] for r in runs if r[k] is not None]
        out[k] = round(statistics.median(vals), 2) if vals else None
    return out


def sustainable(rows: List[Dict], slo_ms: float) -> float:
    ok = [r["offered"] for r in rows if r["errors"] == 0 and r["achieved_rps"] >= 0.95 * r["offered"]
          and r["p99_ms"] is not None and r["p99_ms"] <= slo_ms]
    return max(ok) if ok else 0.0


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--candidates", type=int, default=120)
    p.add_argument("--history", type=int, default=50)
    p.add_argument("--rates", default="25,50,100")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout (an error)")
    p.add_argument("--slo-ms", type=float, default=100.0)
    p.add_argument("--batch-size", type=int, default=120)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--targets", default="ours,naive")
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    user, cands = P.synthetic(args.candidates, args.history)
    bodies = {"ours": json.dumps(P.v1_body(user, cands)).encode(),
              "naive": json.dumps(naive_body(user, cands)).encode()}
    logs = tempfile.mkdtemp(prefix="serving-bench-")
    result = {"candidates": args.candidates, "history": args.history, "duration_s": args.duration,
              "runs": args.runs, "slo_ms": args.slo_ms, "model_dir": repo_relative(args.model_dir),
              "request_bytes": {k: len(v) for k, v in bodies.items()}, "targets": {},
              "machine": machine_info("tensorflow", "kserve")}
    for target in args.targets.split(","):
        port = procs.free_port()
        log_path = os.path.join(logs, f"{target}.log")
        if target == "ours":
            proc = procs.start_server("serving.predictor", [
                "--model-dir", args.model_dir, "--model-name", "feedrank", "--http-port", str(port),
                "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--max-in-flight", "1000",
                "--log-level", "WARNING"], log_path)
            url, ready = f"http://127.0.0.1:{port}/v1/models/feedrank:predict", "/v2/models/feedrank/ready"
        else:
            proc = procs.start_server("benchmarks.naive_predictor", [
                "--model-dir", args.model_dir, "--http-port", str(port)], log_path)
            url, ready = f"http://127.0.0.1:{port}/v1/models/naive:predict", "/v2/models/naive/ready"
        try:
            procs.wait_ready(f"http://127.0.0.1:{port}{ready}", 240, proc, log_path)
            asyncio.run(open_loop(url, bodies[target], 5, 2, args.timeout))   # warm the connection pool
            rows = []
            for rate in rates:
                runs = [asyncio.run(open_loop(url, bodies[target], rate, args.duration, args.timeout))
                        for _ in range(args.runs)]
                rows.append(summarise(runs))
                print(target, json.dumps(rows[-1]), flush=True)
                time.sleep(1.0)
            result["targets"][target] = {"rates": rows, "max_sustainable_rps": sustainable(rows, args.slo_ms)}
        finally:
            procs.stop(proc)
    if {"ours", "naive"} <= set(result["targets"]):
        a, b = (result["targets"][t]["max_sustainable_rps"] for t in ("ours", "naive"))
        result["throughput_ratio"] = round(a / b, 2) if b else None
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine",)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
