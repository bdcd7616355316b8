"""The hidden world of a simulated log, rebuilt and continued after its end.

:func:`rebuild` reads a log's ``world.json`` and re-runs the batch simulator's
day loop with the same seed and settings, without writing anything: the
posts, users, interests (drift, purchases, funnels) and the mechanisms'
history come out exactly as the batch simulator left them at the log's end
(checked against the request count in ``world.json``).  Re-running is the
simplest way to an exact state: the random stream that moves the interests is
interleaved with the one that draws the events, so neither can be skipped.

:class:`OnlineDay` is one simulated day after the log: the interests take
that day's drift, the live posts are the day's, and with mechanisms on a
:class:`~feedrank.events.simulator.context.DayContext` holds the day's online
sessions (missions) and the history.  Per request it recalls candidates the
way the batch feed does, and gives the true click and conversion
probabilities of any post in any shown slot.  The world's posts are fixed: no
post is created after the log's end, so online runs should span few days.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Dict, Optional

import numpy as np
import pyarrow.parquet as pq

from feedrank.events.simulator import mechanisms as mech_lib
from feedrank.events.simulator import world as world_lib
from feedrank.events.simulator.browsing import CONV, PURCHASE, DaySimulator, Knobs
from feedrank.events.simulator.context import DayContext, History, apply_funnel_interest
from feedrank.events.simulator.generate import _advance_interests

log = logging.getLogger(__name__)

RESHOW_S = 1800           # the feed does not re-show a post to a user within 30 minutes (as in the batch)
VIEW_AFTER_CLICK = 0.9    # share of clicks followed by a page view (as in the batch feed)
MAX_CONVERT = 0.9         # cap of the conversion probability of a view (as in the batch)


class OnlineError(Exception):
    """A problem with the inputs of the online mode, with a message for the user."""


@dataclasses.dataclass
class World:
    """The rebuilt world at the log's end."""
    params: Dict
    sim: DaySimulator
    user_ids: np.ndarray      # object array, index -> user id of the log
    item_ids: np.ndarray
    interest_shift: float

    @property
    def end_ts(self) -> int:
        return int(self.params["end_ts"])


def read_params(log_dir: str) -> Dict:
    """``world.json``'s ``params`` and ``summary`` of a simulated log."""
    path = os.path.join(log_dir, "world.json")
    if not os.path.isfile(path):
        raise OnlineError(f"{log_dir} has no world.json: the online mode needs a log written by the simulator "
                          f"(python -m feedrank.events.simulator --out {log_dir})")
    try:
        with open(path) as f:
            world = json.load(f)
        return {**world["params"], "summary": world.get("summary", {})}
    except (OSError, ValueError, KeyError) as e:
        raise OnlineError(f"{path} is not a simulator world file: {e}") from None


def _ids(log_dir: str, table: str, column: str, n: int) -> np.ndarray:
    path = os.path.join(log_dir, f"{table}.parquet")
    if not os.path.isfile(path):
        raise OnlineError(f"{log_dir} has no {table}.parquet (the simulator writes it beside world.json)")
    ids = pq.read_table(path, columns=[column]).column(column).to_pylist()
    if len(ids) != n:
        raise OnlineError(f"{path} has {len(ids)} rows, world.json says {n}: the files are from different runs")
    return np.array(ids, dtype=object)


