"""Vectorised sampling helpers of the simulator: weighted pools of posts,
one categorical draw per row, cumulative sums within groups."""
from __future__ import annotations

import numpy as np


class Pool:
    """Weighted sampling of live posts within groups (e.g. category x region)."""

    def __init__(self, live: np.ndarray, keys: np.ndarray, weights: np.ndarray, n_groups: int):
        order = np.argsort(keys, kind="stable")
        self.items = live[order]
        k = keys[order]
        cum = np.cumsum(weights[order])
        self.cum = cum
        g = np.arange(n_groups)
        self.start = np.searchsorted(k, g, "left")
        self.end = np.searchsorted(k, g, "right")
        cum0 = np.concatenate([[0.0], cum])
        self.lo, self.hi = cum0[self.start], cum0[self.end]

    def sample(self, rng: np.random.Generator, groups: np.ndarray) -> np.ndarray:
        """One post per requested group; -1 where the group is empty."""
        out = np.full(len(groups), -1, dtype=np.int64)
        if len(self.items) == 0:
            rng.random(len(groups))
            return out
        lo, hi = self.lo[groups], self.hi[groups]
        t = lo + rng.random(len(groups)) * (hi - lo)
        pos = np.searchsorted(self.cum, t, "right")
        pos = np.clip(pos, self.start[groups], np.maximum(self.end[groups] - 1, 0))
        ok = hi > lo
        out[ok] = self.items[np.minimum(pos[ok], len(self.items) - 1)]
        return out


def sample_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a (n, C) probability matrix."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(1), probs.shape[1] - 1)


def group_cumsum(values: np.ndarray, group_start_flags: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting where ``group_start_flags`` is true."""
    c = np.cumsum(values)
    starts = np.nonzero(group_start_flags)[0]
    base = np.repeat(c[starts] - values[starts], np.diff(np.append(starts, len(values))))
    return c - base
