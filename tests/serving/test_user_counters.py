"""User counters, user x category counters, session share and category
recency on a hand-built log with hand-computed values: offline through the
real example builder, online through the feature writer on a real Redis."""
from __future__ import annotations

import math
from typing import Dict, List

import numpy as np
import pandas as pd
import pytest

from feedrank import features as F
from feedrank.examples import build
from feedrank.examples.history import empty_history, item_history
from tests.helpers import examplegen as H

T0 = 1_700_000_000
ITEMS = pd.DataFrame(dict(item_id=["a", "b", "x"], category_id=["c1", "c1", "c2"],
                          region_id=["r1", "r1", "r2"], price=[1.0, 2.0, 3.0]))
USERS = pd.DataFrame(dict(user_id=["u1", "u2", "u3"], region_id=["r1", "r1", "r2"]))
NAMES = [d.name for d in F.USER_COUNTER_FEATURES]


def _ev(eid: str, user: str, item: str, kind: str, dt: int) -> Dict:
    return H.event(eid, user, item, kind, T0 + dt)


EVENTS: List[Dict] = [
    _ev("e1", "u1", "a", "impression", 0),
    _ev("e2", "u1", "a", "click", 10),
    _ev("e3", "u1", "b", "view", 20),
    _ev("e4", "u1", "x", "view", 30),
    _ev("e5", "u1", "x", "impression", 40),      # same second as i1: neither is the other's history
    _ev("i1", "u1", "b", "impression", 40),
    _ev("i2", "u1", "a", "impression", 1840),    # exactly SESSION_GAP_S after 40: same session
    _ev("i3", "u1", "x", "impression", 3641),    # 1801 s after i2: a new session
    _ev("v1", "u1", "x", "view", 3651),
    _ev("i4", "u1", "a", "impression", 3661),
    _ev("i5", "u1", "x", "impression", 3661),
    _ev("z1", "u1", "a", "click", 3661),          # same second as i4/i5: not history
    _ev("n1", "u2", "a", "impression", 0),        # no history at all
    _ev("w1", "u2", "a", "view", 100),
    _ev("n2", "u2", "b", "impression", 100 + 31 * 86_400),   # last c1 event 31 days ago: cap
    _ev("k1", "u3", "a", "conversion", 0),
    _ev("k2", "u3", "b", "impression", 360),      # conversion: recency yes, session no
]


def _row(imp, clk, cimp, cclk, share, rec_s):
    rec = F.RECENCY_CAP_H if rec_s is None else min(rec_s / 3600.0, F.RECENCY_CAP_H)
    return dict(zip(NAMES, [imp, clk, (clk + 1) / (imp + 20), cimp, cclk, (cclk + 1) / (cimp + 20), share, rec]))


EXPECTED = {
    "e1": _row(0, 0, 0, 0, 0.0, None),
    "e5": _row(1, 1, 0, 0, 1 / 3, 10),           # c2: view x at 30
    "i1": _row(1, 1, 1, 1, 2 / 3, 20),           # c1: click a, view b; view b at 20
    "i2": _row(3, 1, 2, 1, 2 / 3, 1820),
    "i3": _row(4, 1, 1, 0, 0.0, 3611),
    "i4": _row(5, 1, 3, 1, 0.0, 3641),           # session i3, v1 (c2)
    "i5": _row(5, 1, 2, 0, 1.0, 10),            # c2: e5, i3
    "n1": _row(0, 0, 0, 0, 0.0, None),
    "n2": _row(1, 0, 1, 0, 0.0, 31 * 86_400),
    "k2": _row(0, 0, 0, 0, 0.0, 360),
}


def offline() -> Dict[str, Dict[str, float]]:
    ev = pd.DataFrame(EVENTS)[build.EVENT_COLUMNS]
    built = build.build_examples(ev, item_history(ev), build.ItemTable(ITEMS, F.BUILTIN),
                                 build.UserTable(USERS, F.BUILTIN), 1800, spec=F.BUILTIN)
    return {i: {n: H.to_dict(s)[n][0] for n in NAMES} for i, s in zip(built.impression_id, built.serialized)}


