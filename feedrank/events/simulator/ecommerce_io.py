"""The simulator's e-commerce mode: shoppers' page views and add-to-carts as an event log.

Writes, in the contract of :mod:`feedrank.events.contract`:

- ``events.parquet``: ``view`` events (``item_id`` is the page id, ``dwell_s`` the dwell)
  and ``purchase`` events (add-to-cart; ``item_id`` the item), each with ``session_id``;
- ``items.parquet``: one row per page (``page_type`` column: index, category, item);
- ``users.parquet``;
- ``purchase_truth.parquet``: one row per add-to-cart, its true probability (never read by training);
- ``world.json``: the settings, the fixed effect sizes and a summary (pages before an add-to-cart).

Page ids carry their type: ``x0`` the index page, ``c<cat>`` a category list, ``i<item>``
an item (`page_type`).  The shop and its truth: :mod:`feedrank.events.simulator.ecommerce`.

    python -m feedrank.events.simulator --mode ecommerce --users 2000 --items 3000 --days 14 --out data/shop
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from feedrank.events import contract
from feedrank.events.simulator import ecommerce as E

log = logging.getLogger(__name__)

TRUTH_FILE = "purchase_truth.parquet"
# One row per add-to-cart: its event, session, user, item, ts, the page views before it, its true
# probability, the truth's top-1 and top-10 mass and its rank, its probability with one signal
# taken out of the truth (`ecommerce.ablated_p`), a returning buyer?, a repeat purchase?
TRUTH_COLUMNS = ["event_id", "session_id", "user_id", "item_id", "ts", "pages_before", "p_item", "p_top1",
                 "p_top10", "rank", "p_item_no_dwell", "p_item_no_recency", "p_item_no_history",
                 "returning", "repeat"]
INDEX_PAGE = "x0"
PREFIXES = {"x": E.PAGE_TYPES[E.INDEX], "c": E.PAGE_TYPES[E.CATEGORY], "i": E.PAGE_TYPES[E.ITEM]}
DAY = 86400


def page_type(page_id: str) -> str:
    """``index``, ``category`` or ``item`` from a page id's prefix; ``""`` for another id."""
    return PREFIXES.get(page_id[:1], "") if page_id else ""


class _Ids:
    """Page and user ids of one shop (zero-padded, so they sort as numbers)."""

    def __init__(self, n_users: int, n_items: int, n_cat: int):
        self.iw, self.cw, self.uw = len(str(n_items - 1)), len(str(n_cat - 1)), len(str(n_users - 1))

    def item(self, i: int) -> str:
        return f"i{i:0{self.iw}d}"

    def cat(self, c: int) -> str:
        return f"c{c:0{self.cw}d}"

    def user(self, u: int) -> str:
        return f"u{u:0{self.uw}d}"

    def page(self, ptype: int, target: int) -> str:
        return INDEX_PAGE if ptype == E.INDEX else self.cat(target) if ptype == E.CATEGORY else self.item(target)


