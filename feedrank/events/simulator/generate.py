"""Deterministic simulator of a classifieds home-feed event log.

Writes ``events``/``items``/``users`` parquet tables in the contract of
:mod:`feedrank.events.contract`, plus the hidden ground truth
(``truth.parquet``: ``p_click`` of every impression, and ``p_click_aggregate``,
the same probability without the order-carrying mechanisms' terms: the
aggregates-only oracle) and ``world.json``
(parameters and summary).  ``mechanisms`` switches on the order-carrying
behaviour of :mod:`feedrank.events.simulator.mechanisms` (default: none, the
aggregate world; docs/simulator.md).  See :mod:`feedrank.events.simulator.world` for the
hidden world and :mod:`feedrank.events.simulator.browsing` for the behaviour model.

    python -m feedrank.events.simulator --users 20000 --items 50000 --days 14 --seed 0 --out data/demo
    python -m feedrank.events.simulator --mechanisms realistic --out data/realistic
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
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feedrank.events import contract
from feedrank.events.simulator import attributes as attr_lib
from feedrank.events.simulator import mechanisms as mech_lib
from feedrank.events.simulator.browsing import CONV, PURCHASE, DaySimulator, Knobs
from feedrank.events.simulator.context import apply_funnel_interest
from feedrank.events.simulator.world import ClickModel, Users, build_taxonomy, drift_interests, make_items, make_users

log = logging.getLogger(__name__)

DEFAULT_START = "2024-03-01"
ROW_GROUP = 1_000_000


def _ids(prefix: str, n: int, width: int) -> pa.Array:
    s = pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(s, width=width, padding="0"), "")


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties averaged)."""
    labels = labels.astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s))
    bounds = np.concatenate([[0], np.nonzero(np.diff(s))[0] + 1, [len(s)]])
    avg = (bounds[:-1] + bounds[1:] + 1) / 2.0
    ranks[order] = np.repeat(avg, np.diff(bounds))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _finite(x: float) -> Optional[float]:
    return float(x) if np.isfinite(x) else None