def test_offline_values_are_the_hand_computed_ones():
    got = offline()
    assert set(got) == {e["event_id"] for e in EVENTS if e["event"] == "impression"}
    for imp_id, want in EXPECTED.items():
        for name, value in want.items():
            assert got[imp_id][name] == pytest.approx(np.float32(value), rel=1e-6), (imp_id, name)


def test_an_event_uses_its_posts_category_at_its_own_time():
    items = pd.concat([ITEMS, pd.DataFrame(dict(item_id=["a"], category_id=["c2"], region_id=["r1"],
                                                price=[1.0], valid_from=[T0 + 15]))], ignore_index=True)
    ev = pd.DataFrame([_ev("e1", "u1", "a", "impression", 0), _ev("e2", "u1", "a", "click", 20),
                       _ev("i1", "u1", "x", "impression", 30)])[build.EVENT_COLUMNS]
    built = build.build_examples(ev, empty_history(), build.ItemTable(items, F.BUILTIN),
                                 build.UserTable(USERS, F.BUILTIN), 1800, spec=F.BUILTIN)
    got = {i: H.to_dict(s) for i, s in zip(built.impression_id, built.serialized)}
    # e1 was in c1 when shown, the click on a in c2 (a moved at +15): i1 (c2) sees the click only
    assert got["i1"][F.USER_CAT_IMPRESSIONS.name] == [0.0]
    assert got["i1"][F.USER_CAT_CLICKS.name] == [1.0]
    assert got["i1"][F.SESSION_CATEGORY_SHARE.name] == [1.0]
    assert math.isclose(got["i1"][F.CATEGORY_RECENCY_H.name][0], 10 / 3600, rel_tol=1e-6)


# ------------------------------------------------------------------ online
from serving.features import online, redis_layout, replay, writer  # noqa: E402
from tests.helpers.redis_stack import redis_server  # noqa: E402,F401 (fixture)


def _online_at(client, keys, imp_id: str, events: List[Dict], same_second: bool = False) -> Dict[str, float]:
    """Applies the events strictly before the impression's second (``same_second``: up to
    and including it, the impression itself too, as a live request meets them) in
    ``(ts, event_id)`` order, each twice (idempotent), and reads its features at its second."""
    imp = next(e for e in EVENTS if e["event_id"] == imp_id)
    writer.flush(client, keys)
    writer.load_items(client, keys, ITEMS)
    w = writer.FeatureWriter(client, keys)
    before = sorted((e for e in events if e["ts"] < imp["ts"] or (same_second and e["ts"] == imp["ts"])),
                    key=lambda e: (e["ts"], e["event_id"]))
    if before:
        frame = writer.events_frame(before)
        w.apply(frame)
        w.apply(frame)
    pipe = client.pipeline()
    online.queue_reads(pipe, keys, imp["user_id"], [imp["item_id"]], imp["ts"])
    user, imps, clks = online.parse_reads(pipe.execute(), imp["ts"])
    store = online.ItemStore.from_hash(client.hgetall(keys.items))
    feats = online.raw_inputs(user, [imp["item_id"]], store, imps, clks, imp["ts"])
    return {n: feats[n][0] for n in NAMES}


@pytest.mark.parametrize("same_second", [False, True], ids=["before", "with_its_own_second_applied"])
def test_online_values_are_the_hand_computed_ones(redis_server, same_second):  # noqa: F811
    """Also when Redis already holds the impression's own second (the impression, e5 beside i1,
    i4 beside i5): the reads leave that second out, as offline."""
    client, keys = redis_server.client(), redis_layout.Keys("uc")
    for imp_id, want in EXPECTED.items():
        got = _online_at(client, keys, imp_id, EVENTS, same_second)
        for name, value in want.items():
            assert np.float32(got[name]) == np.float32(value), (imp_id, name, got[name], value)


