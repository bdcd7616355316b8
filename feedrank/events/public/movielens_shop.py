"""MovieLens 100K as a SHOP log: the page views and add-to-carts the session pipeline reads.

The same data as :mod:`feedrank.events.public.movielens` (the copy PyPI's
``recbole==1.2.1`` ships, read by that module's readers), written as the files and
columns of the simulator's e-commerce mode (`feedrank.events.simulator.ecommerce_io`):
``events.parquet`` (event_id, user_id, item_id, event, ts, request_id, query, dwell_s,
session_id), ``items.parquet`` (one item page per movie, ``page_type`` "item") and
``users.parquet``.

How each part maps (docs/public_logs.md):

* every rating is a ``view`` of the movie's page at the rating's second; ``item_id``
  is the movie id as a plain numeric string (``"242"``), ``dwell_s`` is NaN (the log
  has no dwell), ``session_id`` is "" (sessions come from the gap rule);
* sessions: a user's ratings ordered by second (then file order) are cut where the
  pause reaches ``gap_s`` (1800 s), the rule of `feedrank.sessions.sessionize`;
* in each session of two or more ratings, its LAST rating of `LIKED` stars or more
  becomes a ``purchase`` (an add-to-cart) of the movie at its own second, INSTEAD of
  a view: the carted movie is then not among the pages before the cart (a movie is
  rated once), so a model cannot predict it by copying the last page; a session of
  one rating keeps it as a view;
* event ids ``e<9 digits>`` follow the row order: second, user, a view before a
  cart, then file order;
* items and users: the columns of `movielens.items` (item ids without the ``m``
  prefix) and `movielens.users`, plus ``page_type``.

Run:  python -m feedrank.events.public.movielens_shop --out data/ml100k_shop
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from feedrank.events import contract
from feedrank.events.public import movielens

log = logging.getLogger(__name__)

GAP_S = 1800                       # feedrank.sessions.sessionize.DEFAULT_GAP_S
LIKED = movielens.LIKED            # stars from which a rating can be the session's cart
RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
EVENT_ORDER = ["event_id", "user_id", "item_id", "event", "ts", "request_id", "query", "dwell_s", "session_id"]
SOURCE = movielens.SOURCE + ", as a shop log of views and add-to-carts"


def _check(ratings: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in RATING_COLUMNS if c not in ratings.columns]
    if missing:
        raise ValueError(f"ratings need columns {list(RATING_COLUMNS)}, missing {missing}")
    out = pd.DataFrame({"user": ratings["user_id"].astype(str).str.strip().to_numpy(),
                        "item": ratings["item_id"].astype(str).str.strip().to_numpy()})
    for col, name in (("rating", "stars"), ("timestamp", "ts")):
        val = pd.to_numeric(ratings[col], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(val).all():
            raise ValueError(f"ratings column {col!r} has non-numeric values, e.g. row "
                             f"{int(np.flatnonzero(~np.isfinite(val))[0])}")
        out[name] = val
    if ((out["user"] == "") | (out["item"] == "")).any():
        raise ValueError("ratings have empty user_id or item_id values")
    out["ts"] = out["ts"].astype(np.int64)
    return out


def session_numbers(users: np.ndarray, ts: np.ndarray, gap_s: int = GAP_S) -> np.ndarray:
    """0-based session number of each row of events sorted by user then second: a new session
    at a new user or where the pause since the previous row is longer than ``gap_s``."""
    users, ts = np.asarray(users), np.asarray(ts, dtype=np.int64)
    if len(ts) == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.r_[True, (users[1:] != users[:-1]) | (np.diff(ts) > gap_s)]
    return np.cumsum(new) - 1


def ratings_to_shop(ratings: pd.DataFrame, movies: Optional[pd.DataFrame] = None,
                    people: Optional[pd.DataFrame] = None, gap_s: int = GAP_S) -> Dict[str, pd.DataFrame]:
    """``{"events", "items", "users"}`` of a ratings frame (user_id, item_id, rating, timestamp),
    mapped as the module docstring says.  ``movies`` / ``people``: RecBole's item and user
    tables (`movielens.items` / `movielens.users` columns); without them the tables hold the
    rated ids with empty attributes."""
    if not isinstance(gap_s, (int, np.integer)) or gap_s < 1:
        raise ValueError(f"the session gap must be a positive number of seconds, got {gap_s!r}")
    r = _check(ratings)
    r["pos"] = np.arange(len(r))
    r = r.sort_values(["user", "ts", "pos"], kind="stable").reset_index(drop=True)
    r["session"] = session_numbers(r["user"].to_numpy(), r["ts"].to_numpy(), int(gap_s))
    size = r.groupby("session")["pos"].transform("size")
    liked = r[(r["stars"] >= LIKED) & (size >= 2)]
    cart_rows = liked.groupby("session").tail(1).index      # the session's last liked rating
    r["event"] = contract.VIEW
    r.loc[cart_rows, "event"] = contract.PURCHASE
    r["user_id"] = "u" + r["user"]
    r["kind"] = (r["event"] == contract.PURCHASE).astype(np.int8)
    r = r.sort_values(["ts", "user_id", "kind", "pos"], kind="stable").reset_index(drop=True)
    width = max(9, len(str(len(r))))
    events = pd.DataFrame({"event_id": [f"e{i:0{width}d}" for i in range(len(r))], "user_id": r["user_id"],
                           "item_id": r["item"], "event": r["event"], "ts": r["ts"].astype(np.int64),
                           "request_id": "", "query": "", "dwell_s": np.nan, "session_id": ""})[EVENT_ORDER]
    return {"events": events.astype({"dwell_s": "float64"}), "items": _items(r["item"], movies),
            "users": _users(r["user"], people)}


def _items(rated: pd.Series, movies: Optional[pd.DataFrame]) -> pd.DataFrame:
    if movies is not None:
        it = movielens.items(movies)
        it["item_id"] = movies["item_id"].astype(str).str.strip().to_numpy()
    else:
        ids = sorted(set(rated), key=lambda s: (len(s), s))
        it = pd.DataFrame({"item_id": ids, "category_id": "", "region_id": "", "price": np.nan})
    missing = sorted(set(rated) - set(it["item_id"]))
    if missing:
        raise ValueError(f"rated items missing from the movies table, e.g. {missing[:5]}")
    return it.assign(page_type="item").reset_index(drop=True)


def _users(raters: pd.Series, people: Optional[pd.DataFrame]) -> pd.DataFrame:
    if people is not None:
        return movielens.users(people)
    ids = sorted(set(raters), key=lambda s: (len(s), s))
    return pd.DataFrame({"user_id": ["u" + u for u in ids], "region_id": ""})


def counts(tables: Dict[str, pd.DataFrame], gap_s: int = GAP_S) -> Dict[str, int]:
    """events, views, carts, sessions (by the gap rule), users and items of a shop log."""
    ev = tables["events"]
    order = ev.sort_values(["user_id", "ts"], kind="stable")
    sessions = session_numbers(order["user_id"].to_numpy(), order["ts"].to_numpy(), gap_s)
    return {"events": len(ev), "views": int((ev["event"] == contract.VIEW).sum()),
            "carts": int((ev["event"] == contract.PURCHASE).sum()),
            "sessions": int(sessions[-1] + 1) if len(sessions) else 0,
            "users": len(tables["users"]), "items": len(tables["items"])}


def convert(out_dir: str, source: Optional[str] = None) -> Dict[str, int]:
    """Writes the shop log of MovieLens 100K to ``out_dir`` (from ``source``, an ``ml-100k``
    folder of RecBole atomic files; default: the installed RecBole's); returns `counts`."""
    src = source or movielens.data_dir()
    log.info("reading %s", src)
    tables = ratings_to_shop(movielens._atomic(os.path.join(src, "ml-100k.inter")),
                             movielens._atomic(os.path.join(src, "ml-100k.item")),
                             movielens._atomic(os.path.join(src, "ml-100k.user")))
    os.makedirs(out_dir, exist_ok=True)
    for name, df in tables.items():
        df.to_parquet(os.path.join(out_dir, f"{name}.parquet"), index=False)
    with open(os.path.join(out_dir, "SOURCE.txt"), "w") as f:
        f.write(SOURCE + "\n" + __doc__.split("How each part maps", 1)[1].split("Run:", 1)[0].strip() + "\n")
    out = counts(tables)
    log.info("wrote %s: %s", out_dir, out)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """The command line: converts, prints a one-line summary; 2 when the data is missing."""
    return movielens.run_cli(argv, "python -m feedrank.events.public.movielens_shop",
                             "Converts MovieLens 100K (shipped by PyPI's recbole==1.2.1) into a shop log: ratings "
                             "as page views, each 30-minute session's last 4+ star rating as an add-to-cart "
                             "(docs/public_logs.md).", "data/ml100k_shop", convert)


if __name__ == "__main__":
    sys.exit(main())
