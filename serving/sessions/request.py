"""The session endpoint's request contract and its validation (every problem -> 400).

    {"user_id": "u0042",
     "event": {"type": "view", "page_id": "i0123", "ts": 1709300000, "dwell_s": 12.5,
               "session_id": "s-991", "event_id": "e-77"},
     "k": 10}

* ``user_id``: 1..256 characters;
* ``event.type``: ``"view"`` (default) or ``"purchase"`` (an add-to-cart);
* ``event.page_id`` (a view) / ``event.item_id`` (an add-to-cart): 1..256 characters;
* ``event.ts``: unix seconds, a non-negative number (default: now); fractions are cut;
* ``event.dwell_s`` (optional, views): seconds on the page so far, a finite number >= 0 (default 0);
* ``event.session_id`` (optional): the app's session id; a new one starts a new session;
* ``event.event_id`` (optional): the id the event is applied and logged under, once.
  Default: a hash of the user, type, id, ts and session id, so a retried request is not
  applied twice (two views of one page within one second by the same user count once);
* ``k`` (optional): how many items to return, 1..the model's k (default: the model's k).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from typing import Any, Optional

from feedrank.events import contract
from feedrank.sessions import sessionize
from serving.common.errors import BadRequest

MAX_ID_CHARS = 256
EVENT_FIELDS = ("type", "page_id", "item_id", "ts", "dwell_s", "session_id", "event_id")


@dataclasses.dataclass(frozen=True)
class SessionRequest:
    """A validated request."""

    event: sessionize.Event
    k: Optional[int]


def _id(value: Any, what: str, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_CHARS:
        raise BadRequest(f"{what} must be 1..{MAX_ID_CHARS} characters")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{what} must be a finite number, got {value!r}"[:200])
    return float(value)


def default_event_id(user_id: str, kind: str, item_id: str, ts: int, session_id: str) -> str:
    """The event id of a request that names none (stable across retries)."""
    key = "\x00".join((user_id, kind, item_id, str(ts), session_id)).encode()
    return "se-" + hashlib.sha1(key).hexdigest()[:24]


def parse(payload: Any, max_k: int, now: Optional[float] = None) -> SessionRequest:
    """Validates a decoded JSON body."""
    if not isinstance(payload, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(payload).__name__}")
    for name in ("user_id", "event"):
        if name not in payload:
            raise BadRequest(f"missing field '{name}'")
    unknown = sorted(set(payload) - {"user_id", "event", "k"})
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}; allowed: 'user_id', 'event', 'k'")
    user_id = _id(payload["user_id"], "'user_id'")
    ev = payload["event"]
    if not isinstance(ev, dict):
        raise BadRequest(f"'event' must be an object, got {type(ev).__name__}")
    unknown = sorted(set(ev) - set(EVENT_FIELDS))
    if unknown:
        raise BadRequest(f"'event' has unknown field(s) {unknown}; allowed: {list(EVENT_FIELDS)}")
    kind = ev.get("type", contract.VIEW)
    if kind not in sessionize.SESSION_EVENTS:
        raise BadRequest(f"'event.type' must be one of {list(sessionize.SESSION_EVENTS)}, got {kind!r}"[:200])
    if kind == contract.VIEW:
        item = _id(ev.get("page_id"), "'event.page_id'")
        if "item_id" in ev:
            raise BadRequest("a view names its page in 'event.page_id', not 'event.item_id'")
    else:
        item = _id(ev.get("item_id"), "'event.item_id' (the carted item)")
        if "page_id" in ev or "dwell_s" in ev:
            raise BadRequest("an add-to-cart ('purchase') has 'event.item_id' and no 'page_id' or 'dwell_s'")
    ts_raw = ev.get("ts")
    if ts_raw is None:
        ts = int(time.time() if now is None else now)
    else:
        t = _number(ts_raw, "'event.ts' (unix seconds)")
        if not 0 <= t < 2 ** 53:
            raise BadRequest(f"'event.ts' must be non-negative unix seconds, got {ts_raw!r}"[:200])
        ts = int(t)
    dwell = 0.0
    if ev.get("dwell_s") is not None:
        dwell = _number(ev["dwell_s"], "'event.dwell_s' (seconds)")
        if dwell < 0:
            raise BadRequest(f"'event.dwell_s' must be >= 0 seconds, got {dwell:g}")
    session_id = _id(ev.get("session_id"), "'event.session_id'", optional=True)
    event_id = _id(ev.get("event_id"), "'event.event_id'", optional=True) or \
        default_event_id(user_id, kind, item, ts, session_id)
    k = payload.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k):
        raise BadRequest(f"'k' must be an integer in [1, {max_k}] (the model's top-k), got {k!r}"[:200])
    return SessionRequest(sessionize.Event(event_id, user_id, item, kind, ts, dwell, session_id), k)
