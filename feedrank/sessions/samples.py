"""Training samples from sessions (docs/sessions.md).

A sample is one page prefix ``p[0..m-1]`` of a session, taken when its last page
``p[m-1]`` opens (the moment the widget asks for recommendations), with two targets:

- ``next_page``: the page the shopper views next, ``p[m]`` ("" at the session's last page):
  every page transition of every session is a training target, so the model learns
  from the whole log, not only from its add-to-carts;
- ``label_items``: the items of the session's next add-to-cart after the prefix, if any.

The add-to-carts are grouped into **purchase points**: the carts made after the same
number of page views ``n`` (the items of one point are its label set I).  For purchase
point j, with ``n_j`` pages before it and ``n_{j-1}`` before the previous point (0 for the
first), the prefixes ``n_{j-1} < m <= n_j`` are labelled I_j (``path_start`` =
``n_{j-1}``: the path to the second and later add-to-carts starts after the previous
one); ``m = n_j`` is the full sample ``(h, p[n-k..n-1]) -> I`` (``full_path = 1``), the
others are shortened-path samples (without ``shortened`` they carry no label items).
A prefix with neither target gives no sample (`count_samples`).

In each sample the last ``min(k, m)`` pages are the recent page states and the older
ones form the history state h; every page's dwell is `sessionize.page_dwell`: the
seconds until the next page view, and 0 for the current page (its dwell at request
time), as the endpoint computes it.  The purchase history is the items the user carted
in earlier sessions (sessions are ordered by start).

Splits are by time (`split_of`): a session starting at or after ``eval_start_ts`` is
``eval``; one starting in the ``val_days`` before it is ``val`` (the Trainer's early
stopping); the others ``train``.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from feedrank.sessions import features as F
from feedrank.sessions.sessionize import Session, page_dwell

log = logging.getLogger(__name__)

TRAIN, VAL, EVAL = "train", "val", "eval"
SPLITS: Tuple[str, ...] = (TRAIN, VAL, EVAL)
DAY = 86400


def ageing_weights(dwell_s: Sequence[float], theta: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                   floor_s: float = 1e-3) -> np.ndarray:
    """The history state's ageing factors ``eps_i = theta(p_i) / sum_{j >= i} theta(p_j)``.

    ``dwell_s`` are the history pages' dwell times, oldest first; ``theta`` maps them to
    the page weights (default: the dwell itself, floored at ``floor_s`` so that a zero
    dwell gives no division by zero).  The newest history page gets 1.
    """
    d = np.maximum(np.asarray(dwell_s, dtype=np.float64), floor_s)
    t = theta(d) if theta is not None else d
    if np.any(t <= 0) or not np.all(np.isfinite(t)):
        raise ValueError("theta must give positive, finite page weights")
    tail = np.cumsum(t[::-1])[::-1]     # sum_{j >= i}
    return t / tail


def purchase_points(session: Session) -> List[Tuple[int, List[str], int]]:
    """``(pages_before, items, ts of the first cart)`` per purchase point, in order; carts
    before any page view are left out."""
    points: Dict[int, Tuple[List[str], int]] = {}
    for c in session.purchases:
        if c.pages_before < 1:
            continue
        items, ts = points.setdefault(c.pages_before, ([], c.ts))
        if c.item_id not in items:
            items.append(c.item_id)
    return [(n, items, ts) for n, (items, ts) in sorted(points.items())]


def _targets(session: Session, shortened: bool, next_pages: bool) -> Iterator[Tuple[int, str, List[str], int, int]]:
    """``(m, next page, label items, n_j, n_{j-1})`` of every prefix that has a target."""
    pages = session.pages
    points = purchase_points(session)
    j, prev = 0, 0
    for m in range(1, len(pages) + 1):
        while j < len(points) and points[j][0] < m:
            prev = points[j][0]
            j += 1
        n, items = (points[j][0], points[j][1]) if j < len(points) else (0, [])
        labels = list(items) if n and (shortened or m == n) else []
        nxt = pages[m].page_id if next_pages and m < len(pages) else ""
        if labels or nxt:
            yield m, nxt, labels, (n if labels else 0), (prev if labels else 0)


def count_samples(session: Session, shortened: bool = True, next_pages: bool = True) -> Tuple[int, int]:
    """``(samples with label items, samples with a next page only)`` of a session."""
    carts = nexts = 0
    for _, _, labels, _, _ in _targets(session, shortened, next_pages):
        carts += bool(labels)
        nexts += not labels
    return carts, nexts


def session_samples(session: Session, purchase_history: Sequence[Tuple[str, int]], k: int = F.DEFAULT_K,
                    shortened: bool = True, next_pages: bool = True,
                    page_types: Optional[Mapping[str, str]] = None) -> Iterator[Dict]:
    """The samples of one session (dicts in the feature contract `feedrank.sessions.features`).

    ``purchase_history``: ``(item, ts)`` carted in the user's earlier sessions, oldest first;
    ``page_types``: the catalogue's page types (`feedrank.sessions.catalogue`), else the pages' own.
    """
    if k < 1:
        raise ValueError(f"k (recent page states) must be >= 1, got {k}")
    pages = session.pages
    types = [(page_types or {}).get(p.page_id, p.page_type or "item") for p in pages]
    hist_items = [i for i, _ in purchase_history]
    hist_ts = [t for _, t in purchase_history]
    gaps = page_dwell([p.ts for p in pages])[:-1]       # each page's time to the next view
    for m, nxt, labels, n, prev in _targets(session, shortened, next_pages):
        dwell = gaps[:m - 1] + [0.0]                    # the prefix's current page: 0 at its opening
        cut = max(0, m - k)
        yield {
            F.USER_ID: session.user_id, F.SESSION_ID: session.session_id,
            F.SESSION_START_TS: session.start_ts, F.TS: pages[m - 1].ts,
            F.RECENT_PAGES: [p.page_id for p in pages[cut:m]], F.RECENT_PAGE_TYPES: types[cut:m],
            F.RECENT_DWELL: dwell[cut:],
            F.HISTORY_PAGES: [p.page_id for p in pages[:cut]], F.HISTORY_PAGE_TYPES: types[:cut],
            F.HISTORY_DWELL: dwell[:cut],
            F.PURCHASE_HISTORY: hist_items, F.PURCHASE_HISTORY_TS: hist_ts,
            F.LABEL_ITEMS: labels, F.NEXT_PAGE: nxt, F.PREFIX_LEN: m, F.N_PAGES_BEFORE_PURCHASE: n,
            F.PATH_START: prev, F.FULL_PATH: int(bool(labels) and m == n),
        }


def eval_start(last_ts: int, eval_days: int) -> int:
    """The first second of the log's last ``eval_days`` UTC days (the day of ``last_ts`` included)."""
    if eval_days < 1:
        raise ValueError(f"eval_days must be >= 1, got {eval_days}")
    return (last_ts // DAY - (eval_days - 1)) * DAY


def split_of(session: Session, eval_start_ts: int, val_start_ts: Optional[int] = None) -> str:
    """``eval`` from ``eval_start_ts`` on, ``val`` from ``val_start_ts`` (None: no val split), else ``train``."""
    if session.start_ts >= eval_start_ts:
        return EVAL
    return VAL if val_start_ts is not None and session.start_ts >= val_start_ts else TRAIN


def user_samples(sessions: Iterable[Session], eval_start_ts: int, k: int = F.DEFAULT_K,
                 max_purchase_history: int = F.DEFAULT_MAX_PURCHASE_HISTORY,
                 shortened: bool = True, next_pages: bool = True, val_start_ts: Optional[int] = None,
                 page_types: Optional[Mapping[str, str]] = None) -> Iterator[Tuple[str, Session, List[Dict]]]:
    """``(split, session, samples)`` for each of one user's sessions, in start order, each with the
    user's purchase history before it (the last ``max_purchase_history`` carts)."""
    history: List[Tuple[str, int]] = []
    for s in sorted(sessions, key=lambda s: (s.start_ts, s.session_id)):
        kept = history[-max_purchase_history:] if max_purchase_history > 0 else []
        yield (split_of(s, eval_start_ts, val_start_ts), s,
               list(session_samples(s, kept, k, shortened, next_pages, page_types)))
        history.extend((c.item_id, c.ts) for c in s.purchases)
