"""Example-generation throughput (events/s) on simulator-generated logs.

Usage::

    .venv/bin/python benchmarks/example_gen_bench.py --sizes 1M 10M --repeats 3 1

For each size, a log of about that many events is simulated once (cached
under ``--data-root``), then `feedrank.examples.beam_pipeline.run` is timed
``--repeats`` times (DirectRunner, in-memory, one worker unless
``--beam-args`` says otherwise).  Reports the median wall and CPU time,
events/s and the growth ratio of each size's time vs the first size (the
target: <= 11x for 10x events).  Writes
``benchmarks/results/example_gen.json`` and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from typing import Dict, List

from feedrank import features as F
from feedrank.events.simulator import simulate
from feedrank.examples import beam_pipeline

logger = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Events per simulated user-day at the simulator defaults (20k users x 14 days ~ 1.3M events).
EVENTS_PER_USER_DAY = 4.7


def parse_size(text: str) -> int:
    """'1M' -> 1_000_000, '250k' -> 250_000, '5000' -> 5000."""
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


def make_log(root: str, target_events: int, seed: int, days: int) -> Dict:
    """Simulates (or reuses) a log of roughly ``target_events`` events."""
    users = max(50, int(target_events / (EVENTS_PER_USER_DAY * days)))
    out = os.path.join(root, f"log_{target_events}_{seed}_{days}")
    world = os.path.join(out, "world.json")
    if not os.path.exists(world):
        simulate(out, users=users, items=max(100, users * 5 // 2), days=days, seed=seed, verbose=False)
    with open(world) as f:
        summary = json.load(f)["summary"]
    return dict(dir=out, users=users, events=int(summary["events"]))


def machine_info() -> Dict:
    info = dict(python=platform.python_version(), platform=platform.platform(),
                processor=platform.processor() or platform.machine(), cpus=os.cpu_count())
    try:
        with open("/proc/meminfo") as f:
            info["mem_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu_model"] = models[0] if models else ""
        info["load_avg_at_start"] = os.getloadavg()
    except OSError:
        pass
    import apache_beam
    info["apache_beam"] = apache_beam.__version__
    return info


def bench(log: Dict, repeats: int, num_shards: int, beam_args: List[str]) -> Dict:
    """Times the pipeline ``repeats`` times on one log.

    Records wall time and this process's CPU time (the in-memory DirectRunner
    runs in-process, so CPU time is robust to other load on a shared machine;
    it under-counts only with a multi-process runner).
    """
    walls, cpus = [], []
    summary = {}
    for r in range(repeats):
        work = tempfile.mkdtemp(prefix="egbench_")
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            summary = beam_pipeline.run(log["dir"], os.path.join(work, "ex"), os.path.join(work, "q"),
                                        {"num_shards": num_shards}, beam_args or None, spec=F.BUILTIN)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        logger.warning("%d events: repeat %d/%d took %.1fs wall, %.1fs cpu",
                       log["events"], r + 1, repeats, walls[-1], cpus[-1])
    median, median_cpu = statistics.median(walls), statistics.median(cpus)
    return dict(events=log["events"], users=log["users"], repeats=repeats,
                walls_s=[round(w, 2) for w in walls], cpu_s=[round(c, 2) for c in cpus],
                median_s=round(median, 2), median_cpu_s=round(median_cpu, 2),
                events_per_s=round(log["events"] / median, 1),
                events_per_cpu_s=round(log["events"] / median_cpu, 1),
                examples=summary.get("examples"), num_shards=summary.get("num_shards"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1M", "10M"], help="target event counts")
    ap.add_argument("--repeats", type=int, nargs="+", default=[3],
                    help="repeats per size (one value for all sizes, or one per size)")
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-shards", type=int, default=0, help="0: auto (one shard per 500k events)")
    ap.add_argument("--data-root", default=os.path.join(tempfile.gettempdir(), "feedrank_bench"))
    ap.add_argument("--beam-args", nargs="*", default=[], help="e.g. --direct_num_workers=2")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "example_gen.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    info = machine_info()
    rows = []
    repeats = args.repeats * len(args.sizes) if len(args.repeats) == 1 else args.repeats
    if len(repeats) != len(args.sizes):
        ap.error("--repeats takes one value or one per size")
    for size, n in zip(args.sizes, repeats):
        log = make_log(args.data_root, parse_size(size), args.seed, args.days)
        rows.append(dict(size=size, **bench(log, n, args.num_shards, args.beam_args)))
    base = rows[0]
    for row in rows:
        row["event_ratio_vs_first"] = round(row["events"] / base["events"], 2)
        row["wall_ratio_vs_first"] = round(row["median_s"] / base["median_s"], 2)
        row["cpu_ratio_vs_first"] = round(row["median_cpu_s"] / base["median_cpu_s"], 2)
    result = dict(machine=info, beam_args=args.beam_args, results=rows,
                  load_avg_at_end=os.getloadavg())
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nMachine: {info.get('cpu_model', info['processor'])}, {info['cpus']} CPUs, "
          f"{info.get('mem_gb', '?')} GB RAM, Python {info['python']}, Beam {info['apache_beam']} "
          f"(DirectRunner, load avg at start {info.get('load_avg_at_start')})\n")
    print("| size | events | repeats | median wall (s) | events/s (wall) | median CPU (s) | "
          "events/CPU-s | wall ratio | CPU ratio | event ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['events']:,} | {r['repeats']} | {r['median_s']} | "
              f"{r['events_per_s']:,.0f} | {r['median_cpu_s']} | {r['events_per_cpu_s']:,.0f} | "
              f"{r['wall_ratio_vs_first']} | {r['cpu_ratio_vs_first']} | {r['event_ratio_vs_first']} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
