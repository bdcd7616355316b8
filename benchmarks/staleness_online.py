"""Online CTR against the staleness of the user's behaviour features (the simulated A/B world).

    .venv/bin/python -m benchmarks.staleness_online --model model_store/din \\
        [--delays 0 60 600 3600 86400] [--users 300] [--requests 2000] [--seeds 0]

For every delay S the local serving stack (`feedrank.ab.stack`) serves
``--model`` with the feature updater delayed by S in event time
(`serving.features.updater --delay-s`), and the simulator's online mode sends
the same simulated traffic (same seed, same users, same draws) to it.  Per S:
the **true CTR** of the served rankings (the mean true click probability of
the shown slots, position bias included: no click noise) and the observed
CTR (clicks / shown posts).  The offline side of the study is
`benchmarks/staleness.py`; this writes ``{S: true CTR}`` for its ``--online``
panel, and ``results/staleness_online.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

from benchmarks.machine import machine_info, repo_relative
from feedrank.ab.stack import StackError, serving_stack

log = logging.getLogger(__name__)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DELAYS = (0, 60, 600, 3600, 86400)


def one_run(log_dir: str, model: str, delay_s: int, users: int, requests: int, seed: int,
            workdir: str, redis_timeout_ms: float) -> Dict[str, float]:
    """One online run at feature delay ``delay_s``; the run's true and observed CTR."""
    out = os.path.join(workdir, f"delay{delay_s}-seed{seed}")
    extra = ["--model", model, "--updater-delay-s", str(delay_s), "--redis-timeout-ms", str(redis_timeout_ms)]
    t0 = time.monotonic()
    with serving_stack(log_dir, os.path.join(out, "serve"), extra, echo=False) as (endpoint, redis_url):
        cmd = [sys.executable, "-m", "feedrank.events.simulator.online", "--log", log_dir, "--out", out,
               "--endpoint", endpoint, "--redis", redis_url, "--users", str(users), "--requests", str(requests),
               "--seed", str(seed), "--staleness-s", str(delay_s), "--share", "0.0"]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"online run at delay {delay_s} s failed: {done.stderr.strip().splitlines()[-1:]}")
    with open(os.path.join(out, "ab_run.json")) as f:
        run = json.load(f)
    st, true = run["stats"], run["true"]["champion"]
    import pandas as pd

    truth = pd.read_parquet(os.path.join(out, "truth_ab.parquet"), columns=["arm"])
    shown = max(1, int((truth["arm"] == "champion").sum()))    # the shown slots of the served rankings
    row = {"delay_s": delay_s, "seed": seed, "true_ctr": true["ctr"], "true_cvr": true.get("cvr"),
           "observed_ctr": st["clicks"] / shown, "clicks": st["clicks"], "requests_ok": st.get("requests_ok"),
           "degraded": st.get("degraded"), "wall_s": round(time.monotonic() - t0, 1)}
    log.info("delay %6d s seed %d: true CTR %.5f, observed %.5f (%d clicks), %s degraded, %.0f s", delay_s, seed,
             row["true_ctr"], row["observed_ctr"], row["clicks"], row["degraded"], row["wall_s"])
    return row


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.staleness_online", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model or version directory (or models:/name@alias)")
    p.add_argument("--log", default="data/demo", help="the simulated log whose world continues online")
    p.add_argument("--delays", type=int, nargs="+", default=list(DEFAULT_DELAYS))
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--redis-timeout-ms", type=float, default=200.0)
    p.add_argument("--out", default="benchmarks/results/staleness_online.json")
    p.add_argument("--ctr-out", default="benchmarks/results/staleness_online_ctr.json",
                   help="{S: true CTR} for `benchmarks.staleness --online`")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="staleness-online-") as work:
        try:
            for seed in args.seeds:
                for d in args.delays:
                    rows.append(one_run(args.log, args.model, d, args.users, args.requests, seed, work,
                                        args.redis_timeout_ms))
        except StackError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    by_delay = {str(d): statistics.median(r["true_ctr"] for r in rows if r["delay_s"] == d) for d in args.delays}
    result = dict(command="python -m benchmarks.staleness_online " + " ".join(argv or sys.argv[1:]),
                  model=repo_relative(args.model), log=repo_relative(args.log), users=args.users,
                  requests=args.requests, seeds=args.seeds, runs=rows, true_ctr_by_delay=by_delay,
                  wall_s=round(time.monotonic() - t0, 1), machine=machine_info())
    for path, body in ((args.out, result), (args.ctr_out, by_delay)):
        with open(path, "w") as f:
            json.dump(body, f, indent=2)
    print(json.dumps(by_delay, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
