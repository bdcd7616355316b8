"""Best candidate batch size for the predictor, in-process (no HTTP).

Scores one ``--candidates``-candidate request with ``--history``-step
histories through ``FeedrankPredictor.score`` for every (batch size, threads)
pair, interleaving the configurations rep by rep so machine noise hits all
alike; reports p50/p99 per configuration.

    .venv-serving/bin/python -m benchmarks.predictor_batch --model-dir model_store/din
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
from typing import Dict, List

from benchmarks.machine import machine_info, repo_relative
from serving.predictor import payloads as P
from serving.predictor.model import FeedrankPredictor, PredictorConfig

log = logging.getLogger(__name__)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "predictor_batch.json")


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--candidates", type=int, default=120)
    p.add_argument("--history", type=int, default=50)
    p.add_argument("--batch-sizes", default="10,20,30,40,60,120")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    configs = [(b, t) for t in map(int, args.threads.split(",")) for b in map(int, args.batch_sizes.split(","))]
    models = {}
    for b, t in configs:
        m = FeedrankPredictor("bench", args.model_dir, PredictorConfig(batch_size=b, threads=t))
        if not models:
            m.load()
            first = m
        else:
            m._serving = first._serving   # share the loaded model: only the splitting differs
        models[(b, t)] = m
    loaded, contract = first._serving
    user, cands = P.synthetic(args.candidates, args.history, spec=loaded.spec)
    batch = contract.from_v1(P.v1_body(user, cands))
    times: Dict[tuple, List[float]] = {c: [] for c in configs}

    async def run() -> None:
        for c in configs:   # warm every configuration's shapes
            for _ in range(3):
                await models[c].score(loaded, batch)
        for _ in range(args.reps):
            for c in configs:
                t0 = time.perf_counter()
                await models[c].score(loaded, batch)
                times[c].append((time.perf_counter() - t0) * 1e3)

    asyncio.run(run())
    rows = []
    for (b, t), ts in times.items():
        ts.sort()
        rows.append({"batch_size": b, "threads": t, "p50_ms": round(statistics.median(ts), 2),
                     "p99_ms": round(ts[int(0.99 * (len(ts) - 1))], 2)})
        print(json.dumps(rows[-1]), flush=True)
    result = {"candidates": args.candidates, "history": args.history, "reps": args.reps,
              "model_dir": repo_relative(args.model_dir), "rows": rows,
              "best": min(rows, key=lambda r: r["p50_ms"]), "machine": machine_info("tensorflow", "kserve")}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    for m in models.values():
        m.pool.shutdown(wait=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
