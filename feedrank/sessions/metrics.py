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
  L1 pages up to its add-to-cart, let m be the number of pages viewed when the
  purchased item FIRST appears in the refreshed top k (the smallest m in
  1..L1 with rank <= k after the first m pages).  The shopper opens it from
  the widget on page m + 1, so ``L2 = min(m + 1, L1)`` (rule ``"opened"``, the
  default), and L2 = L1 when it never appears.  The ratio is
  ``sum L2 / sum L1`` (the mean path with the widget over the mean path
  without it; lower is better); the mean of the per-session ratios
  ``L2 / L1`` is reported beside it.  Two variants, for comparison:
  ``path_compression_first_shown`` counts ``L2 = m`` (rule ``"shown"``: the
  page that opens the item is not counted), and
  ``path_compression_with_view_credit`` (given ``page_item``, the page -> item
  map) also counts the item as shown after m pages when the m-th page IS the
  item's own page (the shopper is looking at it), then ``L2 = min(m + 1, L1)``;
* the path start: a session's second add-to-cart starts its path after the
  first one.  ``path_start`` (per sample, default 0) is the number of pages
  before the session's previous add-to-cart; only the later pages count:
  ``L1 = n - path_start`` for a sample of n pages, and m runs over the
  prefixes after the start (``L2 = min(m + 1, n) - path_start``).  recall@20
  and MRR@20 still count every prefix.

