"""The true outcome of an online A/B run, known because the world is simulated.

For every request both arms' rankings are known (the assigned one, and the
other arm's from a counterfactual request that logs nothing), so each shown
slot of each arm gets its true click probability (position bias included) and
its true conversion probability.  :class:`TruthLog` collects these rows and
writes ``truth_ab.parquet``; :func:`true_lift` gives each arm's expected CTR and
conversions per exposure on the same traffic, and the challenger's lift.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

TRUTH_AB_FILE = "truth_ab.parquet"
CHAMPION, CHALLENGER = "champion", "challenger"
SCHEMA = pa.schema([("request_id", pa.string()), ("user_id", pa.string()), ("ts", pa.int64()),
                    ("assigned_arm", pa.string()), ("arm", pa.string()), ("position", pa.int64()),
                    ("item_id", pa.string()), ("p_click", pa.float64()), ("p_convert", pa.float64())])


class TruthLog:
    """Rows of ``truth_ab.parquet``, one per (request, arm, shown position)."""

    def __init__(self) -> None:
        self._cols: Dict[str, List] = {f.name: [] for f in SCHEMA}

    def add(self, request_id: str, user_id: str, ts: int, assigned_arm: str, arm: str,
            items: List[str], p_click: np.ndarray, p_convert: np.ndarray) -> None:
        """The shown posts of one arm's ranking, in slot order (position 0 first)."""
        n = len(items)
        c = self._cols
        c["request_id"] += [request_id] * n
        c["user_id"] += [user_id] * n
        c["ts"] += [int(ts)] * n
        c["assigned_arm"] += [assigned_arm] * n
        c["arm"] += [arm] * n
        c["position"] += list(range(n))
        c["item_id"] += list(items)
        c["p_click"] += [float(x) for x in p_click]
        c["p_convert"] += [float(x) for x in p_convert]

    def __len__(self) -> int:
        return len(self._cols["request_id"])

    def table(self) -> pa.Table:
        """The rows, sorted by request id, arm and position (independent of arrival order)."""
        t = pa.table(self._cols, schema=SCHEMA)
        return t.sort_by([("request_id", "ascending"), ("arm", "ascending"), ("position", "ascending")])

    def write(self, path: str) -> None:
        pq.write_table(self.table(), path)


def true_lift(table: pa.Table) -> Dict[str, Optional[Dict]]:
    """``{"champion": {"ctr", "cvr", "requests", "impressions"}, "challenger": {...},
    "lift_ctr", "lift_cvr"}`` from truth rows: per arm the mean true click (conversion)
    probability over all requests' shown slots; lifts relative to the champion
    (None when an arm has no rows or the champion's rate is 0)."""
    arm = np.asarray(table.column("arm").to_pylist(), dtype=object)
    p_click = table.column("p_click").to_numpy()
    p_conv = table.column("p_convert").to_numpy()
    rid = np.asarray(table.column("request_id").to_pylist(), dtype=object)
    out: Dict[str, Optional[Dict]] = {}
    for name in (CHAMPION, CHALLENGER):
        m = arm == name
        out[name] = (dict(ctr=float(p_click[m].mean()), cvr=float(p_conv[m].mean()),
                          requests=int(len(set(rid[m]))), impressions=int(m.sum())) if m.any() else None)

    def lift(key: str) -> Optional[float]:
        a, b = out[CHAMPION], out[CHALLENGER]
        if a is None or b is None or a[key] <= 0 or not math.isfinite(b[key] / a[key]):
            return None
        return b[key] / a[key] - 1.0

    out["lift_ctr"], out["lift_cvr"] = lift("ctr"), lift("cvr")
    return out
