"""Simulated browsing: one day of user sessions, vectorised across all users.

Each active user-day has sessions; each session is a shuffled sequence of
home-feed requests (10-20 impressions each, recalled from the user's
interests, popular and random live posts), searches (followed by result page
views) and browse page views.  Clicks follow impressions with the hidden
probability ``p_click``; views follow clicks; conversions (call/chat) follow
some views; purchases follow some conversions.

With order-carrying mechanisms on (:mod:`feedrank.events.simulator.mechanisms`),
a :class:`~feedrank.events.simulator.context.DayContext` steers recall and
browsing and adds its terms to the click logit; searches and browsing are then
simulated before the feed, so that feed impressions can depend on them.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Optional

import numpy as np

from feedrank.events.simulator.context import DayContext, History
from feedrank.events.simulator.mechanisms import OFF, Mechanisms
from feedrank.events.simulator.sampling import Pool, group_cumsum, sample_rows
from feedrank.events.simulator.world import ClickModel, Items, Taxonomy, Users, interest_share, sigmoid

log = logging.getLogger(__name__)

IMP, CLICK, CONV, SEARCH, VIEW, PURCHASE = range(6)  # index into contract.EVENT_TYPES
# Hourly share of session starts (evening-heavy, like a classifieds app).
HOUR_PROFILE = np.array([1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 3.5, 3.8, 3.6, 3.9,
                         4.5, 4.0, 3.4, 3.3, 3.5, 3.8, 4.2, 5.0, 5.8, 6.0, 4.6, 2.4])
HOUR_PROFILE = HOUR_PROFILE / HOUR_PROFILE.sum()


@dataclasses.dataclass
class Knobs:
    sessions_per_day: float = 1.4   # mean sessions per active user-day
    feeds_per_session: float = 0.9  # mean home-feed requests per session
    searches_per_session: float = 1.5
    browses_per_session: float = 4.5
    recall_interest: float = 0.5    # share of feed slots recalled from interests
    recall_popular: float = 0.3     # ... from popular posts (rest: random live posts)


class DaySimulator:
    def __init__(self, tax: Taxonomy, items: Items, users: Users, click: ClickModel, knobs: Knobs,
                 mech: Mechanisms = OFF):
        self.tax, self.items, self.users, self.click, self.k = tax, items, users, click, knobs
        self.mech, self.history = mech, History()
        self.C, self.R = len(tax.categories), len(tax.regions)

    # ----------------------------------------------------------------- recall
    def _pools(self, day_start: int) -> None:
        it = self.items
        live = np.nonzero((it.created < day_start) & (it.expires > day_start + 86400))[0]
        w = it.weight[live]
        cat, reg = it.cat[live], it.region[live]
        self.live = live
        self.by_cat_reg = Pool(live, cat * self.R + reg, w, self.C * self.R)
        self.by_cat = Pool(live, cat, w, self.C)
        self.by_reg = Pool(live, reg, w, self.R)
        self.glob = Pool(live, np.zeros(len(live), dtype=np.int64), w, 1)

    def _interest_items(self, rng, user: np.ndarray, cat: np.ndarray, p_local: float) -> np.ndarray:
        local = rng.random(len(user)) < p_local
        out = self.by_cat.sample(rng, cat)
        loc = self.by_cat_reg.sample(rng, cat * self.R + self.users.region[user])
        out = np.where(local & (loc >= 0), loc, out)
        return self._fallback(rng, out)

    def _fallback(self, rng, out: np.ndarray) -> np.ndarray:
        bad = out < 0
        if bad.any():
            out[bad] = self.glob.sample(rng, np.zeros(bad.sum(), dtype=np.int64))
        return out

    def _user_cats(self, rng, user: np.ndarray, p_interest: float, ts: Optional[np.ndarray] = None) -> np.ndarray:
        cat = sample_rows(rng, self.users.rows(user, ts))
        explore = rng.random(len(user)) >= p_interest
        cat[explore] = rng.choice(self.C, explore.sum(), p=self.tax.cat_pop)
        return cat

    def _dwell(self, rng, user: np.ndarray, item: np.ndarray, ts: np.ndarray) -> np.ndarray:
        share = interest_share(self.users, self.tax, user, self.items.cat[item], ts=ts)
        mu = np.log(20.0) + 1.2 * np.sqrt(share) + 0.3 * self.items.quality[item]
        return np.round(np.clip(rng.lognormal(mu, 0.8), 1.0, 3600.0), 1)

    # -------------------------------------------------------------------- day
    def run(self, rng: np.random.Generator, day_start: int, req_offset: int) -> Dict[str, np.ndarray]:
        k, users = self.k, self.users
        users.day_start = day_start
        self._pools(day_start)
        # sessions of active users
        active = np.nonzero(rng.random(len(users.region)) < users.activity)[0]
        n_sess = 1 + rng.poisson(max(k.sessions_per_day - 1.0, 0.0), active.size)
        s_user = np.repeat(active, n_sess)
        S = s_user.size
        if S == 0:
            return self._empty_day()
        s_start = (day_start + rng.choice(24, S, p=HOUR_PROFILE) * 3600
                   + rng.integers(0, 3600, S)).astype(np.int64)
        n_feed = rng.poisson(k.feeds_per_session, S)
        n_search = rng.poisson(k.searches_per_session, S)
        n_browse = rng.poisson(k.browses_per_session, S)
        n_feed[(n_feed + n_search + n_browse) == 0] = 1
        n_act = n_feed + n_search + n_browse
        a_sess = np.repeat(np.arange(S), n_act)
        first = np.cumsum(n_act) - n_act
        rank = np.arange(a_sess.size) - first[a_sess]
        kind = np.where(rank < n_feed[a_sess], 0, np.where(rank < (n_feed + n_search)[a_sess], 1, 2))
        kind = kind[np.lexsort((rng.random(a_sess.size), a_sess))]  # shuffle within session
        gap = rng.exponential(45.0, a_sess.size)
        gap[first] = 0.0
        flags = np.zeros(a_sess.size, dtype=bool)
        flags[first] = True
        a_ts = s_start[a_sess] + group_cumsum(gap, flags).astype(np.int64)
        a_user = s_user[a_sess]

        ev: List[Dict[str, np.ndarray]] = []
        f, s, b = kind == 0, kind == 1, kind == 2
        if not self.mech.active:
            impressions = self._feed(rng, a_user[f], a_ts[f], req_offset, ev)
            self._searches(rng, a_user[s], a_ts[s], ev)
            self._browse(rng, a_user[b], a_ts[b], ev)
        else:
            ctx = DayContext(self.mech, rng, self.tax, self.items, users, self.live, self.history, s_user, s_start)
            other: List[Dict[str, np.ndarray]] = []
            self._searches(rng, a_user[s], a_ts[s], other, ctx, a_sess[s])
            self._browse(rng, a_user[b], a_ts[b], other, ctx, a_sess[b])
            ctx.today = other
            impressions = self._feed(rng, a_user[f], a_ts[f], req_offset, ev, ctx, a_sess[f])
            ev += other  # impressions stay the first rows of the day
            self.history.add(ev)
            self.history.prune(day_start)
        out = {key: np.concatenate([e[key] for e in ev]) for key in ev[0] if key != "pa"}
        out["pa"] = np.concatenate([e.get("pa", np.full(len(e["ts"]), np.nan)) for e in ev])
        out["n_requests"] = np.array([int((kind == 0).sum())])
        out["active_users"] = np.array([active.size])
        out.update(impressions)
        return out

    def _browse(self, rng, b_user, b_ts, ev, ctx: Optional[DayContext] = None, sess=None) -> None:
        b_cat = self._user_cats(rng, b_user, 0.9, b_ts)
        if ctx is not None:
            b_cat = ctx.steer_cats(rng, sess, b_cat)
        b_item = self._interest_items(rng, b_user, b_cat, 0.7)
        if ctx is not None:
            b_item = ctx.steer_items(rng, sess, b_cat, b_item)
        ev.append(self._views(rng, b_user, b_item, b_ts, conv_scale=0.12, ev=ev))

    @staticmethod
    def _empty_day() -> Dict[str, np.ndarray]:
        e = np.zeros(0, dtype=np.int64)
        return dict(user=e, item=e, etype=e.astype(np.int8), ts=e, req=e, query=e, dwell=e.astype(float),
                    p=e.astype(float), pa=e.astype(float), n_requests=np.array([0]), active_users=np.array([0]),
                    imp_p=e.astype(float), imp_clicked=e.astype(bool), imp_pos=e)

    def _feed(self, rng, r_user, r_ts, req_offset, ev, ctx: Optional[DayContext] = None,
              r_sess=None) -> Dict[str, np.ndarray]:
        k = self.k
        n_imp = rng.integers(10, 21, r_user.size)  # impressions per request
        # recall 1.5x the slots, dedupe, then keep the first n_imp of each request
        slot_req = np.repeat(np.arange(r_user.size), (n_imp * 3 + 1) // 2)
        user = r_user[slot_req]
        src = rng.random(slot_req.size)
        item = np.empty(slot_req.size, dtype=np.int64)
        m = src < k.recall_interest
        slot_ts = r_ts[slot_req]
        item[m] = self._interest_items(rng, user[m], self._user_cats(rng, user[m], 1.0, slot_ts[m]), 0.7)
        m = (src >= k.recall_interest) & (src < k.recall_interest + k.recall_popular)
        local = self.by_reg.sample(rng, self.users.region[user[m]])
        glob = self.glob.sample(rng, np.zeros(m.sum(), dtype=np.int64))
        item[m] = np.where((rng.random(m.sum()) < 0.5) & (local >= 0), local, glob)
        m = src >= k.recall_interest + k.recall_popular
        if len(self.live):
            item[m] = self.live[rng.integers(0, len(self.live), m.sum())]
        else:
            item[m] = -1
        if ctx is not None:
            item = ctx.recall(rng, r_sess[slot_req], user, slot_ts, item, src < k.recall_interest, self.by_cat)
        keep = item >= 0
        # one impression per post per request, in slot order
        key = slot_req[keep] * (len(self.items.cat) + 1) + item[keep]
        _, first_idx = np.unique(key, return_index=True)
        sel = np.nonzero(keep)[0][np.sort(first_idx)]
        slot_req, user, item = slot_req[sel], user[sel], item[sel]
        ts = r_ts[slot_req]
        # the feed does not re-show a post to a user within 30 minutes
        o = np.lexsort((ts, user * (len(self.items.cat) + 1) + item))
        pair = (user * (len(self.items.cat) + 1) + item)[o]
        rep = np.zeros(o.size, dtype=bool)
        rep[1:] = (pair[1:] == pair[:-1]) & (ts[o][1:] - ts[o][:-1] <= 1800)
        fresh = np.ones(o.size, dtype=bool)
        fresh[o[rep]] = False
        slot_req, user, item, ts = slot_req[fresh], user[fresh], item[fresh], ts[fresh]
        starts = np.searchsorted(slot_req, np.arange(r_user.size))
        pos = np.arange(slot_req.size) - starts[slot_req]  # 0-based position in the request
        fit = pos < n_imp[slot_req]
        slot_req, user, item, ts, pos = slot_req[fit], user[fit], item[fit], ts[fit], pos[fit]
        req = slot_req.astype(np.int64) + req_offset
        extra = None if ctx is None else ctx.logit(user, item, ts, r_sess[slot_req], pos)
        base = self.click.logit(rng, self.tax, self.items, self.users, user, item, ts=ts)
        p = sigmoid(base if extra is None else base + extra)
        # the aggregates-only oracle: the same logit without the order-carrying terms
        # (position is kept: it is not a property of the history)
        pa = p if extra is None else sigmoid(base + ctx.position_term(pos))
        clicked = rng.random(p.size) < p
        n = p.size
        ev.append(dict(user=user, item=item, etype=np.full(n, IMP, np.int8), ts=ts, req=req,
                       query=np.full(n, -1, np.int64), dwell=np.full(n, np.nan), p=p, pa=pa))
        c_user, c_item, c_req = user[clicked], item[clicked], req[clicked]
        c_ts = ts[clicked] + np.clip(rng.lognormal(np.log(20.0), 1.0, c_user.size), 2, 1700).astype(np.int64)
        nc = c_user.size
        ev.append(dict(user=c_user, item=c_item, etype=np.full(nc, CLICK, np.int8), ts=c_ts, req=c_req,
                       query=np.full(nc, -1, np.int64), dwell=np.full(nc, np.nan), p=np.full(nc, np.nan)))
        v = rng.random(nc) < 0.9
        ev.append(self._views(rng, c_user[v], c_item[v], c_ts[v] + 1, conv_scale=1.0, ev=ev))
        return dict(imp_p=p, imp_clicked=clicked, imp_pos=pos.astype(np.int64))

    def _searches(self, rng, s_user, s_ts, ev, ctx: Optional[DayContext] = None, sess=None) -> None:
        tax = self.tax
        n = s_user.size
        cat = self._user_cats(rng, s_user, 0.85, s_ts)
        if ctx is not None:
            cat = ctx.steer_cats(rng, sess, cat)
            ctx.record_searches(sess, cat, s_ts)
        ntok = np.array([len(t) for t in tax.cat_tokens])
        flat = np.concatenate(tax.cat_tokens)
        off = np.concatenate([[0], np.cumsum(ntok)[:-1]])
        # token rank ~ truncated geometric: the first tokens of a category are the common queries
        r1 = np.minimum(rng.geometric(0.35, n) - 1, ntok[cat] - 1)
        r2 = np.minimum(rng.geometric(0.2, n) - 1, ntok[cat] - 1)
        t1 = flat[off[cat] + r1]
        t2 = np.where((rng.random(n) < 0.45) & (r2 != r1), flat[off[cat] + r2], -1)
        t3 = np.where(rng.random(n) < 0.2, self.users.region[s_user], -1)  # region tokens are ids 0..R-1
        query = (t1.astype(np.int64) << 32) | ((t2 + 1).astype(np.int64) << 16) | (t3 + 1).astype(np.int64)
        ev.append(dict(user=s_user, item=np.full(n, -1, np.int64), etype=np.full(n, SEARCH, np.int8),
                       ts=s_ts, req=np.full(n, -1, np.int64), query=query, dwell=np.full(n, np.nan),
                       p=np.full(n, np.nan)))
        m = rng.poisson(1.6, n)
        r_user = np.repeat(s_user, m)
        r_cat = np.repeat(cat, m)
        gaps = rng.exponential(35.0, r_user.size) + 3
        flags = np.zeros(r_user.size, dtype=bool)
        flags[(np.cumsum(m) - m)[m > 0]] = True
        r_ts = np.repeat(s_ts, m) + group_cumsum(gaps, flags).astype(np.int64)
        r_item = self._interest_items(rng, r_user, r_cat, 0.8)
        if ctx is not None:
            r_item = ctx.steer_items(rng, np.repeat(sess, m), r_cat, r_item)
        ev.append(self._views(rng, r_user, r_item, r_ts, conv_scale=0.12, ev=ev))

    def _views(self, rng, user, item, ts, conv_scale: float, ev) -> Dict[str, np.ndarray]:
        """Page views; appends the conversions and purchases they lead to, returns the views."""
        ok = item >= 0  # no live post to show
        user, item, ts = user[ok], item[ok], ts[ok]
        n = user.size
        dwell = self._dwell(rng, user, item, ts)
        cat = self.items.cat[item]
        share = interest_share(self.users, self.tax, user, cat, ts=ts)
        pc = conv_scale * self.tax.conv_base[cat] * np.exp(1.5 * (np.sqrt(share) - 0.4)
                                                           + 0.5 * self.items.quality[item])
        conv = rng.random(n) < np.minimum(pc, 0.9)
        cv_user, cv_item = user[conv], item[conv]
        cv_ts = ts[conv] + (dwell[conv] * rng.uniform(0.3, 1.0, conv.sum())).astype(np.int64) + 3
        nc = cv_user.size
        empty = lambda m, v, dt: np.full(m, v, dt)  # noqa: E731
        ev.append(dict(user=cv_user, item=cv_item, etype=empty(nc, CONV, np.int8), ts=cv_ts,
                       req=empty(nc, -1, np.int64), query=empty(nc, -1, np.int64),
                       dwell=empty(nc, np.nan, float), p=empty(nc, np.nan, float)))
        buy = rng.random(nc) < self.tax.buy_rate[self.items.cat[cv_item]]
        nb = int(buy.sum())
        b_ts = cv_ts[buy] + 60 + rng.exponential(3600.0, nb).astype(np.int64)
        ev.append(dict(user=cv_user[buy], item=cv_item[buy], etype=empty(nb, PURCHASE, np.int8), ts=b_ts,
                       req=empty(nb, -1, np.int64), query=empty(nb, -1, np.int64),
                       dwell=empty(nb, np.nan, float), p=empty(nb, np.nan, float)))
        return dict(user=user, item=item, etype=empty(n, VIEW, np.int8), ts=ts, req=empty(n, -1, np.int64),
                    query=empty(n, -1, np.int64), dwell=dwell, p=empty(n, np.nan, float))
