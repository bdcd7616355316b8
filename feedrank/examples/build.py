"""Pure example building for a set of whole users (one user or a user shard).

Given the valid, de-duplicated events of some users (all of each user's
events), the per-impression item-history counts and the item/user tables,
`build_examples` returns one serialized `tf.train.Example` per impression with
exactly the raw features of `feedrank.features.raw_feature_spec()`.

Semantics (all vectorised with composite ``(group, ts)`` keys and
``searchsorted``):
  * history = the user's events with ``ts`` strictly before the impression;
    within equal ``ts`` events are ordered by ``event_id``; most recent last.
    Channels follow `features.SEQ_FEATURES`: ``click``/``view``/``conversion``
    events give item/category/region sequences (per ``shares_with``), searches
    give whitespace-split query tokens;
  * ``label``/``conversion`` = the user has a click/conversion on the same item
    with ``imp_ts <= ts <= imp_ts + label_window_s``;
  * crosses follow `crosses`, which serving mirrors in TF;
  * the time split and train-only negative sampling are `split_and_keep`.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
import pandas as pd

from feedrank import features as F
from feedrank.events import contract
from feedrank.examples import assemble as A
from feedrank.examples import history
from feedrank.examples.history import HIST_CLICKS, HIST_IMPRESSIONS
from feedrank.examples.settings import DEFAULTS

DAY_S = 86_400
EVENT_COLUMNS = ["event_id", "user_id", "item_id", "event", "ts", "query"]
# Behaviour channel of `features.SeqFeature` -> event type (search is special).
CHANNEL_EVENTS = {"click": contract.CLICK, "view": contract.VIEW, "conversion": contract.CONVERSION}


feature_names = A.feature_names


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Knobs of example building and splitting (defaults: `ExampleSettings`)."""

    label_window_s: int = DEFAULTS.label_window_s
    eval_days: int = DEFAULTS.eval_days
    negative_sampling_rate: float = DEFAULTS.negative_sampling_rate
    seed: int = DEFAULTS.seed


def crosses(user_region_id: str, region_id: str, click_category_ids: Sequence[str],
            category_id: str) -> Tuple[float, float]:
    """``(region_match, interest_cat_share)`` of one candidate.

    ``region_match`` is 1.0 when the user's region is known (non-empty) and
    equals the candidate's region; ``interest_cat_share`` is the share of the
    click-history categories equal to the candidate's category (0.0 if none).
    """
    region_match = 1.0 if user_region_id and user_region_id == region_id else 0.0
    n = len(click_category_ids)
    share = (sum(1 for c in click_category_ids if c == category_id) / n) if n else 0.0
    return region_match, float(share)


class ItemTable:
    """Item attributes indexed by item id (duplicates: first row wins)."""

    def __init__(self, items: pd.DataFrame):
        items = items.drop_duplicates("item_id", keep="first")
        self.index = pd.Index(items["item_id"].to_numpy(dtype=object))
        self.category = np.array([s.encode() for s in items["category_id"]], dtype=object)
        self.region = np.array([s.encode() for s in items["region_id"]], dtype=object)
        self.region_str = items["region_id"].to_numpy(dtype=object)
        self.category_code = pd.factorize(items["category_id"].to_numpy(dtype=object))[0]
        price = items["price"].to_numpy(dtype=float)
        self.price = np.where(np.isfinite(price), price, F.PRICE.default).astype(np.float32)

    def lookup(self, item_ids: np.ndarray) -> np.ndarray:
        """Row positions of ``item_ids`` (-1 for unknown)."""
        return self.index.get_indexer(item_ids)


