"""Tests of the simulator's observable user and post attributes (attributes.py).

The attributes come from their own generator: the events and the truth must be
byte-identical to those of the same world drawn without them, they must be
deterministic per seed, and they must carry the hidden state's signal (occupation
and gender follow the top interest above chance, area follows the price).
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd
import pytest

from feedrank.events import contract, io
from feedrank.events.simulator import attributes, simulate
from feedrank.events.simulator.world import TITLE_FILLERS, build_taxonomy, make_items, make_users

WORLD = dict(users=3000, items=4000, days=2, seed=11)


def _bytes(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("attrs"))
    simulate(out, verbose=False, **WORLD)
    return out


def _hidden(seed: int, users: int, items: int):
    """The hidden world of ``simulate`` for a seed: its first draws, in its order."""
    rng = np.random.Generator(np.random.PCG64(seed))
    tax = build_taxonomy(rng)
    it = make_items(rng, tax, items, 0, WORLD["days"], 0.4)
    us = make_users(rng, tax, users, 0.15)
    return tax, it, us


def test_columns_written_and_read_by_the_contract(world):
    items = pd.read_parquet(os.path.join(world, "items.parquet"))
    users = pd.read_parquet(os.path.join(world, "users.parquet"))
    assert {"title", "area_m2"} <= set(items.columns)
    assert {"age_band", "gender", "occupation"} <= set(users.columns)
    assert set(users.age_band) == set(attributes.AGE_BANDS)
    assert set(users.occupation) == set(attributes.OCCUPATIONS)
    assert set(users.gender) == {"f", "m", ""}
    assert 0.15 < (users.gender == "").mean() < 0.25
    housing = items.category_id.str.startswith("housing/")
    assert items.area_m2[housing].notna().all() and items.area_m2[~housing].isna().all()
    assert (items.area_m2[housing] >= 5).all()
    n_tok = items.title.str.split(" ").str.len()
    assert n_tok.between(4, 6).all() and n_tok.nunique() == 3
    # the title names the post's region when it names one
    region_tok = items.title.str.split(" ").str[4]
    named = region_tok.str.match(r"^r\d\d$").fillna(False)
    assert 0.4 < named.mean() < 0.6
    assert (region_tok[named] == items.region_id[named]).all()
    assert set(items.title.str.split(" ").str[-1][n_tok == 6]) <= set(TITLE_FILLERS)
    # the contract accepts the extra columns
    assert set(io.check_log(world)) == set(contract.TABLES)


def test_events_unchanged_and_attributes_deterministic(world, tmp_path, monkeypatch):
    """Same seed: identical files.  The events and truth equal, byte for byte, those
    written with the attributes drawn from a different stream (the main generator untouched)."""
    again = str(tmp_path / "again")
    simulate(again, verbose=False, **WORLD)
    for name in ("events.parquet", "items.parquet", "users.parquet", contract.TRUTH_FILE):
        assert _bytes(os.path.join(world, name)) == _bytes(os.path.join(again, name)), name
    other = str(tmp_path / "other_stream")
    monkeypatch.setattr(attributes, "ATTRIBUTE_STREAM", attributes.ATTRIBUTE_STREAM + 1)
    simulate(other, verbose=False, **WORLD)
    for name in ("events.parquet", contract.TRUTH_FILE):
        assert _bytes(os.path.join(world, name)) == _bytes(os.path.join(other, name)), name
    a = pd.read_parquet(os.path.join(world, "users.parquet"))
    b = pd.read_parquet(os.path.join(other, "users.parquet"))
    assert (a.occupation != b.occupation).mean() > 0.3


def _mutual_information(x: pd.Series, y: pd.Series) -> float:
    joint = pd.crosstab(x, y, normalize=True).to_numpy()
    px, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (px @ py)[nz])).sum())


def test_occupation_and_gender_follow_the_top_interest(world):
    """Occupation agrees with the top interest group's leaning at about 0.5 + 0.5 x chance,
    well above chance, and shares mutual information with it far above a shuffled pairing."""
    tax, _, us = _hidden(WORLD["seed"], WORLD["users"], WORLD["items"])
    users = pd.read_parquet(os.path.join(world, "users.parquet"))
    top = attributes.top_interest(us)
    leaning = [attributes.OCCUPATION_BY_CATEGORY.get(c, attributes.OCCUPATION_BY_TOP[c.split("/")[0]])
               for c in tax.categories]
    agree = np.array([o in leaning[c] for o, c in zip(users.occupation, top)])
    chance = np.mean([len(leaning[c]) / len(attributes.OCCUPATIONS) for c in top])
    assert agree.mean() > chance + 0.35, (agree.mean(), chance)
    group = pd.Series(np.array(tax.tops)[tax.top_of[top]])
    mi = _mutual_information(users.occupation, group)
    shuffled = _mutual_information(users.occupation, group.sample(frac=1.0, random_state=0).reset_index(drop=True))
    assert mi > 0.15 and mi > 10 * shuffled, (mi, shuffled)
    # age follows occupation: students are young, the retired old
    assert (users.age_band[users.occupation == "student"] == "18-24").mean() > 0.6
    assert (users.age_band[users.occupation == "retired"] == "55+").mean() > 0.7
    # gender leans with the interest: fans of vehicles state "m" more often than fans of baby goods
    stated = users.gender != ""
    cat = pd.Series(np.array(tax.categories)[top])
    f_veh = (users.gender[stated & cat.str.startswith("vehicles/")] == "f").mean()
    f_kids = (users.gender[stated & cat.isin(["goods/baby_kids", "goods/clothing"])] == "f").mean()
    assert f_kids - f_veh > 0.25, (f_kids, f_veh)


def test_area_follows_price_within_housing(world):
    items = pd.read_parquet(os.path.join(world, "items.parquet"))
    h = items[items.category_id.str.startswith("housing/")].copy()
    h["lp"], h["la"] = np.log(h.price), np.log(h.area_m2)
    corr = h.groupby("category_id").apply(lambda g: np.corrcoef(g.lp, g.la)[0, 1])
    assert (corr > 0.4).all(), corr
    med = h.groupby("category_id").area_m2.median()
    assert med["housing/shared"] < med["housing/rent"] < med["housing/sale_new"]
