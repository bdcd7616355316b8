"""Benchmark of the event-log simulator.

Runs :func:`feedrank.events.simulator.simulate` at a few sizes, several
repeats each, and reports the median wall time, process CPU time and
events/s (simulation plus writing the parquet tables).  On a shared machine
the CPU time is the steadier number.  Prints a markdown table and writes
``benchmarks/results/simulate.json``.

    python benchmarks/simulate_bench.py                 # demo + ~10M events
    python benchmarks/simulate_bench.py --sizes demo --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

from feedrank.events.simulator import simulate

# name -> (users, items, days); ~1.4M and ~10.5M events with the default knobs
SIZES = {
    "small": (2000, 5000, 7),
    "demo": (20000, 50000, 14),
    "10m": (150000, 375000, 14),
}


def _peak_rss_mb() -> float:
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except Exception:  # pragma: no cover - non-unix
        return float("nan")


def machine_info() -> dict:
    import numpy
    import pyarrow
    info = dict(platform=platform.platform(), python=platform.python_version(),
                processor=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                numpy=numpy.__version__, pyarrow=pyarrow.__version__)
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        pass
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            info["cpu_model"] = names[0]
    except OSError:
        pass
    return info


def run(sizes, repeats: int, seed: int, workdir: str) -> list:
    rows = []
    for name in sizes:
        users, items, days = SIZES[name]
        walls, cpus, summary = [], [], None
        for r in range(repeats):
            out = os.path.join(workdir, f"{name}_{r}")
            t0, c0 = time.perf_counter(), time.process_time()
            summary = simulate(out, users=users, items=items, days=days, seed=seed + r, verbose=False)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            shutil.rmtree(out, ignore_errors=True)
            print(f"[bench] {name} repeat {r + 1}/{repeats}: {summary['events']:,} events "
                  f"in {walls[-1]:.2f}s", file=sys.stderr, flush=True)
        wall = statistics.median(walls)
        rows.append(dict(size=name, users=users, items=items, days=days, repeats=repeats,
                         events=summary["events"], impressions=summary["impressions"],
                         median_wall_s=round(wall, 3), min_wall_s=round(min(walls), 3),
                         max_wall_s=round(max(walls), 3), median_cpu_s=round(statistics.median(cpus), 3),
                         median_events_per_s=round(summary["events"] / wall),
                         ctr=round(summary["ctr"], 4), oracle_auc=round(summary["oracle_auc"], 4)))
    return rows


def markdown(rows: list) -> str:
    head = ("| size | users | items | days | events | median wall (s) | min-max (s) | CPU (s) | events/s "
            "| CTR | oracle AUC |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['size']} | {r['users']:,} | {r['items']:,} | {r['days']} | {r['events']:,} "
                     f"| {r['median_wall_s']:.2f} | {r['min_wall_s']:.2f}-{r['max_wall_s']:.2f} "
                     f"| {r['median_cpu_s']:.2f} "
                     f"| {r['median_events_per_s']:,} | {r['ctr']:.4f} | {r['oracle_auc']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="demo,10m", help=f"comma-separated subset of {sorted(SIZES)}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", "simulate.json"))
    ap.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SIZES]
    if bad or args.repeats < 1:
        ap.error(f"unknown size(s) {bad}; choose from {sorted(SIZES)}" if bad else "--repeats must be >= 1")
    workdir = args.workdir or tempfile.mkdtemp(prefix="simbench_")
    try:
        rows = run(sizes, args.repeats, args.seed, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = dict(benchmark="simulate", machine=machine_info(), load_avg_at_end=load,
                  peak_rss_mb=round(_peak_rss_mb(), 1), timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"), results=rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(markdown(rows))
    print(f"\nmachine: {result['machine']}  peak RSS: {result['peak_rss_mb']} MB  -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
