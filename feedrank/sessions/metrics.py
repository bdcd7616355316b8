"""Offline metrics of the session recommenders (docs/drnn.md).

Every metric starts from the RANK of the purchased item among the model's
scores over all items: ``rank = 1 + #{items scored strictly higher}`` (a tie
counts in the item's favour, as in GRU4Rec's evaluation; the padding item 0
must score lowest, as the models' logits ensure).

* top-k accuracy (`top_k_accuracy`): the share of samples whose purchased
  item is among the top k (top-1: k = 1), on the full-session samples, each
  session's pages up to its add-to-cart;
* recall@20 and MRR@20, GRU4Rec-style (`recall_at`, `mrr_at`): over every
  PREFIX of every session (a prediction after each page view), the share with
  rank <= 20 and the mean of 1/rank (0 beyond 20);
* the path compression ratio (`path_compression`), Wu et al. (ICDE 2016):
  the widget refreshes its top k after every page view.  For a session of
  L1 pages up to its add-to-cart, L2 is the number of pages viewed when the
  purchased item FIRST appears in the refreshed top k (the smallest m in
  1..L1 with rank <= k after the first m pages), and L1 when it never does.
  The ratio is ``sum L2 / sum L1`` (the mean path with the widget over the
  mean path without it; lower is better); the mean of the per-session ratios
  ``L2 / L1`` is reported beside it.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

ScoreFn = Callable[[Dict[str, np.ndarray]], np.ndarray]


def ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[N, I] scores and [N] target item ids -> [N] 1-based ranks of the targets."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"ranks needs scores [N, I] and targets [N], got {scores.shape} and {targets.shape}")
    if len(targets) and (targets.min() < 0 or targets.max() >= scores.shape[1]):
        raise ValueError(f"target ids must be in [0, {scores.shape[1]}), got {targets.min()}..{targets.max()}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    own = scores[np.arange(len(targets)), targets]
    return 1 + (scores > own[:, None]).sum(axis=1)


def _check_ranks(r: np.ndarray, k: int) -> np.ndarray:
    r = np.asarray(r)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if r.size == 0:
        raise ValueError("no samples to evaluate")
    return r


def top_k_accuracy(r: np.ndarray, k: int) -> float:
    """Share of ranks <= k (top-1 accuracy: k = 1)."""
    r = _check_ranks(r, k)
    return float(np.mean(r <= k))


def recall_at(r: np.ndarray, k: int = 20) -> float:
    """GRU4Rec's recall@k: the share of predictions with the target in the top k."""
    return top_k_accuracy(r, k)


def mrr_at(r: np.ndarray, k: int = 20) -> float:
    """GRU4Rec's MRR@k: mean reciprocal rank, 0 for a rank beyond k."""
    r = _check_ranks(r, k)
    return float(np.mean(np.where(r <= k, 1.0 / r, 0.0)))


def first_shown(prefix_ranks: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Per session, its ranks after 1, 2, ..., L1 pages -> L2 (see the module docstring)."""
    out = np.empty(len(prefix_ranks), dtype=np.int64)
    for i, r in enumerate(prefix_ranks):
        r = np.asarray(r)
        if r.size == 0:
            raise ValueError(f"session {i} has no pages")
        hit = np.flatnonzero(r <= k)
        out[i] = hit[0] + 1 if hit.size else r.size
    return out


def path_compression(l1: np.ndarray, l2: np.ndarray) -> Dict[str, float]:
    """``{"ratio": sum L2 / sum L1, "mean_session_ratio": mean(L2 / L1), "mean_l1", "mean_l2"}``."""
    l1, l2 = np.asarray(l1, dtype=np.float64), np.asarray(l2, dtype=np.float64)
    if l1.shape != l2.shape or l1.size == 0:
        raise ValueError(f"L1 and L2 must be non-empty and of one shape, got {l1.shape} and {l2.shape}")
    if (l1 < 1).any() or (l2 < 1).any() or (l2 > l1).any():
        raise ValueError("path lengths must satisfy 1 <= L2 <= L1")
    return {"ratio": float(l2.sum() / l1.sum()), "mean_session_ratio": float(np.mean(l2 / l1)),
            "mean_l1": float(l1.mean()), "mean_l2": float(l2.mean())}


def prefixes(pages: np.ndarray, dwell: np.ndarray) -> tuple:
    """Every prefix of every session: ``(pages [M, T], dwell [M, T], session [M], length [M])``.

    Session i with n_i real (non-zero) pages gives n_i rows, the first m real
    pages kept for m = 1..n_i (later pages set to padding); M = sum n_i.
    """
    pages, dwell = np.asarray(pages), np.asarray(dwell)
    if pages.shape != dwell.shape or pages.ndim != 2:
        raise ValueError(f"pages and dwell must be [N, T] of one shape, got {pages.shape} and {dwell.shape}")
    real = pages != 0
    n = real.sum(axis=1)
    if (n == 0).any():
        raise ValueError(f"sessions without pages: rows {np.flatnonzero(n == 0)[:5].tolist()}")
    session = np.repeat(np.arange(len(pages)), n)
    length = np.concatenate([np.arange(1, k + 1) for k in n])
    keep = real[session] & (np.cumsum(real, axis=1)[session] <= length[:, None])
    return (np.where(keep, pages[session], 0), np.where(keep, dwell[session], 0.0).astype(np.float32),
            session, length)


def _scores(score_fn: ScoreFn, batch: Mapping[str, np.ndarray], batch_size: int) -> np.ndarray:
    n = len(next(iter(batch.values())))
    parts = [np.asarray(score_fn({k: v[i:i + batch_size] for k, v in batch.items()}))
             for i in range(0, n, batch_size)]
    return np.concatenate(parts)


def evaluate(score_fn: ScoreFn, sessions: Mapping[str, np.ndarray], targets: np.ndarray,
             ks: Sequence[int] = (1, 10), path_k: int = 10, batch_size: int = 1024) -> Dict[str, float]:
    """All the metrics for sessions ``{"pages", "dwell", ...}`` (each the pages up to
    the add-to-cart of ``targets``): ``score_fn`` maps a batch of the same keys to
    [B, num_items] scores (logits or probabilities).  Returns
    ``top{k}`` for each k, ``recall@20``, ``mrr@20``, ``path_compression`` (the
    ratio at ``path_k``), ``path_compression_mean_session``, ``mean_l1``, ``mean_l2``,
    ``sessions`` and ``prefixes``."""
    targets = np.asarray(targets)
    full = ranks(_scores(score_fn, sessions, batch_size), targets)
    pages, dwell, session, length = prefixes(sessions["pages"], sessions["dwell"])
    batch = {k: np.asarray(v)[session] for k, v in sessions.items()}
    batch.update(pages=pages, dwell=dwell)
    pr = ranks(_scores(score_fn, batch, batch_size), targets[session])
    per_session: List[np.ndarray] = np.split(pr, np.cumsum(np.bincount(session, minlength=len(targets)))[:-1])
    l1 = np.asarray([len(p) for p in per_session])
    pc = path_compression(l1, first_shown(per_session, path_k))
    out = {f"top{k}": top_k_accuracy(full, k) for k in ks}
    out.update({"recall@20": recall_at(pr, 20), "mrr@20": mrr_at(pr, 20), "path_compression": pc["ratio"],
                "path_compression_mean_session": pc["mean_session_ratio"], "mean_l1": pc["mean_l1"],
                "mean_l2": pc["mean_l2"], "sessions": float(len(targets)), "prefixes": float(len(pr))})
    log.info("session metrics: %s", {k: round(v, 4) for k, v in out.items()})
    return out
