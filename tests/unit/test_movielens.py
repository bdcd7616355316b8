"""MovieLens 100K into the event contract (`feedrank.events.public.movielens`): the mapping on
a hand-made folder of RecBole atomic files, and the copy PyPI's recbole==1.2.1 installs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feedrank.events import io, validate
from feedrank.events.public import movielens

INTER = """user_id:token\titem_id:token\trating:float\ttimestamp:float
1\t10\t5\t881250949
1\t11\t3\t881250949
2\t10\t4\t881250000
2\t12\t1\t881260000
"""
ITEM = """item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq
10\tToy Story\t1995\tAnimation Children's Comedy
11\tGoldenEye\t1995\tAction Adventure Thriller
12\tOld One\t\tDrama
"""
USER = """user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token
1\t24\tM\ttechnician\t85711
2\t53\tF\tother\tT8H1N
"""


@pytest.fixture()
def small(tmp_path):
    src = tmp_path / "ml-100k"
    src.mkdir()
    for ext, text in (("inter", INTER), ("item", ITEM), ("user", USER)):
        (src / f"ml-100k.{ext}").write_text(text, encoding="latin-1")
    out = tmp_path / "log"
    counts = movielens.convert(str(out), str(src))
    return counts, out


def test_ratings_become_impressions_and_liked_ones_clicks(small):
    counts, out = small
    assert counts == {"events": 6, "impressions": 4, "clicks": 2, "items": 3, "users": 2}
    ev = pd.read_parquet(out / "events.parquet")
    rows = list(ev[["event", "user_id", "item_id", "ts"]].itertuples(index=False, name=None))
    # by second; a click right after its impression; the two ratings of one second share a request
    assert rows == [("impression", "u2", "m10", 881250000), ("click", "u2", "m10", 881250000),
                    ("impression", "u1", "m10", 881250949), ("click", "u1", "m10", 881250949),
                    ("impression", "u1", "m11", 881250949), ("impression", "u2", "m12", 881260000)]
    imp = ev[ev.event == "impression"]
    assert imp.request_id.tolist() == ["ru2-881250000", "ru1-881250949", "ru1-881250949", "ru2-881260000"]
    assert ev.event_id.is_unique


def test_items_and_users_carry_the_declared_columns(small):
    _, out = small
    items = pd.read_parquet(out / "items.parquet").set_index("item_id")
    assert items.loc["m10", ["category_id", "region_id", "title", "genres"]].tolist() == [
        "Animation", "1990s", "toy story", "animation children's comedy"]
    assert items.loc["m12", "region_id"] == "" and np.isnan(items.loc["m12", "release_year"])
    users = pd.read_parquet(out / "users.parquet").set_index("user_id")
    assert users.loc["u1", ["region_id", "age", "gender", "occupation"]].tolist() == ["8", 24.0, "M", "technician"]
    assert users.loc["u2", "region_id"] == ""          # not a US zip code


def test_the_log_passes_the_event_contract(small):
    _, out = small
    raw = io.read_events(str(out))
    items = io.read_table(str(out), "items")
    good, bad = validate.split_batch(raw, pd.Index(items.item_id))
    assert len(good) == len(raw) == 6 and len(bad) == 0


def test_the_installed_package_ships_movielens_100k(tmp_path):
    """PyPI's recbole==1.2.1, installed by `make install` without its dependencies."""
    counts = movielens.convert(str(tmp_path / "ml100k"))
    assert counts == {"events": 155_375, "impressions": 100_000, "clicks": 55_375, "items": 1_682, "users": 943}


def test_a_missing_package_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(movielens, "PACKAGE", "no-such-package-here")
    assert movielens.main(["--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-package-here is not installed" in err[0]
