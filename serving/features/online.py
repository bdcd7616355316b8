"""Reading the online features and assembling the model's raw inputs.

One Redis round trip per request (`queue_reads` on a pipeline, sync or
asyncio): the user's four channels strictly before the request time, the
user's region, the candidates' impression/click counters and the user's
counters and session state (`user_state`: the user-side counters once, the
per-category ones per candidate by its category).  `raw_inputs`
turns that, plus the post-attribute store, into the raw features of the
exported ``serving_default`` (the user's side once, candidates as lists).
Used by the transformer and by the offline/online alignment replay, so both
read exactly the same thing.  Needs neither pandas nor TensorFlow.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from feedrank import features as F
from serving.features import declared, schema, user_state

ITEM_ATTRIBUTES = {"item_id": None, "category_id": 0, "region_id": 1}


@dataclasses.dataclass
class UserState:
    """What Redis holds about one user at one moment."""

    region: Optional[str]                 # None: not in the users table
    channels: Dict[str, List[str]]        # channel -> values, most recent last
    counters: Dict[str, str] = dataclasses.field(default_factory=dict)   # the user hash
    session: Dict[str, str] = dataclasses.field(default_factory=dict)    # the session hash
    attributes: Dict[str, object] = dataclasses.field(default_factory=dict)  # declared user columns

    @property
    def cold(self) -> bool:
        """No region and no behaviour: cold-start defaults apply."""
        return self.region is None and not any(self.channels.values())


def empty_user() -> UserState:
    """The request-only user (no Redis)."""
    return UserState(None, {ch: [] for ch in schema.CHANNELS})


class ItemStore:
    """The post-attribute store in memory: item_id -> (category, region, price)."""

    def __init__(self, items: Optional[Dict[str, Tuple[str, str, float]]] = None):
        self.items: Dict[str, Tuple[str, str, float]] = dict(items or {})
        self.declared: Dict[str, Dict[str, object]] = {}   # item_id -> declared columns

    @classmethod
    def from_hash(cls, raw: Dict[str, str]) -> "ItemStore":
        """From the Redis ``items`` hash contents."""
        store = cls({k: schema.decode_item(v) for k, v in raw.items()})
        if declared.of_side("candidate"):
            store.declared = {k: schema.decode_item_declared(v) for k, v in raw.items()}
        return store

    def missing(self, item_ids: Iterable[str]) -> List[str]:
        """Ids not in memory (to fetch from Redis)."""
        return sorted({i for i in item_ids if i and i not in self.items})

    def add_raw(self, item_ids: Sequence[str], raw: Sequence[Optional[str]]) -> None:
        """Adds fetched attribute-store values (absent ones stay unknown)."""
        for i, v in zip(item_ids, raw):
            if v is not None:
                self.items[i] = schema.decode_item(v)
                self.declared[i] = schema.decode_item_declared(v)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.items

    def attribute(self, item_id: str, name: str) -> str:
        """category_id / region_id of a post ("" when unknown: OOV)."""
        if ITEM_ATTRIBUTES[name] is None:
            return item_id
        row = self.items.get(item_id)
        return row[ITEM_ATTRIBUTES[name]] if row else ""

    def price(self, item_id: str) -> float:
        row = self.items.get(item_id)
        return row[2] if row else F.PRICE.default


def queue_reads(pipe, keys: schema.Keys, user_id: str, candidates: Sequence[str],
                ts: Optional[int]) -> None:
    """Queues the reads of one request on a (sync or asyncio) pipeline."""
    hi, lo = schema.channel_read_args(ts)
    for channel, cap in schema.CHANNELS.items():
        pipe.zrevrangebyscore(keys.seq(channel, user_id), hi, lo, start=0, num=cap)
    pipe.hget(keys.users, user_id)
    pipe.hmget(keys.impressions, list(candidates))
    pipe.hmget(keys.clicks, list(candidates))
    pipe.hgetall(keys.user(user_id))
    pipe.hgetall(keys.session(user_id))


def parse_reads(results: Sequence) -> Tuple[UserState, List[float], List[float]]:
    """``(user, impressions, clicks)`` from `queue_reads`' results."""
    n = len(schema.CHANNELS)
    channels = {ch: schema.decode_channel(r) for ch, r in zip(schema.CHANNELS, results[:n])}
    region = results[n]
    if isinstance(region, bytes):
        region = region.decode()
    imp = [float(v) if v is not None else 0.0 for v in results[n + 1]]
    clk = [float(v) if v is not None else 0.0 for v in results[n + 2]]
    counters, session = (_text_hash(h) for h in results[n + 3:n + 5])
    return UserState(region, channels, counters, session), imp, clk


