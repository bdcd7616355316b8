"""The log's time bounds and the train / valid / eval split (pure, vectorised).

Bounds come from impression times only, robust to a few bogus timestamps:

  * every batch contributes an hourly histogram of its impression times
    (count, min, max per hour; times before ``min_ts`` left out), merged
    globally (`histogram`, `merge`);
  * the plausible impressions are the contiguous bulk around the 1%..99%
    quantiles: from the hour holding the 99% quantile, the bulk extends to each
    later hour whose first impression is at most ``max_future_skew_s`` after
    the previous hour's last one (and symmetrically backwards from the 1%
    quantile);
  * ``log_end_ts`` is the newest plausible impression; events later than
    ``log_end_ts + max_future_skew_s`` are quarantined as ``ts_in_future``;
  * ``train_start_ts`` is midnight (UTC) of the first plausible impression's
    day plus ``warmup_days`` days; ``eval_start_ts`` is midnight of the
    ``eval_days``-th last day of ``log_end_ts``; with ``valid_split:
    last_days``, ``valid_start_ts = eval_start_ts - valid_days`` days.

`assign` puts each impression in one split: ``warmup`` (before the train
start: history only), ``train``, ``valid``, ``eval`` or ``censored`` (eval
impressions less than ``label_window_s`` before ``log_end_ts``, whose click may
come after the log ends).  Negative sampling thins train negatives only.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Dict, Iterable, Optional, Tuple

import numpy as np
import pandas as pd

DAY_S = 86_400
BUCKET_S = 3_600
QUANTILE = 0.99
WARMUP, TRAIN, VALID, EVAL, CENSORED = range(5)
SPLIT_NAMES = {TRAIN: "train", VALID: "valid", EVAL: "eval"}

Histogram = Dict[int, Tuple[int, int, int]]   # hour -> (count, min ts, max ts)


def histogram(ts: np.ndarray, min_ts: int) -> Histogram:
    """Hourly ``(count, min, max)`` of impression times at or after ``min_ts`` (and >= 0)."""
    ts = np.asarray(ts, dtype=np.int64)
    ts = ts[ts >= max(int(min_ts), 0)]
    if not len(ts):
        return {}
    g = pd.Series(ts).groupby(ts // BUCKET_S).agg(["count", "min", "max"])
    return {int(h): (int(c), int(a), int(b)) for h, c, a, b in
            zip(g.index, g["count"], g["min"], g["max"])}


def merge(hists: Iterable[Histogram]) -> Histogram:
    """Sums histograms (a Beam CombineGlobally function)."""
    out: Histogram = {}
    for h in hists:
        for k, (c, a, b) in h.items():
            if k in out:
                c0, a0, b0 = out[k]
                out[k] = (c0 + c, min(a0, a), max(b0, b))
            else:
                out[k] = (c, a, b)
    return out


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Split bounds, int unix seconds (``valid_start_ts`` only for last_days)."""

    first_impression_ts: int
    log_end_ts: int
    future_cut_ts: int          # events later than this are quarantined
    train_start_ts: int
    eval_start_ts: int
    valid_start_ts: Optional[int]

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _bulk(hist: Histogram, skew: int) -> Tuple[int, int]:
    """``(first, last)`` plausible impression times of a non-empty histogram."""
    hours = np.array(sorted(hist), dtype=np.int64)
    count = np.array([hist[h][0] for h in hours], dtype=np.int64)
    lo = np.array([hist[h][1] for h in hours], dtype=np.int64)
    hi = np.array([hist[h][2] for h in hours], dtype=np.int64)
    cum = np.cumsum(count)
    top = int(np.searchsorted(cum, QUANTILE * cum[-1], "left"))
    bottom = int(np.searchsorted(cum, (1.0 - QUANTILE) * cum[-1], "left"))
    top, bottom = min(top, len(hours) - 1), min(bottom, len(hours) - 1)
    gap_ok = (lo[1:] - hi[:-1]) <= skew           # gap_ok[i]: hour i+1 continues hour i
    breaks_after = np.flatnonzero(~gap_ok[top:])
    last = top + (int(breaks_after[0]) if len(breaks_after) else len(hours) - 1 - top)
    breaks_before = np.flatnonzero(~gap_ok[:bottom])
    first = int(breaks_before[-1]) + 1 if len(breaks_before) else 0
    return int(lo[min(first, bottom)]), int(hi[last])


def bounds_of(hist: Histogram, cfg: Any) -> Dict[str, Any]:
    """The bounds (as a dict) of a merged histogram; {} when there is no impression."""
    if not hist:
        return {}
    skew = int(cfg.max_future_skew_s)
    first, last = _bulk(hist, skew)
    eval_start = (last // DAY_S - int(cfg.eval_days) + 1) * DAY_S
    valid_start = eval_start - int(cfg.valid_days) * DAY_S if cfg.valid_split == "last_days" else None
    return Bounds(first_impression_ts=first, log_end_ts=last, future_cut_ts=last + skew,
                  train_start_ts=(first // DAY_S + int(cfg.warmup_days)) * DAY_S,
                  eval_start_ts=eval_start, valid_start_ts=valid_start).to_dict()


def user_uniform(user_ids: np.ndarray) -> np.ndarray:
    """Stable U[0,1) per user id (the same for every run, seed and machine)."""
    salt = hashlib.blake2b(b"feedrank-valid-users", digest_size=16).hexdigest()[:16]
    h = pd.util.hash_array(np.asarray(user_ids, dtype=object), hash_key=salt)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def assign(ts: np.ndarray, user_ids: np.ndarray, bounds: Dict[str, Any], cfg: Any) -> np.ndarray:
    """Split code per impression (WARMUP, TRAIN, VALID, EVAL or CENSORED)."""
    ts = np.asarray(ts, dtype=np.int64)
    split = np.full(len(ts), WARMUP, dtype=np.int8)
    if not bounds or not len(ts):
        return split
    eval_start, end = int(bounds["eval_start_ts"]), int(bounds["log_end_ts"])
    in_train = (ts >= int(bounds["train_start_ts"])) & (ts < eval_start)
    if "valid_start_ts" in bounds:
        is_valid = ts >= int(bounds["valid_start_ts"])
    else:
        is_valid = user_uniform(user_ids) < float(cfg.valid_user_share)
    split[in_train] = np.where(is_valid[in_train], VALID, TRAIN)
    late = ts >= eval_start
    split[late] = np.where(ts[late] > end - int(cfg.label_window_s), CENSORED, EVAL)
    return split
