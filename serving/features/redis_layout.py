"""The Redis layout of the online features (one namespace per ``prefix``).

Keys (``p`` is the prefix, ``fr`` by default):

* ``p:seq:<channel>:<user_id>`` - sorted set, one behaviour channel of a
  user (`CHANNELS`: click, view, conversion, search).  Score: the event's
  ``ts``; member: ``<event_id> NUL <position> NUL <value>`` where value is the
  item id (search: one query token, position = its place in the query).
  Redis orders equal scores by member bytes, i.e. by ``event_id`` then
  position: exactly the offline order ``(ts, event_id)``, whatever the
  arrival order.  Holds the channel's longest ``max_len`` plus `SLACK`
  entries, so a read strictly before the request second still finds a full
  window when the user acted again within that second.
* ``p:imp`` / ``p:clk`` - hashes item_id -> impressions / clicks counted so far;
  ``p:impn`` / ``p:clkn`` - hashes item_id -> ``"<second>:<count>"``, the part
  of that count from the post's latest second, which a read at that very
  second leaves out (offline counts strictly before the impression's second).
* ``p:u:<user_id>`` / ``p:sess:<user_id>`` / ``p:un:<user_id>`` - hashes, the
  user's counters, per-category counters, recency and current session, and
  what the user's latest second added to them (`user_state`).
* ``p:ui:<user_id>`` - hash post id -> ``"<n>:<last>:<prev>:<n_last>"``: the
  user's impressions of the post, the latest one's second, the latest second
  before that ("" for none) and the impressions of that latest second, so a
  read at that very second leaves them out (`user_state.seen_as_of`).
* ``p:items`` - hash item_id -> JSON ``[category_id, region_id, price]``
  (the post-attribute store, loaded from the ``items`` table).
* ``p:users`` - hash user_id -> region_id (from the ``users`` table).
* ``p:items`` values carry a fourth element, a JSON object feature name ->
  value, and ``p:uattrs`` is a hash user_id -> such an object, when the model
  declares columns of the ``items`` / ``users`` tables (`serving.features.declared`).
* an id whose table rows carry ``valid_from`` is stored in ``p:items``,
  ``p:users`` and ``p:uattrs`` as its time-versioned rows; readers take the row
  valid at their second (`serving.features.versions`).
* ``p:seen:<event_id>`` - the event was applied (idempotency; expires).
* ``p:meta`` - hash of bookkeeping (bootstrap source, counts; `SEEN_FIELD` when the
  bootstrap built the per-user impression hashes) and of what the
  store holds: ``declared:items`` / ``declared:users``, the declared columns
  each attribute table was loaded with, and ``attributes_loaded``, a token
  renewed by every load (`serving.features.declared`; the transformer is not
  ready while a column its model reads is missing).

This module needs no pandas, pyarrow or TensorFlow: the transformer imports it.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Tuple

from feedrank import features as F
from serving.features import user_state
from serving.features import versions as versions_lib

DEFAULT_PREFIX = "fr"
SEP = "\x00"
SEARCH = "search"

# channel -> capacity: the longest max_len of the channel's sequence features
# (the example generator windows each channel the same way).
CHANNELS: Dict[str, int] = {}
for _s in F.SEQ_FEATURES:
    CHANNELS[_s.channel] = max(CHANNELS.get(_s.channel, 0), _s.max_len)
# extra entries kept per channel (see the module docstring)
SLACK = 16


def stored_len(channel: str) -> int:
    """How many entries a channel's sorted set keeps."""
    return CHANNELS[channel] + SLACK


class Keys:
    """Key names of one namespace."""

    def __init__(self, prefix: str = DEFAULT_PREFIX):
        if not prefix or ":" in prefix:
            raise ValueError(f"bad key prefix {prefix!r}: non-empty, without ':'")
        self.prefix = prefix
        self.impressions = f"{prefix}:imp"
        self.clicks = f"{prefix}:clk"
        self.items = f"{prefix}:items"
        self.users = f"{prefix}:users"
        self.meta = f"{prefix}:meta"
        self.user_attrs = f"{prefix}:uattrs"
        self.impressions_now = f"{prefix}:impn"
        self.clicks_now = f"{prefix}:clkn"

    def seq(self, channel: str, user_id: str) -> str:
        """Sorted set of one channel of one user."""
        return f"{self.prefix}:seq:{channel}:{user_id}"

    def user(self, user_id: str) -> str:
        """Counters, per-category counters and session bookkeeping of a user."""
        return f"{self.prefix}:u:{user_id}"

    def user_now(self, user_id: str) -> str:
        """What the user's latest second added to the user and session hashes."""
        return f"{self.prefix}:un:{user_id}"

    def session(self, user_id: str) -> str:
        """Per-category click/view counts of a user's current session."""
        return f"{self.prefix}:sess:{user_id}"

    def user_items(self, user_id: str) -> str:
        """The user's impressions per post (`user_state.SEEN_LUA`)."""
        return f"{self.prefix}:ui:{user_id}"

    def seen(self, event_id: str) -> str:
        """Marker of an applied event."""
        return f"{self.prefix}:seen:{event_id}"

    def pattern(self) -> str:
        """SCAN pattern matching every key of the namespace."""
        return f"{self.prefix}:*"


def member(event_id: str, position: int, value: str) -> str:
    """Sorted-set member of one sequence entry (see the module docstring)."""
    return f"{event_id}{SEP}{position:05d}{SEP}{value}"


