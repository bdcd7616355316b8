"""Paired comparison of two session recommenders on the same samples, with its error.

Two models evaluated on the same samples (`feedrank.sessions.metrics.per_sample`)
give per-sample values ``a`` and ``b`` (a top-10 hit, a reciprocal rank, a path
length).  `paired_interval` is the bootstrap of `feedrank.evaluate.paired` over
groups (users): each resample draws the groups with replacement (multinomial
counts, the same draws as ``paired.compare``) and keeps all their samples, since a
user's samples are not independent; the statistic is the mean of ``a - b`` over the
resample's samples, a user drawn k times weighing k.  The percentile interval and
the verdict are ``paired``'s (`feedrank.evaluate.paired.Difference`): the models are
ordered only when the interval excludes 0.

The work is vectorised: per-group sums and counts of ``a - b`` come from one
``np.bincount``, and each resample's mean is a dot product of its draw counts with
them (resamples processed in chunks, so memory stays bounded).
"""
from __future__ import annotations

import logging
from typing import Dict

import numpy as np

from feedrank.evaluate import paired

log = logging.getLogger(__name__)

_CHUNK_CELLS = 4_000_000      # resamples x groups per chunk of draws (32 MB of float64)


def paired_interval(a: np.ndarray, b: np.ndarray, groups: np.ndarray, reps: int = 1000, seed: int = 0,
                    level: float = 0.95) -> Dict[str, float]:
    """Paired bootstrap over ``groups`` of the mean of ``a - b``: ``{"diff"`` (on the full
    sample), ``"lo"``, ``"hi"`` (the percentile interval at ``level``), ``"groups"``,
    ``"samples"``, ``"ordered"`` (whether the interval excludes 0)``}``."""
    a, b, groups = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), np.asarray(groups)
    if a.ndim != 1 or a.shape != b.shape or groups.shape != a.shape:
        raise ValueError(f"a, b and groups must be 1-D and of one length, got {a.shape}, {b.shape} "
                         f"and {groups.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must be finite")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    uniq, code = np.unique(groups, return_inverse=True)
    n = len(uniq)
    if n < 2:
        raise ValueError(f"a paired bootstrap over groups needs at least 2 groups, got {n}")
    d = a - b
    sums = np.bincount(code.reshape(-1), weights=d, minlength=n)
    sizes = np.bincount(code.reshape(-1), minlength=n).astype(np.float64)
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK_CELLS // n)
    diffs = np.empty(reps)
    for start in range(0, reps, step):
        draws = rng.multinomial(n, np.full(n, 1.0 / n), size=min(step, reps - start)).astype(np.float64)
        diffs[start:start + len(draws)] = (draws @ sums) / (draws @ sizes)
    res = paired._difference("mean", float(a.mean()), float(b.mean()), diffs, (1.0 - level) / 2.0, level, n)
    out = {"diff": res.diff, "lo": res.lo, "hi": res.hi, "groups": float(n), "samples": float(len(d)),
           "ordered": res.ordered}
    log.info("paired bootstrap over %d groups, %d samples, %d resamples: %s", n, len(d), reps, out)
    return out
