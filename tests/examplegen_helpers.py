"""Helpers shared by the example-generation tests: tiny simulated logs,
running the plain-Python pipeline and reading its examples back."""
from __future__ import annotations

import glob
import os
import shutil
from typing import Dict, List

import pandas as pd

from feedrank.events.simulator import simulate
from feedrank.examples import beam_pipeline

SMALL = dict(users=250, items=500, days=4, seed=11)


def make_log(out_dir: str, **kwargs) -> str:
    """A tiny simulated log (a few thousand events) in ``out_dir``."""
    simulate(out_dir, verbose=False, **{**SMALL, **kwargs})
    return out_dir


def copy_log(src: str, dst: str) -> str:
    """Copies the three tables (parquet) of a log."""
    os.makedirs(dst, exist_ok=True)
    for name in ("events", "items", "users"):
        shutil.copy(os.path.join(src, f"{name}.parquet"), os.path.join(dst, f"{name}.parquet"))
    return dst


def load(log_dir: str, name: str = "events") -> pd.DataFrame:
    return pd.read_parquet(os.path.join(log_dir, f"{name}.parquet"))


def save(df: pd.DataFrame, log_dir: str, name: str = "events") -> None:
    df.to_parquet(os.path.join(log_dir, f"{name}.parquet"), index=False)


def run(log_dir: str, work_dir: str, **config) -> Dict:
    """Runs the pipeline; returns the summary plus output/quarantine dirs."""
    out, quarantine = os.path.join(work_dir, "examples"), os.path.join(work_dir, "quarantine")
    cfg = {"num_shards": 3, **config}
    summary = beam_pipeline.run(log_dir, out, quarantine, cfg)
    return dict(summary, output_dir=out, quarantine_dir=quarantine)


def quarantine(result: Dict) -> pd.DataFrame:
    return pd.read_parquet(os.path.join(result["quarantine_dir"], beam_pipeline.QUARANTINE_FILE))


def read_records(output_dir: str, split: str) -> List[bytes]:
    """Serialized examples of one split (GZIP TFRecords)."""
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(output_dir, f"Split-{split}", "*.gz")))
    assert files, f"no files for split {split} in {output_dir}"
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def to_dict(serialized: bytes) -> Dict[str, list]:
    """A parsed example as ``name -> list of python values`` (bytes decoded)."""
    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example.FromString(serialized)
    out = {}
    for name, feat in ex.features.feature.items():
        kind = feat.WhichOneof("kind")
        values = list(getattr(feat, kind).value) if kind else []
        out[name] = [v.decode() if isinstance(v, bytes) else v for v in values]
    return out


def by_impression(output_dir: str, splits=("train", "eval")) -> Dict[str, bytes]:
    """impression_id -> serialized example over the given splits."""
    out = {}
    for split in splits:
        for rec in read_records(output_dir, split):
            out[to_dict(rec)["impression_id"][0]] = rec
    return out