def member_value(m) -> str:
    """The value (item id or token) of a sorted-set member."""
    if isinstance(m, bytes):
        m = m.decode()
    return m.rsplit(SEP, 1)[1]


def encode_item(category_id: str, region_id: str, price: float, declared: Optional[Dict] = None) -> str:
    """Value of one post in the attribute store (``declared``: its declared columns)."""
    return json.dumps([category_id, region_id, float(price)] + ([declared] if declared else []))


def decode_item_declared(raw) -> Dict:
    """The declared columns of a stored post's latest row ({} if absent or none)."""
    if raw is None:
        return {}
    return decode_item_versions(raw)[-1][1][1]


def _item_row(row: list) -> Tuple[Tuple[str, str, float], Dict]:
    category, region, price = row[:3]
    return (str(category), str(region), float(price)), (row[3] if len(row) > 3 else {})


def encode_item_versions(versions: List[Tuple[Optional[int], str]]) -> str:
    """The stored value of a post from its ``(valid_from or None, encode_item value)`` rows,
    oldest first: the row itself when it is one row valid from the beginning."""
    if versions_lib.is_plain(versions):
        return versions[0][1]
    return json.dumps({versions_lib.VERSIONS: versions_lib.encode(
        [(vf, json.loads(row)) for vf, row in versions])})


def decode_item_versions(raw) -> List[Tuple[Optional[int], Tuple[Tuple[str, str, float], Dict]]]:
    """``(valid_from or None, ((category_id, region_id, price), declared columns))`` of each row
    of a stored post, oldest first (the declared columns are {} when it has none)."""
    value = json.loads(raw)
    if isinstance(value, dict):
        return [(vf, _item_row(row)) for vf, row in value[versions_lib.VERSIONS]]
    return [(None, _item_row(value))]


# Idempotent application of one event, atomically (a Lua script runs alone).
# KEYS: seen marker, counter hash, sequence key, user hash, session hash,
# the user's latest-second hash, the counter's latest-second hash, the user's
# per-post impressions hash.
# ARGV: ttl seconds, item id (counter field, "" for none), capacity (0: no
# sequence), score (the event ts), user-state flags, category, session gap,
# members...
APPLY_LUA = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
if ARGV[2] ~= '' then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  local t, now = tonumber(ARGV[4]), redis.call('HGET', KEYS[7], ARGV[2])
  local sec, n = nil, 0
  if now then
    local p = string.find(now, ':', 1, true)
    sec, n = tonumber(string.sub(now, 1, p - 1)), tonumber(string.sub(now, p + 1))
  end
  if sec == nil or t > sec then redis.call('HSET', KEYS[7], ARGV[2], ARGV[4] .. ':1')
  elseif t == sec then redis.call('HSET', KEYS[7], ARGV[2], ARGV[4] .. ':' .. (n + 1)) end
end
local cap = tonumber(ARGV[3])
if cap > 0 and #ARGV > 7 then
  for i = 8, #ARGV do redis.call('ZADD', KEYS[3], ARGV[4], ARGV[i]) end
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -cap - 1)
end
""" + user_state.LUA + user_state.SEEN_LUA + """
return 1
"""


def count_before(total, now, ts: Optional[int]) -> float:
    """A post's count strictly before the second ``ts``: ``total`` (the ``p:imp`` /
    ``p:clk`` value) less what its latest second added when that second is ``ts``
    (``now``, the ``p:impn`` / ``p:clkn`` value); ``ts`` None: the count as it stands."""
    value = float(total) if total is not None else 0.0
    if ts is None or now is None:
        return value
    if isinstance(now, bytes):
        now = now.decode()
    sec, _, n = now.partition(":")
    return value - float(n) if int(sec) == int(ts) else value


def channel_read_args(ts: Optional[int]) -> Tuple[str, str]:
    """``(max, min)`` score bounds of a read strictly before ``ts`` (None: all)."""
    return ("+inf" if ts is None else f"({int(ts)}", "-inf")


def decode_channel(newest_first: List) -> List[str]:
    """Values of a channel read newest first, returned most recent last."""
    return [member_value(m) for m in reversed(newest_first)]


def decode_scored_channel(newest_first: List) -> Tuple[List[str], List[int]]:
    """Values and event seconds of a channel read newest first ``WITHSCORES``
    (``(member, score)`` pairs), both returned most recent last."""
    pairs = list(reversed(newest_first))
    return [member_value(m) for m, _ in pairs], [int(score) for _, score in pairs]


# ``meta`` field: the namespace was seeded with the users' impressions of each post (``p:ui``,
# the "seen before" features); a namespace seeded without it counts them only from then on
SEEN_FIELD = "seen_before"


def seeded_without_seen(client, keys: Keys, spec: F.FeatureSpec) -> str:
    """Why the namespace cannot serve ``spec``'s "seen before" inputs from the whole log ("" when
    it can, or when ``spec`` has none, or when nothing is seeded yet): it was seeded before the
    per-user impression hashes existed, so they hold only the impressions applied since."""
    if not spec.seen_before:
        return ""
    source, seen = client.hmget(keys.meta, ["source", SEEN_FIELD])
    if source is None or seen is not None:
        return ""
    return (f"namespace '{keys.prefix}' was seeded from {source!r} without the users' impressions of each "
            f"post, so the model's seen-before inputs count only impressions applied since; seed it again "
            f"with: python -m serving.features.bootstrap --log <event log> --prefix {keys.prefix} --force")
