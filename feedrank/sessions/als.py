"""ALS baselines of the session recommender (the `implicit` library), with and without the user's history.

The model is implicit-feedback ALS (Hu, Koren and Volinsky, ICDM 2008;
``implicit.als.AlternatingLeastSquares``) on the user x item matrix of the
TRAINING split only.  A user's row holds, for each item,

    view_weight * (views of the item's page) + purchase_weight * (its add-to-carts)

and that value is the confidence ALS fits.  Columns are the session models'
item vocabulary (0 is padding and never scored); a page that is not an item
page, or whose item is outside the vocabulary, is not a column.

At prediction time a row is built for each session prefix and FOLDED IN: the
user vector is the ALS least-squares solution for that row against the
trained item factors (``recalculate_user``, the same step ALS fits users
with); an item's score is the dot product of its factors with that vector.
Nothing is filtered: an item already viewed or bought may be recommended
(repeat purchases are common in a shop).  The two variants differ only in the
row (`HISTORY_MODES`):

* ``session`` (ALS without the user's history): the item pages of the current
  session so far, each view counting ``view_weight``.  The user's identity
  and past play no part; this is item-to-item ALS on the session.
* ``user`` (ALS with the user's history): that session row PLUS the user's
  training row's page views (a user not seen in training has none) PLUS
  ``purchase_weight`` for each item of the purchase history given with the
  prefix (``purchases``: every earlier add-to-cart, training period included,
  the same input the DRNN's FNN reads).  For a user seen in training whose
  purchase history is unchanged, this is the user's trained factor updated
  with the current session.

Unknown users and empty rows fall back sensibly: an unknown user's ``user``
row is just the session row; a row with no item at all (the session has
shown only the index and category pages, the user has no history) scores
items by their training purchase counts (popularity).  Every row's scores
carry the popularity as a tie-break far below the ALS scores' resolution.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

HISTORY_MODES = ("session", "user")
PAD_SCORE = -1e9
_TIE = 1e-9  # popularity tie-break, below the resolution of the ALS scores


@dataclasses.dataclass(frozen=True)
class AlsSettings:
    """ALS's hyperparameters and the confidence of each kind of interaction."""

    factors: int = 32
    regularization: float = 0.05
    iterations: int = 15
    view_weight: float = 1.0        # confidence of one view of an item's page
    purchase_weight: float = 5.0    # confidence of one add-to-cart
    seed: int = 0

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1:
            raise ValueError(f"als factors and iterations must be >= 1, got {self.factors}, {self.iterations}")
        if self.regularization < 0 or self.view_weight < 0 or self.purchase_weight <= 0:
            raise ValueError("als regularization and view_weight must be >= 0 and purchase_weight > 0, got "
                             f"{self.regularization}, {self.view_weight}, {self.purchase_weight}")


def _key(user) -> bytes:
    return user if isinstance(user, bytes) else str(user).encode()