def test_unknown_user_gets_the_no_history_values():
    feats = online.raw_inputs(online.empty_user(), ["a"], online.ItemStore({"a": ("c1", "r1", 1.0)}),
                              [0.0], [0.0], T0)
    assert {n: feats[n][0] for n in NAMES} == EXPECTED["n1"]


def test_replay_of_the_hand_built_log_has_zero_mismatches(redis_server, tmp_path):  # noqa: F811
    log_dir = H.write_log(str(tmp_path / "log"), EVENTS, ITEMS, USERS)
    report = replay.replay(redis_server.client(), log_dir, redis_layout.Keys("ucr"))
    assert report.impressions == len(EXPECTED)
    assert report.mismatched == 0, (dict(report.by_feature), report.examples[:2])


# ------------------------------------------------------- seen before
SEEN = [d.name for d in F.SEEN_FEATURES]
# a user outside the users table shown post a five times (twice in second 100, twice in second 250) and b once
SEEN_EVENTS: List[Dict] = [
    _ev("s1", "u9", "a", "impression", 0),
    _ev("s2", "u9", "a", "impression", 100),
    _ev("s3", "u9", "a", "impression", 100),     # same second as s2: neither sees the other
    _ev("s4", "u9", "b", "impression", 100),
    _ev("s5", "u9", "a", "impression", 250),
    _ev("s6", "u9", "a", "impression", 250),
]
# impression -> (earlier impressions of its post to the user, seconds since the latest of them)
SEEN_EXPECTED = {"s1": (0, None), "s2": (1, 100), "s3": (1, 100), "s4": (0, None), "s5": (3, 150),
                 "s6": (3, 150)}


def _seen_row(count, age_s) -> Dict[str, float]:
    return {F.USER_ITEM_IMPRESSIONS.name: count,
            F.ITEM_SEEN_RECENCY_H.name: F.RECENCY_CAP_H if age_s is None else age_s / 3600.0}


def test_offline_seen_before_is_the_hand_computed_one():
    ev = pd.DataFrame(SEEN_EVENTS + EVENTS)[build.EVENT_COLUMNS]   # EVENTS' own impressions too
    built = build.build_examples(ev, item_history(ev), build.ItemTable(ITEMS, F.BUILTIN),
                                 build.UserTable(USERS, F.BUILTIN), 1800, spec=F.BUILTIN)
    got = {i: H.to_dict(s) for i, s in zip(built.impression_id, built.serialized)}
    for imp_id, (count, age_s) in SEEN_EXPECTED.items():
        for name, value in _seen_row(count, age_s).items():
            assert got[imp_id][name][0] == pytest.approx(np.float32(value), rel=1e-6), (imp_id, name)
    # EVENTS: i2 (a at 1840) after e1; i4 (a at 3661) after e1 and i2; i5 (x at 3661) after e5 and i3
    for imp_id, (count, age_s) in {"e1": (0, None), "i2": (1, 1840), "i3": (1, 3601),
                                   "i4": (2, 1821), "i5": (2, 20)}.items():
        assert got[imp_id][F.USER_ITEM_IMPRESSIONS.name] == [count], imp_id
        assert got[imp_id][F.ITEM_SEEN_RECENCY_H.name][0] == pytest.approx(
            np.float32(_seen_row(count, age_s)[F.ITEM_SEEN_RECENCY_H.name]), rel=1e-6), imp_id
    # without the setting the examples do not carry them
    off = F.FeatureSpec(seen_before=False)
    built = build.build_examples(ev, item_history(ev), build.ItemTable(ITEMS, off),
                                 build.UserTable(USERS, off), 1800, spec=off)
    assert not set(SEEN) & set(H.to_dict(built.serialized[0]))


