"""Neighbourhood baselines of the session recommender: recently viewed and item kNN.

Both score through the session models' interface (`feedrank.sessions.metrics.ScoreFn`):
a batch with ``"pages"`` [B, T] (int64 page ids in time order, the most recent last,
0 for padding on any side) -> [B, num_items] scores, the padding item 0 scored
lowest (-1e9).  ``page_item[p]`` maps a page id to the item it shows (0 for a page
that shows none: an index or category list).  A real page's AGE counts the real
pages after it: 0 for the most recent page.

* `RecentlyViewed` (untrained): item j scores ``sum of decay**age`` over the
  session's pages showing j, the simple "recently viewed" widget;
* `ItemKnn` (co-occurrence): session-based item-to-item kNN in the form Ludewig and
  Jannach evaluate ("Evaluation of session-based recommendation algorithms",
  UMUAI 28, 2018), built on item-based collaborative filtering (Sarwar, Karypis,
  Konstan and Riedl, "Item-based collaborative filtering recommendation
  algorithms", WWW 2001).  ``co(i, j)`` counts the training sessions holding both
  items, ``n_i`` those holding i, ``sim(i, j) = co(i, j) / (n_i**alpha *
  n_j**(1 - alpha))`` (alpha 0.5: the cosine of the items' session vectors), each
  item keeps its top ``neighbours`` by similarity, and item j scores
  ``sum over the session's item pages i of decay**age(i) * sim(i, j)``.

Both take an optional ``fallback`` (e.g. `baselines.Popularity.item_scores`): it is
rescaled to [0, 1] and added times half the row's smallest positive score (times 1
in a row without one), so items with a positive score always rank first and the
others by the fallback.  The similarity matrix is a ``scipy.sparse`` CSR matrix.
"""
from __future__ import annotations

import logging
from typing import Mapping, Optional, Sequence

import numpy as np
from scipy import sparse

log = logging.getLogger(__name__)

PAD_SCORE = -1e9


def _check_common(page_item: np.ndarray, num_items: int, decay: float,
                  fallback: Optional[np.ndarray]) -> tuple:
    if num_items < 2:
        raise ValueError(f"num_items must be >= 2 (0 is padding), got {num_items}")
    pi = np.asarray(page_item)
    if pi.ndim != 1 or pi.size < 1 or not np.issubdtype(pi.dtype, np.integer):
        raise ValueError(f"page_item must be a 1-D integer array (page id -> item id), got {pi.dtype} {pi.shape}")
    if pi.min() < 0 or pi.max() >= num_items:
        raise ValueError(f"page_item values must be item ids in [0, {num_items}), got {pi.min()}..{pi.max()}")
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    fb = None
    if fallback is not None:
        fb = np.asarray(fallback, dtype=np.float64)
        if fb.shape != (num_items,) or not np.isfinite(fb[1:]).all():
            raise ValueError(f"fallback must be [num_items={num_items}] finite scores, got shape {fb.shape}")
        rest = fb[1:]
        span = rest.max() - rest.min()
        fb = np.r_[0.0, (rest - rest.min()) / span if span > 0 else np.zeros_like(rest)]
    return pi.astype(np.int64), int(num_items), float(decay), fb


def recency_weights(pages: np.ndarray, page_item: np.ndarray, decay: float) -> tuple:
    """``(rows, items, weights)`` of a [B, T] page batch: each real page that shows an item
    gives its row, its item and ``decay**age``."""
    pages = np.asarray(pages)
    if pages.ndim != 2:
        raise ValueError(f"pages must be [B, T], got shape {pages.shape}")
    if pages.size and (pages.min() < 0 or pages.max() >= len(page_item)):
        raise ValueError(f"page ids must be in [0, {len(page_item)}), got {pages.min()}..{pages.max()}")
    real = pages != 0
    age = np.cumsum(real[:, ::-1], axis=1)[:, ::-1] - 1
    items = page_item[pages]
    keep = real & (items > 0)
    rows = np.nonzero(keep)[0]
    return rows, items[keep], np.power(decay, age[keep]).astype(np.float64)


