"""Event ages in the behaviour sequences: each history entry carries how long before
the impression it happened, bucketed by `features.age_labels`, aligned with the
channel's other sequences; offline (the example builder) and online (`online.user_side`
from the Redis channel scores) label the same ages the same way."""
from __future__ import annotations

from typing import Dict

import numpy as np
import pandas as pd

from feedrank import features as F
from feedrank.examples import assemble, build
from feedrank.examples.history import item_history
from serving.features import online
from tests.helpers import examplegen as H

T0 = 1_700_000_000
DAY = 86_400
ITEMS = pd.DataFrame(dict(item_id=["a", "x", "y"], category_id=["c1", "c1", "c2"],
                          region_id=["r1", "r1", "r2"], price=[1.0, 2.0, 3.0]))
USERS = pd.DataFrame(dict(user_id=["u1"], region_id=["r1"]))
EVENTS = [
    H.event("v9", "u1", "a", "view", T0 + 1000 - 8 * DAY),          # 8 days before i1
    H.event("v0", "u1", "y", "view", T0),                           # 1000 s before i1
    H.event("p0", "u1", "y", "impression", T0 + 500),
    H.event("o1", "u1", "y", "conversion", T0 + 1000 - 2 * 3600),   # 2 h before i1
    H.event("c1", "u1", "a", "click", T0 + 970),                    # 30 s before i1
    H.event("s1", "u1", "", "search", T0 + 975, query="red sofa"),  # 25 s before i1: two tokens
    H.event("i1", "u1", "x", "impression", T0 + 1000),
]


def examples(spec: F.FeatureSpec, delay_s: int = 0, items: pd.DataFrame = ITEMS) -> Dict[str, Dict[str, list]]:
    ev = pd.DataFrame(EVENTS)[build.EVENT_COLUMNS]
    built = build.build_examples(ev, item_history(ev), build.ItemTable(items, spec), build.UserTable(USERS, spec),
                                 1800, feature_delay_s=delay_s, spec=spec)
    return {i: H.to_dict(s) for i, s in zip(built.impression_id, built.serialized)}


def test_each_history_entry_carries_its_age_bucket():
    got = examples(F.BUILTIN)
    i1, p0 = got["i1"], got["p0"]
    assert i1[F.VIEW_ITEMS.name] == ["a", "y"] and i1[F.VIEW_AGES.name] == ["age11", "age03"]   # 8 d, 1000 s
    assert i1[F.CLICK_ITEMS.name] == ["a"] and i1[F.CLICK_AGES.name] == ["age00"]                # 30 s
    assert i1[F.CONV_ITEMS.name] == ["y"] and i1[F.CONV_AGES.name] == ["age05"]                  # 2 h
    assert i1[F.SEARCH_TOKENS.name] == ["red", "sofa"] and i1[F.SEARCH_AGES.name] == ["age00", "age00"]
    # the same view is younger for the earlier impression: 500 s, and 8 days less 500 s
    assert p0[F.VIEW_ITEMS.name] == ["a", "y"] and p0[F.VIEW_AGES.name] == ["age11", "age02"]
    assert p0[F.CLICK_AGES.name] == p0[F.CLICK_ITEMS.name] == []


def test_with_a_feature_delay_ages_still_count_to_the_impression():
    stale = examples(F.BUILTIN, delay_s=60)["i1"]
    assert stale[F.CLICK_ITEMS.name] == stale[F.CLICK_AGES.name] == []   # 30 s old: not visible yet
    assert stale[F.VIEW_AGES.name] == ["age11", "age03"]


def test_time_versioned_posts_keep_their_ages_aligned():
    items = pd.concat([ITEMS.assign(valid_from=T0 - 10 * DAY),
                       ITEMS.assign(valid_from=T0 + 600, category_id="c9")], ignore_index=True)
    got = examples(F.BUILTIN, items=items)
    assert got["i1"][F.VIEW_CATEGORIES.name] == ["c9", "c9"] and got["p0"][F.VIEW_CATEGORIES.name] == ["c1", "c2"]
    assert got["i1"][F.VIEW_AGES.name] == ["age11", "age03"] and got["p0"][F.VIEW_AGES.name] == ["age11", "age02"]


def test_a_contract_without_ages_writes_none():
    got = examples(F.FeatureSpec(event_ages=False))["i1"]
    assert not any(name.endswith("_ages") for name in got) and got[F.VIEW_ITEMS.name] == ["a", "y"]


def test_vectorised_codes_equal_the_labels_at_every_bound():
    edges = np.array([b + d for b in F.AGE_BOUNDS_S for d in (-1, 0, 1)] + [1, 10 * 365 * DAY])
    lo, hi = np.array([0]), np.array([len(edges)])
    codes, offsets = assemble.age_codes(lo, hi, 1_000_000_000 - edges, np.array([1_000_000_000]))
    assert offsets.tolist() == [0, len(edges)]
    assert [F.AGE_LABELS[c] for c in codes] == F.age_labels(edges.tolist())


def test_online_labels_the_redis_scores_at_the_request_second():
    """The transformer's user side: ages are the request second minus each entry's score."""
    ts = T0 + 1000
    user = online.UserState(
        "r1", {"click": ["a"], "view": ["a", "y"], "conversion": ["y"], "search": ["red", "sofa"]},
        channel_ts={"click": [T0 + 970], "view": [T0 + 1000 - 8 * DAY, T0], "conversion": [ts - 7200],
                    "search": [T0 + 975, T0 + 975]})
    side = online.user_side(user, online.ItemStore.from_hash({}), F.BUILTIN, ts)
    offline = examples(F.BUILTIN)["i1"]
    for s in F.AGE_FEATURES:
        assert side[s.name] == offline[s.name], s.name
    assert not any(s.ages for s in F.SEQ_FEATURES)
    assert "click_ages" not in online.user_side(user, online.ItemStore.from_hash({}),
                                                F.FeatureSpec(event_ages=False), ts)


def test_the_transform_maps_ages_in_order_and_anything_else_to_oov():
    """The fixed age vocabulary: label i -> i + 1, malformed or unknown values (short ones
    included) -> the OOV id, padding 0; no analyzer, so it runs outside tf.Transform too."""
    import tensorflow as tf

    from feedrank.transform import preprocessing

    values = tf.constant(["age00", "age12", "age13", "w1", "", "ageXY", "age05"])
    ids = preprocessing._lookup_fixed(values, F.AGE_VOCAB).numpy().tolist()
    oov = len(F.AGE_LABELS) + 1
    assert ids == [1, 13, oov, oov, oov, oov, 6] and F.AGE_VOCAB.size == oov + 1
