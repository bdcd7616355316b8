"""MovieLens 100K as a shop log (`feedrank.events.public.movielens_shop`): the mapping on a
hand-made ratings frame with hand-computed sessions and carts, and the copy recbole==1.2.1 ships."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from feedrank.events import validate
from feedrank.events.public import movielens
from feedrank.events.public import movielens_shop as shop
from feedrank.sessions import sessionize

# (user, item, stars, second), deliberately not in time order
RATINGS = [
    ("2", "22", 2, 5000), ("1", "10", 5, 1000), ("1", "11", 3, 1500), ("1", "13", 2, 2100),
    ("1", "12", 4, 2000), ("1", "14", 5, 3900), ("1", "15", 1, 4000), ("1", "16", 5, 10000),
    ("2", "10", 3, 1000), ("2", "20", 4, 1000), ("2", "21", 3, 1200), ("2", "23", 3, 5100),
    ("3", "30", 5, 7000), ("3", "31", 4, 7000),
]
# Sessions (a pause longer than 1800 s cuts, as in sessionize):
#   u1: [10 11 12 13 14 15] (the pause 2100 -> 3900 is exactly 1800 s: no cut; cart 14, the last
#       4+ rating, so 12 stays a view), [16] (one rating: stays a view);
#   u2: [10 20 21] (cart 20, rated at the same second as 10: after its view), [22 23] (no 4+: no cart);
#   u3: [30 31] (both 4+ at one second: the later in file order, 31, is the cart).
EXPECTED = [  # (user, item, event, ts) in row order: second, user, view before cart
    ("u1", "10", "view", 1000), ("u2", "10", "view", 1000), ("u2", "20", "purchase", 1000),
    ("u2", "21", "view", 1200), ("u1", "11", "view", 1500), ("u1", "12", "view", 2000),
    ("u1", "13", "view", 2100), ("u1", "14", "purchase", 3900), ("u1", "15", "view", 4000),
    ("u2", "22", "view", 5000), ("u2", "23", "view", 5100), ("u3", "30", "view", 7000),
    ("u3", "31", "purchase", 7000), ("u1", "16", "view", 10000),
]


def frame() -> pd.DataFrame:
    return pd.DataFrame(RATINGS, columns=["user_id", "item_id", "rating", "timestamp"])


def test_ratings_become_views_and_each_sessions_last_liked_rating_a_cart():
    t = shop.ratings_to_shop(frame())
    ev = t["events"]
    assert list(ev.columns) == ["event_id", "user_id", "item_id", "event", "ts", "request_id", "query",
                                "dwell_s", "session_id"]
    assert list(ev[["user_id", "item_id", "event", "ts"]].itertuples(index=False, name=None)) == EXPECTED
    assert ev["event_id"].tolist() == [f"e{i:09d}" for i in range(14)]
    assert ev["dwell_s"].isna().all() and (ev["session_id"] == "").all() and (ev["request_id"] == "").all()
    assert ev["ts"].dtype == np.int64
    assert shop.counts(t) == {"events": 14, "views": 11, "carts": 3, "sessions": 5, "users": 3, "items": 13}
    assert shop.ratings_to_shop(frame())["events"].equals(ev)                 # deterministic


def test_the_sessions_are_the_pipelines_sessions():
    ev = shop.ratings_to_shop(frame())["events"]
    events = [sessionize.Event(r.event_id, r.user_id, r.item_id, r.event, int(r.ts)) for r in ev.itertuples()]
    got = []
    for user in ("u1", "u2", "u3"):
        for s in sessionize.split_sessions([e for e in events if e.user_id == user]):
            got.append([(e.item_id, e.event) for e in s])
    assert got == [[("10", "view"), ("11", "view"), ("12", "view"), ("13", "view"), ("14", "purchase"),
                    ("15", "view")], [("16", "view")],
                   [("10", "view"), ("20", "purchase"), ("21", "view")], [("22", "view"), ("23", "view")],
                   [("30", "view"), ("31", "purchase")]]


def test_items_and_users_tables():
    t = shop.ratings_to_shop(frame())
    assert t["items"]["item_id"].tolist() == ["10", "11", "12", "13", "14", "15", "16", "20", "21", "22",
                                              "23", "30", "31"]
    assert (t["items"]["page_type"] == "item").all()
    assert {"item_id", "category_id", "region_id"} <= set(t["items"].columns)
    assert t["users"]["user_id"].tolist() == ["u1", "u2", "u3"]
    good, bad = validate.split_batch(t["events"], pd.Index(t["items"]["item_id"]))
    assert len(good) == 14 and len(bad) == 0


def test_bad_ratings_are_refused():
    with pytest.raises(ValueError, match=r"missing \['rating'\]"):
        shop.ratings_to_shop(frame().drop(columns="rating"))
    with pytest.raises(ValueError, match="'timestamp' has non-numeric values"):
        shop.ratings_to_shop(frame().assign(timestamp="soon"))
    with pytest.raises(ValueError, match="session gap must be a positive"):
        shop.ratings_to_shop(frame(), gap_s=0)


def test_the_shipped_movielens_100k(tmp_path):
    counts = shop.convert(str(tmp_path / "shop"))
    assert counts["views"] + counts["carts"] == counts["events"] == 100_000
    assert (counts["users"], counts["items"]) == (943, 1_682)
    ev = pd.read_parquet(tmp_path / "shop" / "events.parquet")
    ratings = movielens._atomic(os.path.join(movielens.data_dir(), "ml-100k.inter"))
    ratings = ratings.assign(user_id="u" + ratings["user_id"], ts=ratings["timestamp"].astype(float).astype(np.int64),
                             stars=ratings["rating"].astype(float))
    carts = ev[ev["event"] == "purchase"].merge(ratings, on=["user_id", "item_id", "ts"], how="left")
    assert len(carts) == counts["carts"] and (carts["stars"] >= 4).all()    # every cart a 4+ rating
    assert counts["carts"] <= counts["sessions"] and ev["event_id"].is_unique
    items = pd.read_parquet(tmp_path / "shop" / "items.parquet")
    assert set(ev["item_id"]) <= set(items["item_id"]) and items["item_id"].str.isdigit().all()


def test_a_missing_package_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(movielens, "PACKAGE", "no-such-package-here")
    assert shop.main(["--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no-such-package-here is not installed") and "\n" not in err
