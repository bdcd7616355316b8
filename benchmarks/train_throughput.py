"""Training throughput (samples/s) of every model family on random batches.

    .venv/bin/python -m benchmarks.train_throughput [--batch 1024] [--steps 10] [--repeats 3] [family ...]

Random transformed batches from `feedrank.train.synthetic.random_batch` (right-
padded sequences of uniform random length), demo-like vocabulary sizes, the
default embedding dims and the demo trainer hyperparameters (MLP [200, 80],
Dice, Adam).  Each family is compiled like the trainer does, warmed up
(tracing excluded), then timed over ``--steps`` train steps, ``--repeats``
times; the median is reported.  Prints one JSON line per family and writes
benchmarks/results/train_throughput.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

from feedrank import features as F  # noqa: E402
from feedrank.train.families import FAMILIES, build_model  # noqa: E402
from feedrank.train.synthetic import random_batch  # noqa: E402

# ~ the demo simulation (50k posts) plus padding and OOV rows
DEMO_VOCAB_SIZES = {"item": 50_021, "category": 64, "region": 33, "token": 512, "age": 15}
DEMO_CONFIG = {"mlp_units": [200, 80], "activation": "dice", "attention_units": [80, 40],
               "dropout": 0.0, "transformer_heads": 8, "transformer_layers": 1}


def demo_batch(n: int, seed: int, spec: F.FeatureSpec) -> dict:
    """`random_batch` of ``spec``'s model inputs drawn from the demo vocabulary sizes."""
    return random_batch(n, DEMO_VOCAB_SIZES, spec=spec, seed=seed)


def measure(family: str, batch: int, steps: int, repeats: int = 3, warmup: int = 2, *,
            spec: F.FeatureSpec) -> dict:
    """Training samples per second of ``family`` on the model inputs of the feature contract ``spec``."""
    keras.utils.set_random_seed(0)
    model = build_model(family, DEMO_VOCAB_SIZES, DEMO_CONFIG, spec=spec)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy())
    xs = [demo_batch(batch, seed=s, spec=spec) for s in range(4)]
    ys = [(x[F.dense(F.INTEREST_CATEGORY_SHARE.name)] > 0.5).astype(np.float32) for x in xs]
    for i in range(warmup):
        model.train_on_batch(xs[i % 4], ys[i % 4])
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(steps):
            model.train_on_batch(xs[i % 4], ys[i % 4])
        rates.append(batch * steps / (time.perf_counter() - start))
    return {"family": family, "batch": batch, "steps": steps, "params": model.count_params(),
            "samples_per_s": round(statistics.median(rates), 1), "runs": [round(r, 1) for r in rates],
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # gbdt has no Keras training step (TF-DF trains in one pass)
    p.add_argument("families", nargs="*", default=sorted(set(FAMILIES) - {"gbdt"}))
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "train_throughput.json"))
    args = p.parse_args()
    from benchmarks.machine import machine_info

    rows = []
    for family in args.families:
        # the demo's built-in features: no config declares columns here
        rows.append(measure(family, args.batch, args.steps, args.repeats, spec=F.BUILTIN))
        print(json.dumps(rows[-1]), flush=True)
    with open(args.out, "w") as f:
        json.dump({"machine": machine_info("tensorflow"), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