def test_offline_seen_before_waits_for_the_feature_delay():
    ev = pd.DataFrame(SEEN_EVENTS)[build.EVENT_COLUMNS]
    built = build.build_examples(ev, item_history(ev), build.ItemTable(ITEMS, F.BUILTIN),
                                 build.UserTable(USERS, F.BUILTIN), 1800, feature_delay_s=120, spec=F.BUILTIN)
    got = {i: H.to_dict(s) for i, s in zip(built.impression_id, built.serialized)}
    # only impressions more than 120 s old count; the age is still measured to the impression
    assert got["s2"][F.USER_ITEM_IMPRESSIONS.name] == [0.0]
    assert got["s5"][F.USER_ITEM_IMPRESSIONS.name] == [3.0]   # s1, s2, s3: before 250 - 120
    assert got["s5"][F.ITEM_SEEN_RECENCY_H.name][0] == pytest.approx(np.float32(150 / 3600), rel=1e-6)


@pytest.mark.parametrize("order", ["in_time", "reversed"])
@pytest.mark.parametrize("same_second", [False, True], ids=["before", "with_its_own_second_applied"])
def test_online_seen_before_is_the_hand_computed_one(redis_server, same_second, order):  # noqa: F811
    """Online from the ``p:ui`` hash, whatever order the impressions arrive in, and also when
    Redis already holds the impression's own second."""
    client, keys = redis_server.client(), redis_layout.Keys("seen")
    for imp_id, (count, age_s) in SEEN_EXPECTED.items():
        imp = next(e for e in SEEN_EVENTS if e["event_id"] == imp_id)
        writer.flush(client, keys)
        writer.load_items(client, keys, ITEMS)
        before = [e for e in SEEN_EVENTS if e["ts"] < imp["ts"] or (same_second and e["ts"] == imp["ts"])]
        before = sorted(before, key=lambda e: (e["ts"], e["event_id"]), reverse=order == "reversed")
        if before:
            writer.FeatureWriter(client, keys).apply(writer.events_frame(before))
        pipe = client.pipeline()
        online.queue_reads(pipe, keys, "u9", [imp["item_id"], "x"], imp["ts"])
        user, imps, clks = online.parse_reads(pipe.execute(), imp["ts"], [imp["item_id"], "x"])
        feats = online.raw_inputs(user, [imp["item_id"], "x"], online.ItemStore.from_hash(
            client.hgetall(keys.items)), imps, clks, imp["ts"])
        for name, value in _seen_row(count, age_s).items():
            assert np.float32(feats[name][0]) == np.float32(value), (imp_id, name, feats[name], value)
        assert [feats[n][1] for n in SEEN] == [0.0, F.RECENCY_CAP_H]   # x was never shown to u9
        off = online.raw_inputs(user, [imp["item_id"]], online.ItemStore(), imps[:1], clks[:1], imp["ts"],
                                F.FeatureSpec(seen_before=False))
        assert not set(SEEN) & set(off)


def test_a_store_seeded_without_the_impression_hashes_is_named_with_its_remedy(redis_server, tmp_path):  # noqa: F811
    from serving.features import bootstrap

    client, keys = redis_server.client(), redis_layout.Keys("seeded")
    writer.flush(client, keys)
    assert redis_layout.seeded_without_seen(client, keys, F.BUILTIN) == ""       # nothing seeded yet
    bootstrap.bootstrap(client, H.make_log(str(tmp_path / "log")), keys, force=True)
    assert client.hget(keys.meta, redis_layout.SEEN_FIELD) == "1"
    assert redis_layout.seeded_without_seen(client, keys, F.BUILTIN) == ""
    assert client.keys("seeded:ui:*")                                             # built from the log
    client.hdel(keys.meta, redis_layout.SEEN_FIELD)                                # as an older bootstrap left it
    why = redis_layout.seeded_without_seen(client, keys, F.BUILTIN)
    assert "without the users' impressions of each post" in why and "--prefix seeded --force" in why
    assert redis_layout.seeded_without_seen(client, keys, F.FeatureSpec(seen_before=False)) == ""
