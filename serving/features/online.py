"""Reading the online features and assembling the model's raw inputs.

One Redis round trip per request (`queue_request` on a pipeline, sync or
asyncio; a second one only for history posts not yet in memory): the user's
four channels, the candidates' impression/click counters, the user's
counters and session state and the user's impressions of each candidate,
all strictly before the request's second as offline (what the latest second
added is read too and taken off when it is that second:
`redis_layout.count_before`, `user_state.as_of`, `user_state.seen_as_of`), and the
user's region and declared columns (`user_state`: the user-side counters
once, the per-category ones per candidate by its category).  `raw_inputs`
turns that, plus the post-attribute store, into the raw features of the exported
``serving_default`` (the user's side once, candidates as lists) and
`v1_request` into the predictor's request; the served model's
`feedrank.features.FeatureSpec` says which declared item / user columns are
among them.  Used by the transformer and by the offline/online alignment
replay, so both read and send exactly the same thing.  Needs neither pandas
nor TensorFlow.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from feedrank import features as F
from serving.features import declared, redis_layout, user_state, versions

# The built-in candidate ids and where the attribute store keeps them (None: the
# post id itself).  Declared item columns come from `ItemStore.declared`.
ITEM_ATTRIBUTES = {"item_id": None, "category_id": 0, "region_id": 1}


@dataclasses.dataclass
class UserState:
    """What Redis holds about one user at one moment."""

    region: Optional[str]                 # None: not in the users table
    channels: Dict[str, List[str]]        # channel -> values, most recent last
    counters: Dict[str, str] = dataclasses.field(default_factory=dict)   # the user hash
    session: Dict[str, str] = dataclasses.field(default_factory=dict)    # the session hash
    attributes: Dict[str, object] = dataclasses.field(default_factory=dict)  # declared user columns
    # channel -> each value's event second, aligned with `channels` (the event ages)
    channel_ts: Dict[str, List[int]] = dataclasses.field(default_factory=dict)
    # post id -> (the user's impressions of it, the latest one's second or None), strictly
    # before the request's second (`user_state.seen_as_of`); a post not here was never shown
    seen: Dict[str, Tuple[float, Optional[int]]] = dataclasses.field(default_factory=dict)

    @property
    def cold(self) -> bool:
        """No region and no behaviour: cold-start defaults apply."""
        return self.region is None and not any(self.channels.values())


def empty_user() -> UserState:
    """The request-only user (no Redis)."""
    return UserState(None, {ch: [] for ch in redis_layout.CHANNELS})


class ItemStore:
    """The post-attribute store in memory: item_id -> (category, region, price),
    and item_id -> its stored declared columns (whatever the loader stored).

    Posts whose table rows carry ``valid_from`` keep every row (`versions`); an
    `as_of` view reads each post's row valid at one second, as offline."""

    def __init__(self, items: Optional[Dict[str, Tuple[str, str, float]]] = None):
        self.items: Dict[str, Tuple[str, str, float]] = dict(items or {})
        self.declared: Dict[str, Dict[str, object]] = {}   # item_id -> declared columns
        self.timelines: Dict[str, versions.Timeline] = {}   # item_id -> its rows over time
        self.ts: Optional[int] = None                        # the second `as_of` reads at (None: now)

    @classmethod
    def from_hash(cls, raw: Dict[str, str]) -> "ItemStore":
        """From the Redis ``items`` hash contents."""
        store = cls()
        store.add_raw(list(raw), list(raw.values()))
        return store

    def as_of(self, ts: Optional[int]) -> "ItemStore":
        """A view of the same store that reads each post's row valid at the second ``ts``
        (shares the dicts: what it fetches, the store has)."""
        view = copy.copy(self)
        view.ts = None if ts is None else int(ts)
        return view

    def missing(self, item_ids: Iterable[str]) -> List[str]:
        """Ids not in memory (to fetch from Redis)."""
        return sorted({i for i in item_ids if i and i not in self})

    def add_raw(self, item_ids: Sequence[str], raw: Sequence[Optional[str]]) -> None:
        """Adds fetched attribute-store values (absent ones stay unknown)."""
        for i, v in zip(item_ids, raw):
            if v is None:
                continue
            rows = redis_layout.decode_item_versions(v)
            if versions.is_plain(rows):
                self.items[i], extra = rows[0][1]
                if extra:
                    self.declared[i] = extra
            else:
                self.timelines[i] = versions.Timeline(rows)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.items or item_id in self.timelines

    def _row(self, item_id: str) -> Optional[Tuple[Tuple[str, str, float], Dict]]:
        """``(attributes, declared columns)`` of a post at the view's second (None: unknown,
        or no row of it valid yet)."""
        timeline = self.timelines.get(item_id)
        if timeline is not None:
            return timeline.at(self.ts)
        row = self.items.get(item_id)
        return None if row is None else (row, self.declared.get(item_id, {}))

    def attribute(self, item_id: str, name: str) -> str:
        """A built-in id of a post (`ITEM_ATTRIBUTES`: item_id, category_id,
        region_id; "" when the post is unknown: OOV)."""
        if name not in ITEM_ATTRIBUTES:
            raise KeyError(f"{name!r} is not a built-in post attribute ({sorted(ITEM_ATTRIBUTES)}); "
                           f"declared item columns are read with `declared.candidate_features`")
        if ITEM_ATTRIBUTES[name] is None:
            return item_id
        row = self._row(item_id)
        return row[0][ITEM_ATTRIBUTES[name]] if row else ""

    def price(self, item_id: str) -> float:
        row = self._row(item_id)
        return row[0][2] if row else F.PRICE.default

    def declared_value(self, item_id: str, column: F.Declared):
        """A declared item column's raw value for a post at the view's second (the column's
        missing value when the post is unknown, has no row valid yet or lacks the value)."""
        row = self._row(item_id)
        return declared.value(column, row[1] if row else None)

    def declared_of(self, item_ids: Iterable[str]) -> Dict[str, Dict[str, object]]:
        """item_id -> stored declared columns of each known post at the view's second."""
        out = {}
        for i in item_ids:
            row = self._row(i)
            if row is not None:
                out[i] = row[1]
        return out


