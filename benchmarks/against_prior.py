"""A pushed model against the item prior on its own pipeline's eval split.

Scores every eval example with the pushed model's ``serving_tf_example`` (what TFMA scores)
and reads the item prior, ``item_hist_ctr`` (the post's smoothed click rate before the
impression), from the same examples.  Reports both AUCs and GAUCs and the paired bootstrap
interval over users of model minus prior (`feedrank.evaluate.paired`): does the model rank a
user's candidates better than popularity alone?

    .venv/bin/python -m benchmarks.against_prior --model-dir model_store/din \\
        --examples runs/feedrank-movielens/tfx/BehaviorExampleGen/examples/1 \\
        --out benchmarks/results/movielens_against_prior.json
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def item_prior(examples: str, ids) -> "object":
    """``item_hist_ctr`` of the eval examples, in the order of ``ids``."""
    import numpy as np
    import tensorflow as tf

    from feedrank import features as F

    spec = {F.IMPRESSION_ID: tf.io.FixedLenFeature([], tf.string),
            F.ITEM_HIST_CTR.name: tf.io.FixedLenFeature([], tf.float32)}
    files = sorted(glob.glob(os.path.join(examples, "Split-eval", "*")))
    got = {}
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(8192):
        parsed = tf.io.parse_example(batch, spec)
        got.update(zip(parsed[F.IMPRESSION_ID].numpy(), parsed[F.ITEM_HIST_CTR.name].numpy()))
    return np.array([got[i] for i in ids], dtype=float)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", required=True, help="a pushed model's directory (its newest version is used)")
    p.add_argument("--examples", required=True, help="the run's BehaviorExampleGen examples (with Split-eval)")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    from benchmarks.gbdt_champion import newest

    if not glob.glob(os.path.join(args.examples, "Split-eval", "*")):
        print(f"against_prior: no eval split under {args.examples}", file=sys.stderr)
        return 2
    if not os.path.isdir(args.model_dir):
        print(f"against_prior: no model directory {args.model_dir}", file=sys.stderr)
        return 2
    from feedrank.evaluate import paired, scoring

    model = newest(args.model_dir)
    scored = scoring.score_split(model, args.examples)
    prior = item_prior(args.examples, scored["id"])
    diffs = paired.compare(scored["label"], scored["score"], prior, scored["user"], resamples=args.resamples)
    rows = [{**d.to_dict(), "ordered": d.ordered} for d in diffs.values()]
    for r in rows:
        verdict = "ordered" if r["ordered"] else "a tie"
        print(f"{r['metric'].upper()}: model {r['a_value']:.4f}, item prior {r['b_value']:.4f}, "
              f"model - prior {r['diff']:+.4f} [{r['lo']:+.4f}, {r['hi']:+.4f}] over {r['users']} users: {verdict}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"model": os.path.relpath(model), "examples": os.path.relpath(args.examples),
                       "impressions": int(len(prior)), "paired": rows}, f, indent=1)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
