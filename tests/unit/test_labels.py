"""Label attribution on hand-built events: by request when the click carries
one that an impression of the pair carries too, else the latest impression of
the (user, post) pair; one click never labels several impressions."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from feedrank import features as F
from feedrank.examples import build, labels
from feedrank.examples.history import empty_history
from tests.helpers import examplegen as H

W = 1800
ITEMS = pd.DataFrame(dict(item_id=["a", "b"], category_id=["c1", "c2"], region_id=["r1", "r2"], price=[1.0, 2.0]))
USERS = pd.DataFrame(dict(user_id=["u1", "u2"], region_id=["r1", "r2"]))


def _labels(events: List[Dict]) -> Dict[str, Tuple[int, int]]:
    """impression_id -> (label, conversion), through the real example builder."""
    ev = pd.DataFrame(events)[build.EVENT_COLUMNS]
    built = build.build_examples(ev, empty_history(), build.ItemTable(ITEMS, F.BUILTIN),
                                 build.UserTable(USERS, F.BUILTIN), W, spec=F.BUILTIN)
    out = {}
    for imp_id, rec in zip(built.impression_id, built.serialized):
        d = H.to_dict(rec)
        out[imp_id] = (d["label"][0], d["conversion"][0])
    return out


def _imp(eid, ts, req="", user="u1", item="a"):
    return H.event(eid, user, item, "impression", ts, request_id=req)


def _act(eid, ts, req="", user="u1", item="a", kind="click"):
    return H.event(eid, user, item, kind, ts, request_id=req)


def test_a_click_labels_only_the_impression_of_its_request():
    got = _labels([_imp("i1", 100, "R1"), _imp("i2", 200, "R2"), _act("c", 300, "R1"),
                   _imp("j1", 5000, "R3", item="b"), _imp("j2", 5100, "R3", item="b"),   # one request, twice
                   _act("d", 5200, "R3", item="b"),
                   _imp("k1", 9000, "R4"), _imp("k2", 9100, "R5"), _act("e", 9200, "R9"),  # unknown request
                   _imp("m1", 20000, "R6"), _act("f", 20000 + W + 1, "R6"),               # its request, too late
                   _imp("m2", 20000 + W, "R7"),
                   _imp("n1", 30000, "R8", user="u2"), _act("g", 30010, "R8")])           # same request, other user
    assert got["i1"] == (1, 0) and got["i2"] == (0, 0)        # not the latest of the pair
    assert got["j1"] == (0, 0) and got["j2"] == (1, 0)        # the latest of its request
    assert got["k1"] == (0, 0) and got["k2"] == (1, 0)        # no impression of R9: by pair
    assert got["m1"] == (0, 0) and got["m2"] == (0, 0)        # bound to its request: no fallback
    assert got["n1"] == (0, 0)


def test_without_request_a_clicks_window_ends_at_the_next_impression_of_the_pair():
    got = _labels([_imp("i1", 100), _imp("i2", 500), _act("c1", 600), _act("c2", 700),
                   _imp("j1", 5000), _act("d", 5300), _imp("j2", 5600),
                   _imp("k1", 9000), _imp("k2", 9000, item="b"), _act("e", 9000, item="b"),   # same second
                   _imp("m1", 20000), _act("f", 20000 + W + 1),
                   _imp("n1", 30000, "R1"), _act("g", 30050)])                            # the click has none
    assert got["i1"] == (0, 0) and got["i2"] == (1, 0)        # two clicks, one impression
    assert got["j1"] == (1, 0) and got["j2"] == (0, 0)        # before the next impression
    assert got["k1"] == (0, 0) and got["k2"] == (1, 0)
    assert got["m1"] == (0, 0)                                # outside the window
    assert got["n1"] == (1, 0)


def test_conversions_follow_the_same_rule():
    got = _labels([_imp("i1", 100, "R1"), _imp("i2", 200, "R2"), _act("v1", 300, "R1", kind="conversion"),
                   _imp("j1", 5000), _imp("j2", 5100), _act("v2", 5200, kind="conversion"),
                   _act("c", 5250)])
    assert got == {"i1": (0, 1), "i2": (0, 0), "j1": (0, 0), "j2": (1, 1)}


def _brute_force(df: pd.DataFrame, kind: str) -> Dict[str, int]:
    """The rule written one click at a time."""
    imps = df[df.event == "impression"]
    out = {e: 0 for e in imps.event_id}
    for c in df[df.event == kind].itertuples():
        mine = imps[(imps.user_id == c.user_id) & (imps.item_id == c.item_id)]
        if c.request_id and (mine.request_id == c.request_id).any():
            mine = mine[mine.request_id == c.request_id]
        mine = mine[mine.ts <= c.ts].sort_values(["ts", "event_id"])
        if len(mine) and c.ts - mine.ts.iloc[-1] <= W:
            out[mine.event_id.iloc[-1]] = 1
    return out


def test_vectorised_attribution_matches_the_rule_on_random_logs():
    rng = np.random.default_rng(7)
    for trial in range(20):
        n = 300
        df = pd.DataFrame(dict(
            event_id=[f"e{i:04d}" for i in range(n)], user_id=rng.choice(["u1", "u2", "u3"], n),
            item_id=rng.choice(["a", "b"], n), event=rng.choice(["impression", "click", "conversion"], n),
            ts=rng.integers(0, 6 * W, n), request_id=rng.choice(["", "", "R1", "R2", "R3"], n),
            query="")).sort_values(["user_id", "ts", "event_id"], kind="mergesort").reset_index(drop=True)
        pair = pd.factorize(df.user_id + "|" + df.item_id)[0].astype(np.int64)
        imp = (df.event == "impression").to_numpy()
        ts, req = df.ts.to_numpy(np.int64), df.request_id.to_numpy(dtype=object)
        for kind in ("click", "conversion"):
            got = labels.attribute(pair, req, ts, imp, (df.event == kind).to_numpy(), W)
            want = _brute_force(df, kind)
            assert dict(zip(df.event_id[imp], got)) == want, (trial, kind)
            assert got.sum() <= (df.event == kind).sum()


def test_no_impressions_or_no_acts():
    ts = np.array([1, 2], dtype=np.int64)
    req = np.array(["", ""], dtype=object)
    pair = np.zeros(2, dtype=np.int64)
    assert labels.attribute(pair, req, ts, np.array([False, False]), np.array([True, True]), W).tolist() == []
    assert labels.attribute(pair, req, ts, np.array([True, True]), np.array([False, False]), W).tolist() == [0, 0]
