"""Accounting of one example-generation run: quarantine rows, ``summary.json``
and the ``max_bad_fraction`` gate.

The Beam graph writes the bad rows (``quarantine.parquet``) and the summed
stage counters (``_stats.json``); `finalize` turns them into the summary
(``events_read = events_used + quarantined``, counts per reason, examples per
split, the sampling rate) and fails the run when too many rows were bad.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Dict, List

import numpy as np
import pandas as pd

from feedrank.events import contract, io, validate

log = logging.getLogger(__name__)

DAY_S = 86_400
SPLITS = ("train", "eval")
SUMMARY_FILE = "summary.json"
QUARANTINE_FILE = "quarantine.parquet"
STATS_FILE = "_stats.json"
_NOT_IN_SUMMARY = ("batch_rows", "chunk_examples", "gzip_level", "events_per_shard")


class TooManyBadRowsError(io.ContractError):
    """The quarantined fraction of the log exceeds ``max_bad_fraction``."""


def write_quarantine(frames: List[pd.DataFrame], path: str) -> None:
    """Writes all quarantined rows, in file order, as one parquet file."""
    frames = [f for f in frames if len(f)]
    df = (pd.concat(frames, ignore_index=True).sort_values(validate.ORDER, kind="mergesort")
          if frames else validate.empty_quarantine())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    df.reset_index(drop=True).to_parquet(path, index=False)


def write_json(obj: Any, path: str) -> None:
    """Writes ``obj`` as indented, key-sorted JSON."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def finalize(output_dir: str, quarantine_dir: str, config: Any) -> Dict[str, Any]:
    """Builds ``summary.json`` after the pipeline ran; enforces ``max_bad_fraction``.

    ``config`` is the effective `beam_pipeline.ExampleGenConfig` (a dataclass).

    Raises:
      TooManyBadRowsError: naming the counts and one example row per reason.
    """
    cfg = config
    with open(os.path.join(quarantine_dir, STATS_FILE)) as f:
        stats = json.load(f)
    os.remove(os.path.join(quarantine_dir, STATS_FILE))
    bad = pd.read_parquet(os.path.join(quarantine_dir, QUARANTINE_FILE))
    by_reason = validate.reason_counts(bad)
    read, used = int(stats.get("events_read", 0)), int(stats.get("events_used", 0))
    quarantined = int(sum(by_reason.values()))
    summary = {
        "events_read": read, "events_used": used, "quarantined": quarantined,
        "quarantined_by_reason": by_reason,
        "bad_fraction": quarantined / read if read else 0.0,
        "events_by_type": {t: int(stats.get(f"events_{t}", 0)) for t in contract.EVENT_TYPES},
        "impressions": int(stats.get("impressions", 0)),
        "examples": {s: int(stats.get(f"examples_{s}", 0)) for s in SPLITS},
        "positives": {s: int(stats.get(f"positives_{s}", 0)) for s in SPLITS},
        "negatives_dropped": int(stats.get("negatives_dropped", 0)),
        "max_ts": int(stats.get("max_ts", 0)),
        "eval_start_ts": (int(stats.get("max_ts", 0)) // DAY_S - cfg.eval_days + 1) * DAY_S,
        **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IN_SUMMARY},
    }
    if read != used + quarantined:
        raise AssertionError(f"accounting broken: read {read} != used {used} + quarantined {quarantined}")
    for d in (quarantine_dir, output_dir):
        write_json(summary, os.path.join(d, SUMMARY_FILE))
    log.info("example gen: %d events read, %d used, %d quarantined %s; examples %s",
             read, used, quarantined, by_reason, summary["examples"])
    if summary["bad_fraction"] > cfg.max_bad_fraction:
        examples = {r: {k: (int(v) if isinstance(v, np.integer) else v) for k, v in
                        bad.loc[bad[validate.REASON] == r].iloc[0].items() if k != validate.ORDER}
                    for r in contract.REASONS if by_reason[r]}
        raise TooManyBadRowsError(
            f"event log has too many bad rows: {quarantined} of {read} events quarantined "
            f"(fraction {summary['bad_fraction']:.4f} > max_bad_fraction {cfg.max_bad_fraction}); "
            f"by reason {by_reason}; example row per reason: {examples}")
    return summary
