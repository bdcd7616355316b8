"""Sharding helpers of the Beam graph: stable hash shards of pandas frames and
the read units (files / parquet row groups) of the events table."""
from __future__ import annotations

import logging
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from feedrank.events import io

log = logging.getLogger(__name__)

ReadUnit = Tuple[str, str, int, Optional[int]]   # path, format, file index, row group


def shard_of(values: np.ndarray, num_shards: int) -> np.ndarray:
    """Stable (process-independent) shard of each string value."""
    h = pd.util.hash_array(np.asarray(values, dtype=object))
    return (h % np.uint64(num_shards)).astype(np.int64)


def split(df: pd.DataFrame, shards: np.ndarray) -> Iterable[Tuple[int, pd.DataFrame]]:
    """``(shard, rows)`` pairs; one stable sort, not a scan per shard."""
    if df.empty:
        return
    order = np.argsort(shards, kind="stable")
    ordered = shards[order]
    bounds = np.flatnonzero(np.diff(ordered)) + 1
    for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(order)]])):
        yield int(ordered[a]), df.iloc[order[a:b]].reset_index(drop=True)


def by_shard(df: pd.DataFrame, column: str, num_shards: int) -> Iterable[Tuple[int, pd.DataFrame]]:
    """Splits a frame into ``(shard, sub-frame)`` pairs on ``hash(column)``."""
    if df.empty:
        return
    yield from split(df, shard_of(df[column].to_numpy(dtype=object), num_shards))


def concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """One frame of the non-empty ``frames`` (an empty frame when none)."""
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_units(files: Sequence[io.TableFile]) -> List[ReadUnit]:
    """One unit per parquet row group or CSV file."""
    units: List[ReadUnit] = []
    for tf in files:
        if tf.fmt == io.PARQUET:
            units += [(tf.path, tf.fmt, tf.index, g) for g in range(io.parquet_row_groups(tf))]
        else:
            units.append((tf.path, tf.fmt, tf.index, None))
    return units


def resolve_shards(cfg: Any, event_files: Sequence[io.TableFile]) -> int:
    """``cfg.num_shards``, or for 0 one shard per ``events_per_shard`` events
    (estimated from parquet metadata / CSV size), so shards stay small as the
    log grows (sorting and hashing stay cache-friendly: linear scaling)."""
    if cfg.num_shards > 0:
        return int(cfg.num_shards)
    rows = sum(io.estimate_rows(tf) for tf in event_files)
    n = max(1, min(4096, -(-rows // max(1, cfg.events_per_shard))))
    log.info("auto shards: ~%d events -> %d shards", rows, n)
    return n
