"""End-to-end demo benchmark: wall time and CPU seconds per component, and DIN AUC vs the oracle.

Runs the whole pipeline (no cache, fresh MLMD store, push dir and local
MLflow server, all removed after each run) on the demo-scale simulated log
``--repeats`` times and reports the median wall time,
the exact eval AUC, the oracle AUC and the share of the oracle's lift that
the model recovers, (AUC - 0.5) / (AUC_oracle - 0.5).  Beside each component's wall
time it reports its CPU seconds (this process and every descendant, sampled by
``benchmarks.cpu_meter``): CPU seconds carry between machines, wall time on
shared cores does not.

  .venv/bin/python benchmarks/demo_bench.py --config configs/demo.yaml --repeats 2

Writes benchmarks/results/demo.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:   # run as a script: the repository's packages and pipeline.py
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu, "cores": os.cpu_count()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.yaml"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--data", help="event log to use (default: the config's input_base, simulated if missing)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "demo.json"))
    args = parser.parse_args()

    import pipeline
    from benchmarks.cpu_meter import TreeCpuMeter
    from feedrank import config as config_lib
    from feedrank.events.simulator import simulate
    from feedrank.tracking import local_server_dir
    from feedrank.tracking.server import stop_server

    cfg = config_lib.load(args.config)
    data = args.data or cfg.input_base
    if not os.path.isdir(data):
        simulate(data, **cfg.simulate.kwargs())
    runs = []
    load0 = os.getloadavg()
    for i in range(args.repeats):
        tmp = tempfile.mkdtemp(prefix="feedrank-bench-")
        run_cfg = dataclasses.replace(cfg, input_base=data, run_root=os.path.join(tmp, "runs"),
                                      push_root=os.path.join(tmp, "model_store"), enable_cache=False,
                                      mlflow=dataclasses.replace(cfg.mlflow, port=0))  # a free port
        t0 = time.time()
        try:
            with TreeCpuMeter() as meter:
                summary = pipeline.run(run_cfg)
            wall = time.time() - t0
        finally:  # the run's local MLflow server and its outputs go with it
            stop_server(local_server_dir(run_cfg))
            shutil.rmtree(tmp, ignore_errors=True)
        auc = summary.get("auc", {})
        comps = summary.get("components", {})
        cpu = meter.per_interval({k: (v["start"], v["end"]) for k, v in comps.items()})
        runs.append({"wall_s": round(wall, 1), "cpu_s": round(meter.between(t0, t0 + wall), 1),
                     "status": summary["status"],
                     "components": {k: v["seconds"] for k, v in comps.items()},
                     "components_cpu_s": cpu,
                     "auc": auc.get("auc"), "oracle_auc": auc.get("oracle_auc"), "gauc": auc.get("gauc"),
                     "logloss": auc.get("logloss"), "lift_recovered": auc.get("oracle_lift_recovered"),
                     "blessed": summary.get("blessing", {}).get("blessed"),
                     "events": summary.get("events", {}).get("events_read")})
        print(f"[demo_bench] run {i + 1}/{args.repeats}: {wall:.0f}s wall, {runs[-1]['cpu_s']:.0f} CPU s, "
              f"AUC {auc.get('auc')} "
              f"oracle {auc.get('oracle_auc')}", file=sys.stderr)
    med = {"wall_s": statistics.median(r["wall_s"] for r in runs),
           "cpu_s": statistics.median(r["cpu_s"] for r in runs)}
    for key in ("auc", "oracle_auc", "gauc", "logloss", "lift_recovered"):
        vals = [r[key] for r in runs if r[key] is not None]
        med[key] = statistics.median(vals) if vals else None
    comps = sorted({c for r in runs for c in r["components"]})
    med["components"] = {c: statistics.median(r["components"].get(c, 0.0) for r in runs) for c in comps}
    med["components_cpu_s"] = {c: statistics.median(r["components_cpu_s"].get(c, 0.0) for r in runs)
                               for c in comps}
    result = {"machine": machine(), "config": os.path.relpath(args.config, ROOT), "data": data,
              "date": time.strftime("%Y-%m-%d"), "load_avg_at_start": load0, "load_avg_at_end": os.getloadavg(),
              "runs": runs, "median": med}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"| metric | median of {len(runs)} |\n|---|---|")
    for key in ("auc", "oracle_auc", "lift_recovered", "gauc", "logloss", "wall_s", "cpu_s"):
        print(f"| {key} | {med[key]} |")
    print("\n| component | wall s | CPU s |\n|---|---|---|")
    for c in sorted(comps, key=lambda c: -med["components_cpu_s"][c]):
        print(f"| {c} | {med['components'][c]:.1f} | {med['components_cpu_s'][c]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
