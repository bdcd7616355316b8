"""Sessionization of the shop's page views and add-to-carts, in Beam.

A user's events (``view`` and ``purchase``; other event types are not part of a
session) form one session until

- a pause STRICTLY LONGER than ``gap_s`` seconds between two consecutive events
  (default 1800 s: a pause of exactly 30 minutes keeps the session, 30 minutes and
  one second ends it), or
- a new session id: two consecutive events with different non-empty ``session_id``.

`Sessionize` keys the events by user, stamps them with their ``ts`` and puts them in
Beam session windows (``window.Sessions(gap_s + 1)``: an event's window is
``[ts, ts + gap_s + 1)`` and windows merge only when they overlap, so with whole-second
timestamps two events share a window exactly when their pause is at most ``gap_s``);
the grouped window is sorted and cut where the session id changes.  The order in which
events arrive does not matter.  Within one second, views come before add-to-carts, then
the event id decides (`event_order`).  `split_sessions` is the same rule in plain Python
(one user's events), the reference the tests compare with.

`page_dwell` is the dwell the model reads for a session's page views, offline
(`build_session`) and online (``serving.sessions.state.model_inputs``): the time until
the next page view, and for the current page the dwell known so far.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Iterable, List, Optional, Sequence, Tuple

try:
    import apache_beam as beam
    from apache_beam.transforms import window
except ImportError:  # the serving environment has no Beam: the plain-Python rule still imports
    beam = window = None

from feedrank.events import contract

log = logging.getLogger(__name__)

DEFAULT_GAP_S = 1800
SESSION_EVENTS: Tuple[str, ...] = (contract.VIEW, contract.PURCHASE)
_KIND_ORDER = {contract.VIEW: 0, contract.PURCHASE: 1}


@dataclasses.dataclass(frozen=True)
class Event:
    """One session event of the log."""

    event_id: str
    user_id: str
    item_id: str       # the page id of a view, the item of an add-to-cart
    event: str         # view or purchase
    ts: int
    dwell_s: float = float("nan")
    session_id: str = ""


@dataclasses.dataclass(frozen=True)
class Page:
    """One page view of a session."""

    page_id: str
    page_type: str
    ts: int
    dwell_s: float      # the model's dwell (`page_dwell`), not the log's dwell_s


@dataclasses.dataclass(frozen=True)
class Purchase:
    item_id: str
    ts: int
    pages_before: int   # the session's page views before this add-to-cart


@dataclasses.dataclass(frozen=True)
class Session:
    user_id: str
    session_id: str     # the log's session id, else "<user_id>:<start_ts>"
    start_ts: int
    end_ts: int
    pages: Tuple[Page, ...]
    purchases: Tuple[Purchase, ...]


def event_order(e: Event) -> Tuple[int, int, str]:
    """The order of a user's events: ts, then a view before an add-to-cart, then the id."""
    return (e.ts, _KIND_ORDER.get(e.event, 2), e.event_id)


def check_gap(gap_s: int) -> int:
    """``gap_s`` itself, or a ValueError when it is not a positive whole number of seconds."""
    if not isinstance(gap_s, int) or isinstance(gap_s, bool) or gap_s < 1:
        raise ValueError(f"the session gap must be a positive number of seconds, got {gap_s!r}")
    return gap_s


def _cut(ordered: Sequence[Event], gap_s: Optional[int]) -> List[List[Event]]:
    """Cuts sorted events where the session id changes (and, if ``gap_s`` is given, where the
    pause is longer than ``gap_s``)."""
    out: List[List[Event]] = []
    for e in ordered:
        if out:
            prev = out[-1][-1]
            new_id = bool(e.session_id and prev.session_id and e.session_id != prev.session_id)
            if not new_id and (gap_s is None or e.ts - prev.ts <= gap_s):
                out[-1].append(e)
                continue
        out.append([e])
    return out


