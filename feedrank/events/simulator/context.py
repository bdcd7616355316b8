"""The state the order-carrying mechanisms read: a day's sessions and the recent past.

:class:`History` keeps the views and conversions of the last days;
:class:`DayContext` holds one day's session missions and searches, steers
recall and browsing towards them, and computes the mechanisms' terms of the
click logit for impressions (see :mod:`feedrank.events.simulator.mechanisms`).
Only used when a mechanism is on.
"""
from __future__ import annotations

import logging
from typing import Dict, List

import numpy as np

from feedrank.events.simulator.mechanisms import Mechanisms, decay, funnel_table, last_before, price_band
from feedrank.events.simulator.sampling import Pool, sample_rows
from feedrank.events.simulator.world import Items, Taxonomy, Users

log = logging.getLogger(__name__)

VIEW, CONV = 4, 2  # etype codes (browsing.IMP, CLICK, CONV, SEARCH, VIEW, PURCHASE)
HORIZON_S = 10 * 86400      # history kept for the mechanisms
REVISIT_WINDOW_S = 3 * 86400  # viewed posts the feed may re-show


class History:
    """Views and conversions (user, item, ts) of the recent past."""

    def __init__(self) -> None:
        e = np.zeros(0, dtype=np.int64)
        self.view = (e, e, e)
        self.conv = (e, e, e)

    def add(self, events: List[Dict[str, np.ndarray]]) -> None:
        """Appends the view and conversion rows of event dicts (as built by browsing)."""
        for code, name in ((VIEW, "view"), (CONV, "conv")):
            parts = [tuple(e[k][e["etype"] == code].astype(np.int64) for k in ("user", "item", "ts"))
                     for e in events if len(e["etype"])]
            old = getattr(self, name)
            setattr(self, name, tuple(np.concatenate([old[j]] + [p[j] for p in parts]) for j in range(3)))

    def prune(self, now: int) -> None:
        for name in ("view", "conv"):
            u, i, t = getattr(self, name)
            keep = t >= now - HORIZON_S
            setattr(self, name, (u[keep], i[keep], t[keep]))


def funnel_matrix(tax: Taxonomy) -> np.ndarray:
    """(C, C) 0/1 matrix: target categories of each source category's funnel."""
    src, dst, _ = funnel_table(tax.categories)
    m = np.zeros((len(tax.categories),) * 2)
    m[src, dst] = 1.0
    return m


def apply_funnel_interest(mech: Mechanisms, tax: Taxonomy, items: Items, interest: np.ndarray,
                          conv_user: np.ndarray, conv_item: np.ndarray) -> None:
    """After conversions in funnel sources, the targets gain interest (a share of the top one)."""
    if not mech.funnel or not mech.funnel_interest or conv_user.size == 0:
        return
    bump = funnel_matrix(tax)[items.cat[conv_item]]
    has = bump.any(1)
    u = conv_user[has]
    if u.size == 0:
        return
    np.add.at(interest, u, bump[has] * mech.funnel_interest * interest[u].max(1, keepdims=True))
    rows = np.unique(u)
    interest[rows] /= interest[rows].sum(1, keepdims=True)


