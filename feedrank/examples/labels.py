"""Label attribution: which impression a click (or conversion) labels.

Each click labels at most one impression, of the same user and item, shown at
or before the click and at most ``label_window_s`` seconds before it:

  * **by request**: when the click carries a ``request_id`` and some impression
    of the same (user, item) carries the same ``request_id``, the click labels
    the latest such impression (of that request) at or before it;
  * **otherwise by pair**: the latest impression of the same (user, item) at or
    before the click, so a click's window ends at the next impression of the
    pair.

Among impressions with equal ``ts`` the last in ``(ts, event_id)`` order is the
latest.  Conversions follow the same rule.  Vectorised: one ``searchsorted`` of
the clicks into the impressions sorted by ``(group, ts)``.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import pandas as pd

_LIMIT = 1 << 62


def _latest_at_or_before(imp_group: np.ndarray, imp_ts: np.ndarray, act_group: np.ndarray,
                         act_ts: np.ndarray, tmin: int, span: int) -> Tuple[np.ndarray, np.ndarray]:
    """For each act, ``(found, imp_index)``: the latest impression of the same
    group with ``ts <= act ts`` (impressions given in ``(user, ts, event_id)`` order)."""
    if len(imp_group) == 0 or len(act_group) == 0:
        return np.zeros(len(act_group), dtype=bool), np.zeros(len(act_group), dtype=np.int64)
    if (int(max(imp_group.max(), act_group.max())) + 2) * span >= _LIMIT:
        raise OverflowError("too many label groups x time span for composite keys; use more shards")
    order = np.argsort(imp_group, kind="stable")     # stable: (group, ts, event_id) order
    keys = imp_group[order] * span + (imp_ts[order] - tmin)
    j = np.searchsorted(keys, act_group * span + (act_ts - tmin), "right") - 1
    jc = np.maximum(j, 0)
    found = (j >= 0) & (imp_group[order][jc] == act_group)
    return found, order[jc]


def attribute(pair: np.ndarray, request: np.ndarray, ts: np.ndarray, imp: np.ndarray,
              act: np.ndarray, window_s: int) -> np.ndarray:
    """0/1 label per impression (in the order of ``ts[imp]``).

    Args:
      pair: per event, a code of its (user, item) pair (>= 0).
      request: per event, its ``request_id`` ("" when absent).
      ts: per event, int64 unix seconds; events in ``(user, ts, event_id)`` order.
      imp: mask of the impressions.
      act: mask of the acts (clicks or conversions) to attribute.
      window_s: the label window.
    """
    n_imp = int(imp.sum())
    label = np.zeros(n_imp, dtype=np.int64)
    if n_imp == 0 or not act.any():
        return label
    imp_idx = np.flatnonzero(imp)
    act_idx = np.flatnonzero(act)
    tmin = int(ts.min())
    span = int(ts.max()) - tmin + 2
    has_req = request != ""
    # by request: groups of (pair, request_id) over the events that carry one
    req_code = np.full(len(ts), -1, dtype=np.int64)
    if has_req.any():
        sub = np.flatnonzero(has_req)
        rcode = pd.factorize(request[sub])[0].astype(np.int64)
        if (int(pair.max()) + 2) * (int(rcode.max()) + 2) >= _LIMIT:
            raise OverflowError("too many (pair, request) groups for composite keys; use more shards")
        req_code[sub] = pd.factorize(pair[sub] * (int(rcode.max()) + 1) + rcode)[0]
    imp_req = imp_idx[has_req[imp_idx]]
    by_req = has_req[act_idx] & np.isin(req_code[act_idx], req_code[imp_req])
    target = np.full(len(act_idx), -1, dtype=np.int64)
    for sel, imps, group in ((by_req, imp_req, req_code), (~by_req, imp_idx, pair)):
        acts = act_idx[sel]
        if len(acts) == 0 or len(imps) == 0:
            continue
        found, where = _latest_at_or_before(group[imps], ts[imps], group[acts], ts[acts], tmin, span)
        hit = imps[where]
        ok = found & (ts[acts] - ts[hit] <= int(window_s))
        target[np.flatnonzero(sel)[ok]] = hit[ok]
    hits = target[target >= 0]
    label[np.searchsorted(imp_idx, hits)] = 1
    return label