def finish(scores: np.ndarray, fallback: Optional[np.ndarray]) -> np.ndarray:
    """Adds the rescaled fallback below each row's smallest positive score; padding lowest."""
    if fallback is not None:
        pos = np.where(scores > 0, scores, np.inf).min(axis=1)
        eps = np.where(np.isfinite(pos), 0.5 * pos, 1.0)
        scores = scores + eps[:, None] * fallback[None, :]
    scores[:, 0] = PAD_SCORE
    return scores


class RecentlyViewed:
    """Scores the items of the session's pages by recency (see the module docstring)."""

    def __init__(self, page_item: np.ndarray, num_items: int, decay: float = 0.75,
                 fallback: Optional[np.ndarray] = None):
        self.page_item, self.num_items, self.decay, self.fallback = _check_common(
            page_item, num_items, decay, fallback)

    def scores(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """[B, num_items] scores of a batch with ``"pages"`` [B, T]."""
        rows, items, w = recency_weights(batch["pages"], self.page_item, self.decay)
        n = len(batch["pages"])
        s = np.bincount(rows * self.num_items + items, weights=w, minlength=n * self.num_items)
        return finish(s.reshape(n, self.num_items), self.fallback)

    __call__ = scores


class ItemKnn:
    """Session-based item-to-item kNN (see the module docstring); `fit` before scoring."""

    def __init__(self, page_item: np.ndarray, num_items: int, neighbours: int = 100, decay: float = 0.75,
                 alpha: float = 0.5, fallback: Optional[np.ndarray] = None):
        self.page_item, self.num_items, self.decay, self.fallback = _check_common(
            page_item, num_items, decay, fallback)
        if neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {neighbours}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.neighbours, self.alpha = int(neighbours), float(alpha)
        self.sim: Optional[sparse.csr_matrix] = None
        self.counts = np.zeros(self.num_items)

    def fit(self, sessions: Sequence[Sequence[int]]) -> "ItemKnn":
        """Co-occurrence similarities from training sessions given as lists of item ids
        (1..num_items-1; an item counts once per session)."""
        lengths = np.fromiter((len(s) for s in sessions), dtype=np.int64, count=len(sessions))
        flat = np.fromiter((i for s in sessions for i in s), dtype=np.int64, count=int(lengths.sum()))
        bad = (flat < 1) | (flat >= self.num_items)
        if bad.any():
            raise ValueError(f"session item ids must be in [1, {self.num_items}), got e.g. {flat[bad][:5].tolist()}")
        cells = np.unique(np.repeat(np.arange(len(lengths)), lengths) * self.num_items + flat)
        rows, items = np.divmod(cells, self.num_items)    # each item once per session
        x = sparse.csr_matrix((np.ones(len(cells)), (rows, items)), shape=(len(lengths), self.num_items))
        co = (x.T @ x).tocoo()
        off = (co.row != co.col) & (co.data > 0)          # an item is not its own neighbour
        row, col, co_ij = co.row[off].astype(np.int64), co.col[off].astype(np.int64), co.data[off]
        n = np.asarray(x.sum(axis=0)).ravel()
        self.counts = n
        sim = co_ij / (n[row] ** self.alpha * n[col] ** (1.0 - self.alpha))
        self.sim = self._top(row, col, sim)
        log.info("item kNN over %d sessions: %d items seen, %d similarities kept", len(lengths),
                 int((n > 0).sum()), self.sim.nnz)
        return self

    def _top(self, row: np.ndarray, col: np.ndarray, sim: np.ndarray) -> sparse.csr_matrix:
        """Each row's ``neighbours`` most similar items (ties: the lower item id)."""
        order = np.lexsort((col, -sim, row))
        row, col, sim = row[order], col[order], sim[order]
        start = np.searchsorted(row, row, side="left")
        keep = np.arange(len(row)) - start < self.neighbours
        return sparse.csr_matrix((sim[keep], (row[keep], col[keep])), shape=(self.num_items, self.num_items))

    def scores(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """[B, num_items] scores of a batch with ``"pages"`` [B, T]."""
        if self.sim is None:
            raise RuntimeError("ItemKnn.scores before fit: fit it on the training sessions first")
        rows, items, w = recency_weights(batch["pages"], self.page_item, self.decay)
        n = len(batch["pages"])
        weights = sparse.csr_matrix((w, (rows, items)), shape=(n, self.num_items))
        return finish(np.asarray((weights @ self.sim).todense(), dtype=np.float64), self.fallback)

    __call__ = scores
