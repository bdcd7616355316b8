"""Tests of the simulator's order-carrying mechanisms (docs/simulator.md).

Each mechanism, switched on alone, must move the true click probability
(truth.parquet) in its designed direction, measured from the log the way a
model could see it, against the world without mechanisms on the same seed.
Small worlds: about a second each.
"""
from __future__ import annotations

import os
from typing import Dict, List

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from feedrank import features as F
from feedrank.events import contract, io
from feedrank.events.simulator import auc, mechanisms, simulate
from feedrank.events.simulator.world import TAXONOMY, TOP_TOKENS
from feedrank.examples import beam_pipeline

WORLD = dict(users=3000, items=6000, days=6, seed=1)
ALONE = ("mission", "search_intent", "funnel", "satiation", "revisit", "position_bias")


def _load(d: str):
    ev = pd.read_parquet(os.path.join(d, "events.parquet"))
    items = pd.read_parquet(os.path.join(d, "items.parquet"))
    ev = ev.merge(items[["item_id", "category_id", "region_id"]], on="item_id", how="left")
    imp = ev[ev.event == contract.IMPRESSION].merge(pd.read_parquet(os.path.join(d, contract.TRUTH_FILE)),
                                                    on="event_id")
    imp["logit"] = np.log(imp.p_click / (1.0 - imp.p_click))
    return ev, imp


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> Dict[str, tuple]:
    out = {}
    for name in ("off",) + ALONE:
        d = str(tmp_path_factory.mktemp(name))
        simulate(d, verbose=False, mechanisms=name, **WORLD)
        out[name] = _load(d)
    return out


def _lift(imp: pd.DataFrame, flag: np.ndarray) -> float:
    """Mean true logit of flagged impressions minus that of the others."""
    return float(imp.logit[flag].mean() - imp.logit[~flag].mean())


def _after(imp: pd.DataFrame, src: pd.DataFrame, keys: List[str], window_s: int) -> np.ndarray:
    """Impressions preceded, within ``window_s``, by a ``src`` row (with ``t0``) sharing ``keys``."""
    m = imp[["event_id", "ts"] + keys].merge(src[keys + ["t0"]], on=keys)
    m = m[(m.t0 < m.ts) & (m.t0 >= m.ts - window_s)]
    return imp.event_id.isin(set(m.event_id)).to_numpy()


def _events(ev: pd.DataFrame, kind: str) -> pd.DataFrame:
    return ev[ev.event == kind].rename(columns={"ts": "t0"})


def mission_stat(ev, imp) -> float:
    """Posts of the category of a view in the last 10 minutes (the session's pursuit)."""
    return _lift(imp, _after(imp, _events(ev, contract.VIEW), ["user_id", "category_id"], 600))


def search_stat(ev, imp) -> float:
    """Posts of a category whose token led a search in the last 15 minutes."""
    tok_cats = {}
    for top, subs in TAXONOMY.items():
        for sub, (_, _, toks) in subs.items():
            for t in toks + TOP_TOKENS[top]:
                tok_cats.setdefault(t, []).append(f"{top}/{sub}")
    s = _events(ev, contract.SEARCH)[["user_id", "t0", "query"]].copy()
    s["category_id"] = s["query"].str.split().str[0].map(lambda t: tok_cats.get(t, []))
    s = s.explode("category_id").dropna()
    return _lift(imp, _after(imp, s, ["user_id", "category_id"], 900))


def funnel_stat(ev, imp) -> float:
    """Posts of a funnel target in the 4 days after a conversion in its source."""
    cats = sorted(set(imp.category_id))
    rows = [(s, t) for src, targets in mechanisms.FUNNELS.items()
            for s in ([c for c in cats if c.startswith(src[:-1])] if src.endswith("/*") else [src])
            for t, _ in targets]
    conv = _events(ev, contract.CONVERSION)[["user_id", "category_id", "t0"]].rename(columns={"category_id": "src"})
    opened = conv.merge(pd.DataFrame(rows, columns=["src", "category_id"]), on="src")
    return _lift(imp, _after(imp, opened, ["user_id", "category_id"], 4 * 86400))


def satiation_stat(ev, imp) -> float:
    """Posts of a category the user converted in within the last 6 hours."""
    return _lift(imp, _after(imp, _events(ev, contract.CONVERSION), ["user_id", "category_id"], 6 * 3600))


def revisit_stat(ev, imp) -> float:
    """Posts the user viewed in the last 2 days and never contacted."""
    key = ["user_id", "item_id"]
    viewed = _after(imp, _events(ev, contract.VIEW), key, 2 * 86400)
    contacted = _after(imp, _events(ev, contract.CONVERSION), key, 30 * 86400)
    return _lift(imp, viewed & ~contacted)


@pytest.mark.parametrize("name, stat, margin", [
    ("mission", mission_stat, 0.1),          # about +0.2 on four seeds
    ("search_intent", search_stat, 0.3),     # about +0.65
    ("funnel", funnel_stat, 0.5),            # about +1.2
    ("satiation", satiation_stat, -0.3),     # about -0.6
    ("revisit", revisit_stat, 0.25),         # about +0.5
])
def test_mechanism_alone_moves_truth_its_way(worlds, name, stat, margin):
    off, on = stat(*worlds["off"]), stat(*worlds[name])
    if margin > 0:
        assert on > off + margin, (name, off, on)
    else:
        assert on < off + margin, (name, off, on)


