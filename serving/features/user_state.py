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

* ``p:un:<user_id>`` - what the user's latest second added: ``sec`` (that
  second), the increments ``imp``, ``clk``, ``imp:<c>``, ``clk:<c>``, ``sn``
  (session events) and ``sc:<c>`` made by events of that second, and
  ``pl:<c>``, the category's ``last:`` before that second ("" for none).  An
  event of a later second starts it afresh; an older (late) event adds
  nothing to it.

* ``p:ui:<user_id>`` - per post the user's impressions of it, the latest one's
  second, the latest second before that and the impressions of that latest
  second (`SEEN_LUA`, read by `seen_as_of`): the online twin of
  `feedrank.examples.user_counters.seen_before`.

Reading at request time ``T`` (`as_of`): strictly before ``T``, as offline.
When the user's latest second is ``T`` itself (the request's own impressions,
or a click in the same second), its increments are taken off the counters and
the session, ``last:<c>`` goes back to ``pl:<c>``, and a session that an event
of second ``T`` started is over (its previous event was more than the gap
before ``T``: share 0).  The session share is 0 when ``T`` is more than the
gap after ``ts``.  Needs neither pandas nor TensorFlow (the transformer
imports it).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from feedrank import features as F
from feedrank.events import contract

log = logging.getLogger(__name__)

# event type -> what it updates: i(mpressions), c(licks), r(ecency), s(ession share)
EVENT_FLAGS: Dict[str, str] = {contract.IMPRESSION: "i", contract.CLICK: "crs",
                               contract.VIEW: "rs", contract.CONVERSION: "r"}

# Lua applied after the event's seen marker and channel update (see redis_layout.APPLY_LUA).
# KEYS[4]: user hash, KEYS[5]: session hash, KEYS[6]: the user's latest-second hash;
# ARGV[4]: ts, ARGV[5]: flags, ARGV[6]: category ("" for none), ARGV[7]: session gap seconds.
LUA = """
local t, flags, cat = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local usec = tonumber(redis.call('HGET', KEYS[6], 'sec'))
if usec == nil or t > usec then
  redis.call('DEL', KEYS[6])
  redis.call('HSET', KEYS[6], 'sec', ARGV[4])
  usec = t
end
local cur = (t == usec)
local function bump(field)
  redis.call('HINCRBY', KEYS[4], field, 1)
  if cur then redis.call('HINCRBY', KEYS[6], field, 1) end
end
if string.find(flags, 'i', 1, true) then
  bump('imp')
  if cat ~= '' then bump('imp:' .. cat) end
end
if string.find(flags, 'c', 1, true) then
  bump('clk')
  if cat ~= '' then bump('clk:' .. cat) end
end
if cat ~= '' and string.find(flags, 'r', 1, true) then
  local old = tonumber(redis.call('HGET', KEYS[4], 'last:' .. cat))
  if old == nil or t > old then
    if cur and redis.call('HEXISTS', KEYS[6], 'pl:' .. cat) == 0 then
      redis.call('HSET', KEYS[6], 'pl:' .. cat, old and tostring(old) or '')
    end
    redis.call('HSET', KEYS[4], 'last:' .. cat, ARGV[4])
  elseif not cur then
    local pl = redis.call('HGET', KEYS[6], 'pl:' .. cat)
    if pl and old == usec and (pl == '' or t > tonumber(pl)) then
      redis.call('HSET', KEYS[6], 'pl:' .. cat, ARGV[4])
    end
  end
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
if string.find(flags, 's', 1, true) and t >= start then
  -- every click and view counts in the session; its category's count only when its post has
  -- one at t (a post with no row valid yet has none, as offline)
  redis.call('HINCRBY', KEYS[5], 'n', 1)
  if cur then redis.call('HINCRBY', KEYS[6], 'sn', 1) end
  if cat ~= '' then
    redis.call('HINCRBY', KEYS[5], 'c:' .. cat, 1)
    if cur then redis.call('HINCRBY', KEYS[6], 'sc:' .. cat, 1) end
  end
end
"""


