"""Feature staleness (``examples.feature_delay_s``): the behaviour features see only
events older than the delay, labels, splits and item counters do not move.

A hand-built log through the real example builder, and a small simulated log
through the real Beam graph, with and without a delay."""
from __future__ import annotations

import os
from typing import Dict

import numpy as np
import pandas as pd
import pytest

from feedrank import config as config_lib
from feedrank import features as F
from feedrank.examples import build
from feedrank.examples.history import item_history
from tests.helpers import examplegen as H
from tests.helpers.config import ROOT

T0 = 1_700_000_000
ITEMS = pd.DataFrame(dict(item_id=["a", "x", "y"], category_id=["c1", "c1", "c2"],
                          region_id=["r1", "r1", "r2"], price=[1.0, 2.0, 3.0]))
USERS = pd.DataFrame(dict(user_id=["u1", "u2"], region_id=["r1", "r1"]))
EVENTS = [
    H.event("v0", "u1", "y", "view", T0),                        # 1000 s before i1: always visible
    H.event("p0", "u1", "y", "impression", T0 + 500),
    H.event("c1", "u1", "a", "click", T0 + 970),                 # 30 s before i1
    H.event("s1", "u1", "", "search", T0 + 975, query="red sofa"),   # 25 s before i1
    H.event("q1", "u2", "x", "impression", T0 + 960),            # another user's impression + click
    H.event("q2", "u2", "x", "click", T0 + 980),                 # of x: item counters of i1
    H.event("i1", "u1", "x", "impression", T0 + 1000),           # the impression under test (c1)
    H.event("k1", "u1", "x", "click", T0 + 1010),                # its label
]


def examples(delay_s: int) -> Dict[str, Dict[str, list]]:
    ev = pd.DataFrame(EVENTS)[build.EVENT_COLUMNS]
    built = build.build_examples(ev, item_history(ev), build.ItemTable(ITEMS, F.BUILTIN),
                                 build.UserTable(USERS, F.BUILTIN), 1800, feature_delay_s=delay_s, spec=F.BUILTIN)
    return {i: H.to_dict(s) for i, s in zip(built.impression_id, built.serialized)}


def test_a_click_30s_before_is_seen_without_delay_and_not_with_60s():
    fresh, stale = examples(0)["i1"], examples(60)["i1"]
    assert fresh[F.CLICK_ITEMS.name] == ["a"] and stale[F.CLICK_ITEMS.name] == []
    assert fresh[F.SEARCH_TOKENS.name] == ["red", "sofa"] and stale[F.SEARCH_TOKENS.name] == []
    assert fresh[F.VIEW_ITEMS.name] == stale[F.VIEW_ITEMS.name] == ["y"]          # 1000 s old
    assert fresh[F.USER_HIST_CLICKS.name] == [1.0] and stale[F.USER_HIST_CLICKS.name] == [0.0]
    assert fresh[F.USER_HIST_IMPRESSIONS.name] == stale[F.USER_HIST_IMPRESSIONS.name] == [1.0]
    assert fresh[F.USER_CAT_CLICKS.name] == [1.0] and stale[F.USER_CAT_CLICKS.name] == [0.0]
    assert fresh[F.INTEREST_CATEGORY_SHARE.name] == [1.0] and stale[F.INTEREST_CATEGORY_SHARE.name] == [0.0]
    # session: view y (c2) + click a (c1) fresh; only view y stale; the session is live in both
    assert fresh[F.SESSION_CATEGORY_SHARE.name] == [0.5] and stale[F.SESSION_CATEGORY_SHARE.name] == [0.0]
    # recency is still measured to the impression: 30 s fresh, no c1 event at all when stale
    assert fresh[F.CATEGORY_RECENCY_H.name] == pytest.approx([30 / 3600])
    assert stale[F.CATEGORY_RECENCY_H.name] == pytest.approx([F.RECENCY_CAP_H])


def test_labels_and_item_counters_ignore_the_delay():
    fresh, stale = examples(0), examples(60)
    assert set(fresh) == set(stale) == {"p0", "q1", "i1"}
    for imp in fresh:
        for name in (F.LABEL, F.CONVERSION_LABEL, F.ITEM_HIST_IMPRESSIONS.name, F.ITEM_HIST_CLICKS.name,
                     F.ITEM_HIST_CTR.name, F.ITEM_ID.name, F.TS):
            assert fresh[imp][name] == stale[imp][name], (imp, name)
    assert fresh["i1"][F.LABEL] == [1]
    assert fresh["i1"][F.ITEM_HIST_CLICKS.name] == [1.0]      # u2's click 20 s before i1 counts either way


