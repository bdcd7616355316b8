"""The session Evaluator's logic: the served models on the eval split, and the blessing.

Both the candidate and the baseline (the last blessed session model: the registry's
champion, else the newest push, `components.baseline`) are called through their RAW
``serving_default`` (`feedrank.sessions.export.export_raw`), so models with different
vocabularies compare on the same raw ids.  The eval split's full-path samples are the
sessions, each up to its add-to-cart, one row per label item; a prediction is made after
every page view of each (`feedrank.sessions.metrics`).  A target's rank is its position in
the served top k (k >= 20), else beyond it, so top-1/top-10 accuracy, recall@20 and MRR@20
are exact.

The rule (`decide`): the candidate is blessed iff its top-10 accuracy is at least the floor
and, when there is a baseline, at most ``max_regression`` below the baseline's.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from feedrank.sessions import drnn, metrics
from feedrank.sessions import features as SF

log = logging.getLogger(__name__)

METRICS_FILE = "session_metrics.json"
BLESSING_METRIC = "top10"
Row = Tuple[List[str], List[float], List[str], str]   # pages, dwell, purchases, user_id
Predict = Callable[[Sequence[Row]], np.ndarray]        # rows -> [N, k] item ids (str), best first


def read_split(examples_uri: str, split: str = "eval") -> List[Dict[str, Any]]:
    """The samples of one split of a SessionSampleGen Examples artifact, decoded."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))   # gs:// on Kubeflow
    if not files:
        raise ValueError(f"the Examples artifact {examples_uri} has no {split!r} split files")
    return [SF.from_example(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def eval_rows(samples: Sequence[Dict[str, Any]], starts: Optional[List[int]] = None) -> Tuple[List[Row], List[str]]:
    """The full-path samples as (rows, target items): the session's pages up to the add-to-cart
    (history then recent), one row per label item.  ``starts`` (a list) receives each row's
    path start (the pages before the session's previous add-to-cart point)."""
    rows, targets = [], []
    for s in samples:
        if int(s[SF.FULL_PATH]) != 1:
            continue
        row = (list(s[SF.HISTORY_PAGES]) + list(s[SF.RECENT_PAGES]),
               [float(d) for d in list(s[SF.HISTORY_DWELL]) + list(s[SF.RECENT_DWELL])],
               list(s[SF.PURCHASE_HISTORY]), s[SF.USER_ID])
        for item in s[SF.LABEL_ITEMS]:
            rows.append(row)
            targets.append(item)
            if starts is not None:
                starts.append(int(s.get(SF.PATH_START, 0)))
    if not rows:
        raise ValueError("the eval split has no full-path samples: nothing to evaluate (a longer eval period?)")
    return rows, targets


def _matrix(values: Sequence[Sequence[Any]], fill: Any, dtype: Any) -> np.ndarray:
    width = max(1, max((len(v) for v in values), default=0))
    out = np.full((len(values), width), fill, dtype=dtype)
    for i, v in enumerate(values):
        if len(v):
            out[i, :len(v)] = v
    return out


def load_served(model_dir: str, batch_size: int = 512) -> Tuple[Predict, int]:
    """(predict, k) of a raw-id session SavedModel; ValueError if it is not one."""
    import tensorflow as tf

    loaded = tf.saved_model.load(model_dir)
    fn = loaded.signatures.get("serving_default")
    if fn is None or fn.structured_input_signature[1].get(drnn.PAGES) is None \
            or fn.structured_input_signature[1][drnn.PAGES].dtype != tf.string:
        raise ValueError(f"{model_dir} is not a raw-id session model (serving_default must take string pages)")
    k = int(fn.structured_outputs["items"].shape[-1] or 0) or None

    def predict(rows: Sequence[Row]) -> np.ndarray:
        parts = []
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            out = fn(pages=tf.constant(_matrix([r[0] for r in chunk], "", object)),
                     dwell=tf.constant(_matrix([r[1] for r in chunk], 0.0, np.float32)),
                     purchases=tf.constant(_matrix([r[2] for r in chunk], "", object)),
                     user_id=tf.constant(np.asarray([r[3] for r in chunk], dtype=object)))
            parts.append(out["items"].numpy().astype(str))
        return np.concatenate(parts)

    return predict, k or 0


def served_ranks(items: np.ndarray, targets: Sequence[str]) -> np.ndarray:
    """1-based rank of each target in its row's served top k; k + 1 when absent."""
    hit = items == np.asarray(targets, dtype=str)[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, items.shape[1] + 1)


def session_metrics(predict: Predict, rows: Sequence[Row], targets: Sequence[str],
                    path_k: int = 10, starts: Optional[Sequence[int]] = None) -> Dict[str, float]:
    """Top-1/top-10 accuracy on the full sessions; recall@20, MRR@20 and the path compression
    over every prefix (a prediction after each page view; `metrics.path_lengths`: the page on
    which the item is opened counts, L2 = m + 1, and the path starts after ``starts`` pages)."""
    full = served_ranks(predict(rows), targets)
    prefix_rows, prefix_targets, session = [], [], []
    for i, (pages, dwell, bought, user) in enumerate(rows):
        for m in range(1, len(pages) + 1):   # the current page's dwell at its opening is 0
            prefix_rows.append((pages[:m], list(dwell[:m - 1]) + [0.0], bought, user))
            prefix_targets.append(targets[i])
            session.append(i)
    pr = served_ranks(predict(prefix_rows), prefix_targets)
    cuts = np.cumsum(np.bincount(np.asarray(session), minlength=len(rows)))[:-1]
    per_session = np.split(pr, cuts)
    start = np.asarray(starts if starts is not None else [0] * len(rows), np.int64)
    l1, l2 = metrics.path_lengths(per_session, path_k, start)
    pc = metrics.path_compression(l1, l2)
    shown = metrics.path_compression(*metrics.path_lengths(per_session, path_k, start, rule="shown"))
    out = {"top1": metrics.top_k_accuracy(full, 1), "top10": metrics.top_k_accuracy(full, 10),
           "recall@20": metrics.recall_at(pr, 20), "mrr@20": metrics.mrr_at(pr, 20),
           "path_compression": pc["ratio"], "path_compression_mean_session": pc["mean_session_ratio"],
           "path_compression_first_shown": shown["ratio"],
           "mean_l1": pc["mean_l1"], "mean_l2": pc["mean_l2"], "sessions": float(len(rows)),
           "prefixes": float(len(pr))}
    return out


def decide(candidate: Dict[str, float], baseline: Optional[Dict[str, float]], floor: float,
           max_regression: float, baseline_name: str = "the baseline") -> Tuple[bool, str]:
    """(blessed, reason): top-10 accuracy >= floor, and >= the baseline's - max_regression."""
    c = candidate[BLESSING_METRIC]
    gates = [(c >= floor, f"top-10 accuracy {c:.4f} {'>=' if c >= floor else '<'} floor {floor:.4f}")]
    if baseline is not None:
        b = baseline[BLESSING_METRIC]
        ok = c >= b - max_regression
        gates.append((ok, f"top-10 accuracy {c:.4f} vs {baseline_name} {b:.4f}: change {c - b:+.4f} "
                          f"{'>=' if ok else '<'} -{max_regression:.4f}"))
    else:
        gates.append((True, "no earlier blessed session model to compare with"))
    blessed = all(ok for ok, _ in gates)
    reason = "; ".join(f"{text}: {'pass' if ok else 'FAIL'}" for ok, text in gates)
    return blessed, ("blessed: " if blessed else "not blessed: ") + reason


def evaluate(examples_uri: str, model_dir: str, baseline_dir: Optional[str], floor: float, max_regression: float,
             split: str = "eval", baseline_name: str = "the baseline") -> Dict[str, Any]:
    """The candidate's (and the baseline's) metrics on ``split`` and the blessing decision."""
    starts: List[int] = []
    rows, targets = eval_rows(read_split(examples_uri, split), starts)
    predict, k = load_served(model_dir)
    if k and k < metrics_k():
        raise ValueError(f"the candidate serves its top {k}; the Evaluator needs at least {metrics_k()} "
                         f"(recall@20 and MRR@20): set sessions.top_k >= {metrics_k()}")
    result: Dict[str, Any] = {"split": split, "candidate": session_metrics(predict, rows, targets, starts=starts),
                              "baseline": None}
    if baseline_dir:
        try:
            base_predict, _ = load_served(baseline_dir)
        except ValueError as e:
            log.warning("SessionEvaluator: %s; no comparison with it", e)
        else:
            result["baseline"] = session_metrics(base_predict, rows, targets, starts=starts)
    blessed, reason = decide(result["candidate"], result["baseline"], floor, max_regression, baseline_name)
    result.update(blessed=blessed, reason=reason, top10_floor=floor, max_top10_regression=max_regression)
    log.info("SessionEvaluator: %s; candidate %s", reason, {k: round(v, 4) for k, v in result["candidate"].items()})
    return result


def metrics_k() -> int:
    from feedrank.sessions.settings import METRIC_K

    return METRIC_K


def write_result(out_dir: str, result: Dict[str, Any]) -> str:
    """``<out_dir>/session_metrics.json``; returns its path."""
    import tensorflow as tf

    path = os.path.join(out_dir, METRICS_FILE)
    tf.io.gfile.makedirs(out_dir)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(result, indent=1, sort_keys=True))
    return path


def read_result(eval_uri: str) -> Optional[Dict[str, Any]]:
    """The Evaluator's result written by `write_result`, or None when there is none."""
    import tensorflow as tf

    path = os.path.join(eval_uri, METRICS_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())
