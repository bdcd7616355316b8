"""MovieLens 100K, as the RecBole package ships it, converted into the event contract.

The data: 100,000 ratings (1 to 5 stars) of 1,682 movies by 943 users, September
1997 to April 1998, collected by GroupLens Research (F. M. Harper and J. A.
Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 5(4), 2015).
PyPI's ``recbole==1.2.1`` (MIT licence) ships it as atomic files under
``recbole/dataset_example/ml-100k/``; the package is installed without its
dependencies (`requirements.txt`), so nothing is downloaded and RecBole itself is
never imported: the files are read from its installed distribution.  GroupLens's
terms for the data: research use, cite the paper above, no redistribution
without permission (this module converts the copy a user installs; it ships none).

How each part maps to the event contract (docs/public_logs.md):

* every rating is an ``impression`` of the movie to the user at the rating's
  second (the movie was shown, and the user rated it);
* a rating of `LIKED` stars or more is also a ``click`` at the same second
  (the user liked what was shown): the label, and the user's click sequence;
* ``request_id`` groups a user's ratings of one second (one screen of movies);
* items: ``category_id`` is the movie's first listed genre, ``region_id`` its
  release decade, ``title`` its title words, and the declared columns
  ``genres`` (every genre) and ``release_year``;
* users: ``region_id`` is the first digit of the US zip code (the national
  zip area; "" when it is not a US code), and the declared columns ``age``,
  ``gender`` and ``occupation``.

Run:  python -m feedrank.events.public.movielens --out data/ml100k
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PACKAGE, VERSION = "recbole", "1.2.1"
FOLDER = "recbole/dataset_example/ml-100k"
LIKED = 4                      # stars from which a rating is a click
SOURCE = (f"MovieLens 100K (GroupLens Research) as shipped by PyPI's {PACKAGE}=={VERSION} "
          f"({FOLDER}/)")


class MissingDataError(RuntimeError):
    """The package that ships the data is not installed (one line saying how to install it)."""


def data_dir() -> str:
    """The installed ``ml-100k`` folder of the RecBole distribution (not imported)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise MissingDataError(f"{PACKAGE} is not installed: `pip install --no-deps {PACKAGE}=={VERSION}` "
                               f"(make install does) ships MovieLens 100K") from None
    path = str(dist.locate_file(FOLDER))
    if not os.path.isfile(os.path.join(path, "ml-100k.inter")):
        raise MissingDataError(f"{PACKAGE} {dist.version} has no {FOLDER}/ml-100k.inter "
                               f"(this converter reads {PACKAGE}=={VERSION})")
    return path


def _atomic(path: str) -> pd.DataFrame:
    """A RecBole atomic file (tab-separated, ``name:type`` header) with plain column names."""
    df = pd.read_csv(path, sep="\t", dtype=str, encoding="latin-1", keep_default_na=False)
    df.columns = [c.split(":", 1)[0] for c in df.columns]
    return df


def events(ratings: pd.DataFrame) -> pd.DataFrame:
    """The event log of the ratings (see the module docstring), in rating order."""
    ts = ratings["timestamp"].astype(float).astype(np.int64).to_numpy()
    stars = ratings["rating"].astype(float).to_numpy()
    user = ("u" + ratings["user_id"]).to_numpy(dtype=object)
    item = ("m" + ratings["item_id"]).to_numpy(dtype=object)
    n = len(ratings)
    rid = np.array([f"r{u}-{t}" for u, t in zip(user, ts)], dtype=object)
    imp = pd.DataFrame({"event_id": [f"i{k}" for k in range(n)], "user_id": user, "item_id": item,
                        "event": "impression", "ts": ts, "request_id": rid, "query": "",
                        "dwell_s": np.nan})
    liked = stars >= LIKED
    clk = imp[liked].assign(event_id=[f"c{k}" for k in np.flatnonzero(liked)], event="click", request_id="")
    out = pd.concat([imp.assign(_k=np.arange(n) * 2), clk.assign(_k=np.flatnonzero(liked) * 2 + 1)],
                    ignore_index=True)
    # by second, then rating order, each impression right before its click
    return out.sort_values(["ts", "_k"], kind="stable").drop(columns="_k").reset_index(drop=True)


def items(movies: pd.DataFrame) -> pd.DataFrame:
    """The items table of the movies."""
    genres = movies["class"].str.split()
    year = pd.to_numeric(movies["release_year"], errors="coerce")
    decade = [f"{int(y) // 10 * 10}s" if np.isfinite(y) else "" for y in year]
    return pd.DataFrame({"item_id": "m" + movies["item_id"],
                         "category_id": [g[0] if g else "unknown" for g in genres],
                         "region_id": decade, "price": np.nan,
                         "title": movies["movie_title"].str.lower(),
                         "genres": [" ".join(g).lower() for g in genres],
                         "release_year": year.astype(float)})


def users(people: pd.DataFrame) -> pd.DataFrame:
    """The users table of the raters."""
    zone = [z[0] if z[:1].isdigit() and len(z) == 5 and z.isdigit() else "" for z in people["zip_code"]]
    return pd.DataFrame({"user_id": "u" + people["user_id"], "region_id": zone,
                         "age": pd.to_numeric(people["age"], errors="coerce").astype(float),
                         "gender": people["gender"], "occupation": people["occupation"]})


def convert(out_dir: str, source: Optional[str] = None) -> Dict[str, int]:
    """Writes ``events``, ``items`` and ``users`` Parquet tables of MovieLens 100K to ``out_dir``
    (from ``source``, the ``ml-100k`` folder; default: the installed RecBole's); their row counts."""
    src = source or data_dir()
    log.info("reading %s", src)
    ev = events(_atomic(os.path.join(src, "ml-100k.inter")))
    it = items(_atomic(os.path.join(src, "ml-100k.item")))
    us = users(_atomic(os.path.join(src, "ml-100k.user")))
    os.makedirs(out_dir, exist_ok=True)
    for name, df in (("events", ev), ("items", it), ("users", us)):
        df.to_parquet(os.path.join(out_dir, f"{name}.parquet"), index=False)
    with open(os.path.join(out_dir, "SOURCE.txt"), "w") as f:
        f.write(SOURCE + "\n" + __doc__.split("How each part", 1)[1].split("Run:", 1)[0].strip() + "\n")
    counts = {"events": len(ev), "impressions": int((ev.event == "impression").sum()),
              "clicks": int((ev.event == "click").sum()), "items": len(it), "users": len(us)}
    log.info("wrote %s: %s", out_dir, counts)
    return counts


def run_cli(argv: Optional[List[str]], prog: str, description: str, default_out: str, convert_fn) -> int:
    """A converter's command line: ``--out``, ``--source``; prints the counts ``convert_fn(out,
    source)`` returns, or one line and status 2 when the data is missing."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--out", default=default_out, help=f"output directory (default: {default_out})")
    p.add_argument("--source", default=None, help="an ml-100k folder of RecBole atomic files "
                                                  "(default: the installed recbole's)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        counts = convert_fn(args.out, args.source)
    except (MissingDataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(", ".join(f"{v:,} {k}" for k, v in counts.items()) + f" -> {args.out}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(argv, "python -m feedrank.events.public.movielens",
                   "Converts MovieLens 100K (shipped by PyPI's recbole==1.2.1) into the event contract: ratings "
                   "as impressions, 4+ stars as clicks (docs/public_logs.md).", "data/ml100k", convert)


if __name__ == "__main__":
    sys.exit(main())
