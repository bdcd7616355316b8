"""Is the input pipeline ahead of the training step?  samples/s of each, same data, same run.

    .venv/bin/python -m benchmarks.input_pipeline [--config configs/quality.yaml]
        [--batch 1024] [--repeats 3] [--families din dnn]

Reads the transformed train split of the config's latest pipeline run (run
`benchmarks/quality.py` or `pipeline.py run --config ...` first) and measures:

* input: `feedrank.train.data.dataset` (parallel interleave over GZIP
  TFRecords, record cache, shuffle, batch-then-parse, prefetch) drained with
  nothing consuming the batches, as the Trainer builds it: the first pass
  (reads and decompresses the files, fills the cache) and the second (every
  later epoch: from the cache), each timed on its own;
* step: ``train_on_batch`` of a family on batches already in memory (input
  excluded), after a warm-up, over ``--steps`` steps.

Each is repeated ``--repeats`` times; the median is reported and the ratio
input/step is the figure of merit (target >= 5x on CPU), for both passes.  Writes
benchmarks/results/input_pipeline.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def input_rates(pattern: str, spec: Dict, batch: int, cache: str, features) -> Dict[str, float]:
    """samples/s of the first and the second full pass over the train split."""
    from feedrank.train import data

    rates = {}
    with tempfile.TemporaryDirectory(prefix="feedrank-input-cache-") as cache_dir:  # for cache: disk
        ds = data.dataset([pattern], spec, batch, shuffle=True, seed=0, cache=cache, cache_dir=cache_dir,
                          spec=features)
        for name in ("first_pass", "cached_pass"):
            n, start = 0, time.perf_counter()
            for _, y in ds:
                n += int(y.shape[0])
            rates[name] = n / (time.perf_counter() - start)
    return rates


def step_rate(family: str, batches: List, vocab_sizes: Dict, cfg, steps: int, features) -> float:
    """samples/s of train_on_batch on in-memory batches (warm-up excluded)."""
    import tf_keras as keras

    from feedrank.train.families import build_model

    keras.utils.set_random_seed(0)
    model = build_model(family, vocab_sizes, cfg, spec=features)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy())
    for x, y in batches[:2]:
        model.train_on_batch(x, y)
    n, start = 0, time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        model.train_on_batch(x, y)
        n += int(y.shape[0])
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "quality.yaml"))
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--families", nargs="+", default=["din", "dnn"])
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "input_pipeline.json"))
    args = p.parse_args()

    import tensorflow_transform as tft

    from benchmarks.machine import machine_info
    from feedrank import config as config_lib
    from feedrank.evaluate.mlmd_reader import latest_run
    from feedrank.train import data, trainer

    cfg = config_lib.load(args.config)
    run = latest_run(cfg.metadata_path)
    art = run.artifact("Transform", "transformed_examples") if run else None
    if art is None:
        sys.exit(f"no Transform output in {cfg.metadata_path}: run `pipeline.py run --config {args.config}` first")
    tft_out = tft.TFTransformOutput(run.artifact("Transform", "transform_graph").uri)
    spec = tft_out.transformed_feature_spec()
    pattern = os.path.join(art.uri, "Split-train", "*")
    features = cfg.features_spec
    batches = list(data.dataset([pattern], spec, args.batch, spec=features).take(8))
    cache = cfg.trainer.input_cache
    result = {"machine": machine_info("tensorflow"), "batch": args.batch, "repeats": args.repeats,
              "input_cache": cache, "input": {"first_pass": [], "cached_pass": []}, "step": {}}
    for r in range(args.repeats):
        for name, rate in input_rates(pattern, spec, args.batch, cache, features).items():
            result["input"][name].append(round(rate, 1))
        for fam in args.families:
            rate = step_rate(fam, batches, trainer.vocab_sizes(tft_out, spec=features), cfg.trainer, args.steps,
                             features)
            result["step"].setdefault(fam, []).append(round(rate, 1))
        print(f"repeat {r + 1}: input first pass {result['input']['first_pass'][-1]:,.0f}/s, cached pass "
              f"{result['input']['cached_pass'][-1]:,.0f}/s; "
              + ", ".join(f"{f} step {v[-1]:,.0f}/s" for f, v in result["step"].items()), flush=True)
    result["median_input_samples_per_s"] = {k: statistics.median(v) for k, v in result["input"].items()}
    result["ratio_input_over_step"] = {
        f: {k: round(m / statistics.median(v), 2) for k, m in result["median_input_samples_per_s"].items()}
        for f, v in result["step"].items()}
    print(f"\ninput cache: {cache or 'off'}; input pipeline median: " + ", ".join(
        f"{k} {m:,.0f} samples/s" for k, m in result["median_input_samples_per_s"].items()))
    for fam, v in result["step"].items():
        r = result["ratio_input_over_step"][fam]
        print(f"{fam}: step median {statistics.median(v):,.0f} samples/s -> input/step "
              f"{r['first_pass']}x (first pass), {r['cached_pass']}x (cached pass)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
