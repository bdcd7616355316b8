"""Per-shard cost of the example generator's stages, from the scaling benchmark's run logs.

Usage::

    .venv/bin/python -m benchmarks.scaling_shards --sizes 1 4 16

`benchmarks.scaling` keeps each run's log as ``<data-dir>/<size>_<runner>_<repeat>.log``.
For each size and runner this reads those logs and reports, per stage, the
microseconds per event of its shards (from the stage's own start and end
lines, `benchmarks.scaling_probe.shard_costs`): the smallest over all runs and
shards, the least disturbed by other load on a shared machine, and the median.
With shards of about the same size at every log size, linear scaling keeps
these flat.  Writes ``benchmarks/results/scaling_shards.json``.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import statistics
import tempfile
from typing import Dict, List

from benchmarks.scaling_probe import shard_costs
from benchmarks.scaling_report import size_label

logger = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("dedupe", "item_history", "build")


def summarise(logs: List[str]) -> Dict[str, Dict[str, float]]:
    """Per stage: shards, smallest and median microseconds per event over the runs' shards."""
    costs: Dict[str, List[float]] = {}
    for path in logs:
        with open(path) as f:
            for stage, values in shard_costs(f).items():
                costs.setdefault(stage, []).extend(values)
    return {s: dict(shards=len(v), min=round(min(v), 2), median=round(statistics.median(v), 2))
            for s, v in costs.items() if v}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1, 4, 16])
    ap.add_argument("--runners", nargs="+", default=["direct", "portable"])
    ap.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "feedrank_scaling"))
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "scaling_shards.json"))
    args = ap.parse_args(argv)
    rows = []
    for multiple in args.sizes:
        for runner in args.runners:
            logs = sorted(glob.glob(os.path.join(args.data_dir, f"{size_label(multiple)}_{runner}_*.log")))
            if not logs:
                logger.warning("no logs for %s %s", size_label(multiple), runner)
                continue
            rows.append(dict(size=size_label(multiple), runner=runner, runs=len(logs), stages=summarise(logs)))
    with open(args.out, "w") as f:
        json.dump(dict(results=rows), f, indent=2)
    print("| size | runner | runs | " + " | ".join(f"{s} µs/event: min, median" for s in STAGES) + " |")
    print("|---|---|---:|" + "---:|" * len(STAGES))
    for r in rows:
        cells = [f"{r['stages'][s]['min']:.2f}, {r['stages'][s]['median']:.2f}" if s in r["stages"] else "–"
                 for s in STAGES]
        print(f"| {r['size']} | {r['runner']} | {r['runs']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