def queue_reads(pipe, keys: redis_layout.Keys, user_id: str, candidates: Sequence[str],
                ts: Optional[int]) -> None:
    """Queues the reads of one request on a (sync or asyncio) pipeline."""
    hi, lo = redis_layout.channel_read_args(ts)
    for channel, cap in redis_layout.CHANNELS.items():
        pipe.zrevrangebyscore(keys.seq(channel, user_id), hi, lo, start=0, num=cap, withscores=True)
    pipe.hget(keys.users, user_id)
    pipe.hmget(keys.impressions, list(candidates))
    pipe.hmget(keys.clicks, list(candidates))
    pipe.hgetall(keys.user(user_id))
    pipe.hgetall(keys.session(user_id))
    # what the latest second added, taken off when it is the request's own second (strict before)
    pipe.hmget(keys.impressions_now, list(candidates))
    pipe.hmget(keys.clicks_now, list(candidates))
    pipe.hgetall(keys.user_now(user_id))
    pipe.hmget(keys.user_items(user_id), list(candidates))   # the user's impressions of each candidate


def parse_reads(results: Sequence, ts: Optional[int] = None, candidates: Optional[Sequence[str]] = None
                ) -> Tuple[UserState, List[float], List[float]]:
    """``(user, impressions, clicks)`` from `queue_reads`' results, strictly before the
    second ``ts`` (None: as the counters stand); give the ``ts`` and ``candidates`` of
    `queue_reads` (without ``candidates`` the user's impressions of them are not kept)."""
    n = len(redis_layout.CHANNELS)
    scored = {ch: redis_layout.decode_scored_channel(r) for ch, r in zip(redis_layout.CHANNELS, results[:n])}
    channels = {ch: values for ch, (values, _) in scored.items()}
    channel_ts = {ch: seconds for ch, (_, seconds) in scored.items()}
    region = versions.row_at(versions.decode_user_region(results[n]), ts)   # None: unknown / not yet
    imp = [redis_layout.count_before(v, now, ts) for v, now in zip(results[n + 1], results[n + 5])]
    clk = [redis_layout.count_before(v, now, ts) for v, now in zip(results[n + 2], results[n + 6])]
    counters, session, now = (_text_hash(h) for h in (results[n + 3], results[n + 4], results[n + 7]))
    counters, session = user_state.as_of(counters, session, now, ts)
    seen = {c: user_state.seen_as_of(raw, ts) for c, raw in zip(candidates or (), results[n + 8]) if raw is not None}
    return UserState(region, channels, counters, session, channel_ts=channel_ts, seen=seen), imp, clk


