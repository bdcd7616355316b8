"""The event-log contract: three tables in one directory.

A log directory holds ``events``, ``items`` and ``users`` tables, each either
``<name>.parquet`` / ``<name>.csv`` or a directory ``<name>/`` of such files.
The simulator writes exactly this; the example generator validates it on read.
"""
from __future__ import annotations

from typing import Dict, Tuple

EVENTS = "events"
ITEMS = "items"
USERS = "users"
TABLES: Tuple[str, ...] = (EVENTS, ITEMS, USERS)

# Event types.  Any of them may be absent from a log.
IMPRESSION = "impression"
CLICK = "click"
CONVERSION = "conversion"   # a call or chat on a post
SEARCH = "search"           # item_id empty, query holds space-separated tokens
VIEW = "view"               # a page view; dwell_s holds the dwell time
PURCHASE = "purchase"
EVENT_TYPES: Tuple[str, ...] = (IMPRESSION, CLICK, CONVERSION, SEARCH, VIEW, PURCHASE)
EVENTS_WITHOUT_ITEM: Tuple[str, ...] = (SEARCH,)

# Column -> (logical type, required).
EVENT_COLUMNS: Dict[str, Tuple[str, bool]] = {
    "event_id": ("string", True),     # unique
    "user_id": ("string", True),
    "item_id": ("string", True),      # empty for search
    "event": ("string", True),        # one of EVENT_TYPES
    "ts": ("int64", True),            # unix seconds
    "request_id": ("string", False),  # groups the impressions of one ranking request
    "query": ("string", False),       # search tokens, space separated
    "dwell_s": ("float64", False),    # page-view dwell time in seconds
    "position": ("int64", False),     # 0-based slot of an impression in its request (empty otherwise)
    # Served impressions (the ranking endpoint's log): which A/B arm and model version
    # ranked the post, and the score it gave; empty in a log that was not served.
    "arm": ("string", False),         # "champion" or "challenger"
    "model_version": ("string", False),
    "score": ("float64", False),
    # The shop's page-view sessions (the simulator's e-commerce mode): events of one
    # session share it; empty where the log has no session ids (docs/sessions.md).
    "session_id": ("string", False),
}
ITEM_COLUMNS: Dict[str, Tuple[str, bool]] = {
    "item_id": ("string", True),
    "category_id": ("string", True),
    "region_id": ("string", True),
    "price": ("float64", False),
    "title": ("string", False),
    "valid_from": ("int64", False),   # unix seconds: the row's attributes hold from then on (snapshots)
}
USER_COLUMNS: Dict[str, Tuple[str, bool]] = {
    "user_id": ("string", True),
    "region_id": ("string", True),
    "valid_from": ("int64", False),   # as for items
}
COLUMNS: Dict[str, Dict[str, Tuple[str, bool]]] = {
    EVENTS: EVENT_COLUMNS, ITEMS: ITEM_COLUMNS, USERS: USER_COLUMNS,
}

# Quarantine reasons, one per kind of bad event row.
UNKNOWN_EVENT = "unknown_event_type"
MISSING_ID = "missing_id"
BAD_TS = "unparsable_ts"
DUPLICATE_ID = "duplicate_event_id"
UNKNOWN_ITEM = "item_not_in_items"
TS_BEFORE_FLOOR = "ts_before_floor"     # negative, or before examples.min_ts
TS_IN_FUTURE = "ts_in_future"           # later than the newest plausible impression + examples.max_future_skew_s
UNDECODABLE = "undecodable_text"        # bytes that are not UTF-8 in a text column
REASONS: Tuple[str, ...] = (UNKNOWN_EVENT, MISSING_ID, BAD_TS, DUPLICATE_ID, UNKNOWN_ITEM,
                            TS_BEFORE_FLOOR, TS_IN_FUTURE, UNDECODABLE)

# The ground truth the simulator writes beside the log (never read by training):
# one row per impression, columns event_id, p_click and p_click_aggregate (the click
# probability without the simulator's order-carrying mechanisms).
TRUTH_FILE = "truth.parquet"
