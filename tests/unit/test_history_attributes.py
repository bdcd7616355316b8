"""Declared categorical item columns on the history side: every item channel carries,
entry by entry with its item ids, the column's value of each history post as of the
impression (``click_item_seller``, ...), offline (the example builder, time-versioned
items included) and online (`online.user_side` from the post-attribute store at the
request second), and the same values on both; token and numeric columns stay
candidate-only.  Every expectation is computed by hand."""
from __future__ import annotations

import collections
from typing import Dict

import numpy as np
import pandas as pd
import pytest

from feedrank import features as F
from feedrank.examples import build
from feedrank.examples.history import item_history
from serving.features import online, redis_layout, writer
from tests.helpers import examplegen as H

T0 = 1_700_000_000
DAY = 86_400
SPEC = F.FeatureSpec((
    F.Declared("items", "seller", "categorical"),
    F.Declared("items", "area", "numeric", default=-1.0),
    F.Declared("items", "title", "tokens", max_tokens=2),
    F.Declared("users", "tier", "categorical"),
))
SELLER = ("click_item_seller", "view_item_seller", "conv_item_seller")
# a: "private", then "agency" from T0 + 600; x: "dealer"; y: no seller (a missing cell);
# n: no row before T0 + 900, then "shop".  "ghost" is in no table at all.
ITEMS = pd.DataFrame(dict(
    item_id=["a", "x", "y", "a", "n"], category_id=["c1", "c1", "c2", "c1", "c3"],
    region_id=["r1", "r1", "r2", "r1", "r1"], price=[1.0, 2.0, 3.0, 1.0, 4.0],
    seller=["private", "dealer", None, "agency", "shop"], area=[50.0, None, 70.0, 55.0, 10.0],
    title=["red sofa", "blue car", "", "red sofa", "old lamp"],
    valid_from=[T0 - 10 * DAY, np.nan, np.nan, T0 + 600, T0 + 900]))
USERS = pd.DataFrame(dict(user_id=["u1"], region_id=["r1"], tier=["gold"]))
EVENTS = [
    H.event("v1", "u1", "a", "view", T0 - 5 * DAY),
    H.event("v2", "u1", "y", "view", T0),
    H.event("v3", "u1", "n", "view", T0 + 100),       # before n has a row
    H.event("v4", "u1", "ghost", "view", T0 + 200),   # a post in no table
    H.event("p0", "u1", "x", "impression", T0 + 500),
    H.event("c1", "u1", "a", "click", T0 + 700),
    H.event("o1", "u1", "x", "conversion", T0 + 800),
    H.event("i1", "u1", "y", "impression", T0 + 1000),
]


def examples(spec: F.FeatureSpec = SPEC) -> Dict[str, Dict[str, list]]:
    ev = pd.DataFrame(EVENTS)[build.EVENT_COLUMNS]
    built = build.build_examples(ev, item_history(ev), build.ItemTable(ITEMS, spec), build.UserTable(USERS, spec),
                                 1800, spec=spec)
    return {i: H.to_dict(s) for i, s in zip(built.impression_id, built.serialized)}


def test_only_categorical_item_columns_reach_the_histories():
    assert [s.name for s in SPEC.attribute_sequences] == list(SELLER)
    assert [s.name for s in SPEC.seq_features[-3:]] == list(SELLER)
    assert {s.shares_with for s in SPEC.attribute_sequences} == {"item_seller"}
    assert [s.max_len for s in SPEC.attribute_sequences] == [F.CLICK_LEN, F.VIEW_LEN, F.CONVERSION_LEN]
    assert not any("area" in s.name or "title" in s.name or "tier" in s.name for s in SPEC.seq_features)


def test_each_history_post_shows_its_value_as_of_the_impression():
    got = examples()
    p0, i1 = got["p0"], got["i1"]
    assert p0[F.VIEW_ITEMS.name] == ["a", "y", "n", "ghost"]
    # a is still "private" at p0; y's cell is empty; n has no row yet; ghost is in no table
    assert p0["view_item_seller"] == ["private", "", "", ""]
    assert p0[F.VIEW_CATEGORIES.name] == ["c1", "c2", "", ""]          # the same rule as the category
    assert p0["click_item_seller"] == p0["conv_item_seller"] == p0[F.CLICK_ITEMS.name] == []
    assert p0["item_seller"] == ["dealer"]
    # at i1 a's second row and n's row hold
    assert i1[F.VIEW_ITEMS.name] == ["a", "y", "n", "ghost"] and i1["view_item_seller"] == ["agency", "", "shop", ""]
    assert i1[F.CLICK_ITEMS.name] == ["a"] and i1["click_item_seller"] == ["agency"]
    assert i1[F.CONV_ITEMS.name] == ["x"] and i1["conv_item_seller"] == ["dealer"]
    assert i1["item_seller"] == [""]
    for ex in got.values():   # aligned entry by entry with the channel's item ids
        for name, items in zip(SELLER, (F.CLICK_ITEMS, F.VIEW_ITEMS, F.CONV_ITEMS)):
            assert len(ex[name]) == len(ex[items.name]), name


