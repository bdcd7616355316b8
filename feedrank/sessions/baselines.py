"""Non-neural baselines of the session recommender.

`Popularity`: the items most purchased in the training split, the same
ranking for every session and user.  Its `scores` has the session models'
scoring interface (`feedrank.sessions.metrics.ScoreFn`), so `metrics.evaluate`
runs it like a model.  (ALS on the user x item matrix is another module's.)
"""
from __future__ import annotations

import logging
from typing import Dict, Mapping

import numpy as np

log = logging.getLogger(__name__)

PAD_SCORE = -1e9


class Popularity:
    """Scores each item by its purchase count in training (ties: the lower id first)."""

    def __init__(self, num_items: int):
        if num_items < 2:
            raise ValueError(f"num_items must be >= 2 (0 is padding), got {num_items}")
        self.num_items = int(num_items)
        self.counts = np.zeros(self.num_items, dtype=np.float64)

    def fit(self, purchased: np.ndarray) -> "Popularity":
        """Counts the purchased item ids (1..num_items-1) of the training samples."""
        ids = np.asarray(purchased, dtype=np.int64).ravel()
        bad = (ids < 1) | (ids >= self.num_items)
        if bad.any():
            raise ValueError(f"purchased item ids must be in [1, {self.num_items}), got e.g. {ids[bad][:5].tolist()}")
        self.counts = np.bincount(ids, minlength=self.num_items).astype(np.float64)
        log.info("popularity over %d purchases, %d distinct items", ids.size, int((self.counts > 0).sum()))
        return self

    def item_scores(self) -> np.ndarray:
        """[num_items] scores: the count, minus a tiny id tie-break; the padding item lowest."""
        s = self.counts - np.arange(self.num_items) * 1e-9
        s[0] = PAD_SCORE
        return s

    def scores(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """[B, num_items]: the same scores for each row of ``batch`` (any session inputs)."""
        n = len(next(iter(batch.values())))
        return np.broadcast_to(self.item_scores(), (n, self.num_items))

    def top_k(self, k: int) -> Dict[str, np.ndarray]:
        """The ``k`` most purchased items and their counts."""
        order = np.argsort(-self.item_scores(), kind="stable")[:k]
        return {"items": order, "counts": self.counts[order]}
