"""Training samples/s of the DIN Trainer with 1 and 2 workers (MultiWorkerMirroredStrategy).

    .venv/bin/python -m benchmarks.multi_worker [--workers 1 2] [--repeats 3] [--epochs 4]
        [--batch 1024] [--train-shards 2] [--users 2000 --items 2000 --days 8]

Data: a simulated log (`feedrank.events.simulator`) through the example generator and
tf.Transform (`tests.helpers.multi_worker.ranking_data`); the transformed train split is
written in ``--train-shards`` files (2: the ``file`` shard policy with 2 workers; 1:
``data``).  Each run starts fresh worker processes (`feedrank.train.local_cluster`: 1
worker is the plain Trainer without TF_CONFIG, 2 are a loopback cluster) that train the
demo-sized DIN (MLP [200, 80], Dice, attention [80, 40], the in-graph match features) as
`feedrank.train.trainer.train` does, with the same global batch, for ``--epochs`` epochs;
calibration and export are left out (they are not training).  Every worker's record
(`feedrank.train.distribute.ShardTally`) gives per epoch the train records it read and
the wall and CPU seconds of its training steps (validation excluded).  The first epoch
(tracing, filling the record cache) is left out: samples/s = the records all workers
trained on in epochs 2.. / the chief's wall seconds of those epochs' steps; CPU s per
1,000 samples sums every worker's CPU seconds (every thread).  Median of ``--repeats``
runs per worker count.  Writes benchmarks/results/multi_worker.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DIN = {"model": "din", "batch_size": 1024, "learning_rate": 0.001, "mlp_units": [200, 80], "activation": "dice",
       "attention_units": [80, 40], "calibration": "none", "code_version": "benchmark"}


def train_only(fn_args) -> None:
    """A run_fn that trains as `feedrank.train.trainer.run_fn` does (the strategy first, the
    chief's run dir, every worker's record) and stops there: no calibration, no export."""
    import tensorflow_transform as tft

    from feedrank.train import distribute, trainer
    from feedrank.train.settings import TrainerSettings

    cluster = distribute.cluster_from_env()
    distribute.distribution_strategy()
    config = TrainerSettings.from_dict(fn_args.custom_config, "benchmark trainer config")
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    tally = distribute.ShardTally(cluster)
    with distribute.output_dir(fn_args.model_run_dir, cluster) as run_dir:
        trainer.train(fn_args.train_files, fn_args.eval_files, tft_output, config, run_dir=run_dir,
                      spec=trainer.feature_spec(config), tally=tally)
    tally.write(fn_args.model_run_dir)


def one_run(workers: int, data: Dict[str, str], config: Dict[str, Any], out: str) -> Dict[str, Any]:
    """One fresh cluster of ``workers``; its samples/s and CPU seconds per 1,000 samples."""
    from feedrank.train import distribute
    from feedrank.train.local_cluster import WorkerArgs, run_cluster

    t = data["transformed"]
    args = WorkerArgs(train_files=[os.path.join(t, "Split-train", "*")],
                      eval_files=[os.path.join(t, "Split-valid", "*")], transform_output=data["graph"],
                      serving_model_dir=os.path.join(out, "model"), model_run_dir=os.path.join(out, "model_run"),
                      custom_config=config)
    start = time.perf_counter()
    run_cluster("benchmarks.multi_worker.train_only", args, workers, timeout_s=1800)
    wall = time.perf_counter() - start
    recs = []
    for name in sorted(os.listdir(os.path.join(args.model_run_dir, distribute.RECORDS_DIR))):
        with open(os.path.join(args.model_run_dir, distribute.RECORDS_DIR, name)) as f:
            recs.append(json.load(f))
    chief = next(r for r in recs if r["is_chief"])
    later = slice(1, None)   # epochs 2..: no tracing, records from the cache
    samples = sum(e["records"] for r in recs for e in r["epochs"][later])
    seconds = sum(e["train_seconds"] for e in chief["epochs"][later])
    cpu = sum(e["train_cpu_seconds"] for r in recs for e in r["epochs"][later])
    return {"workers": workers, "shard_policy": chief["shard_policy"], "samples": samples,
            "train_seconds": round(seconds, 2), "samples_per_s": round(samples / seconds, 1),
            "cpu_seconds": round(cpu, 2), "cpu_s_per_1k_samples": round(1000 * cpu / samples, 3),
            "first_epoch_seconds": round(chief["epochs"][0]["train_seconds"], 2),
            "epochs": len(chief["epochs"]), "process_wall_seconds": round(wall, 1),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def table(summary: List[Dict[str, Any]]) -> str:
    """The markdown table of the medians."""
    base = summary[0]["samples_per_s"]
    lines = ["| workers | shard policy | samples/s (median) | runs | CPU s / 1k samples | vs 1 worker |",
             "|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['workers']} | {s['shard_policy']} | {s['samples_per_s']:.0f} | "
                     f"{', '.join(f'{r:.0f}' for r in s['runs'])} | {s['cpu_s_per_1k_samples']:.2f} | "
                     f"{s['samples_per_s'] / base:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=1024, help="the global batch, the same for every worker count")
    p.add_argument("--train-shards", type=int, default=2, help="train files (>= workers: file shards, else data)")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--days", type=int, default=8)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "multi_worker.json"))
    args = p.parse_args()
    sys.path.insert(0, ROOT)
    from benchmarks.machine import machine_info
    from tests.helpers.multi_worker import ranking_data

    config = {**DIN, "batch_size": args.batch, "epochs": args.epochs, "early_stopping_patience": args.epochs}
    machine = machine_info("tensorflow")
    with tempfile.TemporaryDirectory(prefix="feedrank-mw-bench-") as tmp:
        data = ranking_data(os.path.join(tmp, "data"), train_shards=args.train_shards, splits=("train", "valid"),
                            users=args.users, items=args.items, days=args.days)
        rows = []
        for repeat in range(args.repeats):
            for workers in args.workers:   # interleaved, so a change in the machine's load hits both
                rows.append({**one_run(workers, data, config, os.path.join(tmp, f"run-{workers}-{repeat}")),
                             "repeat": repeat})
                print(json.dumps(rows[-1]), flush=True)
    summary = []
    for workers in args.workers:
        runs = [r for r in rows if r["workers"] == workers]
        summary.append({"workers": workers, "shard_policy": runs[0]["shard_policy"],
                        "samples_per_s": statistics.median(r["samples_per_s"] for r in runs),
                        "runs": [r["samples_per_s"] for r in runs],
                        "cpu_s_per_1k_samples": statistics.median(r["cpu_s_per_1k_samples"] for r in runs),
                        "samples_per_epoch": runs[0]["samples"] // max(1, args.epochs - 1)})
    settings = {**{k: v for k, v in vars(args).items() if k != "out"}, "trainer": config}
    with open(args.out, "w") as f:
        json.dump({"machine": machine, "settings": settings, "summary": summary, "rows": rows}, f, indent=1)
    print(table(summary))


if __name__ == "__main__":
    main()
