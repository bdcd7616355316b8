"""The example generator on a log's edges: a clean log, one bogus future impression, one negative ts.

Copies the log three times (as is; plus one impression stamped 2100-01-01;
plus one click with ts -1), runs the example generator on each, and reports
the splits, their positives, the censored eval impressions and the quarantine
counts. On a clean log the three rows must agree on every split: one bad
timestamp moves no bound.

  .venv/bin/python -m benchmarks.log_edges --log data/demo

Writes benchmarks/results/log_edges.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Dict, List, Optional

import pandas as pd

from benchmarks.machine import machine_info, repo_relative
from feedrank import features as F
from feedrank.events import contract, io
from feedrank.examples import beam_pipeline

log = logging.getLogger(__name__)
YEAR_2100 = 4_102_444_800


def _with_extra_event(src: str, dst: str, event: str, ts: int) -> None:
    """Copies the log at ``src`` to ``dst`` with one more event (a copy of the first impression's row)."""
    shutil.copytree(src, dst)
    events = io.read_table(dst, contract.EVENTS)
    row = events[events["event"] == contract.IMPRESSION].iloc[[0]].copy()
    row["event_id"], row["event"], row["ts"] = f"edge-{event}-{ts}", event, ts
    for name in os.listdir(dst):
        if name.startswith(contract.EVENTS):
            path = os.path.join(dst, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    pd.concat([events, row], ignore_index=True).to_parquet(os.path.join(dst, "events.parquet"), index=False)


def _run(log_dir: str, work: str, settings: Dict) -> Dict:
    t0 = time.perf_counter()
    s = beam_pipeline.run(log_dir, os.path.join(work, "examples"), os.path.join(work, "quarantine"), settings,
                          spec=F.BUILTIN)
    return {"examples": s["examples"], "positives": s["positives"], "censored_eval": s.get("censored_eval"),
            "quarantined": {k: v for k, v in s["quarantined_by_reason"].items() if v},
            "eval_start_ts": s.get("eval_start_ts"), "log_end_ts": s.get("log_end_ts"),
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", default="data/demo", help="an event-log directory (default data/demo)")
    parser.add_argument("--out", default="benchmarks/results/log_edges.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not os.path.isdir(args.log):
        parser.error(f"no event log at {args.log} (make demo simulates data/demo)")
    settings = {"label_window_s": 1800, "eval_days": 1, "negative_sampling_rate": 0.5, "seed": 0}
    rows = {}
    with tempfile.TemporaryDirectory(prefix="feedrank-edges-") as tmp:
        cases = {"clean log": args.log}
        for name, event, ts in (("+1 impression in 2100", contract.IMPRESSION, YEAR_2100),
                                ("+1 click at ts -1", contract.CLICK, -1)):
            cases[name] = os.path.join(tmp, name.replace(" ", "_"))
            _with_extra_event(args.log, cases[name], event, ts)
        for name, path in cases.items():
            rows[name] = _run(path, os.path.join(tmp, "out-" + name.replace(" ", "_")), settings)
            print(f"{name}: {rows[name]}", flush=True)
    result = {"machine": machine_info("tensorflow", "apache_beam"), "date": time.strftime("%Y-%m-%d"),
              "log": repo_relative(args.log), "settings": settings, "cases": rows}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print("\n| log | train | valid | eval (positives) | censored eval | quarantined |\n|---|---|---|---|---|---|")
    for name, r in rows.items():
        ex, pos = r["examples"], r["positives"]
        print(f"| {name} | {ex.get('train', 0)} | {ex.get('valid', 0)} | {ex.get('eval', 0)} ({pos.get('eval', 0)}) "
              f"| {r['censored_eval']} | {r['quarantined'] or '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
