"""Paired comparisons of two rankers on the same impressions, with their error.

Two models scored on the same eval impressions are ordered only when a paired
95% interval of their difference excludes 0.  The interval comes from a
bootstrap over users: each resample draws the users with replacement and keeps
all their impressions (a user's impressions are not independent), and both
models' AUC and GAUC are computed on that same resample, so the difference's
interval carries the users' sampling error and nothing of the seeds'.

Both metrics are computed in O(n) per resample from weights (a user drawn k
times weighs k): the AUC from the rows' score groups, the GAUC from per-user AUCs
computed once (`feedrank.evaluate.scoring.gauc`'s definition: impression-weighted
mean over users with both classes).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence

import numpy as np


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: Optional[np.ndarray] = None) -> float:
    """ROC AUC with row weights (ties count one half); NaN without both classes."""
    y = np.asarray(labels).astype(bool)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    _, inv = np.unique(np.asarray(scores, dtype=float), return_inverse=True)
    return _auc_from_groups(inv.reshape(-1), y, w)


def _auc_from_groups(inv: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """AUC from each row's score group (ascending): positives' weight times the negatives'
    weight below them, plus half of the negatives' weight tied with them."""
    groups = int(inv.max()) + 1 if len(inv) else 0
    pos = np.bincount(inv, weights=w * y, minlength=groups)
    neg = np.bincount(inv, weights=w * ~y, minlength=groups)
    below = np.cumsum(neg) - neg
    total = pos.sum() * neg.sum()
    return float((pos * (below + 0.5 * neg)).sum() / total) if total > 0 else float("nan")


def per_user_auc(labels: np.ndarray, scores: np.ndarray, users: np.ndarray):
    """``(user codes, AUC, impressions)`` of the users with both classes; the codes index
    ``np.unique(users)``."""
    uniq, code = np.unique(users, return_inverse=True)
    code = code.reshape(-1)
    y = np.asarray(labels).astype(bool)
    order = np.argsort(code, kind="stable")
    bounds = np.flatnonzero(np.r_[True, code[order][1:] != code[order][:-1], True])
    codes, aucs, sizes = [], [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        rows = order[a:b]
        if 0 < y[rows].sum() < len(rows):
            codes.append(code[rows[0]])
            aucs.append(weighted_auc(y[rows], np.asarray(scores)[rows]))
            sizes.append(len(rows))
    return np.array(codes, dtype=np.int64), np.array(aucs), np.array(sizes, dtype=float)


@dataclasses.dataclass(frozen=True)
class Difference:
    """``a - b`` of one metric on the full sample (``a_value``, ``b_value``), and its paired
    bootstrap interval."""

    metric: str
    a_value: float
    b_value: float
    diff: float
    lo: float
    hi: float
    level: float
    resamples: int
    users: int

    @property
    def ordered(self) -> bool:
        """Whether the interval excludes 0 (only then is one model ahead)."""
        return self.lo > 0 or self.hi < 0

    def verdict(self, name_a: str, name_b: str) -> str:
        if not self.ordered:
            return f"{name_a} and {name_b} are not ordered by {self.metric} (the interval contains 0)"
        ahead, behind = (name_a, name_b) if self.diff > 0 else (name_b, name_a)
        return f"{ahead} ahead of {behind} by {self.metric}"

    def to_dict(self) -> Dict[str, float]:
        return dataclasses.asdict(self)


def compare(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, users: np.ndarray,
            resamples: int = 1000, level: float = 0.95, seed: int = 0,
            metrics: Sequence[str] = ("auc", "gauc")) -> Dict[str, Difference]:
    """Paired bootstrap over users of ``a - b`` for each metric (percentile interval)."""
    y = np.asarray(labels).astype(bool)
    users = np.asarray(users)
    if not (len(y) == len(scores_a) == len(scores_b) == len(users)):
        raise ValueError("labels, both models' scores and users must be the same impressions")
    uniq, code = np.unique(users, return_inverse=True)
    code = code.reshape(-1)
    n_users = len(uniq)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=resamples).astype(float)
    out: Dict[str, Difference] = {}
    tail = (1.0 - level) / 2.0
    if "auc" in metrics:
        inv_a = np.unique(np.asarray(scores_a, dtype=float), return_inverse=True)[1].reshape(-1)
        inv_b = np.unique(np.asarray(scores_b, dtype=float), return_inverse=True)[1].reshape(-1)
        full = np.ones(len(y))
        a, b = _auc_from_groups(inv_a, y, full), _auc_from_groups(inv_b, y, full)
        diffs = np.array([_auc_from_groups(inv_a, y, d[code]) - _auc_from_groups(inv_b, y, d[code])
                          for d in draws])
        out["auc"] = _difference("auc", a, b, diffs, tail, level, n_users)
    if "gauc" in metrics:
        ca, auc_a, n_a = per_user_auc(y, scores_a, users)
        cb, auc_b, _ = per_user_auc(y, scores_b, users)
        if not np.array_equal(ca, cb):
            raise AssertionError("the users with both classes differ between the two models")
        if len(ca) == 0:
            raise ValueError("GAUC needs a user with both a positive and a negative impression")
        delta = auc_a - auc_b
        weight = draws[:, ca] * n_a                      # resample x eligible user
        total = weight.sum(axis=1)
        diffs = np.where(total > 0, (weight * delta).sum(axis=1) / np.maximum(total, 1e-12), np.nan)
        a, b = float((auc_a * n_a).sum() / n_a.sum()), float((auc_b * n_a).sum() / n_a.sum())
        out["gauc"] = _difference("gauc", a, b, diffs[np.isfinite(diffs)], tail, level, n_users)
    return out


def _difference(metric: str, a: float, b: float, diffs: np.ndarray, tail: float, level: float,
                users: int) -> Difference:
    lo, hi = np.quantile(diffs, [tail, 1.0 - tail])
    return Difference(metric, a, b, a - b, float(lo), float(hi), level, len(diffs), users)
