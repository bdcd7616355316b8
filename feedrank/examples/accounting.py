"""Accounting of one example-generation run: quarantine rows, ``summary.json``
and the gates that fail a run.

The Beam graph writes the bad rows (``quarantine.parquet``) and the summed
stage counters (``_stats.json``); `finalize` turns them into the summary
(``events_read = events_used + quarantined``, counts per reason, examples and
positives per split, the split bounds, censored eval impressions, the sampling
rate) and fails the run, with a one-line message, when too many rows were bad,
when the log has no impression, when its days cannot hold the splits, or when a
split has no positive label.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import logging
import os
from typing import Any, Dict, Iterable, List

import numpy as np
import pandas as pd

from feedrank.events import contract, io, validate

log = logging.getLogger(__name__)

DAY_S = 86_400
SPLITS = ("train", "valid", "eval")
BOUNDS = ("train_start_ts", "valid_start_ts", "eval_start_ts", "log_end_ts", "first_impression_ts")
SUMMARY_FILE = "summary.json"
QUARANTINE_FILE = "quarantine.parquet"
STATS_FILE = "_stats.json"
_NOT_IN_SUMMARY = ("batch_rows", "chunk_examples", "gzip_level", "events_per_shard", "shuffle", "spill_dir")


class TooManyBadRowsError(io.ContractError):
    """The quarantined fraction of the log exceeds ``max_bad_fraction``."""


class NoImpressionsError(io.ContractError):
    """The events table holds no (plausible, valid) impression: nothing to learn from."""


class NoPositiveLabelsError(io.ContractError):
    """A split (train, valid or eval) has no positive label: no model can be fit or judged."""


class LogTooShortError(io.ContractError):
    """The log's days cannot hold the warm-up, train, valid and eval days the settings ask for."""


def _day(ts: int) -> str:
    return datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc).strftime("%Y-%m-%d")