def rebuild(log_dir: str) -> World:
    """The world of ``log_dir`` at its end, by re-running its simulation (no files written)."""
    p = read_params(log_dir)
    t0 = time.time()
    try:
        mech = mech_lib.parse(p.get("mechanisms"))
        knobs = Knobs(**p.get("knobs", {}))
        click = world_lib.ClickModel(**p.get("click_model", {}))
        days, start_ts = int(p["days"]), int(p["start_ts"])
        rng = np.random.Generator(np.random.PCG64(int(p["seed"])))
        tax = world_lib.build_taxonomy(rng, int(p["n_regions"]))
        items = world_lib.make_items(rng, tax, int(p["items"]), start_ts, days, float(p["quality_sd"]))
        users = world_lib.make_users(rng, tax, int(p["users"]), float(p["activity"]))
    except (KeyError, TypeError, ValueError) as e:
        raise OnlineError(f"world.json of {log_dir} lacks or has a bad setting: {e}") from None
    if p.get("categories") and list(p["categories"]) != tax.categories:
        raise OnlineError("world.json's categories differ from this simulator's taxonomy: "
                          "the log was written by another version of the simulator")
    sim = DaySimulator(tax, items, users, click, knobs, mech)
    shift = float(p["interest_shift"])
    n_requests = 0
    for d in range(days):   # generate.simulate's day loop, keeping only the state
        if mech.continuous_drift:
            _advance_interests(rng, tax, users, shift, first=d == 0)
        elif d > 0:
            world_lib.drift_interests(rng, tax, users, shift)
        day = sim.run(rng, start_ts + d * 86400, n_requests)
        n_requests += int(day["n_requests"][0])
        end_of_day(sim, day["user"], day["item"], day["etype"])
        log.info("rebuilt day %d/%d of the world (%.0f s)", d + 1, days, time.time() - t0)
    want = p["summary"].get("requests")
    if want is not None and int(want) != n_requests:
        raise OnlineError(f"the rebuilt world does not reproduce the log ({n_requests} feed requests, world.json "
                          f"says {want}): the log was written by another version of the simulator")
    return World(p, sim, _ids(log_dir, "users", "user_id", int(p["users"])),
                 _ids(log_dir, "items", "item_id", int(p["items"])), shift)


def end_of_day(sim: DaySimulator, user: np.ndarray, item: np.ndarray, etype: np.ndarray) -> None:
    """The batch simulator's end-of-day interest updates: a purchase collapses the
    interest in its category, a conversion opens its funnels."""
    us, it = sim.users, sim.items
    state = us.interest_next if sim.mech.continuous_drift else us.interest
    b = etype == PURCHASE
    state[user[b], it.cat[item[b]]] *= 0.2
    c = etype == CONV
    apply_funnel_interest(sim.mech, sim.tax, it, state, user[c], item[c])


def _only_users(h: History, users: np.ndarray) -> History:
    out = History()
    for name in ("view", "conv"):
        u, i, t = getattr(h, name)
        keep = np.isin(u, users)
        setattr(out, name, (u[keep], i[keep], t[keep]))
    return out