def simulate_ecommerce(out_dir: str, users: int = 2000, items: int = 3000, categories: int = 40,
                       days: int = 14, seed: int = 0, start_date: str = "2024-03-01",
                       activity: float = 0.25, effects: E.Effects = E.EFFECTS,
                       browsing: E.Browsing = E.BROWSING, verbose: bool = False) -> Dict:
    """Simulates ``days`` days of the shop into ``out_dir``; returns the summary (also in world.json).
    ``verbose`` prints a progress line per simulated day on stderr."""
    if min(users, items, days) < 1 or categories < 2:
        raise ValueError("users, items and days must be positive and categories >= 2")
    if not 0.0 < activity <= 1.0:
        raise ValueError(f"activity must be in (0, 1], got {activity}")
    t0 = time.time()
    start_ts = int(dt.datetime.strptime(start_date, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc).timestamp())
    rng = np.random.Generator(np.random.PCG64(seed))
    shop = E.make_shop(rng, users, items, categories, activity)
    ids = _Ids(users, items, categories)
    bought: List[List[int]] = [[] for _ in range(users)]
    rows: List[tuple] = []     # (ts, order, user, page/item id, event, dwell, session)
    truth: List[tuple] = []
    n_sess = 0
    for d in range(days):
        day0 = start_ts + d * DAY
        active = np.flatnonzero(rng.random(users) < shop.activity)
        for u in active:
            t = day0 + 6 * 3600 + int(rng.integers(0, 14 * 3600))
            for _ in range(1 + rng.poisson(browsing.sessions_extra)):
                if t >= day0 + 23 * 3600:
                    break
                hist = np.asarray(bought[u], dtype=np.int64)
                s = E.simulate_session(rng, shop, int(u), t, hist, effects, browsing)
                sid = f"s{n_sess:08d}"
                n_sess += 1
                for k, (pt, tg, ts, dwell) in enumerate(s["pages"]):
                    rows.append((ts, 2 * k, u, ids.page(pt, tg), contract.VIEW, dwell, sid))
                for c in s["carts"]:
                    rows.append((c["ts"], 2 * c["pages_before"] - 1, u, ids.item(c["item"]), contract.PURCHASE,
                                 np.nan, sid))
                    truth.append(dict({k: v for k, v in c.items() if k != "item"}, session_id=sid,
                                      user_id=ids.user(u), item_id=ids.item(c["item"]),
                                      returning=len(hist) > 0, repeat=bool(np.isin(c["item"], hist))))
                bought[u].extend(c["item"] for c in s["carts"])
                last = s["pages"][-1][2] + int(s["pages"][-1][3])   # the session's last event
                t = last + 1800 + 60 + int(rng.exponential(7200))
        if verbose:
            print(f"[simulate] day {d + 1}/{days}: {n_sess:,} sessions, {len(rows):,} events so far",
                  file=sys.stderr, flush=True)
    summary = _write(out_dir, shop, ids, rows, truth)
    summary["wall_s"] = round(time.time() - t0, 2)
    params = dict(mode="ecommerce", users=users, items=items, categories=categories, days=days, seed=seed,
                  start_date=start_date, start_ts=start_ts, end_ts=start_ts + days * DAY, activity=activity,
                  effects=dataclasses.asdict(effects), browsing=dataclasses.asdict(browsing),
                  complement={ids.cat(c): ids.cat(int(k)) for c, k in enumerate(shop.complement)})
    with open(os.path.join(out_dir, "world.json"), "w") as f:
        json.dump(dict(params=params, summary=summary), f, indent=2)
    log.info("e-commerce log: %s", summary)
    return summary


def _write(out_dir: str, shop: E.Shop, ids: _Ids, rows: List[tuple], truth: List[tuple]) -> Dict:
    os.makedirs(out_dir, exist_ok=True)
    ev = pd.DataFrame(rows, columns=["ts", "_k", "_u", "item_id", "event", "dwell_s", "session_id"])
    ev = ev.sort_values(["ts", "_u", "session_id", "_k"], kind="stable").reset_index(drop=True)
    width = max(9, len(str(len(ev))))
    ev.insert(0, "event_id", [f"e{i:0{width}d}" for i in range(len(ev))])
    ev.insert(1, "user_id", [ids.user(u) for u in ev["_u"]])
    ev["request_id"], ev["query"] = "", ""
    ev = ev[["event_id", "user_id", "item_id", "event", "ts", "request_id", "query", "dwell_s", "session_id"]]
    ev = ev.astype({"ts": "int64", "dwell_s": "float64"})
    ev.to_parquet(os.path.join(out_dir, "events.parquet"), index=False)
    n_items, n_cat = len(shop.item_cat), shop.n_cat
    pages = pd.DataFrame({
        "item_id": [INDEX_PAGE] + [ids.cat(c) for c in range(n_cat)] + [ids.item(i) for i in range(n_items)],
        "category_id": [""] + [ids.cat(c) for c in range(n_cat)] + [ids.cat(c) for c in shop.item_cat],
        "region_id": "all",
        "price": np.concatenate([np.full(1 + n_cat, np.nan), shop.price]),
        "page_type": ["index"] + ["category"] * n_cat + ["item"] * n_items})
    pages.to_parquet(os.path.join(out_dir, "items.parquet"), index=False)
    n_users = len(shop.activity)
    pd.DataFrame({"user_id": [ids.user(u) for u in range(n_users)],
                  "region_id": [f"r{u % 5}" for u in range(n_users)]}).to_parquet(
        os.path.join(out_dir, "users.parquet"), index=False)
    tr = pd.DataFrame(truth, columns=TRUTH_COLUMNS[1:])
    carts = ev[ev["event"] == contract.PURCHASE]
    key = carts.set_index(["session_id", "ts", "item_id"])["event_id"]
    tr.insert(0, "event_id", key.reindex(pd.MultiIndex.from_frame(tr[["session_id", "ts", "item_id"]])).to_numpy())
    tr.to_parquet(os.path.join(out_dir, TRUTH_FILE), index=False)
    return summarise(ev, tr)


