"""Training samples from sessions, as the DRNN paper builds them (docs/sessions.md).

A session's add-to-carts are grouped into **purchase points**: the carts made after
the same number of page views ``n`` (the items of one point are its label set I).
For purchase point j, with ``n_j`` pages before it and ``n_{j-1}`` before the previous
point (0 for the first), the samples are every page prefix ``p[0..m-1]`` with
``n_{j-1} < m <= n_j``, labelled I_j:

- ``m = n_j``: the full sample ``(h, p[n-k..n-1]) -> I``, ``full_path = 1``;
- ``n_{j-1} < m < n_j``: the shortened-path samples ``p0 -> I``, ``p0,p1 -> I``, ...
  (``full_path = 0``), which teach the model to guess earlier.

So every page prefix of a session up to its last add-to-cart is a sample exactly once,
labelled with the next add-to-cart, and a session gives ``n_last`` samples
(`count_samples`): as many full samples as purchase points, the rest shortened.  A
session without an add-to-cart gives none.  In each sample the last ``min(k, m)``
pages are the recent page states and the older ones, with their dwell times, form the
history state h (the model weights them with `ageing_weights`).  The purchase history
is the items the user carted in earlier sessions (sessions are ordered by start).

Splits are by time: a session starting at or after ``eval_start_ts`` is ``eval``, the
others ``train`` (`eval_start`: the last ``eval_days`` UTC days of the log).
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from feedrank.sessions import features as F
from feedrank.sessions.sessionize import Session

log = logging.getLogger(__name__)

TRAIN, EVAL = "train", "eval"
SPLITS: Tuple[str, ...] = (TRAIN, EVAL)
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


def count_samples(session: Session, shortened: bool = True) -> Tuple[int, int]:
    """``(full, shortened)`` sample counts of a session: (points, n_last - points)."""
    points = purchase_points(session)
    if not points:
        return 0, 0
    return len(points), (points[-1][0] - len(points)) if shortened else 0


def session_samples(session: Session, purchase_history: Sequence[Tuple[str, int]], k: int = F.DEFAULT_K,
                    shortened: bool = True) -> Iterator[Dict]:
    """The samples of one session (dicts in the feature contract `feedrank.sessions.features`).

    ``purchase_history``: ``(item, ts)`` carted in the user's earlier sessions, oldest first.
    """
    if k < 1:
        raise ValueError(f"k (recent page states) must be >= 1, got {k}")
    pages = session.pages
    hist_items = [i for i, _ in purchase_history]
    hist_ts = [t for _, t in purchase_history]
    prev = 0
    for n, items, _ in purchase_points(session):
        for m in range(prev + 1 if shortened else n, n + 1):
            recent, older = pages[max(0, m - k):m], pages[:max(0, m - k)]
            yield {
                F.USER_ID: session.user_id, F.SESSION_ID: session.session_id,
                F.SESSION_START_TS: session.start_ts, F.TS: pages[m - 1].ts,
                F.RECENT_PAGES: [p.page_id for p in recent], F.RECENT_PAGE_TYPES: [p.page_type for p in recent],
                F.RECENT_DWELL: [p.dwell_s for p in recent],
                F.HISTORY_PAGES: [p.page_id for p in older], F.HISTORY_PAGE_TYPES: [p.page_type for p in older],
                F.HISTORY_DWELL: [p.dwell_s for p in older],
                F.PURCHASE_HISTORY: hist_items, F.PURCHASE_HISTORY_TS: hist_ts,
                F.LABEL_ITEMS: list(items), F.PREFIX_LEN: m, F.N_PAGES_BEFORE_PURCHASE: n,
                F.FULL_PATH: int(m == n),
            }
        prev = n


def eval_start(last_ts: int, eval_days: int) -> int:
    """The first second of the log's last ``eval_days`` UTC days (the day of ``last_ts`` included)."""
    if eval_days < 1:
        raise ValueError(f"eval_days must be >= 1, got {eval_days}")
    return (last_ts // DAY - (eval_days - 1)) * DAY


def split_of(session: Session, eval_start_ts: int) -> str:
    return EVAL if session.start_ts >= eval_start_ts else TRAIN


def user_samples(sessions: Iterable[Session], eval_start_ts: int, k: int = F.DEFAULT_K,
                 max_purchase_history: int = F.DEFAULT_MAX_PURCHASE_HISTORY,
                 shortened: bool = True) -> Iterator[Tuple[str, Session, List[Dict]]]:
    """``(split, session, samples)`` for each of one user's sessions, in start order, each with the
    user's purchase history before it (the last ``max_purchase_history`` carts)."""
    history: List[Tuple[str, int]] = []
    for s in sorted(sessions, key=lambda s: (s.start_ts, s.session_id)):
        kept = history[-max_purchase_history:] if max_purchase_history > 0 else []
        yield split_of(s, eval_start_ts), s, list(session_samples(s, kept, k, shortened))
        history.extend((c.item_id, c.ts) for c in s.purchases)
