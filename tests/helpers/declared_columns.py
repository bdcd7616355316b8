"""Declared columns of every kind on both tables, for the offline/online tests.

`ALL_KINDS` declares a categorical, a numeric and a tokens column on the
``items`` and on the ``users`` table: the simulator's own attributes (a post's
title and floor area, a user's occupation) plus the three columns
`add_columns` writes into a simulated log (a post's seller type, a user's age
and interests).  Every added column has missing cells, so the example
generator's missing values are served too.
"""
from __future__ import annotations

import numpy as np

from feedrank import features as F
from tests.helpers import examplegen as H

ALL_KINDS = F.FeatureSpec((
    F.Declared("items", "title", "tokens", max_tokens=5, oov_buckets=10),
    F.Declared("items", "area_m2", "numeric", default=-1.0, log1p=True),
    F.Declared("items", "seller", "categorical"),
    F.Declared("users", "occupation", "categorical"),
    F.Declared("users", "age_years", "numeric", default=30.0),
    F.Declared("users", "interests", "tokens", max_tokens=3, oov_buckets=5),
))

SELLERS = ("private", "dealer", "agency", "shop")
INTERESTS = ("cars", "pets", "garden", "music", "sport", "cooking", "travel", "books")


def add_columns(log_dir: str, seed: int = 5) -> str:
    """Adds ``seller`` to the log's items table and ``age_years`` and ``interests``
    to its users table (in place); returns ``log_dir``.

    ``seller``: one of `SELLERS`, missing for every 6th post; ``age_years``: 18..70,
    NaN (the declared default) for every 7th user; ``interests``: 1 to 5
    space-separated words of `INTERESTS` (more than ``max_tokens`` for some),
    missing for every 5th user.
    """
    rng = np.random.default_rng(seed)
    items, users = H.load(log_dir, "items"), H.load(log_dir, "users")
    items["seller"] = [None if i % 6 == 0 else SELLERS[rng.integers(len(SELLERS))] for i in range(len(items))]
    users["age_years"] = np.where(np.arange(len(users)) % 7 == 0, np.nan,
                                  rng.integers(18, 71, len(users)).astype(float))
    users["interests"] = [None if i % 5 == 0 else " ".join(rng.choice(INTERESTS, rng.integers(1, 6)))
                          for i in range(len(users))]
    H.save(items, log_dir, "items")
    H.save(users, log_dir, "users")
    return log_dir
