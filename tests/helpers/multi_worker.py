"""Small real inputs for the multi-worker Trainer tests and benchmark: a simulated log's
examples with their Transform output (the ranker's), and a simulated shop's session
samples with theirs (the DRNN's), each as the pipeline's components write them."""
from __future__ import annotations

import os
from typing import Dict, Sequence

from feedrank import features as F
from tests.helpers import examplegen as eg
from tests.helpers.transform import transform_splits

RANKING_SPLITS = ("train", "valid", "eval")
SESSION_TRANSFORM = {"max_pages": 20, "max_purchases": 10, "max_labels": 4}   # configs/session_tiny.yaml's


def ranking_data(out_dir: str, train_shards: int = 1, splits: Sequence[str] = RANKING_SPLITS,
                 **log_kwargs) -> Dict[str, str]:
    """A simulated log (`examplegen.SMALL` unless ``log_kwargs``) -> raw examples (``raw``,
    Split-train/valid/eval) -> Transform analysed on train: ``transformed`` (each split of
    ``splits``, ``train_shards`` train files) and ``graph``."""
    from feedrank.examples.tfdv_schema import make_schema
    from feedrank.transform.preprocessing import DECLARED_KEY, preprocessing_fn

    log = eg.make_log(os.path.join(out_dir, "log"), **log_kwargs)
    raw = eg.run(log, os.path.join(out_dir, "gen"), num_shards=1)["output_dir"]
    missing = [s for s in RANKING_SPLITS if not os.path.isdir(os.path.join(raw, f"Split-{s}"))]
    if missing:
        raise RuntimeError(f"the example generator wrote no {missing} split for this log")
    custom_config = {DECLARED_KEY: F.BUILTIN.to_json()}
    transformed, graph = transform_splits(raw, os.path.join(out_dir, "tft"), make_schema(F.BUILTIN),
                                          lambda inputs: preprocessing_fn(inputs, custom_config),
                                          splits, {"train": train_shards})
    return {"raw": raw, "transformed": transformed, "graph": graph}


def session_data(out_dir: str, train_shards: int = 2, users: int = 300, days: int = 5) -> Dict[str, str]:
    """A simulated shop (configs/session_tiny.yaml's world unless given) -> session samples
    (``samples``, Split-train/eval) -> the session Transform analysed on train:
    ``transformed`` (``train_shards`` train files) and ``graph``."""
    from feedrank.events.simulator.ecommerce_io import simulate_ecommerce
    from feedrank.sessions import beam_samples
    from feedrank.sessions.tfdv_schema import make_schema
    from feedrank.sessions.transform import preprocessing_fn

    shop = os.path.join(out_dir, "shop")
    simulate_ecommerce(shop, users=users, items=200, categories=10, days=days, seed=1, activity=0.4)
    samples = os.path.join(out_dir, "samples")
    beam_samples.run(shop, samples, beam_samples.SampleSettings(eval_days=2, max_purchase_history=10))
    transformed, graph = transform_splits(samples, os.path.join(out_dir, "tft"), make_schema(),
                                          lambda inputs: preprocessing_fn(inputs, {**SESSION_TRANSFORM,
                                                                                   "catalogue": shop}),
                                          ("train", "eval"), {"train": train_shards})
    return {"samples": samples, "transformed": transformed, "graph": graph}