`per_sample` keeps the per-sample values behind these (the full sample's rank,
its top-k hits, its prefixes' hits and reciprocal ranks, L1 and each L2) with a
``group`` key (the user of each sample), so two models evaluated on the same
samples can be compared by a paired bootstrap over users
(`feedrank.sessions.compare.paired_interval`); `summarise` turns them into
`evaluate`'s metrics.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

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


RULES = ("opened", "shown")


def path_lengths(prefix_ranks: Sequence[np.ndarray], k: int, start: Optional[np.ndarray] = None,
                 rule: str = "opened", viewed: Optional[Sequence[np.ndarray]] = None
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Per session, its ranks after 1, 2, ..., n pages -> ``(L1, L2)`` (the module docstring):
    ``start`` the pages before the path (default 0), ``rule`` ``"opened"`` (L2 = m + 1, capped)
    or ``"shown"`` (L2 = m), ``viewed`` per prefix whether its last page is the item's page."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s0 = np.zeros(len(prefix_ranks), np.int64) if start is None else np.asarray(start, dtype=np.int64)
    if s0.shape != (len(prefix_ranks),):
        raise ValueError(f"path start must be [{len(prefix_ranks)}] (one per session), got {s0.shape}")
    if viewed is not None and len(viewed) != len(prefix_ranks):
        raise ValueError(f"viewed must hold one array per session, got {len(viewed)} for {len(prefix_ranks)}")
    l1 = np.empty(len(prefix_ranks), dtype=np.int64)
    l2 = np.empty(len(prefix_ranks), dtype=np.int64)
    for i, r in enumerate(prefix_ranks):
        shown = np.asarray(r) <= k
        if shown.size == 0:
            raise ValueError(f"session {i} has no pages")
        if not 0 <= s0[i] < shown.size:
            raise ValueError(f"path start of session {i} must be in [0, {shown.size}) (its pages), got {s0[i]}")
        if viewed is not None:
            shown = shown | np.asarray(viewed[i], dtype=bool)
        hit = np.flatnonzero(shown[s0[i]:])
        n = shown.size - s0[i]
        l1[i] = n
        l2[i] = n if not hit.size else hit[0] + 1 if rule == "shown" else min(hit[0] + 2, n)
    return l1, l2


def first_shown(prefix_ranks: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Per session, its ranks after 1, 2, ..., L1 pages -> L2 = m, the pages viewed when the item
    first appears in the top k (L1 if never): the ``"shown"`` rule of `path_lengths`."""
    return path_lengths(prefix_ranks, k, rule="shown")[1]


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
    pages kept for m = 1..n_i (later pages set to padding, the last kept page's dwell 0:
    its dwell when it opens, as the samples carry it); M = sum n_i.
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
    seen = np.cumsum(real, axis=1)[session]
    keep = real[session] & (seen <= length[:, None])
    current = real[session] & (seen == length[:, None])   # the prefix's last page: dwell 0 at its opening
    return (np.where(keep, pages[session], 0), np.where(keep & ~current, dwell[session], 0.0).astype(np.float32),
            session, length)


def _scores(score_fn: ScoreFn, batch: Mapping[str, np.ndarray], batch_size: int) -> np.ndarray:
    n = len(next(iter(batch.values())))
    parts = [np.asarray(score_fn({k: v[i:i + batch_size] for k, v in batch.items()}))
             for i in range(0, n, batch_size)]
    return np.concatenate(parts)


def _check_page_item(page_item: np.ndarray, pages: np.ndarray) -> np.ndarray:
    pi = np.asarray(page_item)
    if pi.ndim != 1 or not np.issubdtype(pi.dtype, np.integer):
        raise ValueError(f"page_item must be a 1-D integer array (page id -> item id), got {pi.dtype} {pi.shape}")
    if pages.size and pages.max() >= len(pi):
        raise ValueError(f"page_item covers page ids < {len(pi)}, the sessions have page {pages.max()}")
    return pi


def per_sample(score_fn: ScoreFn, sessions: Mapping[str, np.ndarray], targets: np.ndarray,
               ks: Sequence[int] = (1, 10), path_k: int = 10, batch_size: int = 1024,
               page_item: Optional[np.ndarray] = None, path_start: Optional[np.ndarray] = None,
               group: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """Per-sample values of `evaluate`'s metrics, each [N]: ``rank`` (the full sample's),
    ``top{k}`` (0/1), ``prefixes``, ``hits@20`` and ``rr@20`` (over the sample's prefixes: the
    count with rank <= 20 and the sum of 1/rank there), ``l1``, ``l2`` (rule "opened"),
    ``l2_first_shown``, ``l2_with_view_credit`` (given ``page_item``) and ``group`` (``group``,
    else ``sessions["user_id"]``, else the sample's index)."""
    targets = np.asarray(targets)
    n_samples = len(targets)
    full = ranks(_scores(score_fn, sessions, batch_size), targets)
    pages, dwell, session, length = prefixes(sessions["pages"], sessions["dwell"])
    batch = {k: np.asarray(v)[session] for k, v in sessions.items()}
    batch.update(pages=pages, dwell=dwell)
    pr = ranks(_scores(score_fn, batch, batch_size), targets[session])
    n = np.bincount(session, minlength=n_samples)
    cuts = np.cumsum(n)[:-1]
    per_session: List[np.ndarray] = np.split(pr, cuts)
    out: Dict[str, np.ndarray] = {"rank": full}
    out.update({f"top{k}": (full <= k).astype(np.float64) for k in ks})
    out.update(prefixes=n, **{"hits@20": np.bincount(session, weights=pr <= 20, minlength=n_samples),
                              "rr@20": np.bincount(session, weights=np.where(pr <= 20, 1.0 / pr, 0.0),
                                                   minlength=n_samples)})
    out["l1"], out["l2"] = path_lengths(per_session, path_k, path_start)
    out["l2_first_shown"] = path_lengths(per_session, path_k, path_start, rule="shown")[1]
    if page_item is not None:
        raw = np.asarray(sessions["pages"])
        last = _check_page_item(page_item, raw)[raw[raw != 0]]   # the m-th page of each prefix, in order
        viewed = (last == targets[session]) & (targets[session] != 0)
        out["l2_with_view_credit"] = path_lengths(per_session, path_k, path_start,
                                                  viewed=np.split(viewed, cuts))[1]
    if group is None:
        group = sessions["user_id"] if "user_id" in sessions else np.arange(n_samples)
    out["group"] = np.asarray(group)
    if out["group"].shape != (n_samples,):
        raise ValueError(f"group must be [{n_samples}] (one key per sample), got {out['group'].shape}")
    return out


def summarise(per: Mapping[str, np.ndarray], ks: Sequence[int] = (1, 10)) -> Dict[str, float]:
    """`evaluate`'s metrics from `per_sample`'s arrays (of all the samples, or of a subset)."""
    full = _check_ranks(per["rank"], 1)
    n_prefixes = float(np.sum(per["prefixes"]))
    pc = path_compression(per["l1"], per["l2"])
    out = {f"top{k}": top_k_accuracy(full, k) for k in ks}
    out.update({"recall@20": float(np.sum(per["hits@20"]) / n_prefixes),
                "mrr@20": float(np.sum(per["rr@20"]) / n_prefixes), "path_compression": pc["ratio"],
                "path_compression_mean_session": pc["mean_session_ratio"], "mean_l1": pc["mean_l1"],
                "mean_l2": pc["mean_l2"]})
    for key in ("first_shown", "with_view_credit"):
        if f"l2_{key}" in per:
            variant = path_compression(per["l1"], per[f"l2_{key}"])
            out.update({f"path_compression_{key}": variant["ratio"], f"mean_l2_{key}": variant["mean_l2"]})
    out.update(sessions=float(len(full)), prefixes=n_prefixes)
    return out


def evaluate(score_fn: ScoreFn, sessions: Mapping[str, np.ndarray], targets: np.ndarray,
             ks: Sequence[int] = (1, 10), path_k: int = 10, batch_size: int = 1024,
             page_item: Optional[np.ndarray] = None, path_start: Optional[np.ndarray] = None,
             group: Optional[np.ndarray] = None, return_per_session: bool = False
             ) -> Union[Dict[str, float], Tuple[Dict[str, float], Dict[str, np.ndarray]]]:
    """All the metrics for sessions ``{"pages", "dwell", ...}`` (each the pages up to
    the add-to-cart of ``targets``): ``score_fn`` maps a batch of the same keys to
    [B, num_items] scores (logits or probabilities).  Returns
    ``top{k}`` for each k, ``recall@20``, ``mrr@20``, ``path_compression`` (the
    ratio at ``path_k``, L2 = m + 1), ``path_compression_mean_session``, ``mean_l1``,
    ``mean_l2``, ``path_compression_first_shown`` and ``mean_l2_first_shown`` (L2 = m),
    ``path_compression_with_view_credit`` and ``mean_l2_with_view_credit`` (given
    ``page_item``), ``sessions`` and ``prefixes``.  ``path_start``: the pages before each
    sample's path (module docstring).  With ``return_per_session``, also `per_sample`'s
    arrays (keyed by ``group``): ``(metrics, per_sample)``."""
    per = per_sample(score_fn, sessions, targets, ks, path_k, batch_size, page_item, path_start, group)
    out = summarise(per, ks)
    log.info("session metrics: %s", {k: round(v, 4) for k, v in out.items()})
    return (out, per) if return_per_session else out
