"""A shopper's session state in Redis, and the one rule that changes it.

Per user one key, ``<prefix>:ss:<user_id>``, a JSON object (expires after
``ttl_s`` without events):

* ``events``: the current session's page views and add-to-carts, as
  ``[event_id, event, item_id, ts, dwell_s, session_id]`` rows in the
  sessionizer's order (`sessionize.event_order`); at most ``max_pages`` page
  views (the oldest go first) and ``max_purchases`` add-to-carts;
* ``start``: the session's first ``ts``; ``sid``: its id (the log's session
  id, else ``<user_id>:<start>``, as `sessionize.build_session` names it);
* ``hist``: ``[item_id, ts]`` of the add-to-carts of the user's EARLIER
  sessions, the last ``max_purchases`` (the current session's carts join it
  when the next session starts, as the training samples build the purchase
  history: `feedrank.sessions.samples.user_samples`).

`apply` is the rule, decided by the sessionizer itself
(`sessionize.split_sessions` over the current session plus the new event):
the event joins the session when they form one session; it starts a new one
when it is the latest event and the sessionizer cuts right before it (a
pause longer than ``gap_s``, or a new session id); otherwise it is a late
event of a closed session and is left out (counted as ``late``).

`model_inputs` builds the model's inputs from the state; the dwell of the
session's pages is `sessionize.page_dwell`, the rule the training samples use.

Idempotence: ``<prefix>:ss:seen:<event_id>`` marks an applied event (expires
after ``seen_ttl_s``).  `Transaction` reads the state and the marker, decides
in Python, and writes the new state, the marker (and, for the endpoint, the
event's entry on the event stream) with one Lua compare-and-set (`CAS_LUA`),
which runs atomically and refuses when the state changed since the read; the
event is then decided again on the fresh state.  So an event id is applied
once, whichever path (endpoint or stream updater) sees it first, and the
state never mixes two writers' updates.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

from feedrank.events import contract
from feedrank.sessions import sessionize

log = logging.getLogger(__name__)

DEFAULT_MAX_PAGES = 50          # drnn.from_samples' max_pages: the offline inputs' page window
DEFAULT_MAX_PURCHASES = 50      # features.DEFAULT_MAX_PURCHASE_HISTORY (that module needs pyarrow; a test ties them)
DEFAULT_TTL_S = 90 * 86_400     # the purchase history spans days
DEFAULT_SEEN_TTL_S = 7 * 86_400
MAX_RETRIES = 20

APPLIED, NEW_SESSION, LATE, DUPLICATE = "applied", "new_session", "late", "duplicate"
OUTCOMES = (APPLIED, NEW_SESSION, LATE, DUPLICATE)
EVENT_TYPES = sessionize.SESSION_EVENTS   # view, purchase


@dataclasses.dataclass(frozen=True)
class StateConfig:
    """Bounds and timeouts of the state (the endpoint's and the updater's flags)."""

    gap_s: int = sessionize.DEFAULT_GAP_S
    max_pages: int = DEFAULT_MAX_PAGES
    max_purchases: int = DEFAULT_MAX_PURCHASES
    ttl_s: int = DEFAULT_TTL_S
    seen_ttl_s: int = DEFAULT_SEEN_TTL_S

    def __post_init__(self) -> None:
        sessionize.check_gap(self.gap_s)
        for name in ("max_pages", "max_purchases", "ttl_s", "seen_ttl_s"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class Keys:
    """Key names of the session state in one namespace."""

    def __init__(self, prefix: str = "fr"):
        if not prefix or ":" in prefix:
            raise ValueError(f"bad key prefix {prefix!r}: non-empty, without ':'")
        self.prefix = prefix

    def state(self, user_id: str) -> str:
        return f"{self.prefix}:ss:{user_id}"

    def seen(self, event_id: str) -> str:
        return f"{self.prefix}:ss:seen:{event_id}"


def empty() -> Dict[str, Any]:
    return {"events": [], "start": None, "sid": "", "hist": []}


def decode(raw: Optional[str]) -> Dict[str, Any]:
    """The stored JSON (None: a user without state)."""
    if raw is None:
        return empty()
    state = json.loads(raw)
    return state if isinstance(state, dict) and "events" in state else empty()


def encode(state: Mapping[str, Any]) -> str:
    return json.dumps(state, separators=(",", ":"))


def _row(e: sessionize.Event) -> List[Any]:
    dwell = e.dwell_s if e.dwell_s is not None and math.isfinite(e.dwell_s) else 0.0
    return [e.event_id, e.event, e.item_id, int(e.ts), float(dwell), e.session_id]


def _events(user_id: str, rows: List[List[Any]]) -> List[sessionize.Event]:
    return [sessionize.Event(r[0], user_id, r[2], r[1], int(r[3]), float(r[4]), r[5]) for r in rows]


def _bounded(events: List[sessionize.Event], cfg: StateConfig) -> List[sessionize.Event]:
    """The newest ``max_pages`` views and ``max_purchases`` carts, in order."""
    keep, views, carts = [], 0, 0
    for e in reversed(events):
        if e.event == contract.VIEW:
            views += 1
            if views > cfg.max_pages:
                continue
        else:
            carts += 1
            if carts > cfg.max_purchases:
                continue
        keep.append(e)
    return keep[::-1]


def _session(user_id: str, events: List[sessionize.Event], start: int, hist: List, cfg: StateConfig) -> Dict:
    sid = next((e.session_id for e in events if e.session_id), "") or f"{user_id}:{start}"
    return {"events": [_row(e) for e in _bounded(events, cfg)], "start": int(start), "sid": sid,
            "hist": hist[-cfg.max_purchases:]}


def apply(state: Mapping[str, Any], event: sessionize.Event, cfg: StateConfig) -> Tuple[Dict[str, Any], str]:
    """``(new state, outcome)`` of one event (`APPLIED`, `NEW_SESSION` or `LATE`; the module doc)."""
    if event.event not in EVENT_TYPES:
        raise ValueError(f"event type {event.event!r} is not a session event {EVENT_TYPES}")
    current = _events(event.user_id, state["events"])
    hist = [list(h) for h in state["hist"]]
    if not current:
        return _session(event.user_id, [event], event.ts, hist, cfg), NEW_SESSION
    parts = sessionize.split_sessions(current + [event], cfg.gap_s)
    if len(parts) == 1:
        return _session(event.user_id, parts[0], min(int(state["start"]), event.ts), hist, cfg), APPLIED
    if len(parts) == 2 and parts[1] == [event]:
        hist += [[e.item_id, e.ts] for e in current if e.event == contract.PURCHASE]
        return _session(event.user_id, [event], event.ts, hist, cfg), NEW_SESSION
    return dict(state), LATE


def model_inputs(state: Mapping[str, Any], cfg: StateConfig,
                 current_s: float = 0.0) -> Tuple[List[str], List[float], List[str]]:
    """``(pages, dwell, purchases)`` for the model: the session's last ``max_pages`` page views,
    oldest first, with their `sessionize.page_dwell` (computed over every view the state holds,
    then cut to the window, so the first kept page's dwell is its time to the next view; the
    current page gets ``current_s``, its dwell so far), and the purchase history of the earlier
    sessions (item ids, oldest first).  A ValueError for a negative or NaN ``current_s``."""
    views = [r for r in state["events"] if r[1] == contract.VIEW]
    dwell = sessionize.page_dwell([int(r[3]) for r in views], current_s)
    keep = len(views) - min(len(views), cfg.max_pages)
    return ([r[2] for r in views[keep:]], dwell[keep:],
            [h[0] for h in state["hist"]][-cfg.max_purchases:])


def current_dwell(state: Mapping[str, Any], event: sessionize.Event) -> float:
    """The current page's dwell so far when ``event`` is answered: a view's own ``dwell_s``
    (seconds on the page so far, 0 when unknown); for an add-to-cart, its ts minus the last
    page view's ts in ``state`` (0 without one, or when the view is later)."""
    if event.event == contract.VIEW:
        d = event.dwell_s
        return float(d) if d is not None and math.isfinite(d) and d >= 0 else 0.0
    views = [int(r[3]) for r in state["events"] if r[1] == contract.VIEW]
    return float(max(0, int(event.ts) - views[-1])) if views else 0.0


