"""Attribute snapshots (``valid_from`` in the items and users tables): an example
uses the attributes valid at its impression time, for the candidate, the
behaviour-sequence posts and the user's region."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feedrank import features as F
from feedrank.events import contract
from feedrank.examples import build, snapshots
from feedrank.examples.history import empty_history
from tests.helpers import examplegen as H

T = 10_000


def test_row_valid_at_a_time():
    items = pd.DataFrame(dict(
        item_id=["a", "a", "a", "b", "c", "c", "a"],
        category_id=["a0", "a1", "a2", "b0", "c0", "c1", "a1dup"],
        region_id="r", price=1.0,
        valid_from=[np.nan, 100, 200, 50, 300, 400, 100]))
    table = build.ItemTable(items, F.BUILTIN)
    ids = np.array(["a", "a", "a", "a", "b", "b", "c", "c", "c", "zz"], dtype=object)
    ts = np.array([0, 100, 199, 10**9, 0, 60, 0, 350, 400, 5], dtype=np.int64)
    rows = table.rows_of(ids, ts)
    cats = [table.row_category[r].decode() if r >= 0 else None for r in rows]
    # NaN: from the beginning; before an id's first valid_from: no row (as an unknown id);
    # equal (id, valid_from): the first in file order
    assert cats == ["a0", "a1", "a1", "a2", None, "b0", None, "c0", "c1", None]
    # row -1 reads the values of a post without a valid row
    assert (table.row_category[-1], table.row_region_str[-1], table.row_category_code[-1]) == (b"", "", -1)
    assert table.row_price[-1] == F.PRICE.default
    assert [c.decode() for c in table.category] == ["a2", "b0", "c1"]     # the latest row
    assert list(table.index) == ["a", "b", "c"] and table.snapshots.multi
    # what serving stores per id: every row with its valid_from, oldest first
    a = table.snapshots.codes(np.array(["a"], dtype=object))[0]
    assert [(vf, table.row_category[r].decode()) for vf, r in table.snapshots.versions(a)] == [
        (None, "a0"), (100, "a1"), (200, "a2")]


def test_a_post_before_its_first_row_is_like_a_post_missing_from_the_table():
    """An impression before the candidate's (and a history post's) first ``valid_from``:
    empty ids, the default price, no category for the user counters; from it on, the row."""
    items = pd.DataFrame(dict(item_id=["a", "b", "c"], category_id=["ca", "cb", "cc"], region_id=["ra", "rb", "rc"],
                              price=[10.0, 7.0, 3.0], valid_from=[T, 0, T]))
    users = pd.DataFrame(dict(user_id=["u"], region_id=["ra"]))
    events = [H.event("k1", "u", "a", "click", 100), H.event("i1", "u", "a", "impression", 200),
              H.event("i2", "u", "b", "impression", 300), H.event("i3", "u", "a", "impression", T),
              H.event("i4", "u", "b", "impression", T + 5), H.event("i5", "u", "c", "impression", 250)]
    ex = _examples(events, items, users)
    # two posts without a valid row share its values, not their ids
    assert (ex["i1"]["item_id"], ex["i5"]["item_id"], ex["i5"]["category_id"]) == (["a"], ["c"], [""])
    assert (ex["i1"]["category_id"], ex["i1"]["region_id"], ex["i1"]["price"]) == ([""], [""], [F.PRICE.default])
    assert ex["i1"]["region_match"] == [0.0]
    assert ex["i2"]["click_category_ids"] == [""] and ex["i2"]["click_item_ids"] == ["a"]
    assert (ex["i3"]["category_id"], ex["i3"]["price"], ex["i3"]["region_match"]) == (["ca"], [10.0], [1.0])
    assert ex["i4"]["click_category_ids"] == ["ca"]


def test_without_valid_from_the_first_row_wins():
    items = pd.DataFrame(dict(item_id=["a", "b", "a"], category_id=["a0", "b0", "a1"], region_id="r",
                              price=[1.0, np.nan, 3.0]))
    table = build.ItemTable(items, F.BUILTIN)
    assert not table.snapshots.multi
    rows = table.rows_of(np.array(["a", "b"], dtype=object), np.array([0, 10**9]))
    assert [table.row_category[r] for r in rows] == [b"a0", b"b0"]
    assert table.price.tolist() == [1.0, 0.0]
    users = build.UserTable(pd.DataFrame(dict(user_id=["u", "v"], region_id=["r1", ""])), F.BUILTIN)
    assert users.regions(np.array(["u", "v", "w"], dtype=object), np.zeros(3)).tolist() == ["r1", "", ""]


def _examples(events, items, users):
    ev = pd.DataFrame(events)[build.EVENT_COLUMNS]
    built = build.build_examples(ev, empty_history(), build.ItemTable(items, F.BUILTIN),
                                 build.UserTable(users, F.BUILTIN), 1800, spec=F.BUILTIN)
    return {i: H.to_dict(s) for i, s in zip(built.impression_id, built.serialized)}


def test_examples_use_the_attributes_of_their_impression_time():
    items = pd.DataFrame(dict(
        item_id=["a", "a", "b"], category_id=["cat_old", "cat_new", "cat_b"],
        region_id=["r_old", "r_new", "r_b"], price=[10.0, 5.0, 7.0], valid_from=[0, T, 0]))
    users = pd.DataFrame(dict(user_id=["u", "u"], region_id=["r_old", "r_new"], valid_from=[np.nan, T]))
    events = [H.event("k1", "u", "a", "click", 100), H.event("v1", "u", "a", "view", 200),
              H.event("i1", "u", "a", "impression", 300), H.event("i2", "u", "b", "impression", 400),
              H.event("i3", "u", "a", "impression", T), H.event("i4", "u", "b", "impression", T + 50)]
    ex = _examples(events, items, users)
    assert ex["i1"]["price"] == [10.0] and ex["i1"]["category_id"] == ["cat_old"]
    assert ex["i3"]["price"] == [5.0] and ex["i3"]["category_id"] == ["cat_new"]
    assert ex["i1"]["user_region_id"] == ["r_old"] and ex["i1"]["region_match"] == [1.0]
    assert ex["i3"]["user_region_id"] == ["r_new"] and ex["i3"]["region_match"] == [1.0]
    # the clicked post's attributes follow the impression's time, not the click's
    assert ex["i2"]["click_category_ids"] == ["cat_old"] and ex["i2"]["view_region_ids"] == ["r_old"]
    assert ex["i4"]["click_category_ids"] == ["cat_new"] and ex["i4"]["view_region_ids"] == ["r_new"]
    assert ex["i4"]["click_item_ids"] == ["a"] and ex["i4"]["price"] == [7.0]
    assert ex["i3"]["interest_cat_share"] == [1.0] and ex["i1"]["interest_cat_share"] == [1.0]


@pytest.fixture(scope="module")
def baseline(base_run):
    res = base_run   # tests/conftest.py: the shared run of the shared base_log
    return dict(res, by_impression=H.by_impression(res["output_dir"]))


def test_a_later_price_cut_does_not_change_earlier_examples(base_log, baseline, tmp_path):
    log = H.copy_log(base_log, str(tmp_path / "log"))
    ev, items = H.load(log), H.load(log, "items")
    imps = ev[ev.event == contract.IMPRESSION]
    cut = baseline["valid_start_ts"]
    busy = imps.item_id.value_counts().index[:10]
    busy = [i for i in busy if (imps[imps.item_id == i].ts >= cut).any()][:5]
    assert busy
    later = items[items.item_id.isin(busy)].assign(price=lambda d: d.price * 0.5, valid_from=cut)
    H.save(pd.concat([items.assign(valid_from=np.nan), later], ignore_index=True), log, "items")
    res = H.run(log, str(tmp_path / "out"))
    got = H.by_impression(res["output_dir"])
    assert set(got) == set(baseline["by_impression"])
    by_ts = {k: H.to_dict(v) for k, v in got.items()}
    before = [k for k, d in by_ts.items() if d["ts"][0] < cut]
    assert before and all(got[k] == baseline["by_impression"][k] for k in before)
    price = items.set_index("item_id").price
    cut_items = [d for d in by_ts.values() if d["ts"][0] >= cut and d["item_id"][0] in busy]
    assert cut_items and all(d["price"] == pytest.approx([price[d["item_id"][0]] * 0.5]) for d in cut_items)


def test_expand_windows_shares_elements_per_window_and_epoch():
    lo, hi, ep = np.array([0, 0, 1, 0]), np.array([2, 2, 3, 2]), np.array([0, 1, 1, 0])
    new_lo, new_hi, source, epoch = snapshots.expand_windows(lo, hi, ep)
    windows = [source[a:b].tolist() for a, b in zip(new_lo, new_hi)]
    assert windows == [[0, 1], [0, 1], [1, 2], [0, 1]]
    assert [epoch[a:b].tolist() for a, b in zip(new_lo, new_hi)] == [[0, 0], [1, 1], [1, 1], [0, 0]]
    assert new_lo[0] == new_lo[3] and len(source) == 6
