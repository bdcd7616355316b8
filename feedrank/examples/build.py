"""Pure example building for a set of whole users (one user or a user shard).

Given the valid, de-duplicated events of some users (all of each user's
events), the per-impression item-history counts and the item/user tables,
`build_examples` returns one serialized `tf.train.Example` per impression with
exactly the raw features of its `feedrank.features.FeatureSpec`
(`FeatureSpec.raw_feature_spec`).

Semantics (all vectorised with composite ``(group, ts)`` keys and
``searchsorted``):
  * history = the user's events with ``ts`` strictly before the impression
    (strictly before ``ts - feature_delay_s`` with a feature delay: the cutoff
    is `user_counters.history_probe`, shared by the sequences and the user
    counters; labels, splits and the item counters ignore the delay);
    within equal ``ts`` events are ordered by ``event_id``; most recent last.
    Channels follow ``spec.seq_features``: ``click``/``view``/``conversion``
    events give item/category/region sequences (per ``shares_with``) and, per
    declared categorical item column, that column's sequence
    (``spec.attribute_sequences``, e.g. ``click_item_seller``), searches
    give whitespace-split query tokens; with ``spec.event_ages`` each channel
    also gets its entries' age buckets (`features.AGE_FEATURES`: impression
    ``ts`` minus event ``ts``, labelled by `features.age_labels`);
  * ``label``/``conversion``: a click/conversion labels at most one impression
    of the same user and item, shown at most ``label_window_s`` before it: the
    one of its request, else the latest of the pair (`labels.attribute`);
  * item and user attributes (of the candidate and of the sequence items, the
    declared item columns included) are the snapshot at the impression time
    (`snapshots`); a post with no valid row then has the missing values;
  * crosses follow `crosses`, which serving mirrors in TF;
  * user counters, user x category counters, session share and category
    recency follow `user_counters` (serving mirrors them from Redis), and so
    do, with ``spec.seen_before``, the user's earlier impressions of the
    candidate post (`user_counters.seen_before`);
  * the splits are `splits.assign`; train-only negative sampling is `sample_keep`.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Dict, Mapping, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from feedrank import features as F
from feedrank.events import contract
from feedrank.examples import assemble as A
from feedrank.examples import declared, history, labels, snapshots, splits, user_counters
from feedrank.examples.history import HIST_CLICKS, HIST_IMPRESSIONS
from feedrank.examples.snapshots import ItemTable, UserTable  # noqa: F401 (API)

DAY_S = 86_400
EVENT_COLUMNS = ["event_id", "user_id", "item_id", "event", "ts", "request_id", "query"]
# Behaviour channel of `features.SeqFeature` -> event type (search is special).
CHANNEL_EVENTS = {"click": contract.CLICK, "view": contract.VIEW, "conversion": contract.CONVERSION}


feature_names = A.feature_names


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


def sampling_uniform(impression_ids: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic U[0,1) per impression id, from a hash of (seed, id)."""
    salt = hashlib.blake2b(str(seed).encode(), digest_size=16).hexdigest()[:16]
    h = pd.util.hash_array(np.asarray(impression_ids, dtype=object), hash_key=salt)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def sample_keep(split: np.ndarray, labels_: np.ndarray, impression_ids: np.ndarray,
                rate: float, seed: int) -> np.ndarray:
    """Which impressions become examples: every valid and eval one, and the train
    ones that are positive or drawn with probability ``rate`` (warm-up and
    censored impressions never)."""
    keep = np.isin(split, (splits.TRAIN, splits.VALID, splits.EVAL))
    if rate < 1.0 and len(split):
        train = split == splits.TRAIN
        drawn = sampling_uniform(impression_ids, seed) < rate
        keep &= ~train | (labels_ > 0) | drawn
    return keep


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
    user_id: np.ndarray = dataclasses.field(default_factory=lambda: np.array([], dtype=object))