class DayContext:
    """One day's mechanism state: session missions, searches, and the history before today."""

    def __init__(self, mech: Mechanisms, rng: np.random.Generator, tax: Taxonomy, items: Items, users: Users,
                 live: np.ndarray, history: History, s_user: np.ndarray, s_start: np.ndarray):
        self.m, self.tax, self.items, self.users, self.history = mech, tax, items, users, history
        self.C, self.R = len(tax.categories), len(tax.regions)
        self.s_start = s_start
        S = s_user.size
        self.has = np.zeros(S, dtype=bool)
        self.band = price_band(items.price_z)
        if mech.mission:
            self.has = rng.random(S) < mech.mission_rate
            cat = sample_rows(rng, users.rows(s_user, s_start))
            new_need = rng.random(S) < 0.3
            cat[new_need] = rng.choice(self.C, int(new_need.sum()), p=tax.cat_pop)
            away = rng.random(S) >= 0.6
            reg = users.region[s_user].copy()
            reg[away] = rng.choice(self.R, int(away.sum()), p=tax.region_pop)
            self.m_cat, self.m_reg, self.m_band = cat, reg, rng.integers(0, 3, S)
            key = (items.cat[live] * self.R + items.region[live]) * 3 + self.band[live]
            self.pool = Pool(live, key, items.weight[live], self.C * self.R * 3)
        self.s_sess: List[np.ndarray] = []
        self.s_cat: List[np.ndarray] = []
        self.s_ts: List[np.ndarray] = []
        self.today: List[Dict[str, np.ndarray]] = []

    # ----------------------------------------------------------- behaviour
    def steer_cats(self, rng: np.random.Generator, sess: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Mission sessions spend ``mission_focus`` of their actions in the mission's category."""
        if not self.m.mission:
            return cat
        on = self.has[sess] & (rng.random(sess.size) < self.m.mission_focus)
        cat = cat.copy()
        cat[on] = self.m_cat[sess[on]]
        return cat

    def steer_items(self, rng: np.random.Generator, sess: np.ndarray, cat: np.ndarray,
                    item: np.ndarray) -> np.ndarray:
        """Within the mission's category, ``mission_focus`` of the posts come from its region and band."""
        if not self.m.mission:
            return item
        on = self.has[sess] & (cat == self.m_cat[sess]) & (rng.random(sess.size) < self.m.mission_focus)
        if on.any():
            s = sess[on]
            got = self.pool.sample(rng, (self.m_cat[s] * self.R + self.m_reg[s]) * 3 + self.m_band[s])
            item = item.copy()
            item[np.nonzero(on)[0][got >= 0]] = got[got >= 0]
        return item

    def record_searches(self, sess: np.ndarray, cat: np.ndarray, ts: np.ndarray) -> None:
        self.s_sess.append(sess)
        self.s_cat.append(cat)
        self.s_ts.append(ts)

    def recall(self, rng: np.random.Generator, sess: np.ndarray, user: np.ndarray, ts: np.ndarray,
               item: np.ndarray, from_interest: np.ndarray, by_cat) -> np.ndarray:
        """Feed recall: mission posts in interest slots of mission sessions; viewed, not
        contacted posts of the last days in a ``revisit_recall`` share of the slots."""
        item = item.copy()
        if self.m.mission:
            on = from_interest & self.has[sess] & (rng.random(sess.size) < self.m.mission_focus)
            cat = self.m_cat[sess[on]]
            got = by_cat.sample(rng, cat)
            got = self.steer_items(rng, sess[on], cat, np.where(got >= 0, got, item[on]))
            item[on] = got
        if self.m.revisit:
            on = np.nonzero(rng.random(sess.size) < self.m.revisit_recall)[0]
            vu, vi, vt = self.history.view
            cu, ci, _ = self.history.conv
            n_items = len(self.items.cat)
            day0 = int(self.s_start.min()) if self.s_start.size else 0
            live = ((vt >= day0 - REVISIT_WINDOW_S) & (self.items.created[vi] < day0)
                    & (self.items.expires[vi] > day0 + 86400))
            cand = np.unique(vu[live] * n_items + vi[live])
            cand = cand[~np.isin(cand, cu * n_items + ci)]
            if cand.size and on.size:
                c_user = cand // n_items
                lo = np.searchsorted(c_user, user[on], "left")
                hi = np.searchsorted(c_user, user[on], "right")
                pick = lo + (rng.random(on.size) * (hi - lo)).astype(np.int64)
                ok = hi > lo
                item[on[ok]] = cand[pick[ok]] % n_items
        return item

    # ------------------------------------------------------------- truth
    def logit(self, user: np.ndarray, item: np.ndarray, ts: np.ndarray, sess: np.ndarray,
              pos: np.ndarray) -> np.ndarray:
        """The mechanisms' terms of the click logit of impressions."""
        m, it = self.m, self.items
        cat, reg = it.cat[item], it.region[item]
        ts = ts.astype(np.int64)
        out = np.zeros(item.size)
        if m.mission:
            age = np.maximum(ts - self.s_start[sess], 0)
            hit = self.has[sess] & (cat == self.m_cat[sess])
            size = (m.mission + m.mission_region * (reg == self.m_reg[sess])
                    + m.mission_price * (self.band[item] == self.m_band[sess]))
            out += np.where(hit, size * np.exp(-age / (60.0 * m.mission_tau_min)), 0.0)
        if m.search_intent and self.s_sess:
            s_key = np.concatenate(self.s_sess) * self.C + np.concatenate(self.s_cat)
            last = last_before(s_key, np.concatenate(self.s_ts), sess * self.C + cat, ts)
            out += m.search_intent * decay(ts, last, 60.0 * m.search_tau_min)
        hist = History()
        hist.view, hist.conv = self.history.view, self.history.conv
        hist.add(self.today)
        cu, ci, ct = hist.conv
        if m.satiation:
            last = last_before(cu * self.C + it.cat[ci], ct, user * self.C + cat, ts)
            out -= m.satiation * decay(ts, last, 3600.0 * m.satiation_tau_h)
        if m.revisit:
            n = len(it.cat)
            vu, vi, vt = hist.view
            seen = last_before(vu * n + vi, vt, user * n + item, ts)
            contacted = last_before(cu * n + ci, ct, user * n + item, ts) >= 0
            out += m.revisit * np.where(contacted, 0.0, decay(ts, seen, 3600.0 * m.revisit_tau_h))
        if m.funnel:
            out += m.funnel * self._funnel(hist, user, cat, reg, ts)
        return out + self.position_term(pos)

    def position_term(self, pos: np.ndarray) -> np.ndarray:
        """The position-bias term of the click logit (0 when the mechanism is off)."""
        if not self.m.position_bias:
            return np.zeros(len(pos))
        return -self.m.position_bias * np.log1p(pos)

    def _funnel(self, hist: History, user, cat, reg, ts) -> np.ndarray:
        """decay since the latest conversion that opened a funnel to (user, cat[, region])."""
        src, dst, same = funnel_table(self.tax.categories)
        cu, ci, ct = hist.conv
        ccat = self.items.cat[ci]
        # every (conversion, funnel row) pair whose source is the conversion's category
        order = np.argsort(src, kind="stable")
        src_s = src[order]
        lo, hi = np.searchsorted(src_s, ccat, "left"), np.searchsorted(src_s, ccat, "right")
        reps = hi - lo
        row = order[np.repeat(lo, reps) + np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)]
        e_user, e_ts = np.repeat(cu, reps), np.repeat(ct, reps)
        e_reg = np.where(same[row], np.repeat(self.items.region[ci], reps), self.R)
        R1 = self.R + 1
        e_key = (e_user * self.C + dst[row]) * R1 + e_reg
        base = (user * self.C + cat) * R1
        last = np.maximum(last_before(e_key, e_ts, base + self.R, ts), last_before(e_key, e_ts, base + reg, ts))
        return decay(ts, last, 86400.0 * self.m.funnel_tau_days)
