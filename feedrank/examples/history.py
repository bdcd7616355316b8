"""Item history counts with strict-before semantics (pure, vectorised).

For each impression, count the impressions and clicks of the same item by
*all* users with ``ts`` strictly before the impression's ``ts`` (events at the
same second are not history).  The counts depend only on ``(item_id, ts)``,
which is therefore the join key back to the impressions.  Works on any frame
that holds all impressions and clicks of the items it mentions (an item shard).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from feedrank.events import contract

HIST_IMPRESSIONS = "hist_impressions"
HIST_CLICKS = "hist_clicks"
JOIN_KEY = ["item_id", "ts"]
HIST_COLUMNS = JOIN_KEY + [HIST_IMPRESSIONS, HIST_CLICKS]


def empty_history(extra: Sequence[str] = ()) -> pd.DataFrame:
    """An empty history frame."""
    dtypes = {"item_id": object, "ts": np.int64, HIST_IMPRESSIONS: np.int64, HIST_CLICKS: np.int64}
    return pd.DataFrame({c: pd.Series([], dtype=dtypes.get(c, np.int64))
                         for c in list(extra) + HIST_COLUMNS})


def item_history(events: pd.DataFrame, passthrough: Sequence[str] = ()) -> pd.DataFrame:
    """Per-impression ``hist_impressions`` / ``hist_clicks``.

    Args:
      events: frame with ``item_id``, ``event`` and int64 ``ts`` holding every
        impression and click of its items.
      passthrough: extra columns copied from the impression rows.

    Returns:
      One row per impression: ``passthrough`` columns, ``item_id``, ``ts``,
      ``hist_impressions``, ``hist_clicks`` (int64).
    """
    kind = events["event"].to_numpy(dtype=object)
    imp = kind == contract.IMPRESSION
    clk = kind == contract.CLICK
    if not imp.any():
        return empty_history(passthrough)
    code = pd.factorize(events["item_id"].to_numpy(dtype=object))[0].astype(np.int64)
    ts = events["ts"].to_numpy(np.int64)
    tmin = int(ts.min())
    span = int(ts.max()) - tmin + 2
    if (int(code.max()) + 2) * span >= (1 << 62):
        raise OverflowError("too many items x time span for composite keys; use more shards")
    key = code * span + (ts - tmin)
    probe, start = key[imp], code[imp] * span
    counts = []
    for mask in (imp, clk):
        keys = np.sort(key[mask])
        counts.append(np.searchsorted(keys, probe, "left") - np.searchsorted(keys, start, "left"))
    out = {c: events[c].to_numpy()[imp] for c in passthrough}
    out.update({"item_id": events["item_id"].to_numpy(dtype=object)[imp], "ts": ts[imp],
                HIST_IMPRESSIONS: counts[0].astype(np.int64), HIST_CLICKS: counts[1].astype(np.int64)})
    return pd.DataFrame(out)


def lookup(hist: pd.DataFrame, item_ids: np.ndarray, ts: np.ndarray) -> pd.DataFrame:
    """History rows for ``(item_ids, ts)`` pairs (missing pairs -> 0)."""
    h = hist.drop_duplicates(JOIN_KEY).set_index(JOIN_KEY)[[HIST_IMPRESSIONS, HIST_CLICKS]]
    found = h.reindex(pd.MultiIndex.from_arrays([item_ids, ts], names=JOIN_KEY))
    return found.fillna(0)