class SessionAls:
    """ALS over the item vocabulary ``1..num_items-1``; `scores` has the session models' interface.

    ``page_item[p]`` is the item id of page id ``p`` (0: not an item page or not
    in the vocabulary), so the session's ``pages`` (page ids) become item columns.
    """

    def __init__(self, num_items: int, page_item: Sequence[int], settings: Optional[AlsSettings] = None):
        if num_items < 2:
            raise ValueError(f"num_items must be >= 2 (0 is padding), got {num_items}")
        self.num_items = int(num_items)
        self.page_item = np.asarray(page_item, dtype=np.int64)
        if self.page_item.ndim != 1 or (self.page_item < 0).any() or (self.page_item >= num_items).any():
            raise ValueError(f"page_item must be a 1-d array of item ids in [0, {num_items})")
        self.settings = settings or AlsSettings()
        self.users: Dict[bytes, int] = {}
        self.views = sparse.csr_matrix((0, self.num_items), dtype=np.float32)
        self.popularity = np.zeros(self.num_items)
        self.model = None

    def fit(self, users: Sequence, pages: np.ndarray, purchases: Sequence[Sequence[int]]) -> "SessionAls":
        """Fits ALS on the training split.

        ``users[r]`` is the user of row r, ``pages[r]`` the page ids the user viewed
        in one training session (0 is padding) and ``purchases[r]`` the item ids
        carted in it; a user may have many rows.
        """
        from implicit.als import AlternatingLeastSquares

        pages = np.asarray(pages, dtype=np.int64)
        if pages.ndim != 2 or len(pages) != len(users) or len(purchases) != len(users):
            raise ValueError(f"users, pages [N, T] and purchases need one row each, got {len(users)}, "
                             f"{pages.shape}, {len(purchases)}")
        if len(users) == 0:
            raise ValueError("ALS needs at least one training session")
        if pages.max(initial=0) >= len(self.page_item):
            raise ValueError(f"page ids must be < {len(self.page_item)} (the page_item map)")
        self.users = {}
        rows = np.asarray([self.users.setdefault(_key(u), len(self.users)) for u in users])
        s = self.settings
        self.views = self._matrix(rows, self.page_item[pages], len(self.users)) * s.view_weight
        bought_rows = np.repeat(rows, [len(p) for p in purchases])
        bought = np.concatenate([np.asarray(p, dtype=np.int64) for p in purchases]) if len(bought_rows) else \
            np.zeros(0, np.int64)
        if ((bought < 1) | (bought >= self.num_items)).any():
            raise ValueError(f"purchased item ids must be in [1, {self.num_items})")
        carts = self._matrix(bought_rows, bought[:, None], len(self.users))
        self.popularity = np.asarray(carts.sum(axis=0)).ravel()
        matrix = (self.views + carts * s.purchase_weight).tocsr()
        with threadpool_limits(1, "blas"):   # implicit's advice: its own threads, not BLAS's
            self.model = AlternatingLeastSquares(factors=s.factors, regularization=s.regularization,
                                                 iterations=s.iterations, random_state=s.seed,
                                                 calculate_training_loss=False)
            self.model.fit(matrix, show_progress=False)
        log.info("ALS: %d users x %d items, %d non-zeros, %d factors", matrix.shape[0], self.num_items,
                 matrix.nnz, s.factors)
        return self

    def _matrix(self, rows: np.ndarray, items: np.ndarray, n_rows: int) -> sparse.csr_matrix:
        """Counts of the non-zero ``items[r, :]`` per row ``rows[r]`` as an [n_rows, num_items] CSR."""
        items = np.asarray(items).reshape(len(rows), -1)
        r, c = np.nonzero(items)
        return sparse.csr_matrix((np.ones(len(r), np.float32), (rows[r], items[r, c])),
                                 shape=(n_rows, self.num_items))

    def _rows(self, batch: Mapping[str, np.ndarray], history: str) -> sparse.csr_matrix:
        pages = np.asarray(batch["pages"], dtype=np.int64)
        pages = np.where(pages < len(self.page_item), pages, 0)
        n = len(pages)
        rows = self._matrix(np.arange(n), self.page_item[pages], n) * self.settings.view_weight
        if history == "user":
            if "purchases" in batch:
                bought = np.asarray(batch["purchases"], dtype=np.int64)
                bought = np.where(bought < self.num_items, bought, 0)
                rows = rows + self._matrix(np.arange(n), bought, n) * self.settings.purchase_weight
            known = [self.users.get(_key(u), -1) for u in batch.get("user_id", [b""] * n)]
            idx = np.asarray(known)
            past = sparse.csr_matrix((n, self.num_items), dtype=np.float32)
            if (idx >= 0).any():
                sel = sparse.csr_matrix((np.ones((idx >= 0).sum(), np.float32),
                                         (np.flatnonzero(idx >= 0), idx[idx >= 0])), shape=(n, len(self.users)))
                past = sel @ self.views
            rows = rows + past
        return sparse.csr_matrix(rows, dtype=np.float32)

    def scores(self, batch: Mapping[str, np.ndarray], history: str = "user") -> np.ndarray:
        """[B, num_items] scores for a batch of session prefixes (`feedrank.sessions.drnn.INPUTS`;
        ``session`` reads only ``pages``, ``user`` also ``purchases`` and ``user_id``)."""
        if self.model is None:
            raise ValueError("SessionAls.scores before fit")
        if history not in HISTORY_MODES:
            raise ValueError(f"history must be one of {HISTORY_MODES}, got {history!r}")
        rows = self._rows(batch, history)
        n = rows.shape[0]
        with threadpool_limits(1, "blas"):
            user = self.model.recalculate_user(np.arange(n), rows) if n else np.zeros((0, self.settings.factors))
        out = np.asarray(user, np.float64) @ np.asarray(self.model.item_factors, np.float64).T
        out[np.diff(rows.indptr) == 0] = 0.0    # an empty row: popularity alone
        pop = self.popularity / max(self.popularity.max(), 1.0) - np.arange(self.num_items) * 1e-6
        out += _TIE * pop
        out[:, 0] = PAD_SCORE
        return out

    def scorer(self, history: str):
        """``scores`` with ``history`` fixed: a `feedrank.sessions.metrics.ScoreFn`."""
        if history not in HISTORY_MODES:
            raise ValueError(f"history must be one of {HISTORY_MODES}, got {history!r}")
        return lambda batch: self.scores(batch, history)

    def top_k(self, batch: Mapping[str, np.ndarray], k: int, history: str = "user") -> np.ndarray:
        """[B, k] item ids, best first."""
        s = self.scores(batch, history)
        return np.argsort(-s, axis=1, kind="stable")[:, :k]
