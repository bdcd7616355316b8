"""THE leakage test: the future must not change the past.

Pick a cut time T.  Perturb, add and delete events with ``ts >= T`` (clicks
on impressed items, new impressions, searches, conversions, re-timed and
re-targeted events).  Then every example whose impression ts is before
``T - label_window_s`` must be byte-identical, and every example before T
must have identical non-label features.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feedrank import features as F
from feedrank.events import contract
from tests import examplegen_helpers as H

WINDOW = 1800


def _perturb(ev: pd.DataFrame, items: pd.DataFrame, cut: int, rng: np.random.Generator) -> pd.DataFrame:
    """Changes only events with ts >= cut; the max-ts event is kept as is."""
    max_ts = int(ev.ts.max())
    last = ev.ts == max_ts
    future = (ev.ts >= cut) & ~last
    past, fut = ev[~future], ev[future].copy()
    fut = fut[rng.random(len(fut)) > 0.3]                                     # delete 30%
    move = rng.random(len(fut)) < 0.2                                         # re-time 20%
    fut.loc[move, "ts"] = rng.integers(cut, max_ts + 1, move.sum())
    swap = (rng.random(len(fut)) < 0.1) & (fut.event != contract.SEARCH).to_numpy()
    fut.loc[swap, "item_id"] = rng.choice(items.item_id.to_numpy(), swap.sum())  # re-target 10%
    recent = ev[(ev.event == contract.IMPRESSION) & (ev.ts >= cut - WINDOW) & (ev.ts < cut)]
    older = ev[(ev.event == contract.IMPRESSION) & (ev.ts < cut - WINDOW)]
    add = []
    base = dict(request_id="", query="", dwell_s=np.nan)
    for j, r in enumerate(recent.sample(min(60, len(recent)), random_state=1).itertuples()):
        t = int(min(max_ts, max(cut, r.ts + WINDOW - 5)))        # a click inside r's label window
        add.append(dict(base, event_id=f"new{j}c", user_id=r.user_id, item_id=r.item_id, event="click", ts=t))
        add.append(dict(base, event_id=f"new{j}v", user_id=r.user_id, item_id=r.item_id,
                        event="conversion", ts=t))
    for j, r in enumerate(older.sample(80, random_state=2).itertuples()):
        t = cut + j % 7                                               # at (or right after) the cut
        add.append(dict(base, event_id=f"new{j}i", user_id=r.user_id, item_id=r.item_id,
                        event="impression", ts=t, request_id="reqnew"))
        add.append(dict(base, event_id=f"new{j}k", user_id=ev.user_id.iloc[j], item_id=r.item_id,
                        event="click", ts=t))
        add.append(dict(base, event_id=f"new{j}s", user_id=r.user_id, item_id="", event="search",
                        ts=cut, query="future leak tokens"))
    out = pd.concat([past, fut, pd.DataFrame(add)], ignore_index=True)
    return out.sample(frac=1.0, random_state=3).reset_index(drop=True)   # file order changes too


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    a = H.make_log(str(tmp_path_factory.mktemp("orig")), days=4, seed=5)
    ev, items = H.load(a), H.load(a, "items")
    imp_ts = np.sort(ev.ts[ev.event == contract.IMPRESSION].to_numpy())
    cut = int(imp_ts[int(0.6 * len(imp_ts))]) + 300   # busy time: impressions right before T
    b = H.copy_log(a, str(tmp_path_factory.mktemp("perturbed")))
    H.save(_perturb(ev, items, cut, np.random.default_rng(0)), b)
    return a, b, cut


def test_future_events_do_not_leak(logs, tmp_path):
    a, b, cut = logs
    res_a, res_b = H.run(a, str(tmp_path / "a")), H.run(b, str(tmp_path / "b"))
    assert res_a["max_ts"] == res_b["max_ts"]
    ex_a, ex_b = H.by_impression(res_a["output_dir"]), H.by_impression(res_b["output_dir"])
    labels = set(F.LABELS)
    n_exact = n_features = label_changed = 0
    for imp_id, rec in ex_a.items():
        d = H.to_dict(rec)
        ts = d["ts"][0]
        if ts >= cut:
            continue
        assert imp_id in ex_b, f"impression {imp_id} before the cut vanished"
        if ts < cut - WINDOW:
            assert ex_b[imp_id] == rec, f"example {imp_id} (ts {ts}) changed"
            n_exact += 1
        db = H.to_dict(ex_b[imp_id])
        assert {k: v for k, v in d.items() if k not in labels} == \
               {k: v for k, v in db.items() if k not in labels}, f"features of {imp_id} changed"
        n_features += 1
        label_changed += d[F.LABEL] != db[F.LABEL] or d[F.CONVERSION_LABEL] != db[F.CONVERSION_LABEL]
    assert n_exact > 300 and n_features > n_exact + 5
    assert label_changed > 0            # the perturbation reached the label windows
    after = [k for k, v in ex_b.items() if H.to_dict(v)["ts"][0] >= cut]
    assert sum(ex_a.get(k) != ex_b[k] for k in after) > 0   # and the future did change


def test_sampling_decisions_are_stable_before_the_cut(logs, tmp_path):
    a, b, cut = logs
    res_a = H.run(a, str(tmp_path / "a"), negative_sampling_rate=0.4, seed=9)
    res_b = H.run(b, str(tmp_path / "b"), negative_sampling_rate=0.4, seed=9)
    ex_a = {k: v for k, v in H.by_impression(res_a["output_dir"]).items()
            if H.to_dict(v)["ts"][0] < cut - WINDOW}
    ex_b = {k: v for k, v in H.by_impression(res_b["output_dir"]).items()
            if H.to_dict(v)["ts"][0] < cut - WINDOW}
    assert ex_a and ex_a == ex_b
