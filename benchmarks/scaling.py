"""Scaling of example generation: wall time, CPU seconds and peak memory at multiples of the demo's log.

Usage::

    .venv/bin/python -m benchmarks.scaling --sizes 1 4 16 --runners direct portable --repeats 2 2 1

For each size k, the demo config's ``simulate`` world with k times the users
(posts, days, seed and mechanisms kept) is simulated once and cached under
``--data-dir``.  Then, per runner and repeat, example generation
(`feedrank.examples.beam_pipeline.run`, the config's ``examples`` settings and
feature contract) runs in a fresh process (`benchmarks.scaling_child`) while
`benchmarks.scaling_probe` samples the resident memory of its process tree (the
job service included for the portable runner) and keys the samples to the
phase the example generator's log lines show.  CPU seconds are those of the
whole tree.

Reports the median run per size and runner, the growth per 4x events of wall
and CPU time (target <= 4.4, linear) and of peak memory; writes
``benchmarks/results/scaling.json``, prints markdown tables and draws
``docs/img/scaling.png``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from typing import Dict, List

from benchmarks import scaling_report as R
from benchmarks.machine import machine_info, repo_relative
from benchmarks.scaling_probe import PHASES, SETUP, measure

logger = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_log(data_dir: str, world: Dict[str, object], label: str) -> Dict[str, object]:
    """Simulates (once; cached by its settings) the log of ``world``, in a measured subprocess."""
    name = "log_u{users}_i{items}_d{days}_s{seed}_{mechanisms}".format(**world)
    out = os.path.join(data_dir, name)
    done = os.path.join(out, "world.json")
    sim = None
    if not os.path.exists(done):
        logger.warning("%s: simulating %s users, %s posts, %s days into %s", label, world["users"],
                       world["items"], world["days"], out)
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "feedrank.events.simulator", "--quiet", "--out", out,
               "--users", str(world["users"]), "--items", str(world["items"]), "--days", str(world["days"]),
               "--seed", str(world["seed"]), "--mechanisms", str(world["mechanisms"])]
        sim = measure(cmd)
        if sim["returncode"] != 0:
            raise RuntimeError(f"the simulator failed ({sim['returncode']})")
        sim.pop("phases")
        sim.pop("rss_trace_mb")
        logger.warning("%s: simulated in %.0f s wall, %.0f s CPU, peak RSS %.0f MB", label, sim["wall_s"],
                       sim["cpu_s"], sim["peak_rss_mb"])
    with open(done) as f:
        summary = json.load(f)["summary"]
    return dict(dir=out, events=int(summary["events"]), impressions=int(summary["impressions"]),
                simulation=sim)


def run_once(log: Dict[str, object], runner: str, config: str, settings: Dict[str, object],
             work_root: str, tag: str) -> Dict[str, object]:
    """One measured example-generation run in a fresh process."""
    work = tempfile.mkdtemp(prefix=f"{tag}_", dir=work_root)
    result = os.path.join(work, "result.json")
    cmd = [sys.executable, "-m", "benchmarks.scaling_child", "--log", str(log["dir"]), "--work", work,
           "--runner", runner, "--config", config, "--set", json.dumps(settings), "--result", result]
    load_before = os.getloadavg()[0]
    try:
        m = measure(cmd, log_path=os.path.join(work_root, f"{tag}.log"), disk_dir=work)
        if m["returncode"] != 0:
            raise RuntimeError(f"{tag}: example generation failed ({m['returncode']}); "
                               f"see {os.path.join(work_root, tag + '.log')}")
        with open(result) as f:
            child = json.load(f)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s = child["summary"]
    m.update(examples=s.get("examples"), num_shards=s.get("num_shards"), events_used=s.get("events_used"),
             load_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)])
    return m


def summarise(label: str, multiple: float, runner: str, log: Dict[str, object],
              runs: List[Dict[str, object]]) -> Dict[str, object]:
    """The median run (by wall time) of one size and runner, with every run's figures."""
    med = sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2]
    return dict(size=label, multiple=multiple, runner=runner, events=log["events"], runs=len(runs),
                wall_s=statistics.median(r["wall_s"] for r in runs),
                cpu_s=statistics.median(r["cpu_s"] for r in runs),
                peak_rss_mb=statistics.median(r["peak_rss_mb"] for r in runs),
                largest_process_mb=statistics.median(r["max_single_process_rss_mb"] for r in runs),
                peak_rss_mb_by_process=med["peak_rss_mb_by_process"], phases=med["phases"],
                num_shards=med["num_shards"], examples=med["examples"],
                peak_disk_mb=med["peak_disk_mb"],
                all_runs=[{k: r[k] for k in ("wall_s", "cpu_s", "cpu_user_s", "cpu_system_s", "peak_rss_mb",
                                             "max_single_process_rss_mb", "peak_disk_mb", "load_1min",
                                             "rss_trace_mb")} for r in runs])