class OnlineDay:
    """One online day ``day`` (0-based from the log's start, so >= the log's days)."""

    def __init__(self, world: World, day: int, rng: np.random.Generator, s_user: np.ndarray,
                 s_start: np.ndarray, users: np.ndarray):
        sim = self.sim = world.sim
        mech = sim.mech
        if mech.continuous_drift:
            _advance_interests(rng, sim.tax, sim.users, world.interest_shift, first=False)
        else:
            world_lib.drift_interests(rng, sim.tax, sim.users, world.interest_shift)
        self.day_start = int(world.params["start_ts"]) + day * 86400
        sim.users.day_start = self.day_start
        sim._pools(self.day_start)
        sim.history.prune(self.day_start)
        sim.history = _only_users(sim.history, users)   # the run's users: a user's truth reads only their past
        self.ctx: Optional[DayContext] = None
        if mech.active:
            self.ctx = DayContext(mech, rng, sim.tax, sim.items, sim.users, sim.live, sim.history,
                                  s_user.astype(np.int64), s_start.astype(np.int64))
        self.shown_at: Dict[int, Dict[int, int]] = {}    # user -> post -> last time shown
        e = np.zeros(0, dtype=np.int64)   # today's outcome events (batch layout), one dict of arrays
        self.events: Dict[str, np.ndarray] = dict(user=e, item=e, etype=e.astype(np.int8), ts=e)

    def recall(self, rng: np.random.Generator, user: int, sess: int, ts: int, n: int) -> np.ndarray:
        """Up to ``n`` distinct candidate posts for a feed request, recalled like the
        batch feed's slots (interests, popular, random; missions and revisits), without
        the posts shown to the user in the last 30 minutes."""
        sim, k = self.sim, self.sim.k
        slots = (n * 3 + 1) // 2
        u = np.full(slots, user, dtype=np.int64)
        t = np.full(slots, ts, dtype=np.int64)
        src = rng.random(slots)
        item = np.full(slots, -1, dtype=np.int64)
        m = src < k.recall_interest
        item[m] = sim._interest_items(rng, u[m], sim._user_cats(rng, u[m], 1.0, t[m]), 0.7)
        m = (src >= k.recall_interest) & (src < k.recall_interest + k.recall_popular)
        local = sim.by_reg.sample(rng, sim.users.region[u[m]])
        glob = sim.glob.sample(rng, np.zeros(int(m.sum()), dtype=np.int64))
        item[m] = np.where((rng.random(int(m.sum())) < 0.5) & (local >= 0), local, glob)
        m = src >= k.recall_interest + k.recall_popular
        if len(sim.live):
            item[m] = sim.live[rng.integers(0, len(sim.live), int(m.sum()))]
        if self.ctx is not None:
            item = self.ctx.recall(rng, np.full(slots, sess, dtype=np.int64), u, t, item,
                                   src < k.recall_interest, sim.by_cat)
        item = item[item >= 0]
        _, first = np.unique(item, return_index=True)
        item = item[np.sort(first)]
        recent = self.shown_at.get(user, {})
        fresh = np.array([ts - recent.get(int(i), -10 ** 12) > RESHOW_S for i in item], dtype=bool)
        return item[fresh][:n]

    def logits(self, rng: np.random.Generator, user: int, sess: int, ts: int, cands: np.ndarray) -> np.ndarray:
        """The true click logit of each candidate shown in the first slot (noise drawn once
        per candidate: both arms see the same draw); add :meth:`position_term` per slot."""
        sim = self.sim
        u = np.full(len(cands), user, dtype=np.int64)
        t = np.full(len(cands), ts, dtype=np.int64)
        base = sim.click.logit(rng, sim.tax, sim.items, sim.users, u, cands, ts=t)
        if self.ctx is None:
            return base
        self.ctx.today = [self.events]
        return base + self.ctx.logit(u, cands, t, np.full(len(cands), sess, dtype=np.int64),
                                     np.zeros(len(cands), dtype=np.int64))

    def position_term(self, pos: np.ndarray) -> np.ndarray:
        if self.ctx is None:
            return np.zeros(len(pos))
        return self.ctx.position_term(pos)

    def p_click(self, logit: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """True click probabilities of posts with first-slot logits ``logit`` shown at ``pos``."""
        return world_lib.sigmoid(logit + self.position_term(pos))

    def p_convert_given_click(self, user: int, ts: int, cands: np.ndarray) -> np.ndarray:
        """P(view) x P(conversion | view) after a click (the batch's rule, interests at the request)."""
        sim = self.sim
        cat = sim.items.cat[cands]
        share = world_lib.interest_share(sim.users, sim.tax, np.full(len(cands), user, dtype=np.int64), cat,
                               ts=np.full(len(cands), ts, dtype=np.int64))
        pc = sim.tax.conv_base[cat] * np.exp(1.5 * (np.sqrt(share) - 0.4) + 0.5 * sim.items.quality[cands])
        return VIEW_AFTER_CLICK * np.minimum(pc, MAX_CONVERT)

    def record(self, user: int, shown: np.ndarray, ts: int, outcome: Dict[str, np.ndarray]) -> None:
        """Notes what the user was shown and the outcome events (for re-show rules,
        the mechanisms' history and the end-of-day interest updates)."""
        recent = self.shown_at.setdefault(user, {})
        for i in shown:
            recent[int(i)] = ts
        if len(outcome["ts"]):
            self.events = {k: np.concatenate([v, outcome[k].astype(v.dtype)]) for k, v in self.events.items()}

    def close(self) -> None:
        """End of the day: interest updates, and the day's views and conversions join the history."""
        cat = self.events
        if not len(cat["ts"]):
            return
        order = np.lexsort((cat["etype"], cat["item"], cat["ts"], cat["user"]))   # independent of arrival order
        cat = {k: v[order] for k, v in cat.items()}
        end_of_day(self.sim, cat["user"], cat["item"], cat["etype"])
        self.sim.history.add([cat])
