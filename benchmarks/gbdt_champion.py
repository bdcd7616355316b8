"""The GBDT champion (TF-DF, `trainer.model: gbdt`) vs the LightGBM baseline on the same examples,
and its serving latency next to a DIN export.

    .venv/bin/python pipeline.py run --config configs/gbdt.yaml --simulate-if-missing
    .venv/bin/python -m benchmarks.gbdt_champion --examples runs/feedrank-demo/tfx/BehaviorExampleGen/examples/<n>

1. The pushed GBDT (newest under ``model_store/gbdt``) scores the eval split
   through ``serving_tf_example`` (`feedrank.evaluate.scoring`): exact AUC,
   GAUC, logloss, also on quality.py's test users.
2. The LightGBM baseline (`feedrank.train.lightgbm_baseline`) on the same raw examples
   and with the GBDT's feature contract (`features.FeatureSpec.read` of its export):
   trained on the train split, early-stopped on the valid split (as the
   TF-DF family), scored on the eval split, corrected for negative sampling.
3. Latency: one request (the first eval example's user side once, the
   first ``--candidates`` eval examples as candidates) through the predictor's
   loader (`serving.predictor.store.load`) and ``serving_default``, in this
   process, for the GBDT and the DIN export (newest under ``model_store/din``),
   alternated ``--rounds`` times.

Writes benchmarks/results/gbdt_champion.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Dict, List

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def newest(model_dir: str) -> str:
    versions = sorted((v for v in os.listdir(model_dir) if v.isdigit()), key=int)
    if not versions:
        raise SystemExit(f"no pushed version under {model_dir}")
    return os.path.join(model_dir, versions[-1])


def request(records: List[bytes], n: int, spec) -> Dict:
    """``serving_default``'s request of the feature contract ``spec``: records[0]'s user
    side once, records[:n] as candidates."""
    import tensorflow as tf

    parsed = tf.io.parse_example(tf.constant(records[:n]),
                                 spec.raw_feature_spec(include_labels=False, include_metadata=False))
    user = spec.features_of_side("user")
    req = {}
    for name in user + spec.features_of_side("candidate"):
        x = parsed[name]
        if isinstance(x, tf.SparseTensor):
            x = tf.sparse.to_dense(x, default_value="")
        req[name] = x[:1] if name in user else x
    return req


def lightgbm(examples: str, rate: float, input_base: str, spec) -> Dict:
    """The LightGBM baseline on the raw examples of the feature contract ``spec``."""
    from feedrank import features as F
    from feedrank.train import lightgbm_baseline as lgbm
    from feedrank.train.export import correct_for_sampling

    raw = {s: lgbm.read_raw(os.path.join(examples, f"Split-{s}"), spec=spec) for s in ("train", "valid", "eval")}
    x = {s: lgbm.features(r, spec=spec) for s, r in raw.items()}
    start = time.perf_counter()
    booster = lgbm.fit(x["train"], raw["train"][F.LABEL], x["valid"], raw["valid"][F.LABEL], seed=0, spec=spec)
    train_s = time.perf_counter() - start
    p = correct_for_sampling(lgbm.predict(booster, x["train"], x["eval"], spec=spec), rate)
    scored = {"id": raw["eval"][F.IMPRESSION_ID], "user": raw["eval"][F.USER_ID], "label": raw["eval"][F.LABEL],
              "score": p}
    return {**metrics(scored, input_base), "rounds": int(booster.best_iteration), "train_s": round(train_s, 1)}


def metrics(scored: Dict, input_base: str) -> Dict:
    from sklearn.metrics import roc_auc_score

    from benchmarks.quality import is_test_user
    from feedrank.evaluate.scoring import metrics_from_scores

    m = metrics_from_scores(scored, input_base)
    test = is_test_user(scored["user"])
    keep = ("n", "auc", "gauc", "logloss", "oracle_auc")
    return {**{k: m[k] for k in keep if k in m},
            "auc_test_users": float(roc_auc_score(scored["label"][test], scored["score"][test]))}


def latency(paths: Dict[str, str], records: List[bytes], n: int, runs: int, rounds: int) -> Dict:
    from feedrank import features as F
    from serving.predictor import store

    loaded, reqs, times = {}, {}, {name: [] for name in paths}
    for name, path in paths.items():
        spec = F.FeatureSpec.read(path)   # each export's own feature contract
        loaded[name] = store.load(name, path, warmup_candidates=n)
        reqs[name] = {k: v for k, v in request(records, n, spec).items() if k in loaded[name].input_specs}
    for _ in range(rounds):
        for name in paths:
            for _ in range(runs):
                start = time.perf_counter()
                loaded[name].fn(**reqs[name])["probabilities"].numpy()
                times[name].append(1000 * (time.perf_counter() - start))
    return {name: {"candidates": n, "calls": len(t), "p50_ms": round(statistics.median(t), 2),
                   "p90_ms": round(sorted(t)[int(0.9 * len(t)) - 1], 2)} for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/gbdt.yaml")
    p.add_argument("--examples", required=True, help="the pipeline run's BehaviorExampleGen examples URI")
    p.add_argument("--gbdt-model", default="model_store/gbdt")
    p.add_argument("--din-model", default="model_store/din")
    p.add_argument("--candidates", type=int, default=120)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "gbdt_champion.json"))
    args = p.parse_args()
    from benchmarks.machine import machine_info
    from feedrank import config as config_lib
    from feedrank import features as F
    from feedrank.evaluate.scoring import score_split
    from feedrank.examples.records import read_split as read_records

    cfg = config_lib.load(args.config)
    gbdt_path, din_path = newest(args.gbdt_model), newest(args.din_model)
    gbdt_spec = F.FeatureSpec.read(gbdt_path)   # the contract the GBDT was exported with
    import importlib.metadata

    machine = {**machine_info("tensorflow", "lightgbm"),
               "tensorflow_decision_forests": importlib.metadata.version("tensorflow_decision_forests")}
    result = {"machine": machine, "config": args.config, "examples": args.examples,
              "gbdt_tfdf": {"model": gbdt_path, **metrics(score_split(gbdt_path, args.examples, "eval"),
                                                          cfg.input_base)},
              "lightgbm": lightgbm(args.examples, cfg.examples.negative_sampling_rate, cfg.input_base, gbdt_spec)}
    print(json.dumps(result["gbdt_tfdf"]), json.dumps(result["lightgbm"]), sep="\n", flush=True)
    records = read_records(args.examples, "eval")
    result["latency"] = latency({"gbdt": gbdt_path, "din": din_path}, records, args.candidates, args.runs,
                                args.rounds)
    result["latency"]["din"]["model"] = din_path
    print(json.dumps(result["latency"]), flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