def test_a_delay_beyond_the_log_start_leaves_empty_history():
    got = examples(86_400)["i1"]
    for seq in F.BUILTIN.seq_features:
        assert got[seq.name] == [], seq.name
    assert got[F.USER_HIST_IMPRESSIONS.name] == [0.0] and got[F.SESSION_CATEGORY_SHARE.name] == [0.0]
    assert got[F.CATEGORY_RECENCY_H.name] == pytest.approx([F.RECENCY_CAP_H])


def test_zero_delay_is_the_default_byte_for_byte():
    ev = pd.DataFrame(EVENTS)[build.EVENT_COLUMNS]
    args = (ev, item_history(ev), build.ItemTable(ITEMS, F.BUILTIN), build.UserTable(USERS, F.BUILTIN), 1800)
    assert build.build_examples(*args, spec=F.BUILTIN).serialized == \
        build.build_examples(*args, feature_delay_s=0, spec=F.BUILTIN).serialized


@pytest.mark.parametrize("bad", [-1, 1.5, True, "60"])
def test_a_bad_delay_is_a_clear_error(bad):
    ev = pd.DataFrame(EVENTS)[build.EVENT_COLUMNS]
    with pytest.raises(ValueError, match="feature_delay_s must be an integer number of seconds >= 0"):
        build.build_examples(ev, item_history(ev), build.ItemTable(ITEMS, F.BUILTIN), build.UserTable(USERS, F.BUILTIN),
                             1800, feature_delay_s=bad, spec=F.BUILTIN)


@pytest.mark.parametrize("value, message", [(-60, "examples.feature_delay_s must be an integer >= 0"),
                                            ("1h", "feature_delay_s")])
def test_the_config_checks_the_delay(tmp_path, value, message):
    path = tmp_path / "c.yaml"
    path.write_text(f"base: {os.path.join(ROOT, 'configs', 'demo.yaml')}\n"
                    f"examples: {{feature_delay_s: {value!r}}}\n")
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.load(str(path))


def test_the_beam_graph_applies_the_delay_and_keeps_labels_and_splits(tmp_path):
    log = H.make_log(str(tmp_path / "log"))
    fresh = H.run(log, str(tmp_path / "fresh"))
    stale = H.run(log, str(tmp_path / "stale"), feature_delay_s=3600)
    assert stale["examples"] == fresh["examples"] and stale["positives"] == fresh["positives"]
    for split in ("train", "valid", "eval"):
        a = {i: H.to_dict(s) for i, s in H.by_impression(fresh["output_dir"], [split]).items()}
        b = {i: H.to_dict(s) for i, s in H.by_impression(stale["output_dir"], [split]).items()}
        assert set(a) == set(b), split
        ids = sorted(a)
        for name in (F.LABEL, F.ITEM_HIST_CLICKS.name, F.ITEM_HIST_IMPRESSIONS.name):
            assert [a[i][name] for i in ids] == [b[i][name] for i in ids], (split, name)
        clicks_a = np.array([a[i][F.USER_HIST_CLICKS.name][0] for i in ids])
        clicks_b = np.array([b[i][F.USER_HIST_CLICKS.name][0] for i in ids])
        assert (clicks_b <= clicks_a).all()
        if split == "train":
            assert (clicks_b < clicks_a).any()     # the last hour's clicks are gone somewhere


def test_the_component_passes_a_delay_and_leaves_default_runs_unchanged(tmp_path):
    from components.example_gen.component import BehaviorExampleGen
    from feedrank.examples.beam_pipeline import ExampleGenConfig

    default = BehaviorExampleGen(input_base=str(tmp_path), num_shards=2)
    assert "feature_delay_s" not in {k for k, v in default.exec_properties.items() if v is not None}
    stale = BehaviorExampleGen(input_base=str(tmp_path), num_shards=2, feature_delay_s=600)
    assert ExampleGenConfig.of(stale.exec_properties).feature_delay_s == 600
    with pytest.raises(ValueError, match="BehaviorExampleGen.feature_delay_s must be an integer >= 0"):
        BehaviorExampleGen(input_base=str(tmp_path), feature_delay_s=-1)
