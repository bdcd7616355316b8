"""Applying events to Redis with the example generator's rules.

An event changes the online state exactly as it enters an offline example
(`feedrank.examples.build`, `feedrank.examples.history`):

* ``impression`` / ``click`` -> the post's impression / click counter
  (`history.item_history` counts both event kinds per item);
* the events of `build.CHANNEL_EVENTS` -> the user's channel (item ids);
* ``search`` -> the user's search channel, one entry per whitespace token
  (`build.build_examples` splits queries with ``str.split``);
* every valid event -> the user's counters, per-category counters,
  recency and session (`user_state`, with the post's category from the
  attribute store);
* anything else valid (e.g. ``purchase``) -> only marked as seen and the
  user's session clock.

Rows are validated with `feedrank.events.validate.row_reasons`, the example
generator's own row checks (missing ids, bad ts, unknown type or post); bad
rows are skipped and counted by reason.  Each event is applied by one Lua
script (check-and-mark its ``event_id``, then update), so a redelivered
event counts once and a crash never leaves half an event applied.
"""
from __future__ import annotations

import collections
import json
import logging
import uuid
from typing import Dict, Iterable, List, Mapping, Optional, Set

import numpy as np
import pandas as pd

from feedrank import features as F
from feedrank.events import contract, stream, validate
from feedrank.examples import build
from serving.features import declared, redis_layout, user_state, versions

log = logging.getLogger(__name__)

DEFAULT_SEEN_TTL_S = 7 * 86_400
# event type -> channel of the user's sequences
EVENT_CHANNEL: Dict[str, str] = {event: ch for ch, event in build.CHANNEL_EVENTS.items()}
EVENT_CHANNEL[contract.SEARCH] = redis_layout.SEARCH
COUNTED = (contract.IMPRESSION, contract.CLICK)