def _parse_start(start_date: str) -> int:
    d = dt.datetime.strptime(start_date, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    return int(d.timestamp())


def simulate(out_dir: str, users: int = 20000, items: int = 50000, days: int = 14, seed: int = 0,
             start_date: str = DEFAULT_START, activity: float = 0.15, interest_shift: float = 0.08,
             quality_sd: float = 0.4, n_regions: int = 30, verbose: bool = True,
             mechanisms: Union[None, str, Dict, mech_lib.Mechanisms] = None,
             event_types: Optional[Sequence[str]] = None, **knobs) -> Dict:
    """Simulate ``days`` days and write the log into ``out_dir``; returns a summary.

    ``mechanisms``: ``"off"`` (default), ``"realistic"``, a comma-separated list of
    mechanism names, a dict of :class:`feedrank.events.simulator.mechanisms.Mechanisms`
    fields, or such an object.

    ``event_types``: the event types written to the log (default: all).  The
    world is simulated in full either way; e.g. ``("impression", "click")``
    gives a log with neither views, conversions nor searches.

    ``knobs`` are fields of :class:`feedrank.events.simulator.browsing.Knobs` (e.g.
    ``sessions_per_day``, ``feeds_per_session``, ``recall_interest``) or of
    :class:`feedrank.events.simulator.world.ClickModel` prefixed ``click_`` (e.g.
    ``click_base``).
    """
    if users < 1 or items < 1 or days < 1:
        raise ValueError("users, items and days must be positive")
    if not 0.0 < activity <= 1.0:
        raise ValueError("activity must be in (0, 1]")
    mech = mech_lib.parse(mechanisms)
    written = check_event_types(event_types)
    t0 = time.time()
    start_ts = _parse_start(start_date)
    end_ts = start_ts + days * 86400
    sess_knobs = Knobs(**{k: v for k, v in knobs.items() if not k.startswith("click_")})
    click = ClickModel(**{k[6:]: v for k, v in knobs.items() if k.startswith("click_")})
    rng = np.random.Generator(np.random.PCG64(seed))
    tax = build_taxonomy(rng, n_regions)
    it = make_items(rng, tax, items, start_ts, days, quality_sd)
    us = make_users(rng, tax, users, activity)
    # observable attributes: their own generator, drawn before the interests move
    arng = attr_lib.attribute_rng(seed)
    attrs = (attr_lib.user_attributes(arng, tax, us), attr_lib.item_attributes(arng, tax, it))
    sim = DaySimulator(tax, it, us, click, sess_knobs, mech)

    cols = ("user", "item", "etype", "ts", "req", "query", "dwell", "p", "pa") + (
        ("pos",) if mech.log_position else ())
    dtypes = (np.int32, np.int32, np.int8, np.int64, np.int32, np.int64, np.float32, np.float32, np.float32,
              np.int64)
    parts = {c: [] for c in cols}
    imp_p, imp_clicked = [], []
    n_events, n_requests, active_days = 0, 0, 0
    for d in range(days):
        if mech.continuous_drift:
            _advance_interests(rng, tax, us, interest_shift, first=d == 0)
        elif d > 0:
            drift_interests(rng, tax, us, interest_shift)
        day = sim.run(rng, start_ts + d * 86400, n_requests)
        n_imp = len(day["imp_p"])  # impressions are the first rows of a day
        if mech.log_position:
            day["pos"] = np.full(len(day["ts"]), -1, dtype=np.int64)
            day["pos"][:n_imp] = day["imp_pos"]
        n_requests += int(day["n_requests"][0])
        active_days += int(day["active_users"][0])
        keep = day["ts"] < end_ts
        for c, t in zip(cols, dtypes):
            parts[c].append(day[c][keep].astype(t))
        imp_p.append(day["imp_p"][keep[:n_imp]])
        imp_clicked.append(day["imp_clicked"][keep[:n_imp]])
        # a purchase satisfies the need: interest in that category collapses
        b = day["etype"] == PURCHASE
        state = us.interest_next if mech.continuous_drift else us.interest
        state[day["user"][b], it.cat[day["item"][b]]] *= 0.2
        c = day["etype"] == CONV
        apply_funnel_interest(mech, tax, it, state, day["user"][c], day["item"][c])
        n_events += int(keep.sum())
        if verbose:
            el = time.time() - t0
            print(f"[simulate] day {d + 1}/{days}: {n_events:,} events so far, "
                  f"{n_events / max(el, 1e-9):,.0f} events/s", file=sys.stderr, flush=True)
    ev = {c: np.concatenate(parts[c]) for c in cols}
    if written is not None:
        kept = np.isin(ev["etype"], written)
        ev = {c: v[kept] for c, v in ev.items()}
    del parts
    summary = _write(out_dir, tax, it, us, ev, start_ts, attrs)
    p_all, y_all = np.concatenate(imp_p), np.concatenate(imp_clicked)
    counts = {name: int((ev["etype"] == i).sum()) for i, name in enumerate(contract.EVENT_TYPES)}
    wall = time.time() - t0
    summary.update(
        events=int(len(ev["ts"])), counts=counts, impressions=counts[contract.IMPRESSION],
        ctr=counts[contract.CLICK] / max(counts[contract.IMPRESSION], 1),
        oracle_auc=_finite(auc(p_all, y_all)), mean_p_click=_finite(p_all.mean()) if p_all.size else None,
        requests=n_requests, active_user_days=active_days, wall_s=round(wall, 2),
        events_per_s=round(len(ev["ts"]) / max(wall, 1e-9), 1))
    params = dict(users=users, items=items, days=days, seed=seed, start_date=start_date,
                  start_ts=start_ts, end_ts=end_ts, activity=activity, interest_shift=interest_shift,
                  quality_sd=quality_sd, n_regions=n_regions, knobs=dataclasses.asdict(sess_knobs),
                  click_model=dataclasses.asdict(click), mechanisms=dataclasses.asdict(mech),
                  categories=tax.categories, regions=tax.regions,
                  event_types=[t.strip() for t in event_types] if event_types else None)
    with open(os.path.join(out_dir, "world.json"), "w") as f:
        json.dump(dict(params=params, summary=summary), f, indent=2)
    return summary


def _advance_interests(rng: np.random.Generator, tax, us: Users, shift_rate: float, first: bool) -> None:
    """Continuous drift: today's start state is yesterday's end state; the end state is one day's drift on."""
    if not first:
        us.interest = us.interest_next
    nxt = us.interest.copy()
    drift_interests(rng, tax, us, shift_rate, a=nxt)
    us.interest_next = nxt


def _write(out_dir: str, tax, it, us, ev: Dict[str, np.ndarray], start_ts: int,
           attrs: Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]) -> Dict:
    os.makedirs(out_dir, exist_ok=True)
    n_items, n_users = len(it.cat), len(us.region)
    item_ids = _ids("i", n_items, max(7, len(str(n_items))))
    user_ids = _ids("u", n_users, max(6, len(str(n_users))))
    tokens = pa.array(tax.tokens + [""])
    cats, regions = pa.array(tax.categories), pa.array(tax.regions)
    user_attrs, item_attrs = attrs
    area = item_attrs["area_m2"]
    pq.write_table(pa.table({"item_id": item_ids, "category_id": cats.take(pa.array(it.cat)),
                             "region_id": regions.take(pa.array(it.region)),
                             "price": pa.array(it.price.astype(np.float64)),
                             "title": attr_lib.title_strings(tax, item_attrs["title_tokens"]),
                             "area_m2": pa.array(area, mask=np.isnan(area))}),
                   os.path.join(out_dir, "items.parquet"))
    pq.write_table(pa.table({"user_id": user_ids, "region_id": regions.take(pa.array(us.region)),
                             **{k: pa.array(v, pa.string()) for k, v in user_attrs.items()}}),
                   os.path.join(out_dir, "users.parquet"))

    n = len(ev["ts"])
    order = np.argsort(ev["ts"], kind="stable")
    width = max(9, len(str(n)))
    item_or_empty = pa.concat_arrays([pa.array([""]), item_ids])
    etypes = pa.array(list(contract.EVENT_TYPES))
    empty_tok = len(tax.tokens)
    schema = pa.schema([("event_id", pa.string()), ("user_id", pa.string()), ("item_id", pa.string()),
                        ("event", pa.string()), ("ts", pa.int64()), ("request_id", pa.string()),
                        ("query", pa.string()), ("dwell_s", pa.float64())]
                       + ([("position", pa.int64())] if "pos" in ev else []))
    truth_schema = pa.schema([("event_id", pa.string()), ("p_click", pa.float64()),
                              ("p_click_aggregate", pa.float64())])
    with pq.ParquetWriter(os.path.join(out_dir, "events.parquet"), schema) as w, \
            pq.ParquetWriter(os.path.join(out_dir, contract.TRUTH_FILE), truth_schema) as tw:
        for a in range(0, max(n, 1), ROW_GROUP):
            sel = order[a:a + ROW_GROUP]
            eid = pc.binary_join_element_wise(
                "e", pc.utf8_lpad(pc.cast(pa.array(np.arange(a, a + len(sel))), pa.string()),
                                  width=width, padding="0"), "")
            req = ev["req"][sel]
            req_s = pc.binary_join_element_wise("req", pc.cast(pa.array(req), pa.string()), "")
            req_s = pc.if_else(pa.array(req < 0), "", req_s)
            q = ev["query"][sel]
            has_q = q >= 0
            t1 = np.where(has_q, q >> 32, empty_tok)
            t2 = np.where(has_q & (((q >> 16) & 0xFFFF) > 0), ((q >> 16) & 0xFFFF) - 1, empty_tok)
            t3 = np.where(has_q & ((q & 0xFFFF) > 0), (q & 0xFFFF) - 1, empty_tok)
            query = pc.utf8_trim_whitespace(pc.binary_join_element_wise(
                *[tokens.take(pa.array(t)) for t in (t1, t2, t3)], " "))
            dwell = np.round(ev["dwell"][sel].astype(np.float64), 1)
            et = ev["etype"][sel]
            extra = {}
            if "pos" in ev:
                pos = ev["pos"][sel]
                extra["position"] = pa.array(pos, mask=pos < 0)
            w.write_table(pa.table({
                "event_id": eid, "user_id": user_ids.take(pa.array(ev["user"][sel])),
                "item_id": item_or_empty.take(pa.array(ev["item"][sel] + 1)),
                "event": etypes.take(pa.array(et)), "ts": pa.array(ev["ts"][sel]),
                "request_id": req_s, "query": query,
                "dwell_s": pa.array(dwell, mask=np.isnan(dwell)), **extra}, schema=schema))
            imp = np.nonzero(et == 0)[0]
            tw.write_table(pa.table({"event_id": eid.take(pa.array(imp)),
                                     "p_click": pa.array(ev["p"][sel][imp].astype(np.float64)),
                                     "p_click_aggregate": pa.array(ev["pa"][sel][imp].astype(np.float64))},
                                    schema=truth_schema))
    return dict(first_ts=int(ev["ts"][order[0]]) if n else None,
                last_ts=int(ev["ts"][order[-1]]) if n else None)