def _check_span(summary: Dict[str, Any], cfg: Any) -> None:
    """Fails when the train split (or the valid days) would end before it starts."""
    train_start, eval_start = summary["train_start_ts"], summary["eval_start_ts"]
    train_end = summary.get("valid_start_ts", eval_start)
    if train_end > train_start and eval_start >= train_end:
        return
    first, last = summary["first_impression_ts"], summary["log_end_ts"]
    days = (last // DAY_S) - (first // DAY_S) + 1
    needs = [("warmup_days", int(cfg.warmup_days)), ("at least 1 train day", 1)]
    if "valid_start_ts" in summary:
        needs.append(("valid_days", int(cfg.valid_days)))
    needs.append(("eval_days", int(cfg.eval_days)))
    named = [name if name.endswith("day") else f"{name} {n}" for name, n in needs]
    raise LogTooShortError(
        f"the log's impressions cover {days} day(s) ({_day(first)} to {_day(last)} UTC), but the splits need "
        f"{sum(n for _, n in needs)}: {' + '.join(named)}; use a longer log, or lower examples.eval_days / "
        f"valid_days / warmup_days (or examples.valid_split: user_hash, which takes no days)")


def write_quarantine(frames: List[pd.DataFrame], path: str) -> None:
    """Writes all quarantined rows, in file order, as one parquet file."""
    frames = [f for f in frames if len(f)]
    df = (pd.concat(frames, ignore_index=True).sort_values(validate.ORDER, kind="mergesort")
          if frames else validate.empty_quarantine())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    df.reset_index(drop=True).to_parquet(path, index=False)


def sum_stats(dicts: Iterable[Dict[str, int]]) -> Dict[str, int]:
    """The key-wise sum of the stages' statistics."""
    total: collections.Counter = collections.Counter()
    for d in dicts:
        total.update(d)
    return dict(total)


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
    bounds = stats.get("bounds") or {}
    summary = {
        "events_read": read, "events_used": used, "quarantined": quarantined,
        "quarantined_by_reason": by_reason,
        "bad_fraction": quarantined / read if read else 0.0,
        "events_by_type": {t: int(stats.get(f"events_{t}", 0)) for t in contract.EVENT_TYPES},
        "impressions": int(stats.get("impressions", 0)),
        "impressions_warmup": int(stats.get("impressions_warmup", 0)),
        "censored_eval": int(stats.get("censored_eval", 0)),
        "examples": {s: int(stats.get(f"examples_{s}", 0)) for s in SPLITS},
        "positives": {s: int(stats.get(f"positives_{s}", 0)) for s in SPLITS},
        "negatives_dropped": int(stats.get("negatives_dropped", 0)),
        "max_ts": int(stats.get("max_ts", 0)),
        **{k: int(bounds[k]) for k in BOUNDS if k in bounds},
        **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IN_SUMMARY},
    }
    if read != used + quarantined:
        raise AssertionError(f"accounting broken: read {read} != used {used} + quarantined {quarantined}")
    for d in (quarantine_dir, output_dir):
        write_json(summary, os.path.join(d, SUMMARY_FILE))
    log.info("example gen: %d events read, %d used, %d quarantined %s; examples %s (positives %s); "
             "%d eval impressions censored (within label_window_s %d s of the log end %s), "
             "%d warm-up impressions; bounds %s", read, used, quarantined, by_reason, summary["examples"],
             summary["positives"], summary["censored_eval"], cfg.label_window_s, bounds.get("log_end_ts"),
             summary["impressions_warmup"], {k: summary[k] for k in BOUNDS if k in summary})
    if summary["bad_fraction"] > cfg.max_bad_fraction:
        examples = {r: {k: (int(v) if isinstance(v, np.integer) else v) for k, v in
                        bad.loc[bad[validate.REASON] == r].iloc[0].items() if k != validate.ORDER}
                    for r in contract.REASONS if by_reason[r]}
        raise TooManyBadRowsError(
            f"event log has too many bad rows: {quarantined} of {read} events quarantined "
            f"(fraction {summary['bad_fraction']:.4f} > max_bad_fraction {cfg.max_bad_fraction}); "
            f"by reason {by_reason}; example row per reason: {examples}")
    _check_usable(summary, cfg)
    return summary


def _check_usable(summary: Dict[str, Any], cfg: Any) -> None:
    """Fails fast when the examples cannot train or judge a model."""
    read, types = summary["events_read"], summary["events_by_type"]
    if not read:
        raise NoImpressionsError("event log has no events: the events table is empty")
    if "log_end_ts" not in summary:
        raise NoImpressionsError(
            f"event log has no impressions: {read} events read, {summary['events_used']} valid "
            f"({', '.join(f'{t} {n}' for t, n in types.items() if n) or 'none'}), "
            f"{summary['quarantined']} quarantined; examples are built from impression events")
    _check_span(summary, cfg)
    lacking = [s for s in SPLITS if not summary["positives"][s]]
    if lacking:
        bounds = {"train": ("train_start_ts", "valid_start_ts" if "valid_start_ts" in summary else "eval_start_ts"),
                  "valid": ("valid_start_ts" if "valid_start_ts" in summary else "train_start_ts",
                            "eval_start_ts"),
                  "eval": ("eval_start_ts", "log_end_ts")}
        detail = "; ".join(f"{s}: {summary['examples'][s]} examples in [{summary[bounds[s][0]]}, "
                           f"{summary[bounds[s][1]]}{']' if s == 'eval' else ')'}" for s in lacking)
        raise NoPositiveLabelsError(
            f"no positive label in the {', '.join(lacking)} split{'s' if len(lacking) > 1 else ''} "
            f"({detail}; {types[contract.CLICK]} clicks in the log): a click labels an impression of the "
            f"same user_id and item_id at most label_window_s={cfg.label_window_s} s before it; check "
            f"the log's clicks, or the split settings (eval_days, valid_split, valid_days, warmup_days)")