def _text_hash(raw) -> Dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in (raw or {}).items()}


def queue_user_attributes(pipe, keys: redis_layout.Keys, user_id: str, spec: F.FeatureSpec) -> bool:
    """Queues the read of the user's declared columns (after `queue_reads`) when
    ``spec`` declares user columns; returns whether it did."""
    if not spec.declared_on_side("user"):
        return False
    pipe.hget(keys.user_attrs, user_id)
    return True


def history_items(user: UserState) -> List[str]:
    """Post ids in the user's item channels (their attributes are needed)."""
    return [v for ch, vals in user.channels.items() if ch != redis_layout.SEARCH for v in vals]


@dataclasses.dataclass(frozen=True)
class PendingReads:
    """What `queue_request` queued beyond `queue_reads` (to parse the results)."""

    user_attributes: bool     # the user's declared columns
    posts: List[str]          # candidates fetched from the attribute store
    ts: Optional[int] = None  # the request's second (reads strictly before it)
    candidates: Tuple[str, ...] = ()  # the request's candidates


def queue_request(pipe, keys: redis_layout.Keys, user_id: str, candidates: Sequence[str], ts: Optional[int],
                  spec: F.FeatureSpec, items: ItemStore) -> PendingReads:
    """Queues every read of one ranking request on a (sync or asyncio) pipeline: `queue_reads`,
    the user's declared columns when ``spec`` declares any, and the candidates ``items`` lacks."""
    queue_reads(pipe, keys, user_id, candidates, ts)
    with_attrs = queue_user_attributes(pipe, keys, user_id, spec)
    posts = items.missing(candidates)
    if posts:
        pipe.hmget(keys.items, posts)
    return PendingReads(with_attrs, posts, None if ts is None else int(ts), tuple(candidates))


def parse_request(results: Sequence, pending: PendingReads, items: ItemStore
                  ) -> Tuple[UserState, List[float], List[float]]:
    """``(user, impressions, clicks)`` from `queue_request`'s results; the fetched posts are
    added to ``items``.  The user's history posts ``items`` still lacks are
    `history_to_fetch` (one more read)."""
    results = list(results)
    if pending.posts:
        items.add_raw(pending.posts, results.pop())
    attrs = user_attributes(results.pop(), pending.ts) if pending.user_attributes else {}
    user, imp, clk = parse_reads(results, pending.ts, pending.candidates)
    user.attributes = attrs
    return user, imp, clk


def user_attributes(raw, ts: Optional[int]) -> Dict[str, object]:
    """The user's declared columns from its ``p:uattrs`` value at the second ``ts`` (None: now;
    {} when absent or no row is valid yet)."""
    stored = declared.parse_stored(raw)
    if isinstance(stored, list):   # time-versioned (`versions`)
        return versions.row_at(stored, ts) or {}
    return stored


def history_to_fetch(user: UserState, items: ItemStore) -> List[str]:
    """The posts of the user's history whose attributes ``items`` lacks (fetch them with
    ``HMGET items`` and `ItemStore.add_raw`)."""
    return items.missing(history_items(user))