def settings_differ(out_dir: str, users: int, items: int, days: int, seed: int,
                    mechanisms: Union[None, str, Dict, mech_lib.Mechanisms] = None,
                    event_types: Optional[Sequence[str]] = None) -> List[str]:
    """The settings of the log in ``out_dir`` (its ``world.json``) that differ from
    these, as ``"name: on disk -> asked"`` lines; empty when they agree or when the
    directory holds no simulated log."""
    try:
        with open(os.path.join(out_dir, "world.json")) as f:
            params = json.load(f)["params"]
    except (OSError, ValueError, KeyError):
        return []
    asked = dict(users=users, items=items, days=days, seed=seed,
                 mechanisms=json.loads(json.dumps(dataclasses.asdict(mech_lib.parse(mechanisms)))),
                 event_types=[t.strip() for t in event_types] if event_types else None)
    off = json.loads(json.dumps(dataclasses.asdict(mech_lib.OFF)))
    found = {k: params.get(k, off if k == "mechanisms" else None) for k in asked}
    return [f"{k}: {found[k]} -> {asked[k]}" if k != "mechanisms" else
            f"mechanisms: {mech_lib.name_of(found[k])} -> {mech_lib.name_of(asked[k])}"
            for k in asked if found[k] != asked[k]]


def check_event_types(event_types: Optional[Sequence[str]]) -> Optional[List[int]]:
    """Codes of the event types to write (None: all); a clear error for an unknown
    type or a log without impressions."""
    if not event_types:
        return None
    names = [t.strip() for t in event_types]
    unknown = [t for t in names if t not in contract.EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event types {unknown}; known: {list(contract.EVENT_TYPES)}")
    if contract.IMPRESSION not in names:
        raise ValueError(f"the log must hold {contract.IMPRESSION!r} events, got {names}")
    return [contract.EVENT_TYPES.index(t) for t in names]


def main(argv: Optional[list] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--mode=ecommerce" in argv or any(a == "--mode" and b == "ecommerce" for a, b in zip(argv, argv[1:])):
        from feedrank.events.simulator.ecommerce_io import main as ecommerce_main  # docs/sessions.md
        return ecommerce_main(argv)
    ap = argparse.ArgumentParser(prog="python -m feedrank.events.simulator", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--users", type=int, default=20000, help="number of users")
    ap.add_argument("--items", type=int, default=50000, help="number of posts created over the period")
    ap.add_argument("--days", type=int, default=14, help="days to simulate")
    ap.add_argument("--seed", type=int, default=0, help="random seed (same seed -> identical tables)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--start-date", default=DEFAULT_START, help="first day, YYYY-MM-DD (UTC)")
    ap.add_argument("--activity", type=float, default=0.15, help="mean daily probability a user is active")
    ap.add_argument("--sessions-per-day", type=float, default=Knobs.sessions_per_day,
                    help="mean sessions per active user-day (>= 1)")
    ap.add_argument("--feeds-per-session", type=float, default=Knobs.feeds_per_session,
                    help="mean home-feed requests per session")
    ap.add_argument("--interest-shift", type=float, default=0.08,
                    help="daily probability a user's interests shift to a new category")
    ap.add_argument("--mechanisms", default="off",
                    help="order-carrying behaviour (docs/simulator.md): " + mech_lib.describe())
    ap.add_argument("--event-types", default="",
                    help="comma-separated event types to write (default: all), e.g. impression,click")
    ap.add_argument("--quiet", action="store_true", help="no per-day progress on stderr")
    ap.add_argument("--mode", choices=["feed", "ecommerce"], default="feed",
                    help="feed: the classifieds home feed; ecommerce: shop sessions (own options, docs/sessions.md)")
    args = ap.parse_args(argv)
    err = None
    if args.users < 1 or args.items < 1 or args.days < 1:
        err = "--users, --items and --days must be positive integers"
    elif not 0.0 < args.activity <= 1.0:
        err = "--activity must be in (0, 1]"
    elif args.sessions_per_day < 1.0 or args.feeds_per_session < 0.0 or not 0 <= args.interest_shift <= 1:
        err = "--sessions-per-day must be >= 1, --feeds-per-session >= 0, --interest-shift in [0, 1]"
    else:
        try:
            _parse_start(args.start_date)
        except ValueError:
            err = f"--start-date must be YYYY-MM-DD, got {args.start_date!r}"
        try:
            mech_lib.parse(args.mechanisms)
        except ValueError as e:
            err = err or f"--mechanisms: {e}"
        try:
            check_event_types(args.event_types.split(",") if args.event_types else None)
        except ValueError as e:
            err = err or f"--event-types: {e}"
    if err is None:
        try:
            os.makedirs(args.out, exist_ok=True)
            probe = os.path.join(args.out, ".write_probe")
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as e:
            err = f"cannot write to output directory {args.out!r}: {e.strerror or e}"
    if err is not None:
        ap.error(err)
    summary = simulate(args.out, args.users, args.items, args.days, args.seed, start_date=args.start_date,
                       activity=args.activity, interest_shift=args.interest_shift, verbose=not args.quiet,
                       sessions_per_day=args.sessions_per_day, feeds_per_session=args.feeds_per_session,
                       mechanisms=args.mechanisms,
                       event_types=args.event_types.split(",") if args.event_types else None)
    print(json.dumps(summary, indent=2))
    return 0
