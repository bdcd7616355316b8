"""Observable user and post attributes derived from the hidden world.

A classifieds log carries more than ids: a user's profile (age band, gender,
occupation) and a post's title and floor area.  Here they are drawn from the
hidden state (interests, categories, prices) with noise, so that they hold a
real but partial signal about a user with no history or a post with no
clicks.  They never enter the click model.

Every draw comes from a generator of its own, seeded by ``(seed, 7919)``, and
happens after the world is built: the main generator, and so the events and
the truth, are the same with and without these attributes.  docs/simulator.md
describes how each attribute relates to the hidden state.
"""
from __future__ import annotations

import logging
from typing import Dict, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feedrank.events.simulator.world import TITLE_FILLERS, Items, Taxonomy, Users

log = logging.getLogger(__name__)

ATTRIBUTE_STREAM = 7919
AGE_BANDS: Tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55+")
OCCUPATIONS: Tuple[str, ...] = ("student", "employed", "self_employed", "unemployed", "relocating", "retired")
# Top interest group -> the occupations it points to (a sub category may override).
OCCUPATION_BY_TOP: Dict[str, Tuple[str, ...]] = {
    "housing": ("relocating",),
    "jobs": ("unemployed", "student"),
    "vehicles": ("employed", "self_employed"),
    "goods": ("employed", "student"),
    "services": ("self_employed", "retired"),
}
OCCUPATION_BY_CATEGORY: Dict[str, Tuple[str, ...]] = {
    "jobs/part_time": ("student",),
    "goods/books": ("student",),
    "housing/commercial": ("self_employed",),
}
OCCUPATION_INFORMATIVE = 0.5   # share of users whose occupation follows their top interest
# Occupation -> probabilities over AGE_BANDS.
AGE_BY_OCCUPATION: Dict[str, Tuple[float, ...]] = {
    "student": (0.75, 0.2, 0.03, 0.01, 0.01),
    "employed": (0.12, 0.34, 0.28, 0.18, 0.08),
    "self_employed": (0.05, 0.25, 0.32, 0.25, 0.13),
    "unemployed": (0.3, 0.3, 0.18, 0.14, 0.08),
    "relocating": (0.2, 0.45, 0.22, 0.09, 0.04),
    "retired": (0.0, 0.0, 0.02, 0.13, 0.85),
}
GENDER_UNKNOWN = 0.2           # share of users who leave gender empty
# Top interest category -> probability of "f" among users who state a gender (default 0.5).
FEMALE_SHARE: Dict[str, float] = {
    "goods/baby_kids": 0.75, "goods/clothing": 0.75, "services/cleaning": 0.7, "services/wedding": 0.7,
    "housing/shared": 0.6, "vehicles/used_car": 0.3, "vehicles/motorcycle": 0.25, "vehicles/trucks": 0.2,
    "jobs/driver": 0.2, "jobs/general_labor": 0.3, "services/repair": 0.3,
}
# Housing sub category -> median floor area in m2 (log-normal, sd 0.35, tied to the price).
AREA_MEDIAN: Dict[str, float] = {
    "housing/rent": 60.0, "housing/shared": 15.0, "housing/sale_new": 95.0,
    "housing/sale_used": 80.0, "housing/commercial": 120.0, "housing/short_term": 35.0,
}
AREA_SD = 0.35
AREA_PRICE_CORR = 0.7          # correlation of log area with the price within the category
TITLE_REGION_SHARE = 0.5       # share of titles that name the post's region
TITLE_EXTRA_FILLER_SHARE = 0.3  # share of titles with a second filler word


def attribute_rng(seed: int) -> np.random.Generator:
    """The attributes' own generator (never the simulation's)."""
    return np.random.Generator(np.random.PCG64([seed, ATTRIBUTE_STREAM]))


def top_interest(users: Users) -> np.ndarray:
    """Each user's main category at the start of the simulation."""
    return users.interest.argmax(1)


def user_attributes(rng: np.random.Generator, tax: Taxonomy, users: Users) -> Dict[str, np.ndarray]:
    """``age_band``, ``gender`` and ``occupation`` per user (object arrays of str)."""
    n = len(users.region)
    top_cat = top_interest(users)
    occ_idx = {o: i for i, o in enumerate(OCCUPATIONS)}
    # per category: the occupations its fans lean to
    leaning = [OCCUPATION_BY_CATEGORY.get(c, OCCUPATION_BY_TOP[c.split("/")[0]]) for c in tax.categories]
    informative = rng.random(n) < OCCUPATION_INFORMATIVE
    pick = rng.random(n)
    random_occ = rng.integers(0, len(OCCUPATIONS), n)
    lean_occ = np.array([occ_idx[leaning[c][min(int(p * len(leaning[c])), len(leaning[c]) - 1)]]
                         for c, p in zip(top_cat, pick)], dtype=np.int64)
    occ = np.where(informative, lean_occ, random_occ)
    age_p = np.array([AGE_BY_OCCUPATION[o] for o in OCCUPATIONS])
    age_p = age_p / age_p.sum(1, keepdims=True)
    cum = np.cumsum(age_p[occ], axis=1)
    age = np.minimum((rng.random(n)[:, None] > cum).sum(1), len(AGE_BANDS) - 1)
    f_share = np.array([FEMALE_SHARE.get(c, 0.5) for c in tax.categories])[top_cat]
    unknown = rng.random(n) < GENDER_UNKNOWN
    female = rng.random(n) < f_share
    gender = np.where(unknown, "", np.where(female, "f", "m")).astype(object)
    return {"age_band": np.array(AGE_BANDS, dtype=object)[age], "gender": gender,
            "occupation": np.array(OCCUPATIONS, dtype=object)[occ]}


def item_attributes(rng: np.random.Generator, tax: Taxonomy, items: Items) -> Dict[str, np.ndarray]:
    """``title`` (4 to 6 token ids, -1 padded: the post's category tokens and filler, then
    optionally its region token and a second filler) and ``area_m2`` (NaN outside housing)."""
    n = len(items.cat)
    region_tok = np.array([tax.tokens.index(r) for r in tax.regions])[items.region]
    filler0 = len(tax.tokens) - len(TITLE_FILLERS)
    with_region = rng.random(n) < TITLE_REGION_SHARE
    with_filler = rng.random(n) < TITLE_EXTRA_FILLER_SHARE
    filler = filler0 + rng.integers(0, len(TITLE_FILLERS), n)
    title = np.full((n, items.title_tokens.shape[1] + 2), -1, dtype=np.int64)
    title[:, :items.title_tokens.shape[1]] = items.title_tokens
    title[:, -2] = np.where(with_region, region_tok, -1)
    title[:, -1] = np.where(with_filler, filler, -1)
    median = np.array([AREA_MEDIAN.get(c, np.nan) for c in tax.categories])[items.cat]
    noise = rng.standard_normal(n)
    z = AREA_PRICE_CORR * items.price_z + np.sqrt(1.0 - AREA_PRICE_CORR ** 2) * noise
    area = np.round(median * np.exp(AREA_SD * z), 0)
    area = np.where(np.isnan(median), np.nan, np.maximum(area, 5.0))
    return {"title_tokens": title, "area_m2": area}


def title_strings(tax: Taxonomy, title_tokens: np.ndarray) -> pa.Array:
    """Space-joined title text per row of token ids (-1 is no token)."""
    vocab = pa.array(tax.tokens)
    cols = [vocab.take(pa.array(np.maximum(title_tokens[:, j], 0), mask=title_tokens[:, j] < 0))
            for j in range(title_tokens.shape[1])]
    return pc.binary_join_element_wise(*cols, " ", null_handling="skip")