# Lua applied after `LUA` (shares its locals): an impression of post ARGV[2] updates the user's
# per-post hash KEYS[8], field post -> "n:last:prev:n_last" (see `seen_as_of`).  A late impression
# (older than ``last``) counts, and becomes ``prev`` when it is newer than it.
SEEN_LUA = """
if ARGV[2] ~= '' and string.find(flags, 'i', 1, true) then
  local v = redis.call('HGET', KEYS[8], ARGV[2])
  local n, last, prev, nl = 0, nil, nil, 0
  if v then
    local f = {}
    for x in string.gmatch(v .. ':', '([^:]*):') do f[#f + 1] = x end
    n, last, prev, nl = tonumber(f[1]), tonumber(f[2]), tonumber(f[3]), tonumber(f[4])
  end
  n = n + 1
  if last == nil or t > last then
    prev, last, nl = last, t, 1
  elseif t == last then
    nl = nl + 1
  elseif prev == nil or t > prev then
    prev = t
  end
  local p = prev and string.format('%d', prev) or ''
  redis.call('HSET', KEYS[8], ARGV[2], string.format('%d:%d:%s:%d', n, last, p, nl))
end
"""


def seen_as_of(raw, ts: Optional[int]) -> Tuple[float, Optional[int]]:
    """``(impressions, latest second)`` of one post to the user strictly before the second
    ``ts``, from its ``p:ui`` value ``raw`` (None: never shown, ``(0.0, None)``); when the
    latest second is ``ts`` itself its impressions are left out and the second before it
    is the latest.  ``ts`` None: as the hash stands."""
    if raw is None:
        return 0.0, None
    if isinstance(raw, bytes):
        raw = raw.decode()
    n, last, prev, n_last = raw.split(":")
    if ts is not None and int(last) == int(ts):
        return float(n) - float(n_last), (int(prev) if prev else None)
    return float(n), int(last)


def seen_features(seen: Sequence[Tuple[float, Optional[int]]], ts: int) -> Dict[str, List[float]]:
    """`features.SEEN_FEATURES` of candidates from their `seen_as_of` values at request time ``ts``."""
    return {F.USER_ITEM_IMPRESSIONS.name: [n for n, _ in seen],
            F.ITEM_SEEN_RECENCY_H.name: [recency_h(ts, last) for _, last in seen]}


def recency_h(ts: float, last: Optional[float]) -> float:
    """Hours from ``last`` (None: no such event) to ``ts``, capped at `features.RECENCY_CAP_H`
    (also the value with none): `features.CATEGORY_RECENCY_H` and `features.ITEM_SEEN_RECENCY_H`."""
    return F.RECENCY_CAP_H if last is None else min(max(ts - last, 0.0) / 3600.0, F.RECENCY_CAP_H)


def _num(state: Mapping[str, str], field: str) -> Optional[float]:
    v = state.get(field)
    return float(v) if v is not None else None


_COUNTS = ("imp", "clk")


def as_of(counters: Mapping[str, str], session: Mapping[str, str], now: Mapping[str, str],
          ts: Optional[int]) -> Tuple[Mapping[str, str], Mapping[str, str]]:
    """The user and session hashes strictly before the second ``ts``, from the hashes as
    they stand and ``now``, the user's latest-second hash (see the module docstring);
    ``ts`` None, or a latest second other than ``ts``: the hashes themselves, not copied."""
    if ts is None or now.get("sec") is None or int(float(now["sec"])) != int(ts):
        return counters, session
    user, sess = dict(counters), dict(session)
    for field, value in now.items():
        if field in _COUNTS or field.startswith(("imp:", "clk:")):
            user[field] = str(float(user.get(field, 0.0)) - float(value))
        elif field.startswith("pl:"):
            if value == "":
                user.pop("last:" + field[3:], None)
            else:
                user["last:" + field[3:]] = value
        elif field == "sn":
            sess["n"] = str(float(sess.get("n", 0.0)) - float(value))
        elif field.startswith("sc:"):
            sess["c:" + field[3:]] = str(float(sess.get("c:" + field[3:], 0.0)) - float(value))
    if user.get("start") is not None and int(float(user["start"])) == int(ts):
        sess = {}   # second ts started the session: before it, the previous event was more than the gap away
    return user, sess


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
        out[F.CATEGORY_RECENCY_H.name].append(recency_h(ts, last))
    return out