def test_position_logged_and_bias_decreases_with_position(worlds, tmp_path):
    # the column: int64 in the file, on impressions only, 0-based within each request
    d = str(tmp_path / "pos")
    simulate(d, verbose=False, mechanisms="position_bias", users=300, items=800, days=3, seed=7)
    assert pq.read_schema(os.path.join(d, "events.parquet")).field("position").type == "int64"
    io.check_log(d)  # the contract's validation accepts it
    ev = pd.read_parquet(os.path.join(d, "events.parquet"))
    imp = ev.event == contract.IMPRESSION
    assert ev.position[imp].notna().all() and ev.position[~imp].isna().all()
    per_req = ev[imp].groupby("request_id").position
    assert (per_req.min() == 0).all() and (per_req.nunique() == per_req.size()).all()
    # the truth: mean logit falls with position, by more than without the bias
    _, with_bias = worlds["position_bias"]
    bins = pd.cut(with_bias.position, [-1, 0, 3, 9, 99])
    means = with_bias.groupby(bins, observed=True).logit.mean().to_numpy()
    assert len(means) == 4 and (np.diff(means) < 0).all(), means
    _, without = worlds["off"]
    drop = means[0] - means[-1]
    assert drop > 0.5, means  # 0.3 * ln(1 + position): about 0.8 from position 0 to 10+
    assert "position" not in without.columns


def _same_day_drift(d: str):
    """Truth-logit change of a (user, post) pair shown twice the same day: squared
    change over >= 6 h gaps minus that over < 2 h gaps, and its t statistic."""
    ev = pd.read_parquet(os.path.join(d, "events.parquet"))
    i = ev[ev.event == contract.IMPRESSION].merge(pd.read_parquet(os.path.join(d, contract.TRUTH_FILE)),
                                                  on="event_id")[["user_id", "item_id", "ts", "p_click"]]
    i["logit"] = np.log(i.p_click / (1 - i.p_click))
    i["day"] = (i.ts - 1709251200) // 86400  # days from the default start date, 2024-03-01 UTC
    m = i.merge(i, on=["user_id", "item_id", "day"])
    m = m[m.ts_y > m.ts_x]
    gap, d2 = m.ts_y - m.ts_x, (m.logit_y - m.logit_x) ** 2
    a, b = d2[gap >= 6 * 3600], d2[gap < 2 * 3600]
    return (a.mean() - b.mean()) / np.sqrt(a.var() / len(a) + b.var() / len(b))


def test_continuous_drift_moves_interest_within_the_day(tmp_path):
    """Without it a user's interests hold still for a day (the same pair later the same
    day differs by the noise term only); with it they move within the day."""
    t = {}
    for name in ("off", "continuous_drift"):
        d = str(tmp_path / name)
        simulate(d, verbose=False, mechanisms=name, users=8000, items=3000, days=6, seed=1, interest_shift=0.5)
        t[name] = _same_day_drift(d)
    assert abs(t["off"]) < 3.0 and t["continuous_drift"] > 4.0, t  # measured: -0.8 and 7.0


def test_realistic_world_deterministic_oracle_exact_and_readable(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    sa = simulate(a, verbose=False, mechanisms="realistic", users=400, items=900, days=4, seed=5)
    simulate(b, verbose=False, mechanisms=mechanisms.REALISTIC, users=400, items=900, days=4, seed=5)
    for name in ("events.parquet", "items.parquet", "users.parquet", contract.TRUTH_FILE):
        pd.testing.assert_frame_equal(pd.read_parquet(os.path.join(a, name)), pd.read_parquet(os.path.join(b, name)))
    # the truth is the probability the clicks were drawn with
    ev, imp = _load(a)
    clicked = ev[ev.event == contract.CLICK][["request_id", "item_id"]].assign(y=1)
    y = imp.merge(clicked, on=["request_id", "item_id"], how="left").y.fillna(0).to_numpy()
    assert abs(y.mean() - imp.p_click.mean()) < 4 * np.sqrt(imp.p_click.mean() / len(imp))
    assert abs(sa["oracle_auc"] - auc(imp.p_click.to_numpy(), y)) < 1e-9
    # the aggregates-only oracle drops the order-carrying terms: it ranks worse
    assert (imp.p_click_aggregate != imp.p_click).mean() > 0.3
    assert auc(imp.p_click_aggregate.to_numpy(), y) < sa["oracle_auc"] - 0.01
    # the example generator reads the position column as an optional column
    summary = beam_pipeline.run(a, str(tmp_path / "ex"), str(tmp_path / "q"), {"num_shards": 1}, spec=F.BUILTIN)
    assert summary["quarantined"] == 0 and summary["events_used"] == summary["events_read"] == len(ev)
    assert summary["impressions"] == len(imp)


@pytest.mark.parametrize("spec, expect", [
    ("off", mechanisms.OFF), ("", mechanisms.OFF), ("realistic", mechanisms.REALISTIC),
    ("funnel, revisit", mechanisms.Mechanisms(funnel=1.0, revisit=0.8)),
    ({"satiation": 2.0}, mechanisms.Mechanisms(satiation=2.0)),
])
def test_parse_mechanisms(spec, expect):
    assert mechanisms.parse(spec) == expect


@pytest.mark.parametrize("spec, message", [
    ("mission,telepathy", "unknown mechanism(s) ['telepathy']"),
    ({"mision": 1.0}, "unknown mechanism field(s) ['mision']"),
    (3, "mechanisms must be one of"),
])
def test_parse_mechanisms_names_bad_input(spec, message):
    with pytest.raises(ValueError) as e:
        mechanisms.parse(spec)
    assert message in str(e.value)


def test_realistic_switches_every_mechanism_on():
    real = mechanisms.REALISTIC
    assert real.active and not mechanisms.OFF.active
    assert all(getattr(real, f) for fields in mechanisms.SWITCHES.values() for f in fields)
    assert mechanisms.parse(",".join(mechanisms.SWITCHES)) == real
