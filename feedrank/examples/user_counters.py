"""User counters, user x category counters and session / recency features
(pure, vectorised; the online twin is `serving.features.user_state`).

Per impression at time ``T`` of user ``u`` with candidate category ``c``,
over ``u``'s valid, de-duplicated events with ``ts < T`` (events of the same
second are not history; with a feature delay ``S`` the events with
``ts < T - S``, `history_probe`, while ages are still measured to ``T``):

* ``user_hist_impressions`` / ``user_hist_clicks``: ``u``'s impression / click
  events (every click event, as the item counters of `history` count them);
  ``user_hist_ctr`` = `features.smoothed_ctr` of the two;
* ``user_cat_impressions`` / ``user_cat_clicks`` / ``user_cat_ctr``: the same
  restricted to events on posts of category ``c``;
* ``session_cat_share``: ``u``'s events (every type) before ``T`` plus the
  impression form a chain; the session is the run of events after the last
  gap of more than `features.SESSION_GAP_S` seconds between consecutive
  ones (a gap of exactly that much does not split).  The share is the
  fraction of the session's click and view events that are in ``c`` (0.0
  when there are none, also when ``T`` itself is more than the gap after
  the previous event);
* ``cat_recency_h``: hours from ``u``'s most recent click, view or conversion
  in ``c`` to ``T``, capped at `features.RECENCY_CAP_H` (the value when there
  is none).

``seen_before`` adds, per impression of post ``i``, the user's own earlier
impressions of ``i`` (`features.SEEN_FEATURES`): ``user_item_impressions``,
their number, and ``item_seen_recency_h``, hours from the latest of them to
``T``, capped at `features.RECENCY_CAP_H` (the value when there is none);
the same cutoff as above.

An event's category is its post's category at the event's own time (the
attribute snapshot in force then: what a streaming writer sees when the
event arrives); the candidate's category is the one at ``T``, as for the
``category_id`` feature.
"""
from __future__ import annotations

import logging
from typing import Dict

import numpy as np

from feedrank import features as F
from feedrank.events import contract
from feedrank.examples.snapshots import ItemTable

log = logging.getLogger(__name__)

RECENCY_EVENTS = (contract.CLICK, contract.VIEW, contract.CONVERSION)
SESSION_EVENTS = (contract.CLICK, contract.VIEW)


def event_categories(item_code: np.ndarray, ts: np.ndarray, items: ItemTable) -> np.ndarray:
    """Category code of each event's post at the event's time (-1: no post)."""
    rows = items.snapshots.rows_at(item_code, items.snapshots.epoch(ts))
    return np.where(rows >= 0, items.row_category_code[np.maximum(rows, 0)], -1).astype(np.int64)


def check_delay(delay_s: int) -> int:
    """``delay_s`` as a non-negative int (a clear ValueError otherwise)."""
    if isinstance(delay_s, bool) or not isinstance(delay_s, (int, np.integer)) or delay_s < 0:
        raise ValueError(f"feature_delay_s must be an integer number of seconds >= 0, got {delay_s!r}")
    return int(delay_s)


def history_probe(group_start: np.ndarray, rel_ts: np.ndarray, delay_s: int = 0) -> np.ndarray:
    """The one history cutoff of the example generator: the composite key below
    which a group's events are behaviour an impression may see.

    ``group_start + rel_ts`` is the impression's own key (``rel_ts``: its time
    relative to the frame's first event), so ``searchsorted(keys, probe, "left")``
    keeps the events strictly before ``T - delay_s``; a cutoff before the frame's
    first event keeps none (clipped to the group's start, never into the previous
    group).  ``delay_s`` > 0 models a feature updater that lags that many seconds.
    """
    delay_s = check_delay(delay_s)
    rel = np.asarray(rel_ts, dtype=np.int64)
    return group_start + (np.maximum(rel - delay_s, 0) if delay_s else rel)