def _text_hash(raw) -> Dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in (raw or {}).items()}


def queue_user_attributes(pipe, keys: schema.Keys, user_id: str) -> bool:
    """Queues the read of the user's declared columns (after `queue_reads`) when the
    model declares user columns; returns whether it did."""
    if not declared.of_side("user"):
        return False
    pipe.hget(keys.user_attrs, user_id)
    return True


def history_items(user: UserState) -> List[str]:
    """Post ids in the user's item channels (their attributes are needed)."""
    return [v for ch, vals in user.channels.items() if ch != schema.SEARCH for v in vals]


def user_side(user: UserState, items: ItemStore) -> Dict[str, List[str]]:
    """The per-user raw features: every sequence (most recent last, cut to its
    max_len) and the user's region ("" when unknown)."""
    out: Dict[str, List[str]] = {}
    for s in F.SEQ_FEATURES:
        values = user.channels.get(s.channel, [])[-s.max_len:]
        out[s.name] = list(values) if s.shares_with is None else [
            items.attribute(v, s.shares_with) for v in values]
    out[F.USER_REGION_ID.name] = [user.region or ""]
    out.update({k: [v] for k, v in user_state.user_features(user.counters).items()})
    out.update(declared.user_features(user.attributes))
    return out


def candidate_side(candidates: Sequence[str], items: ItemStore, impressions: Sequence[float],
                   clicks: Sequence[float], user: Optional[UserState] = None,
                   ts: Optional[int] = None) -> Dict[str, list]:
    """The per-candidate raw features (unknown posts: "" attributes, default
    price, whatever counters Redis has, usually none), the user x category
    counters, session share and recency at ``ts`` (None: now)."""
    out: Dict[str, list] = {}
    for f in F.ID_FEATURES:
        if f.side == "candidate":
            out[f.name] = [items.attribute(c, f.name) for c in candidates]
    out[F.PRICE.name] = [items.price(c) for c in candidates]
    out[F.ITEM_HIST_IMPRESSIONS.name] = list(impressions)
    out[F.ITEM_HIST_CLICKS.name] = list(clicks)
    out[F.ITEM_HIST_CTR.name] = [F.smoothed_ctr(c, i) for c, i in zip(clicks, impressions)]
    out.update(declared.candidate_features(candidates, items.declared))
    user = user or empty_user()
    out.update(user_state.cross_features(user.counters, user.session,
                                         int(time.time()) if ts is None else int(ts),
                                         out[F.CATEGORY_ID.name]))
    return out


def raw_inputs(user: UserState, candidates: Sequence[str], items: ItemStore,
               impressions: Sequence[float], clicks: Sequence[float],
               ts: Optional[int] = None) -> Dict[str, list]:
    """Every raw input of ``serving_default`` at request time ``ts`` (None:
    now): user side once, candidates as lists."""
    out: Dict[str, list] = user_side(user, items)
    out.update(candidate_side(candidates, items, impressions, clicks, user, ts))
    return out


def v1_request(inputs: Dict[str, list]) -> Dict[str, Dict[str, list]]:
    """The v1 columnar request: sequences and user token bags as one row (``[""]``
    when empty), candidate token bags as a ""-padded matrix [N, L]."""
    body: Dict[str, list] = {}
    user_bags = {b.name for b in F.BAG_FEATURES if b.side == "user"}
    for name, values in inputs.items():
        if any(s.name == name for s in F.SEQ_FEATURES) or name in user_bags:
            body[name] = [values or [""]]
        elif name in declared.bag_names():
            body[name] = declared.pad_rows(values)
        else:
            body[name] = values
    return {"inputs": body}