def summarise(ev: pd.DataFrame, tr: pd.DataFrame) -> Dict:
    """Counts and the measured pages before an add-to-cart (first of a session, and all)."""
    views = ev[ev["event"] == contract.VIEW]
    n_sess = int(views["session_id"].nunique())
    first = tr.groupby("session_id")["pages_before"].min()
    return dict(
        events=int(len(ev)), views=int(len(views)), purchases=int(len(tr)), sessions=n_sess,
        sessions_with_purchase=int(len(first)), users_active=int(views["user_id"].nunique()),
        pages_per_session=round(len(views) / max(n_sess, 1), 2),
        pages_before_first_purchase=round(float(first.mean()), 2) if len(first) else None,
        pages_before_purchase_median=float(first.median()) if len(first) else None,
        page_type_shares={t: round(float((views["item_id"].str[:1] == p).mean()), 3)
                          for p, t in PREFIXES.items()},
        returning_share=round(float(tr["returning"].mean()), 3) if len(tr) else None,
        repeat_share=round(float(tr["repeat"].mean()), 3) if len(tr) else None,
        truth_mean_p_item=round(float(tr["p_item"].mean()), 4) if len(tr) else None,
        truth_top1_mass=round(float(tr["p_top1"].mean()), 4) if len(tr) else None,
        truth_top10_mass=round(float(tr["p_top10"].mean()), 4) if len(tr) else None,
        **_signal_nats(tr),
        first_ts=int(ev["ts"].min()) if len(ev) else None, last_ts=int(ev["ts"].max()) if len(ev) else None)


def _signal_nats(tr: pd.DataFrame) -> Dict[str, Optional[float]]:
    """Mean log-likelihood (nats per add-to-cart) the truth loses without each signal; the
    history's over returning buyers' add-to-carts only."""
    out: Dict[str, Optional[float]] = {}
    for sig in ("dwell", "recency", "history"):
        rows = tr[tr["returning"]] if sig == "history" else tr
        gap = np.log(rows["p_item"]) - np.log(rows[f"p_item_no_{sig}"]) if len(rows) else pd.Series(dtype=float)
        out[f"nats_from_{sig}"] = round(float(gap.mean()), 4) if len(gap) else None
    return out


def main(argv: Optional[list] = None) -> int:
    """``python -m feedrank.events.simulator --mode ecommerce ...``."""
    ap = argparse.ArgumentParser(prog="python -m feedrank.events.simulator --mode ecommerce",
                                 description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--mode", choices=["ecommerce"], default="ecommerce")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--categories", type=int, default=40)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--seed", type=int, default=0, help="random seed (same seed -> identical tables)")
    ap.add_argument("--activity", type=float, default=0.25, help="mean daily probability a user shops")
    ap.add_argument("--start-date", default="2024-03-01", help="first day, YYYY-MM-DD (UTC)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--quiet", action="store_true", help="no per-day progress on stderr")
    args = ap.parse_args(argv)
    if min(args.users, args.items, args.days) < 1 or args.categories < 2 or args.items < args.categories:
        ap.error("--users, --items, --days must be positive, --categories >= 2 and --items >= --categories")
    if not 0.0 < args.activity <= 1.0:
        ap.error("--activity must be in (0, 1]")
    try:
        dt.datetime.strptime(args.start_date, "%Y-%m-%d")
    except ValueError:
        ap.error(f"--start-date must be YYYY-MM-DD, got {args.start_date!r}")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        ap.error(f"cannot write to output directory {args.out!r}: {e.strerror or e}")
    summary = simulate_ecommerce(args.out, args.users, args.items, args.categories, args.days, args.seed,
                                 args.start_date, args.activity, verbose=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0