@dataclasses.dataclass
class Applied:
    """What a transaction did: the state after it and the outcome (`OUTCOMES`)."""

    state: Dict[str, Any]
    outcome: str


# Compare-and-set of one decided event, atomically (a Lua script runs alone).
# KEYS: state, seen marker, event stream ("" for none).  ARGV: the state as read
# ("" when absent), the new state ("" to keep it: a late event), state ttl, seen ttl,
# then the stream entry's field/value pairs.  Returns 1 written, 0 the state changed
# since it was read (decide again), -1 the event id was applied meanwhile.
CAS_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[4])
if KEYS[3] ~= '' and #ARGV > 4 then
  local fields = {}
  for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('XADD', KEYS[3], '*', unpack(fields))
end
return 1
"""


class Transaction:
    """Applying one event: read the state and the marker (``MGET``), decide in Python
    (`apply`), then write with `CAS_LUA`, which refuses if the state changed since the
    read (the event is then decided again on the fresh state).  Two round trips; shared
    by the sync and async clients."""

    def __init__(self, keys: Keys, cfg: StateConfig, event: sessionize.Event,
                 stream: Optional[str] = None, fields: Optional[Dict[str, str]] = None):
        self.keys, self.cfg, self.event = keys, cfg, event
        self.skey, self.seen = keys.state(event.user_id), keys.seen(event.event_id)
        self.stream, self.fields = stream or "", fields or {}

    def decide(self, raw: Optional[str], marked: Optional[str]) -> Applied:
        state = decode(raw)
        if marked is not None:
            return Applied(state, DUPLICATE)
        new, outcome = apply(state, self.event, self.cfg)
        return Applied(new, outcome)

    def cas_args(self, raw: Optional[str], done: Applied) -> Tuple[List[str], List[Any]]:
        """``(keys, args)`` of `CAS_LUA` for the decided event."""
        new = "" if done.outcome == LATE else encode(done.state)
        pairs = [v for kv in self.fields.items() for v in kv] if self.stream else []
        return [self.skey, self.seen, self.stream], [raw or "", new, self.cfg.ttl_s, self.cfg.seen_ttl_s, *pairs]


def _gave_up(tx: Transaction) -> RuntimeError:
    return RuntimeError(f"event {tx.event.event_id}: the state of {tx.event.user_id} kept changing "
                        f"({MAX_RETRIES} tries)")


def apply_sync(client, tx: Transaction) -> Applied:
    """Applies ``tx`` with a synchronous redis client (the stream updater)."""
    script = client.register_script(CAS_LUA)
    for _ in range(MAX_RETRIES):
        raw, marked = client.mget(tx.skey, tx.seen)
        done = tx.decide(raw, marked)
        if done.outcome == DUPLICATE:
            return done
        keys, args = tx.cas_args(raw, done)
        written = int(script(keys=keys, args=args))
        if written == 1:
            return done
        if written == -1:
            return Applied(decode(client.get(tx.skey)), DUPLICATE)
    raise _gave_up(tx)


async def apply_async(client, tx: Transaction, script=None) -> Applied:
    """Applies ``tx`` with a ``redis.asyncio`` client (the endpoint; ``script``: the
    client's registered `CAS_LUA`, registered here when None)."""
    script = script or client.register_script(CAS_LUA)
    for _ in range(MAX_RETRIES):
        raw, marked = await client.mget(tx.skey, tx.seen)
        done = tx.decide(raw, marked)
        if done.outcome == DUPLICATE:
            return done
        keys, args = tx.cas_args(raw, done)
        written = int(await script(keys=keys, args=args))
        if written == 1:
            return done
        if written == -1:
            return Applied(decode(await client.get(tx.skey)), DUPLICATE)
    raise _gave_up(tx)