def user_side(user: UserState, items: ItemStore, spec: F.FeatureSpec = F.BUILTIN,
              ts: Optional[int] = None) -> Dict[str, list]:
    """The per-user raw features: every sequence (most recent last, cut to its
    max_len) with, when ``spec`` has event ages, each entry's age at the second ``ts``
    (None: now), and the attributes of each history post in ``items`` (a view `as_of` the
    request: category, region and the declared item columns of ``spec.history_columns``),
    the user's region ("" when unknown), counters and the columns ``spec`` declares on the
    ``users`` table."""
    out: Dict[str, List[str]] = {}
    now = int(time.time()) if ts is None else int(ts)
    columns = {c.feature_name: c for c in spec.history_columns}
    for s in spec.seq_features:
        if s.ages:
            seconds = user.channel_ts.get(s.channel, [])[-s.max_len:]
            out[s.name] = F.age_labels([now - t for t in seconds])
            continue
        values = user.channels.get(s.channel, [])[-s.max_len:]
        if s.shares_with is None:
            out[s.name] = list(values)
        elif s.shares_with in columns:
            out[s.name] = [items.declared_value(v, columns[s.shares_with]) for v in values]
        else:
            out[s.name] = [items.attribute(v, s.shares_with) for v in values]
    out[F.USER_REGION_ID.name] = [user.region or ""]
    out.update({k: [v] for k, v in user_state.user_features(user.counters).items()})
    out.update(declared.user_features(spec, user.attributes))
    return out


def candidate_side(candidates: Sequence[str], items: ItemStore, impressions: Sequence[float],
                   clicks: Sequence[float], user: Optional[UserState] = None,
                   ts: Optional[int] = None, spec: F.FeatureSpec = F.BUILTIN) -> Dict[str, list]:
    """The per-candidate raw features (unknown posts: "" attributes, default
    price, whatever counters Redis has, usually none), the columns ``spec``
    declares on the ``items`` table (every kind, from the stored object; the
    missing value for an unknown post), the user x category counters, session
    share and recency at ``ts`` (None: now), and with ``spec.seen_before`` the user's
    earlier impressions of each candidate (`user_state.seen_features`)."""
    out: Dict[str, list] = {}
    for f in F.BUILTIN_ID_FEATURES:
        if f.side == "candidate":
            out[f.name] = [items.attribute(c, f.name) for c in candidates]
    out[F.PRICE.name] = [items.price(c) for c in candidates]
    out[F.ITEM_HIST_IMPRESSIONS.name] = list(impressions)
    out[F.ITEM_HIST_CLICKS.name] = list(clicks)
    out[F.ITEM_HIST_CTR.name] = [F.smoothed_ctr(c, i) for c, i in zip(clicks, impressions)]
    if spec.declared_on_side("candidate"):
        out.update(declared.candidate_features(spec, candidates, items.declared_of(candidates)))
    user = user or empty_user()
    now = int(time.time()) if ts is None else int(ts)
    out.update(user_state.cross_features(user.counters, user.session, now, out[F.CATEGORY_ID.name]))
    if spec.seen_before:
        out.update(user_state.seen_features([user.seen.get(c, (0.0, None)) for c in candidates], now))
    return out


def raw_inputs(user: UserState, candidates: Sequence[str], items: ItemStore,
               impressions: Sequence[float], clicks: Sequence[float],
               ts: Optional[int] = None, spec: F.FeatureSpec = F.BUILTIN) -> Dict[str, list]:
    """Every raw input of the ``serving_default`` of a model with contract ``spec``
    at request time ``ts`` (None: now): user side once, candidates as lists; every post's
    attributes are those valid at ``ts`` (`ItemStore.as_of`)."""
    items = items.as_of(ts)
    out: Dict[str, list] = user_side(user, items, spec, ts)
    out.update(candidate_side(candidates, items, impressions, clicks, user, ts, spec))
    return out


def v1_request(inputs: Dict[str, list], spec: F.FeatureSpec) -> Dict[str, Dict[str, list]]:
    """The v1 columnar request of `raw_inputs` for a model with contract ``spec``:
    sequences and user token bags as one row (``[""]`` when empty), candidate
    token bags as a ""-padded matrix [N, L]."""
    body: Dict[str, list] = {}
    rows = {s.name for s in spec.seq_features} | set(declared.bag_names(spec, "user"))
    candidate_bags = set(declared.bag_names(spec, "candidate"))
    for name, values in inputs.items():
        if name in rows:
            body[name] = [values or [""]]
        elif name in candidate_bags:
            body[name] = declared.pad_rows(values)
        else:
            body[name] = values
    return {"inputs": body}
