"""The simulator's e-commerce mode: the log in the contract, page types, sessions,
the truth beside it, and the true next-purchase logit's fixed effects."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from feedrank.events import contract, io, validate
from feedrank.events.simulator import ecommerce as E
from feedrank.events.simulator import ecommerce_io as EIO
from feedrank.events.simulator.generate import main as simulator_main

SMALL = dict(users=300, items=400, categories=12, days=4, seed=3)


@pytest.fixture(scope="module")
def shop_log(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shop"))
    summary = EIO.simulate_ecommerce(out, **SMALL)
    return out, summary


def test_log_is_in_the_contract_and_nothing_is_quarantined(shop_log):
    out, _ = shop_log
    io.check_log(out)
    items = io.read_table(out, contract.ITEMS, extra=["page_type"])
    for tf in io.check_table(out, contract.EVENTS):
        for _, df in io.iter_batches(tf):
            good, bad = validate.split_batch(df, pd.Index(items["item_id"]))
            assert len(bad) == 0 and len(good) == len(df)
    ev = pd.read_parquet(os.path.join(out, "events.parquet"))
    assert set(ev["event"]) == {contract.VIEW, contract.PURCHASE}
    assert ev["event_id"].is_unique and (ev["session_id"] != "").all()
    assert ev.loc[ev.event == contract.VIEW, "dwell_s"].gt(0).all()
    assert ev.loc[ev.event == contract.PURCHASE, "dwell_s"].isna().all()


def test_page_type_is_recoverable_from_the_id(shop_log):
    out, _ = shop_log
    ev = pd.read_parquet(os.path.join(out, "events.parquet"))
    items = pd.read_parquet(os.path.join(out, "items.parquet")).set_index("item_id")
    types = ev["item_id"].map(EIO.page_type)
    assert (types == ev["item_id"].map(items["page_type"])).all()
    assert set(types[ev.event == contract.VIEW]) == {"index", "category", "item"}
    assert (types[ev.event == contract.PURCHASE] == "item").all()
    assert EIO.page_type("x0") == "index" and EIO.page_type("c07") == "category"
    assert EIO.page_type("i0042") == "item" and EIO.page_type("") == "" and EIO.page_type("q1") == ""


def test_sessions_are_recoverable_by_the_30_minute_gap(shop_log):
    out, _ = shop_log
    ev = pd.read_parquet(os.path.join(out, "events.parquet")).sort_values(["user_id", "ts", "event_id"])
    gap = ev.groupby("user_id")["ts"].diff()
    new_sid = ev["session_id"].ne(ev.groupby("user_id")["session_id"].shift())
    assert ((gap > 1800) | gap.isna()).eq(new_sid).all()   # a pause longer than the gap
    first = ev[ev.event == contract.VIEW].groupby("session_id")["item_id"].first()
    assert (first == EIO.INDEX_PAGE).all()


def test_truth_beside_the_log(shop_log):
    out, summary = shop_log
    ev = pd.read_parquet(os.path.join(out, "events.parquet"))
    tr = pd.read_parquet(os.path.join(out, EIO.TRUTH_FILE))
    carts = ev[ev.event == contract.PURCHASE].set_index("event_id")
    assert len(tr) == len(carts) == summary["purchases"] > 50
    assert set(tr["event_id"]) == set(carts.index)
    assert (carts.loc[tr.event_id, "item_id"].to_numpy() == tr["item_id"].to_numpy()).all()
    assert tr["p_item"].between(0, 1).all() and (tr["p_top1"] >= tr["p_item"] - 1e-12).all()
    assert (tr["p_top10"] >= tr["p_top1"]).all()
    assert list(tr.columns) == EIO.TRUTH_COLUMNS
    for sig in ("dwell", "recency", "history"):
        assert tr[f"p_item_no_{sig}"].between(0, 1).all()
    first = ~tr["returning"]                 # no history: taking it out changes nothing
    assert np.allclose(tr.loc[first, "p_item_no_history"], tr.loc[first, "p_item"])
    assert not np.allclose(tr.loc[~first, "p_item_no_history"], tr.loc[~first, "p_item"])
    assert summary["nats_from_dwell"] > 0 and summary["nats_from_recency"] > 0 and summary["nats_from_history"] > 0
    assert ((tr["rank"] == 1) == np.isclose(tr["p_item"], tr["p_top1"])).mean() > 0.99
    views = ev[ev.event == contract.VIEW]
    for r in tr.head(30).itertuples():   # pages_before = the session's views up to the cart
        s = views[(views.session_id == r.session_id) & (views.ts <= r.ts)]
        assert len(s) == r.pages_before
    with open(os.path.join(out, "world.json")) as f:
        world = json.load(f)
    assert world["params"]["effects"] == json.loads(json.dumps(E.EFFECTS.__dict__))
    assert world["summary"]["purchases"] == len(tr)


def test_deterministic_by_seed(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    kw = dict(SMALL, users=80, days=2)
    EIO.simulate_ecommerce(a, **kw)
    EIO.simulate_ecommerce(b, **kw)
    EIO.simulate_ecommerce(c, **dict(kw, seed=4))
    for name in ("events.parquet", "items.parquet", EIO.TRUTH_FILE):
        pd.testing.assert_frame_equal(pd.read_parquet(os.path.join(a, name)), pd.read_parquet(os.path.join(b, name)))
    other = pd.read_parquet(os.path.join(c, "events.parquet"))
    assert not pd.read_parquet(os.path.join(a, "events.parquet")).equals(other)


def test_pages_before_an_add_to_cart_near_twelve(tmp_path):
    s = EIO.simulate_ecommerce(str(tmp_path), users=600, items=800, categories=20, days=5, seed=0)
    assert 9.0 <= s["pages_before_first_purchase"] <= 15.0, s


def _shop() -> E.Shop:
    rng = np.random.default_rng(0)
    return E.make_shop(rng, n_users=3, n_items=30, n_cat=6, activity=0.3)


def test_true_logit_effects_are_the_fixed_sizes():
    shop, eff, brw = _shop(), E.EFFECTS, E.BROWSING
    none = np.zeros(0, dtype=np.int64)
    base = E.purchase_logits(shop, 0, np.array([E.INDEX]), np.array([0]), np.array([6.0]), none)
    item = 5
    cat = int(shop.item_cat[item])
    ref = brw.ref_dwell_s[E.ITEM]
    # one item page, dwell = ref: +view_item on the item, +view_cat on its category
    one = E.purchase_logits(shop, 0, np.array([E.INDEX, E.ITEM]), np.array([0, item]), np.array([6.0, ref]), none)
    d = one - base
    assert d[item] == pytest.approx(eff.view_item + eff.view_cat)
    same_cat = [i for i in np.flatnonzero(shop.item_cat == cat) if i != item]
    assert np.allclose(d[same_cat], eff.view_cat) and np.allclose(d[shop.item_cat != cat], 0.0)
    # longer dwell is a stronger signal (capped); an older page counts less (recency)
    long = E.purchase_logits(shop, 0, np.array([E.INDEX, E.ITEM]), np.array([0, item]),
                             np.array([6.0, 2 * ref]), none)
    assert (long - base)[item] == pytest.approx(2 * (eff.view_item + eff.view_cat))
    capped = E.purchase_logits(shop, 0, np.array([E.INDEX, E.ITEM]), np.array([0, item]),
                               np.array([6.0, 100 * ref]), none)
    assert (capped - base)[item] == pytest.approx(eff.dwell_cap * (eff.view_item + eff.view_cat))
    older = E.purchase_logits(shop, 0, np.array([E.INDEX, E.ITEM, E.INDEX]), np.array([0, item, 0]),
                              np.array([6.0, ref, 6.0]), none)
    assert (older - base)[item] == pytest.approx(eff.recency * (eff.view_item + eff.view_cat))
    # purchase history: a repeat and the complement category
    hist = np.array([item])
    h = E.purchase_logits(shop, 0, np.array([E.INDEX]), np.array([0]), np.array([6.0]), hist) - base
    comp = int(shop.complement[cat])
    assert h[item] == pytest.approx(eff.repeat + (eff.complement if comp == cat else 0.0))
    comp_items = (shop.item_cat == comp) & (np.arange(len(h)) != item)
    assert comp_items.any() and np.allclose(h[comp_items], eff.complement)
    others = (shop.item_cat != comp) & (np.arange(len(h)) != item)
    assert np.allclose(h[others], 0.0)


def test_page_weights_hand_computation():
    types = np.array([E.INDEX, E.CATEGORY, E.ITEM])
    dwell = np.array([12.0, 6.0, 50.0])
    w = E.page_weights(types, dwell)
    r = E.EFFECTS.recency
    assert np.allclose(w, [r ** 2 * 2.0, r * 0.5, 2.0])


def test_cli_mode_ecommerce(tmp_path, capsys):
    out = str(tmp_path / "cli")
    assert simulator_main(["--mode", "ecommerce", "--users", "40", "--items", "60", "--categories", "5",
                           "--days", "2", "--out", out]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["views"] > 0 and os.path.exists(os.path.join(out, EIO.TRUTH_FILE))
    assert [line.split(":")[0] for line in captured.err.splitlines() if line.startswith("[simulate]")] == [
        "[simulate] day 1/2", "[simulate] day 2/2"]
    # --quiet, as in the feed mode: the same log, no progress
    assert simulator_main(["--mode", "ecommerce", "--users", "40", "--items", "60", "--categories", "5",
                           "--days", "2", "--out", out, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["views"] == summary["views"] and "[simulate]" not in captured.err
    with pytest.raises(SystemExit):
        simulator_main(["--mode", "ecommerce", "--items", "3", "--categories", "5", "--out", out])
    assert "--items >= --categories" in capsys.readouterr().err