def test_a_contract_without_history_attributes_writes_none():
    off = F.FeatureSpec(SPEC.declared, history_attributes=False)
    got = examples(off)["i1"]
    assert not any(name in got for name in SELLER) and got["item_seller"] == [""]
    assert set(got) == set(off.raw_names())


class _Hashes:
    """The one write `writer.load_items` makes: ``HSET key mapping``."""

    def __init__(self):
        self.hashes = collections.defaultdict(dict)

    def hset(self, key, mapping):
        self.hashes[key].update(mapping)


def _store() -> online.ItemStore:
    """The transformer's post store of `ITEMS`, as the bulk load writes it."""
    client, keys = _Hashes(), redis_layout.Keys("hist")
    writer.load_items(client, keys, ITEMS, SPEC)
    return online.ItemStore.from_hash(client.hashes[keys.items])


def test_online_reads_each_history_post_at_the_request_second():
    """`online.user_side`: the store's declared values of each history post at the request's
    second, the missing value for a post with no row then or in no table; equal to offline."""
    store = _store()
    offline = examples()
    channels = {"click": ["a"], "view": ["a", "y", "n", "ghost"], "conversion": ["x"], "search": []}
    seconds = {"click": [T0 + 700], "view": [T0 - 5 * DAY, T0, T0 + 100, T0 + 200], "conversion": [T0 + 800],
               "search": []}
    for imp, ts in (("p0", T0 + 500), ("i1", T0 + 1000)):
        seen = {ch: [v for v, t in zip(vals, seconds[ch]) if t < ts] for ch, vals in channels.items()}
        user = online.UserState("r1", seen, channel_ts={ch: [t for t in s if t < ts] for ch, s in seconds.items()})
        side = online.user_side(user, store.as_of(ts), SPEC, ts)
        for name in SELLER + (F.VIEW_CATEGORIES.name, F.VIEW_ITEMS.name):
            assert side[name] == offline[imp][name], (imp, name)
    assert side["view_item_seller"] == ["agency", "", "shop", ""]
    off = F.FeatureSpec(SPEC.declared, history_attributes=False)
    assert not set(SELLER) & set(online.user_side(user, store.as_of(T0 + 1000), off, T0 + 1000))


def test_the_lightgbm_baseline_matches_the_candidates_value_with_the_histories(tmp_path):
    """`lightgbm_baseline.features` reads `spec.matched`: the raw strings of the candidate's
    seller against each history's (a missing value "" matches "", as for the category)."""
    import tensorflow as tf

    from feedrank.train import lightgbm_baseline as G

    ev = pd.DataFrame(EVENTS)[build.EVENT_COLUMNS]
    built = build.build_examples(ev, item_history(ev), build.ItemTable(ITEMS, SPEC), build.UserTable(USERS, SPEC),
                                 1800, spec=SPEC)
    with tf.io.TFRecordWriter(str(tmp_path / "part-0.gz"), options="GZIP") as w:
        for record in built.serialized:
            w.write(record)
    frame = G.features(G.read_raw(str(tmp_path), spec=SPEC), spec=SPEC)
    assert list(built.impression_id) == ["p0", "i1"] and "item_seller" in G.categorical_columns(SPEC)
    # p0: "dealer" against views private, "", "", "";  i1: "" against agency, "", shop, ""
    assert frame["view_item_seller_match_share"].tolist() == [0.0, 0.5]
    assert frame["view_item_seller_match_last"].tolist() == [0.0, 1.0]
    assert frame["conv_item_seller_match_share"].tolist() == [0.0, 0.0]     # i1: "" against "dealer"
    # i1's youngest matching view: ghost, 800 s before (bucket 2 of 13)
    assert frame["view_item_seller_match_recency"].tolist() == [0.0, pytest.approx(11 / 13)]
    assert frame["item_seller"].tolist() == ["dealer", ""]