def events_frame(rows: Iterable[Mapping[str, object]]) -> pd.DataFrame:
    """A normalised events frame (contract columns, strings as text) from
    dict rows such as stream entries; ``ts`` stays raw for validation."""
    rows = list(rows)
    out = {}
    for name, (logical, _) in contract.EVENT_COLUMNS.items():
        values = [r.get(name) for r in rows]
        if logical == "string":
            out[name] = pd.Series(["" if v is None else str(v) for v in values], dtype=object)
        elif logical == "float64":
            out[name] = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").astype(float)
        else:
            out[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(out)


def tokens(query: str) -> List[str]:
    """Search tokens of a query, as the example generator splits them."""
    return query.split()


class FeatureWriter:
    """Validates and applies batches of events to one Redis namespace."""

    def __init__(self, client, keys: redis_layout.Keys, seen_ttl_s: int = DEFAULT_SEEN_TTL_S):
        self.client = client
        self.keys = keys
        self.seen_ttl_s = int(seen_ttl_s)
        self._script = client.register_script(redis_layout.APPLY_LUA)
        self._known_items: Set[str] = set()
        # post -> its categories over time (the rows of the attribute store, `versions`)
        self._category: Dict[str, versions.Timeline] = {}
        self._loaded: Optional[str] = None   # the store's attributes_loaded token the caches hold
        self.stats: collections.Counter = collections.Counter()

    def _item_index(self, item_ids: np.ndarray) -> pd.Index:
        """Known post ids among ``item_ids`` (asked from the attribute store once per load
        of it: a new ``attributes_loaded`` token empties the caches)."""
        loaded = self.client.hget(self.keys.meta, declared.LOADED_FIELD)
        if loaded != self._loaded:
            self._known_items.clear()
            self._category.clear()
            self._loaded = loaded
        missing = sorted({i for i in item_ids if i and i not in self._known_items})
        if missing:
            found = self.client.hmget(self.keys.items, missing)
            for i, v in zip(missing, found):
                if v is not None:
                    self._known_items.add(i)
                    self._category[i] = versions.Timeline(
                        [(vf, row[0][0]) for vf, row in redis_layout.decode_item_versions(v)])
        return pd.Index(sorted(self._known_items))

    def category_at(self, item_id: str, ts: int) -> str:
        """The category of a known post at the second ``ts`` ("" when no row of it is valid yet:
        the example generator's rule, `feedrank.examples.snapshots`)."""
        timeline = self._category.get(item_id)
        return (timeline.at(ts) or "") if timeline is not None else ""

    def valid_rows(self, df: pd.DataFrame) -> pd.DataFrame:
        """The rows passing the example generator's row checks (int64 ``ts``)."""
        items = self._item_index(df["item_id"].to_numpy(dtype=object))
        reasons, ts = validate.row_reasons(df, items)
        bad = reasons != ""
        for reason, n in collections.Counter(reasons[bad]).items():
            self.stats[f"rejected_{reason}"] += n
            log.warning("skipped %d event(s): %s", n, reason)
        good = df.loc[~bad].copy()
        good["ts"] = ts[~bad]
        return good.reset_index(drop=True)

    def apply(self, df: pd.DataFrame, mark_seen: bool = True) -> int:
        """Applies the valid rows of ``df`` in row order; returns how many
        were new (not seen before).  ``mark_seen=False`` is for loaders that
        deduplicate themselves and need no markers (the bulk loader).  An event Redis
        refuses (e.g. ``WRONGTYPE``) is logged and counted as ``failed_<error code>``; a
        transient refusal (`stream.TRANSIENT_REPLIES`) is raised for the caller to retry."""
        good = self.valid_rows(df)
        if good.empty:
            return 0
        pipe = self.client.pipeline(transaction=False)
        ttl = self.seen_ttl_s if mark_seen else 1
        for r in good[["event_id", "user_id", "item_id", "event", "ts", "query"]].itertuples(index=False):
            counter = ""
            key2, key7 = self.keys.impressions, self.keys.impressions_now
            if r.event in COUNTED:
                counter = r.item_id
                if r.event != contract.IMPRESSION:
                    key2, key7 = self.keys.clicks, self.keys.clicks_now
            channel = EVENT_CHANNEL.get(r.event)
            members: List[str] = []
            key3 = key2
            if channel is not None:
                key3 = self.keys.seq(channel, r.user_id)
                values = tokens(r.query) if channel == redis_layout.SEARCH else [r.item_id]
                members = [redis_layout.member(r.event_id, i, v) for i, v in enumerate(values)]
            cap = redis_layout.stored_len(channel) if channel is not None else 0
            self._script(keys=[self.keys.seen(r.event_id), key2, key3, self.keys.user(r.user_id),
                               self.keys.session(r.user_id), self.keys.user_now(r.user_id), key7,
                               self.keys.user_items(r.user_id)],
                         args=[ttl, counter, cap, int(r.ts), user_state.EVENT_FLAGS.get(r.event, ""),
                               self.category_at(r.item_id, int(r.ts)), F.SESSION_GAP_S, *members],
                         client=pipe)
        results = pipe.execute(raise_on_error=False)
        refused = [(e, r) for e, r in zip(good["event_id"], results) if isinstance(r, Exception)]
        new = int(sum(int(r) for r in results if not isinstance(r, Exception)))
        self.stats["applied"] += new
        self.stats["duplicates"] += len(results) - len(refused) - new
        transient = [r for _, r in refused if str(r).startswith(stream.TRANSIENT_REPLIES)]
        if transient:   # Redis will take them later: the caller retries the batch (applied ones are seen)
            raise transient[0]
        for event_id, r in refused:   # e.g. WRONGTYPE: counted by Redis's error code, the rest applied
            self.stats[f"failed_{str(r).split(' ', 1)[0] or 'error'}"] += 1
            log.error("event %r not applied, Redis refused it: %s", event_id, r)
        return new


def load_items(client, keys: redis_layout.Keys, items: pd.DataFrame, spec: F.FeatureSpec = F.BUILTIN) -> int:
    """Writes the post-attribute store from an ``items`` table with the example generator's
    rules (`build.ItemTable`: every row of a post with its ``valid_from``, the first of equal
    ones; a missing price is the feature default), with the ``items`` columns ``spec``
    declares, and records which (`record_loaded`).  Readers take the row valid at their second."""
    table = build.ItemTable(items, spec)
    snaps = table.snapshots
    n_rows = len(snaps.rows)
    extra = declared.stored_values(spec, "items", table.row_declared, np.arange(n_rows))
    rows = [redis_layout.encode_item(c.decode(), r.decode(), p, d)
            for c, r, p, d in zip(table.row_category[:n_rows], table.row_region[:n_rows],
                                  table.row_price[:n_rows], extra)]
    ids = table.index.to_numpy(dtype=object)
    mapping = {i: redis_layout.encode_item_versions([(vf, rows[k]) for vf, k in snaps.versions(code)])
               for code, i in enumerate(ids)}
    for start in range(0, len(ids), 10_000):
        chunk = {k: mapping[k] for k in ids[start:start + 10_000]}
        client.hset(keys.items, mapping=chunk)
    record_loaded(client, keys, spec, "items")
    return len(mapping)


def load_users(client, keys: redis_layout.Keys, users: pd.DataFrame, spec: F.FeatureSpec = F.BUILTIN) -> int:
    """Writes user_id -> region_id and, when ``spec`` declares ``users`` columns, user_id ->
    their stored values, with the example generator's rules (`build.UserTable`: every row with
    its ``valid_from``, the first of equal ones); records which (`record_loaded`)."""
    table = build.UserTable(users, spec)
    snaps = table.snapshots
    uids = snaps.index.to_numpy(dtype=object)
    timelines = [snaps.versions(code) for code in range(len(uids))]
    regions = {u: versions.encode_user_region([(vf, _text(table.row_region[k])) for vf, k in tl])
               for u, tl in zip(uids, timelines)}
    for start in range(0, len(uids), 10_000):
        client.hset(keys.users, mapping={k: regions[k] for k in uids[start:start + 10_000]})
    if spec.declared_of("users"):   # user_id -> JSON of the declared columns (versioned as the region)
        values = declared.stored_values(spec, "users", table.row_declared, np.arange(len(snaps.rows)))
        attrs = {u: json.dumps(values[tl[0][1]] if versions.is_plain(tl)
                               else versions.encode([(vf, values[k]) for vf, k in tl]))
                 for u, tl in zip(uids, timelines)}
        for start in range(0, len(uids), 10_000):
            client.hset(keys.user_attrs, mapping={k: attrs[k] for k in uids[start:start + 10_000]})
    record_loaded(client, keys, spec, "users")
    return len(regions)


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def record_loaded(client, keys: redis_layout.Keys, spec: F.FeatureSpec, table: str) -> None:
    """Records in the namespace's ``meta`` hash that ``table`` now holds the declared columns
    of ``spec`` (`declared.seeded_record`), with a fresh `declared.LOADED_FIELD` token."""
    client.hset(keys.meta, mapping={declared.seeded_field(table): declared.seeded_record(spec, table),
                                    declared.LOADED_FIELD: uuid.uuid4().hex})


def flush(client, keys: redis_layout.Keys, batch: int = 1000) -> int:
    """Deletes every key of the namespace; returns how many."""
    n = 0
    doomed: List = []
    for key in client.scan_iter(match=keys.pattern(), count=batch):
        doomed.append(key)
        if len(doomed) >= batch:
            n += client.delete(*doomed)
            doomed = []
    if doomed:
        n += client.delete(*doomed)
    return n


def redis_client(url: str, timeout_s: Optional[float] = 5.0):
    """A synchronous client for ``redis://host:port/db`` (strings decoded)."""
    import redis

    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout_s,
                                socket_connect_timeout=timeout_s)
