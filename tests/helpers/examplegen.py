"""Helpers shared by the example-generation tests: tiny simulated logs,
small hand-built logs, running the plain-Python pipeline and reading its
examples back."""
from __future__ import annotations

import os
import shutil
from typing import Dict, List

import pandas as pd

from feedrank import features as F
from feedrank.events.simulator import simulate
from feedrank.examples import beam_pipeline, records

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


def event(event_id: str, user_id: str, item_id: str, kind: str, ts: int, request_id: str = "",
          query: str = "", dwell_s: float = float("nan")) -> Dict:
    """One hand-built event row."""
    return dict(event_id=event_id, user_id=user_id, item_id=item_id, event=kind, ts=int(ts),
                request_id=request_id, query=query, dwell_s=dwell_s)


def write_log(log_dir: str, events: List[Dict], items: pd.DataFrame, users: pd.DataFrame) -> str:
    """Writes a hand-built log (events as rows, e.g. from `event`)."""
    os.makedirs(log_dir, exist_ok=True)
    cols = ["event_id", "user_id", "item_id", "event", "ts", "request_id", "query", "dwell_s"]
    ev = pd.DataFrame(events, columns=cols).astype({"ts": "int64", "dwell_s": "float64"})
    save(ev, log_dir)
    save(items, log_dir, "items")
    save(users, log_dir, "users")
    return log_dir


def load(log_dir: str, name: str = "events") -> pd.DataFrame:
    return pd.read_parquet(os.path.join(log_dir, f"{name}.parquet"))


def save(df: pd.DataFrame, log_dir: str, name: str = "events") -> None:
    df.to_parquet(os.path.join(log_dir, f"{name}.parquet"), index=False)


def run(log_dir: str, work_dir: str, spec: F.FeatureSpec = F.BUILTIN, **config) -> Dict:
    """Runs the pipeline with the feature contract ``spec`` (the simulated logs'
    built-in features unless given); returns the summary plus output/quarantine dirs."""
    out, quarantine = os.path.join(work_dir, "examples"), os.path.join(work_dir, "quarantine")
    cfg = {"num_shards": 3, **config}
    summary = beam_pipeline.run(log_dir, out, quarantine, cfg, spec=spec)
    return dict(summary, output_dir=out, quarantine_dir=quarantine)


def quarantine(result: Dict) -> pd.DataFrame:
    return pd.read_parquet(os.path.join(result["quarantine_dir"], beam_pipeline.QUARANTINE_FILE))


def read_records(output_dir: str, split: str) -> List[bytes]:
    """Serialized examples of one split (GZIP TFRecords)."""
    return records.read_split(output_dir, split)


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


def by_impression(output_dir: str, splits=beam_pipeline.SPLITS) -> Dict[str, bytes]:
    """impression_id -> serialized example over the given splits."""
    out = {}
    for split in splits:
        for rec in read_records(output_dir, split):
            out[to_dict(rec)["impression_id"][0]] = rec
    return out