def sampling_uniform(impression_ids: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic U[0,1) per impression id, from a hash of (seed, id)."""
    salt = hashlib.blake2b(str(seed).encode(), digest_size=16).hexdigest()[:16]
    h = pd.util.hash_array(np.asarray(impression_ids, dtype=object), hash_key=salt)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_and_keep(ts: np.ndarray, labels: np.ndarray, impression_ids: np.ndarray,
                   max_ts: int, cfg: BuildConfig) -> Tuple[np.ndarray, np.ndarray]:
    """``(is_eval, keep)``: the time split and train-only negative down-sampling."""
    max_day = int(max_ts) // DAY_S
    is_eval = (ts // DAY_S) > (max_day - cfg.eval_days)
    keep = np.ones(len(ts), dtype=bool)
    if cfg.negative_sampling_rate < 1.0 and len(ts):
        u = sampling_uniform(impression_ids, cfg.seed)
        keep = is_eval | (labels > 0) | (u < cfg.negative_sampling_rate)
    return is_eval, keep


def _before(keys: np.ndarray, probe: np.ndarray, group_start: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` positions in sorted ``keys`` of a group's entries < probe."""
    return np.searchsorted(keys, group_start, "left"), np.searchsorted(keys, probe, "left")


@dataclasses.dataclass
class Built:
    """Examples of a set of users, in (user, ts, event_id) order."""

    impression_id: np.ndarray
    ts: np.ndarray
    label: np.ndarray
    conversion: np.ndarray
    serialized: list


def build_examples(events: pd.DataFrame, hist: pd.DataFrame, items: ItemTable,
                   user_regions: Mapping[str, str], label_window_s: int) -> Built:
    """Builds one serialized example per impression in ``events``.

    Args:
      events: valid, de-duplicated events (``EVENT_COLUMNS``, int64 ``ts``)
        holding *all* events of the users it mentions.
      hist: item history per ``(item_id, ts)`` (see `history.item_history`);
        missing pairs count as 0.
      items: the item table.
      user_regions: user_id -> region_id (unknown users get "").
      label_window_s: label window in seconds.
    """
    ev = events.sort_values(["user_id", "ts", "event_id"], kind="mergesort")
    ucode = pd.factorize(ev["user_id"].to_numpy(), sort=True)[0].astype(np.int64)
    ts = ev["ts"].to_numpy(np.int64)
    kind = ev["event"].to_numpy(dtype=object)
    imp = kind == contract.IMPRESSION
    n_imp = int(imp.sum())
    if n_imp == 0:
        empty = np.array([], dtype=object)
        return Built(empty, np.array([], np.int64), np.array([], np.int64), np.array([], np.int64), [])
    tmin = int(ts.min())
    span = int(ts.max()) - tmin + int(label_window_s) + 2
    if (int(ucode.max()) + 2) * span >= (1 << 62):
        raise OverflowError("too many users x time span for composite keys; use more shards")
    key = ucode * span + (ts - tmin)
    imp_key, imp_user = key[imp], ucode[imp] * span
    imp_ts = ts[imp]
    imp_ids = ev["event_id"].to_numpy(dtype=object)[imp]
    imp_items = ev["item_id"].to_numpy(dtype=object)[imp]
    imp_users = ev["user_id"].to_numpy(dtype=object)[imp]

    # --- channels: strictly-before windows -------------------------------
    item_pos = items.lookup(ev["item_id"].to_numpy(dtype=object))
    item_bytes = ev["item_id"].to_numpy(dtype=object)
    channels: Dict[str, A.Channel] = {}
    for channel, kind_name in CHANNEL_EVENTS.items():
        feats = [f for f in F.SEQ_FEATURES if f.channel == channel]
        if not feats:
            continue
        mask = kind == kind_name
        lo, hi = _before(key[mask], imp_key, imp_user)
        lo = np.maximum(lo, hi - max(f.max_len for f in feats))
        pos = item_pos[mask]
        attrs = {"item_id": lambda: np.array([s.encode() for s in item_bytes[mask]], dtype=object),
                 "category_id": lambda: items.category[pos], "region_id": lambda: items.region[pos]}
        channels[channel] = A.Channel(lo, hi, {f.name: attrs[f.shares_with]() for f in feats})
    search = kind == contract.SEARCH
    s_lo, s_hi = _before(key[search], imp_key, imp_user)
    tok_lists = [q.split() for q in ev["query"].to_numpy(dtype=object)[search]]
    tok_cum = np.concatenate([[0], np.cumsum([len(t) for t in tok_lists], dtype=np.int64)])
    tokens = np.array([t.encode() for ts_ in tok_lists for t in ts_], dtype=object)
    t_hi = tok_cum[s_hi]
    channels["search"] = A.Channel(np.maximum(tok_cum[s_lo], t_hi - F.SEARCH_LEN), t_hi,
                                   {F.SEARCH_TOKENS.name: tokens})
    click_win = channels["click"]
    click, conv = kind == contract.CLICK, kind == contract.CONVERSION

    # --- labels: same (user, item) within [ts, ts + window] ----------------
    pair = pd.factorize(ucode * (len(items.index) + 1) + (item_pos + 1))[0].astype(np.int64)
    if (int(pair.max()) + 2) * span >= (1 << 62):
        raise OverflowError("too many (user, item) pairs x time span for composite keys")
    pkey = pair * span + (ts - tmin)
    imp_pkey = pkey[imp]
    labels = []
    for mask in (click, conv):
        keys = np.sort(pkey[mask])   # pair codes are not monotone in the event order
        hi = np.searchsorted(keys, imp_pkey + int(label_window_s), "right")
        lo = np.searchsorted(keys, imp_pkey, "left")
        labels.append((hi > lo).astype(np.int64))
    label, conversion = labels

    # --- item history, crosses and candidate attributes -------------------
    h = history.lookup(hist, imp_items, imp_ts)
    h_imp = h[HIST_IMPRESSIONS].to_numpy(dtype=np.float64)
    h_clk = h[HIST_CLICKS].to_numpy(dtype=np.float64)
    ctr = F.smoothed_ctr(h_clk, h_imp)
    cand = item_pos[imp]
    user_region = A.user_regions_of(imp_users, user_regions)
    share = _category_share(items.category_code[item_pos[click]], click_win.lo, click_win.hi,
                            items.category_code[cand])
    impressions = A.Impressions(
        impression_id=imp_ids, user_id=imp_users, user_region=user_region, item_id=imp_items,
        item_pos=cand, ts=imp_ts, ints={F.LABEL: label, F.CONVERSION_LABEL: conversion},
        floats={F.ITEM_HIST_IMPRESSIONS.name: h_imp, F.ITEM_HIST_CLICKS.name: h_clk,
                F.ITEM_HIST_CTR.name: ctr, F.INTEREST_CATEGORY_SHARE.name: share,
                F.REGION_MATCH.name: A.region_match(user_region, items.region_str[cand])})
    serialized = A.assemble(impressions, list(channels.values()), items.category, items.region, items.price)
    return Built(imp_ids, imp_ts, label, conversion, serialized)


def _category_share(click_codes: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    cand_codes: np.ndarray) -> np.ndarray:
    """Vectorised `crosses` interest share: share of clicks[lo:hi] in the
    candidate's category (0.0 for an empty window)."""
    n = len(click_codes)
    keys = np.sort(click_codes.astype(np.int64) * (n + 1) + np.arange(n, dtype=np.int64))
    base = cand_codes.astype(np.int64) * (n + 1)
    count = np.searchsorted(keys, base + hi, "left") - np.searchsorted(keys, base + lo, "left")
    length = hi - lo
    return np.where(length > 0, count / np.maximum(length, 1), 0.0)
