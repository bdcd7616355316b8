"""What a simulated user does with the posts shown: clicks, views, conversions, purchases.

:func:`draws` takes, per candidate of a request, every random number of its
possible outcome (uniforms of click, view, conversion and purchase, the click
delay, the dwell time, the conversion and purchase times), so that a post's
outcome does not depend on the slot or arm that shows it; :func:`outcome`
applies them to the shown posts with their true probabilities.  The rules are
the batch feed's (`browsing.DaySimulator._feed` and `_views`): 90% of clicks
are followed by a view, a view converts with the category's rate scaled by the
interest and the post's quality, a conversion leads to a purchase at the
category's rate.
"""
from __future__ import annotations

import logging
from typing import Dict

import numpy as np

from feedrank.events.simulator import world as world_lib
from feedrank.events.simulator.browsing import CLICK, CONV, PURCHASE, VIEW
from feedrank.events.simulator.online_world import VIEW_AFTER_CLICK, World

log = logging.getLogger(__name__)

EVENT_NAMES = {CLICK: "click", VIEW: "view", CONV: "conversion", PURCHASE: "purchase"}


def draws(rng: np.random.Generator, n: int, w: World, user: int, ts: int, cands: np.ndarray) -> Dict:
    """Per candidate, every random number of its possible outcome (the same whichever slot shows it)."""
    it = w.sim.items
    share = world_lib.interest_share(w.sim.users, w.sim.tax, np.full(n, user), it.cat[cands],
                                        ts=np.full(n, ts))
    mu = np.log(20.0) + 1.2 * np.sqrt(share) + 0.3 * it.quality[cands]
    return dict(u=rng.random((n, 4)),
                click_delay=np.clip(rng.lognormal(np.log(20.0), 1.0, n), 2, 1700).astype(np.int64),
                dwell=np.round(np.clip(rng.lognormal(mu, 0.8), 1.0, 3600.0), 1),
                conv_frac=rng.uniform(0.3, 1.0, n), buy_delay=rng.exponential(3600.0, n).astype(np.int64))


def outcome(w: World, user: int, user_id: str, rid: str, ts: int, j: np.ndarray, items: np.ndarray,
             p_click: np.ndarray, p_conv_view: np.ndarray, d: Dict):
    """Clicks, views, conversions and purchases of the shown posts ``items`` (candidate
    indices ``j``, slot order): (contract events for the stream, batch-layout arrays)."""
    u = d["u"][j]
    click = u[:, 0] < p_click
    view = click & (u[:, 1] < VIEW_AFTER_CLICK)
    conv = view & (u[:, 2] * VIEW_AFTER_CLICK < p_conv_view)
    buy = conv & (u[:, 3] < w.sim.tax.buy_rate[w.sim.items.cat[items]])
    rows = []   # (etype, ts, slot, dwell)
    for slot in np.nonzero(click)[0]:
        c = j[slot]
        t_click = ts + int(d["click_delay"][c])
        rows.append((CLICK, t_click, slot, None))
        if view[slot]:
            rows.append((VIEW, t_click + 1, slot, float(d["dwell"][c])))
        if conv[slot]:
            t_conv = t_click + 1 + int(d["dwell"][c] * d["conv_frac"][c]) + 3
            rows.append((CONV, t_conv, slot, None))
            if buy[slot]:
                rows.append((PURCHASE, t_conv + 60 + int(d["buy_delay"][c]), slot, None))
    events = [{"event_id": f"{rid}-{slot:03d}-{EVENT_NAMES[e]}", "user_id": user_id,
               "item_id": str(w.item_ids[items[slot]]), "event": EVENT_NAMES[e], "ts": int(t), "request_id": rid,
               "query": "", "dwell_s": dwell} for e, t, slot, dwell in rows]
    n = len(rows)
    outcome = dict(user=np.full(n, user, dtype=np.int64),
                   item=np.array([items[r[2]] for r in rows], dtype=np.int64),
                   etype=np.array([r[0] for r in rows], dtype=np.int8),
                   ts=np.array([r[1] for r in rows], dtype=np.int64))
    return events, outcome