def recency_h(now: np.ndarray, last: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Hours from ``last`` to ``now`` (seconds), capped at `features.RECENCY_CAP_H`, which is also
    the value where ``found`` is False (the online twin is `serving.features.user_state.recency_h`)."""
    hours = (now - last).astype(np.float64) / 3600.0
    return np.where(found, np.minimum(hours, F.RECENCY_CAP_H), F.RECENCY_CAP_H)


def _count_before(keys: np.ndarray, probe: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Entries of sorted ``keys`` in ``[start, probe)``."""
    return (np.searchsorted(keys, probe, "left") - np.searchsorted(keys, start, "left")).astype(np.float64)


def compute(ucode: np.ndarray, ts: np.ndarray, kind: np.ndarray, category: np.ndarray,
            imp: np.ndarray, cand_category: np.ndarray, delay_s: int = 0) -> Dict[str, np.ndarray]:
    """Every `features.USER_COUNTER_FEATURES` value per impression.

    Args:
      ucode: user code per event, events sorted by ``(user, ts, event_id)``.
      ts: int64 event time.
      kind: event type per event.
      category: category code per event (`event_categories`; -1: none).
      imp: which events are the impressions (the rows of the output).
      cand_category: category code of each impression's candidate (-1: unknown).
      delay_s: feature delay: only events with ``ts < T - delay_s`` count (`history_probe`).
    """
    n = len(ts)
    out: Dict[str, np.ndarray] = {}
    if not imp.any():
        return {d.name: np.array([], np.float64) for d in F.USER_COUNTER_FEATURES}
    tmin = int(ts.min())
    span = int(ts.max()) - tmin + 2
    ncat = int(max(category.max(initial=-1), cand_category.max(initial=-1))) + 2
    if (int(ucode.max()) + 2) * ncat * span >= (1 << 62):
        raise OverflowError("too many users x categories x time span for composite keys; use more shards")
    rel = ts - tmin
    key = ucode * span + rel
    imp_start = ucode[imp] * span
    imp_key = history_probe(imp_start, rel[imp], delay_s)
    is_imp, is_clk = kind == contract.IMPRESSION, kind == contract.CLICK
    u_imp = _count_before(key[is_imp], imp_key, imp_start)
    u_clk = _count_before(key[is_clk], imp_key, imp_start)
    out[F.USER_HIST_IMPRESSIONS.name], out[F.USER_HIST_CLICKS.name] = u_imp, u_clk
    out[F.USER_HIST_CTR.name] = F.smoothed_ctr(u_clk, u_imp)

    # --- user x category: keys (user, category + 1, ts) ---------------------
    group = (ucode * ncat + category + 1) * span
    cat_key = group + rel
    cand_start = (ucode[imp] * ncat + cand_category + 1) * span
    cand_probe = history_probe(cand_start, rel[imp], delay_s)
    known = cand_category >= 0
    c_imp = np.where(known, _count_before(np.sort(cat_key[is_imp]), cand_probe, cand_start), 0.0)
    c_clk = np.where(known, _count_before(np.sort(cat_key[is_clk]), cand_probe, cand_start), 0.0)
    out[F.USER_CAT_IMPRESSIONS.name], out[F.USER_CAT_CLICKS.name] = c_imp, c_clk
    out[F.USER_CAT_CTR.name] = F.smoothed_ctr(c_clk, c_imp)

    # --- recency: the latest click/view/conversion in the category before T --
    rec_keys = np.sort(cat_key[np.isin(kind, RECENCY_EVENTS) & (category >= 0)])
    pos = np.searchsorted(rec_keys, cand_probe, "left") - 1
    found = known & (pos >= 0) & (pos >= np.searchsorted(rec_keys, cand_start, "left"))
    last = (np.where(found, rec_keys[np.maximum(pos, 0)] - cand_start, 0) if len(rec_keys)
            else np.zeros(len(cand_start), dtype=np.int64))   # no click/view/conversion has a category
    out[F.CATEGORY_RECENCY_H.name] = recency_h(rel[imp], last, found)

    # --- session share --------------------------------------------------------
    idx = np.arange(n, dtype=np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = (ucode[1:] != ucode[:-1]) | (ts[1:] - ts[:-1] > F.SESSION_GAP_S)
    sess_start = np.maximum.accumulate(np.where(new, idx, 0))
    hi = np.searchsorted(key, imp_key, "left")                 # first event at or after the cutoff
    lo_user = np.searchsorted(key, imp_start, "left")
    prev = np.maximum(hi - 1, 0)
    live = (hi > lo_user) & (ts[imp] - ts[prev] <= F.SESSION_GAP_S)
    lo = np.where(live, sess_start[prev], hi)
    sess = np.isin(kind, SESSION_EVENTS)
    cum = np.concatenate([[0], np.cumsum(sess, dtype=np.int64)])
    total = cum[hi] - cum[lo]
    s_keys = np.sort((category[sess] + 1) * (n + 1) + idx[sess])
    base = (cand_category + 1) * (n + 1)
    in_cat = np.where(known, np.searchsorted(s_keys, base + hi, "left")
                      - np.searchsorted(s_keys, base + lo, "left"), 0)
    out[F.SESSION_CATEGORY_SHARE.name] = np.where(total > 0, in_cat / np.maximum(total, 1), 0.0)
    return out


def seen_before(ucode: np.ndarray, item_ids: np.ndarray, ts: np.ndarray, imp: np.ndarray,
                delay_s: int = 0) -> Dict[str, np.ndarray]:
    """Every `features.SEEN_FEATURES` value per impression (the rows ``imp`` selects).

    Args:
      ucode: user code per event, events sorted by ``(user, ts, event_id)``.
      item_ids: post id per event.
      ts: int64 event time.
      imp: which events are the impressions.
      delay_s: feature delay: only impressions with ``ts < T - delay_s`` count (`history_probe`).
    """
    if not imp.any():
        return {d.name: np.array([], np.float64) for d in F.SEEN_FEATURES}
    t = np.asarray(ts, dtype=np.int64)[imp]
    rel = t - int(t.min())
    span = int(rel.max()) + 2
    _, item = np.unique(np.asarray(item_ids, dtype=object)[imp].astype(str), return_inverse=True)
    _, pair = np.unique(np.asarray(ucode, dtype=np.int64)[imp] * (int(item.max()) + 1) + item,
                        return_inverse=True)
    if (int(pair.max()) + 2) * span >= (1 << 62):
        raise OverflowError("too many user x post pairs x time span for composite keys; use more shards")
    start = pair.astype(np.int64) * span
    keys = np.sort(start + rel)
    probe = history_probe(start, rel, delay_s)
    hi = np.searchsorted(keys, probe, "left")
    count = hi - np.searchsorted(keys, start, "left")
    last = keys[np.maximum(hi - 1, 0)] - start
    return {F.USER_ITEM_IMPRESSIONS.name: count.astype(np.float64),
            F.ITEM_SEEN_RECENCY_H.name: recency_h(rel, last, count > 0)}
