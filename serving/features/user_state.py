"""The user counters and session / recency state in Redis, and the features
read from it (the online twin of `feedrank.examples.user_counters`).

Per user two hashes (``p`` is the namespace prefix):

* ``p:u:<user_id>`` - ``imp`` / ``clk``: the user's impression / click events;
  ``imp:<category>`` / ``clk:<category>``: the same per post category;
  ``last:<category>``: the latest ``ts`` of a click, view or conversion in the
  category; ``ts``: the latest event ``ts`` (every valid event type);
  ``start``: the ``ts`` that started the current session;
* ``p:sess:<user_id>`` - the current session's click and view events:
  ``n`` in all, ``c:<category>`` per category.

An event (applied once per ``event_id`` by the writer's Lua script, with its
post's category from the attribute store) starts a new session when it is
more than `features.SESSION_GAP_S` after the user's latest event (the
session hash is deleted, ``start`` = its ``ts``).  Events arriving in ``ts``
order (ties in any order) reproduce the example generator exactly; a late
event is counted in the counters and recency as usual, and in the session
only when it is not older than the current session's start.

Reading at request time ``T``: the counters as they stand; the session share
is 0 when ``T`` is more than the gap after ``ts``.  Needs neither pandas nor
TensorFlow (the transformer imports it).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Sequence

from feedrank import features as F
from feedrank.events import contract

log = logging.getLogger(__name__)

# event type -> what it updates: i(mpressions), c(licks), r(ecency), s(ession share)
EVENT_FLAGS: Dict[str, str] = {contract.IMPRESSION: "i", contract.CLICK: "crs",
                               contract.VIEW: "rs", contract.CONVERSION: "r"}

# Lua applied after the event's seen marker and channel update (see schema.APPLY_LUA).
# KEYS[4]: user hash, KEYS[5]: session hash; ARGV[4]: ts, ARGV[5]: flags,
# ARGV[6]: category ("" for none), ARGV[7]: session gap seconds.
LUA = """
local t, flags, cat = tonumber(ARGV[4]), ARGV[5], ARGV[6]
if string.find(flags, 'i', 1, true) then
  redis.call('HINCRBY', KEYS[4], 'imp', 1)
  if cat ~= '' then redis.call('HINCRBY', KEYS[4], 'imp:' .. cat, 1) end
end
if string.find(flags, 'c', 1, true) then
  redis.call('HINCRBY', KEYS[4], 'clk', 1)
  if cat ~= '' then redis.call('HINCRBY', KEYS[4], 'clk:' .. cat, 1) end
end
if cat ~= '' and string.find(flags, 'r', 1, true) then
  local old = tonumber(redis.call('HGET', KEYS[4], 'last:' .. cat))
  if old == nil or t > old then redis.call('HSET', KEYS[4], 'last:' .. cat, ARGV[4]) end
end
local last = tonumber(redis.call('HGET', KEYS[4], 'ts'))
local start = tonumber(redis.call('HGET', KEYS[4], 'start'))
if last == nil or t - last > tonumber(ARGV[7]) then
  redis.call('DEL', KEYS[5])
  redis.call('HSET', KEYS[4], 'ts', ARGV[4], 'start', ARGV[4])
  start = t
elseif t > last then
  redis.call('HSET', KEYS[4], 'ts', ARGV[4])
end
if cat ~= '' and string.find(flags, 's', 1, true) and t >= start then
  redis.call('HINCRBY', KEYS[5], 'n', 1)
  redis.call('HINCRBY', KEYS[5], 'c:' .. cat, 1)
end
"""


def _num(state: Mapping[str, str], field: str) -> Optional[float]:
    v = state.get(field)
    return float(v) if v is not None else None


def user_features(counters: Mapping[str, str]) -> Dict[str, float]:
    """The user-side features (once per request)."""
    imp, clk = _num(counters, "imp") or 0.0, _num(counters, "clk") or 0.0
    return {F.USER_HIST_IMPRESSIONS.name: imp, F.USER_HIST_CLICKS.name: clk,
            F.USER_HIST_CTR.name: F.smoothed_ctr(clk, imp)}


def cross_features(counters: Mapping[str, str], session: Mapping[str, str], ts: int,
                   categories: Sequence[str]) -> Dict[str, List[float]]:
    """The per-candidate features for candidates of ``categories`` ("" for an
    unknown post: no counts) at request time ``ts``."""
    out: Dict[str, List[float]] = {d.name: [] for d in F.USER_COUNTER_FEATURES if d.side == "cross"}
    last_event = _num(counters, "ts")
    live = last_event is not None and ts - last_event <= F.SESSION_GAP_S
    total = (_num(session, "n") or 0.0) if live else 0.0
    for cat in categories:
        known = cat != ""
        imp = (_num(counters, f"imp:{cat}") or 0.0) if known else 0.0
        clk = (_num(counters, f"clk:{cat}") or 0.0) if known else 0.0
        last = _num(counters, f"last:{cat}") if known else None
        in_cat = (_num(session, f"c:{cat}") or 0.0) if known and total > 0 else 0.0
        out[F.USER_CAT_IMPRESSIONS.name].append(imp)
        out[F.USER_CAT_CLICKS.name].append(clk)
        out[F.USER_CAT_CTR.name].append(F.smoothed_ctr(clk, imp))
        out[F.SESSION_CATEGORY_SHARE.name].append(in_cat / total if total > 0 else 0.0)
        out[F.CATEGORY_RECENCY_H.name].append(
            F.RECENCY_CAP_H if last is None else min(max(ts - last, 0.0) / 3600.0, F.RECENCY_CAP_H))
    return out