def build_examples(events: pd.DataFrame, hist: pd.DataFrame, items: ItemTable,
                   users: Union[UserTable, Mapping[str, str]], label_window_s: int,
                   feature_delay_s: int = 0, *, spec: F.FeatureSpec) -> Built:
    """Builds one serialized example per impression in ``events``.

    Args:
      events: valid, de-duplicated events (``EVENT_COLUMNS``, int64 ``ts``)
        holding *all* events of the users it mentions.
      hist: item history per ``(item_id, ts)`` (see `history.item_history`);
        missing pairs count as 0.
      items: the item table (with its snapshots), built with ``spec``.
      users: the user table, built with ``spec``, or a plain ``user_id ->
        region_id`` map (unknown users get ""; only without declared user columns).
      label_window_s: label window in seconds.
      feature_delay_s: the behaviour features (sequences, user counters, session
        share, category recency, seen before) see only events with ``ts`` < impression
        ts minus this; 0: every event strictly before the impression.
      spec: the feature contract: the examples hold exactly its raw features.
    """
    _check_tables(spec, items, users)
    feature_delay_s = user_counters.check_delay(feature_delay_s)
    ev = events.sort_values(["user_id", "ts", "event_id"], kind="mergesort")
    ucode = pd.factorize(ev["user_id"].to_numpy(), sort=True)[0].astype(np.int64)
    ts = ev["ts"].to_numpy(np.int64)
    kind = ev["event"].to_numpy(dtype=object)
    imp = kind == contract.IMPRESSION
    n_imp = int(imp.sum())
    if n_imp == 0:
        empty = np.array([], dtype=object)
        return Built(empty, np.array([], np.int64), np.array([], np.int64), np.array([], np.int64), [], empty)
    tmin = int(ts.min())
    span = int(ts.max()) - tmin + 2
    if (int(ucode.max()) + 2) * span >= (1 << 62):
        raise OverflowError("too many users x time span for composite keys; use more shards")
    key = ucode * span + (ts - tmin)
    imp_user = ucode[imp] * span
    imp_key = user_counters.history_probe(imp_user, ts[imp] - tmin, feature_delay_s)
    imp_ts = ts[imp]
    imp_ids = ev["event_id"].to_numpy(dtype=object)[imp]
    imp_items = ev["item_id"].to_numpy(dtype=object)[imp]
    imp_users = ev["user_id"].to_numpy(dtype=object)[imp]
    item_ids = ev["item_id"].to_numpy(dtype=object)
    item_code = items.lookup(item_ids)
    imp_epoch = items.snapshots.epoch(imp_ts)

    # --- channels: windows before the cutoff, attributes as of the impression --
    channels: Dict[str, A.Channel] = {}
    click_rows = np.array([], dtype=np.int64)
    for channel, kind_name in CHANNEL_EVENTS.items():
        feats = [f for f in spec.seq_features if f.channel == channel and not f.ages]
        if not feats:
            continue
        ch, rows = _item_channel(kind == kind_name, feats, key, imp_key, imp_user, item_ids,
                                 item_code, items, imp_epoch, ts)
        ch.ages = spec.age_feature(channel).name if spec.event_ages else None
        channels[channel] = ch
        if channel == "click":
            click_rows = rows
    search = kind == contract.SEARCH
    s_lo, s_hi = _before(key[search], imp_key, imp_user)
    tok_lists = [q.split() for q in ev["query"].to_numpy(dtype=object)[search]]
    tok_cum = np.concatenate([[0], np.cumsum([len(t) for t in tok_lists], dtype=np.int64)])
    tokens = np.array([t.encode() for ts_ in tok_lists for t in ts_], dtype=object)
    token_ts = np.repeat(ts[search], [len(t) for t in tok_lists]).astype(np.int64)
    t_hi = tok_cum[s_hi]
    channels["search"] = A.Channel(np.maximum(tok_cum[s_lo], t_hi - F.SEARCH_LEN), t_hi,
                                   {F.SEARCH_TOKENS.name: tokens}, token_ts,
                                   F.SEARCH_AGES.name if spec.event_ages else None)
    click_win = channels["click"]

    # --- labels: one impression per click/conversion ----------------------
    pair = pd.factorize(ucode * (len(items.index) + 1) + (item_code + 1))[0].astype(np.int64)
    request = (ev["request_id"].to_numpy(dtype=object) if "request_id" in ev.columns
               else np.full(len(ev), "", dtype=object))
    label, conversion = (labels.attribute(pair, request, ts, imp, kind == k, label_window_s)
                         for k in (contract.CLICK, contract.CONVERSION))

    # --- item history, crosses and candidate attributes -------------------
    h = history.lookup(hist, imp_items, imp_ts)
    h_imp = h[HIST_IMPRESSIONS].to_numpy(dtype=np.float64)
    h_clk = h[HIST_CLICKS].to_numpy(dtype=np.float64)
    ctr = F.smoothed_ctr(h_clk, h_imp)
    cand = items.snapshots.rows_at(item_code[imp], imp_epoch)
    user_region = snapshots.user_regions(users, imp_users, imp_ts)
    share = _category_share(items.row_category_code[click_rows], click_win.lo, click_win.hi,
                            items.row_category_code[cand])
    counters = user_counters.compute(ucode, ts, kind, user_counters.event_categories(item_code, ts, items),
                                     imp, np.where(cand >= 0, items.row_category_code[cand], -1),
                                     feature_delay_s)
    if spec.seen_before:
        counters.update(user_counters.seen_before(ucode, item_ids, ts, imp, feature_delay_s))
    impressions = A.Impressions(
        impression_id=imp_ids, user_id=imp_users, user_region=user_region, item_id=imp_items,
        item_pos=cand, ts=imp_ts, ints={F.LABEL: label, F.CONVERSION_LABEL: conversion},
        floats={F.ITEM_HIST_IMPRESSIONS.name: h_imp, F.ITEM_HIST_CLICKS.name: h_clk,
                F.ITEM_HIST_CTR.name: ctr, F.INTEREST_CATEGORY_SHARE.name: share,
                F.REGION_MATCH.name: A.region_match(user_region, items.row_region_str[cand]),
                **counters})
    impressions.encoded.update(declared.entries(spec, "items", items.row_declared, cand, A.fan_out))
    user_rows = (users.snapshots.rows_of(imp_users, imp_ts) if isinstance(users, UserTable)
                 else np.full(len(imp_users), -1, dtype=np.int64))
    impressions.encoded.update(declared.entries(
        spec, "users", getattr(users, "row_declared", {}), user_rows, A.fan_out))
    serialized = A.assemble(spec, impressions, list(channels.values()), items.row_category,
                            items.row_region, items.row_price)
    return Built(imp_ids, imp_ts, label, conversion, serialized, imp_users)