def split_sessions(events: Iterable[Event], gap_s: int = DEFAULT_GAP_S) -> List[List[Event]]:
    """One user's events cut into sessions (plain Python), each sorted by `event_order`: a
    new session after a pause longer than ``gap_s`` or at a new non-empty session id."""
    check_gap(gap_s)
    return _cut(sorted((e for e in events if e.event in SESSION_EVENTS), key=event_order), gap_s)


def page_dwell(view_ts: Sequence[int], current_s: float = 0.0) -> List[float]:
    """The dwell the model reads for a session's page views so far, oldest first.

    Every page but the last gets the seconds until the next page view
    (``view_ts[i + 1] - view_ts[i]``: how long the shopper stayed, known once the next
    page opens); the last (current) page gets ``current_s``, the dwell known at request
    time (0 at page open).  The log's ``dwell_s`` is not used: at request time the
    current page's final dwell is unknown.  Empty for no views; a ValueError for
    decreasing timestamps or a negative or NaN ``current_s``.
    """
    current = float(current_s)
    if not current >= 0.0:
        raise ValueError(f"the current page's dwell must be a number >= 0 seconds, got {current_s!r}")
    ts = [int(t) for t in view_ts]
    for i in range(1, len(ts)):
        if ts[i] < ts[i - 1]:
            raise ValueError(f"page view timestamps must not decrease, got {ts[i - 1]} then {ts[i]} at {i}")
    if not ts:
        return []
    return [float(b - a) for a, b in zip(ts, ts[1:])] + [current]


def build_session(events: Sequence[Event]) -> Session:
    """A `Session` from one session's sorted events.

    The pages' ``dwell_s`` is `page_dwell` of their timestamps: the time until the next
    page view, and for the last page the time from it to the session's last event (an
    add-to-cart after it; 0 when the page view is the last event).
    """
    from feedrank.sessions.features import page_type  # the simulator's page-id scheme (pandas, pyarrow)

    views = [e for e in events if e.event == contract.VIEW]
    dwell = page_dwell([e.ts for e in views], events[-1].ts - views[-1].ts if views else 0.0)
    pages = [Page(e.item_id, page_type(e.item_id), e.ts, d) for e, d in zip(views, dwell)]
    purchases: List[Purchase] = []
    seen = 0
    for e in events:
        if e.event == contract.VIEW:
            seen += 1
        else:
            purchases.append(Purchase(e.item_id, e.ts, seen))
    first = events[0]
    sid = next((e.session_id for e in events if e.session_id), "") or f"{first.user_id}:{first.ts}"
    return Session(first.user_id, sid, first.ts, events[-1].ts, tuple(pages), tuple(purchases))


class _SplitWindow(beam.DoFn if beam else object):
    """A user's session window, sorted and cut where the session id changes."""

    def process(self, element: Tuple[str, Iterable[Event]]):
        _, events = element
        for part in _cut(sorted(events, key=event_order), None):
            yield build_session(part)


class Sessionize(beam.PTransform if beam else object):
    """``PCollection[Event]`` -> ``PCollection[Session]`` (global window): a new session after
    a pause longer than ``gap_s`` or at a new session id."""

    def __init__(self, gap_s: int = DEFAULT_GAP_S):
        super().__init__()
        self.gap_s = check_gap(gap_s)

    def expand(self, events):
        return (events
                | "SessionEvents" >> beam.Filter(lambda e: e.event in SESSION_EVENTS)
                | "StampByTs" >> beam.Map(lambda e: window.TimestampedValue((e.user_id, e), e.ts))
                # whole-second ts: windows [ts, ts + gap_s + 1) overlap iff the pause is <= gap_s
                | "SessionWindows" >> beam.WindowInto(window.Sessions(self.gap_s + 1))
                | "ByUserAndWindow" >> beam.GroupByKey()
                | "CutOnSessionId" >> beam.ParDo(_SplitWindow())
                | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows()))