def load_rows(path: str) -> List[Dict[str, object]]:
    """The result rows of a results JSON, each with the shuffle it ran with."""
    with open(path) as f:
        result = json.load(f)
    shuffle = result.get("example_settings_over_config", {}).get("shuffle", "files")
    return [dict(r, shuffle=r.get("shuffle", shuffle)) for r in result["results"]]


def draw(rows: List[Dict[str, object]], also: List[str], path: str, info: Dict[str, object], day: str) -> None:
    """The plot of ``rows`` and of the rows of the results files ``also``."""
    others = [r for p in also for r in load_rows(p)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    R.plot(rows + others, path, f"Example generation on {info.get('cpus')} cores (median runs; {day})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=float, default=[1, 4, 16], help="multiples of the demo log")
    ap.add_argument("--runners", nargs="+", choices=("direct", "portable"), default=["direct", "portable"])
    ap.add_argument("--repeats", nargs="+", type=int, default=[1], help="one value, or one per size")
    ap.add_argument("--config", default="configs/demo.yaml", help="its simulate, examples and features sections")
    ap.add_argument("--set", default="{}", help="example-generation settings over the config's, as JSON")
    ap.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "feedrank_scaling"),
                    help="simulated logs are cached here; run logs and scratch output go here too")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "scaling.json"))
    ap.add_argument("--plot", default=os.path.join(ROOT, "docs", "img", "scaling.png"), help="'' for none")
    ap.add_argument("--plot-also", nargs="*", default=[],
                    help="results JSON of other runs (e.g. with shuffle: beam) drawn dashed in the plot")
    ap.add_argument("--replot", action="store_true", help="only draw --plot from the results in --out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    warnings.filterwarnings("ignore", category=FutureWarning)   # google-api-core's Python-version notices
    repeats = args.repeats * len(args.sizes) if len(args.repeats) == 1 else args.repeats
    if len(repeats) != len(args.sizes) or min(repeats) < 1:
        ap.error("--repeats takes one value >= 1, or one per size")
    if args.replot:
        with open(args.out) as f:
            done = json.load(f)
        draw(load_rows(args.out), args.plot_also, args.plot, done["machine"], done["started"][:10])
        return 0
    from feedrank import config as C
    cfg = C.load(args.config)
    base = dict(users=cfg.simulate.users, items=cfg.simulate.items, days=cfg.simulate.days,
                seed=cfg.simulate.seed, mechanisms=cfg.simulate.mechanisms)
    settings = json.loads(args.set)
    info = machine_info("apache_beam", "pandas", "pyarrow", "psutil")
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    os.makedirs(args.data_dir, exist_ok=True)
    rows, logs = [], {}
    for multiple, n in zip(args.sizes, repeats):
        label = R.size_label(multiple)
        world = R.scaled_world(multiple, base)
        log = make_log(args.data_dir, world, label)
        logs[label] = dict(world=world, events=log["events"], impressions=log["impressions"],
                           simulation=log["simulation"])
        for runner in args.runners:
            runs = []
            for i in range(n):
                tag = f"{label}_{runner}_{i + 1}"
                runs.append(run_once(log, runner, args.config, settings, args.data_dir, tag))
                r = runs[-1]
                logger.warning("%s %s run %d/%d: %s events, %.1f s wall, %.1f s CPU, peak RSS %.0f MB "
                               "(largest process %.0f MB), load %.2f", label, runner, i + 1, n,
                               f"{log['events']:,}", r["wall_s"], r["cpu_s"], r["peak_rss_mb"],
                               r["max_single_process_rss_mb"], os.getloadavg()[0])
            rows.append(dict(summarise(label, multiple, runner, log, runs),
                             shuffle=settings.get("shuffle", "files")))
    R.add_ratios(rows)
    phases = [SETUP] + [p[0] for p in PHASES]
    result = dict(benchmark="scaling", started=started, finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                  machine=info, load_avg_at_end=os.getloadavg(), config=repo_relative(args.config),
                  example_settings_over_config=settings, base_world=base, logs=logs,
                  linear_limit_per_4x=R.LINEAR_LIMIT_PER_4X, results=rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    if args.plot:
        draw(rows, args.plot_also, args.plot, info, started[:10])
    print(f"\nMachine: {info.get('cpu_model')}, {info['cpus']} CPUs, {info.get('mem_gb')} GB, Python "
          f"{info['python']}, Beam {info['apache_beam']}; load avg at start {info['load_avg_at_start']}, "
          f"at end {result['load_avg_at_end']}\n")
    print(R.markdown(rows))
    print("\nPer phase (median run): seconds / peak RSS of the process tree (MB)\n")
    print(R.phase_markdown(rows, phases))
    print(f"\nwrote {repo_relative(args.out)}" + (f" and {repo_relative(args.plot)}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