def _check_tables(spec: F.FeatureSpec, items: ItemTable, users: Union[UserTable, Mapping[str, str]]) -> None:
    """The item and user tables were read with ``spec``'s declared columns."""
    for name, table in (("item", items), ("user", users)):
        built_with = getattr(table, "spec", spec)
        if built_with != spec:
            raise ValueError(f"the {name} table was built with the declared columns "
                             f"{[c.feature_name for c in built_with.declared]}, the examples with "
                             f"{[c.feature_name for c in spec.declared]}: build both with the same FeatureSpec")


def _item_channel(mask: np.ndarray, feats: Sequence[F.SeqFeature], key: np.ndarray,
                  imp_key: np.ndarray, imp_user: np.ndarray, item_ids: np.ndarray,
                  item_code: np.ndarray, items: ItemTable, imp_epoch: np.ndarray, ts: np.ndarray
                  ) -> Tuple[A.Channel, np.ndarray]:
    """A behaviour channel of item events (with each element's event time) and the
    snapshot row of each of its elements.  With attribute snapshots every distinct
    (window, epoch) gets its own elements, so the sequence shows the attributes as
    of the impression: the built-in ones and the declared item columns ``feats`` names
    (`ItemTable.declared_at`)."""
    lo, hi = _before(key[mask], imp_key, imp_user)
    lo = np.maximum(lo, hi - max(f.max_len for f in feats))
    codes = item_code[mask]
    encoded = np.array([s.encode() for s in item_ids[mask]], dtype=object)
    event_ts = ts[mask]
    if items.snapshots.multi:
        lo, hi, source, epoch = snapshots.expand_windows(lo, hi, imp_epoch)
        codes, encoded, event_ts = codes[source], encoded[source], event_ts[source]
    else:
        epoch = np.zeros(len(codes), dtype=np.int64)
    rows = items.snapshots.rows_at(codes, epoch)
    attrs = {"item_id": lambda: encoded, "category_id": lambda: items.row_category[rows],
             "region_id": lambda: items.row_region[rows]}
    values = {f.name: attrs[f.shares_with]() if f.shares_with in attrs else items.declared_at(f.shares_with, rows)
              for f in feats}
    return A.Channel(lo, hi, values, event_ts), rows


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
