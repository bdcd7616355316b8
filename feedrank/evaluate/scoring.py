"""Exact offline metrics: sklearn AUC, GAUC, logloss and the oracle's AUC.

TFMA gives the gate's metrics; this module scores the whole eval split with
the exported model (``serving_tf_example``) and computes exact, rank-based
AUC, and, when the log came from the simulator, the AUC of the hidden true
click probability on the same impressions (the oracle).  The MlflowLogger
does that once per candidate (`feedrank.tracking.collect`) and writes
``exact_metrics.json``, which the run summary reads.
"""
from __future__ import annotations

import glob
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from feedrank import features as F
from feedrank.events.contract import TRUTH_FILE

log = logging.getLogger(__name__)
SERVING_SUBDIR = "Format-Serving"  # the Trainer's serving SavedModel inside the model artifact
EXACT_METRICS_FILE = "exact_metrics.json"  # `metrics_from_scores` of the eval split, in the MlflowLogger's output


def gauc(labels: np.ndarray, scores: np.ndarray, users: np.ndarray) -> Optional[float]:
    """Impression-weighted mean of per-user AUC over users with both classes."""
    from sklearn.metrics import roc_auc_score

    order = np.argsort(users, kind="stable")
    users, labels, scores = users[order], labels[order], scores[order]
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    total, weight = 0.0, 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        y = labels[a:b]
        if 0 < y.sum() < len(y):
            total += roc_auc_score(y, scores[a:b]) * len(y)
            weight += len(y)
    return total / weight if weight else None


def score_split(model_dir: str, examples_uri: str, split: str = "eval",
                batch_size: int = 8192) -> Dict[str, np.ndarray]:
    """Scores every example of one split; returns ids, users, labels, scores."""
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    from feedrank.train import tfdf_ops

    tfdf_ops.ensure_for(model_dir)   # a gbdt model's trees need TF-DF's inference ops
    loaded = tf.saved_model.load(model_dir)
    fn = loaded.signatures["serving_tf_example"]
    meta_spec = {F.IMPRESSION_ID: tf.io.FixedLenFeature([], tf.string),
                 F.USER_ID: tf.io.FixedLenFeature([], tf.string),
                 F.LABEL: tf.io.FixedLenFeature([], tf.int64)}
    cols: Dict[str, List[np.ndarray]] = {"id": [], "user": [], "label": [], "score": []}
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size):
        meta = tf.io.parse_example(batch, meta_spec)
        cols["score"].append(fn(examples=batch)["probabilities"].numpy())
        cols["id"].append(meta[F.IMPRESSION_ID].numpy())
        cols["user"].append(meta[F.USER_ID].numpy())
        cols["label"].append(meta[F.LABEL].numpy())
    return {k: np.concatenate(v) if v else np.array([]) for k, v in cols.items()}


def metrics_from_scores(s: Dict[str, np.ndarray], input_base: Optional[str]) -> Dict[str, Any]:
    """Exact AUC / GAUC / logloss of scored examples (`score_split`'s output)
    and, when ``input_base`` holds the simulator's truth, the oracle's."""
    from sklearn.metrics import log_loss, roc_auc_score

    y, p = s["label"], s["score"]
    out: Dict[str, Any] = {"n": int(len(y)), "positives": int(y.sum())}
    if len(y) == 0 or y.min() == y.max():
        return out
    out["auc"] = float(roc_auc_score(y, p))
    out["logloss"] = float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))
    out["gauc"] = gauc(y, p, s["user"])
    out["calibration"] = float(np.mean(p) / np.mean(y))   # mean predicted / observed CTR; 1 is calibrated
    truth_path = os.path.join(input_base, TRUTH_FILE) if input_base else None
    if truth_path and os.path.exists(truth_path):
        import pandas as pd

        try:
            truth = pd.read_parquet(truth_path).set_index("event_id")
            oracle = truth["p_click"].reindex([i.decode() for i in s["id"]]).to_numpy()
        except (OSError, ValueError, KeyError) as e:  # the oracle is optional
            log.warning("oracle AUC skipped: %s is unreadable (%s)", truth_path, e)
            return out
        if not np.isnan(oracle).any():
            out["oracle_auc"] = float(roc_auc_score(y, oracle))
            out["oracle_gauc"] = gauc(y, oracle, s["user"])
            out["oracle_lift_recovered"] = (out["auc"] - 0.5) / (out["oracle_auc"] - 0.5)
        if AGGREGATE_TRUTH in truth.columns:  # the aggregates-only oracle (simulator)
            agg = truth[AGGREGATE_TRUTH].reindex([i.decode() for i in s["id"]]).to_numpy()
            if not np.isnan(agg).any():
                out["oracle_aggregate_auc"] = float(roc_auc_score(y, agg))
    return out


# The simulator's click probability without its order-carrying terms.
AGGREGATE_TRUTH = "p_click_aggregate"


def tfma_results(eval_uri: str) -> Tuple[Dict[str, float], Dict[str, Dict[str, float]], Any]:
    """(overall metrics, per-slice metrics, ValidationResult) of the candidate."""
    import tensorflow_model_analysis as tfma

    overall: Dict[str, float] = {}
    slices: Dict[str, Dict[str, float]] = {}
    for m in tfma.load_metrics(eval_uri):
        key = ",".join(f"{c.column}={c.bytes_value.decode() or c.int64_value or c.float_value}"
                       for c in m.slice_key.single_slice_keys) or "overall"
        target = overall if key == "overall" else slices.setdefault(key, {})
        for kv in m.metric_keys_and_values:
            if kv.key.model_name in ("", "candidate") and not kv.key.is_diff:
                if kv.value.HasField("double_value"):
                    target[kv.key.name] = kv.value.double_value.value
    return overall, slices, tfma.load_validation_result(eval_uri)


def blessing_reason(blessed: bool, validation, evaluator_cfg, eval_uri: Optional[str] = None) -> str:
    """Why the model was or was not blessed: every gate with its value and verdict
    (`feedrank.evaluate.gates`), read from the evaluation at ``eval_uri``.

    Without ``eval_uri`` only the validation result is at hand: the failures are
    named, a pass is described by the rule."""
    from feedrank.evaluate import gates

    if eval_uri:
        checks = gates.gate_checks(eval_uri, evaluator_cfg, validation)
        extra = gates.other_failures(validation, checks) if validation is not None else []
        if not blessed and not extra and all(c.passed is not False for c in checks):
            extra = ["not blessed by the Evaluator (no validation failure recorded)"]
        return gates.describe(checks, extra)
    floor, margin = evaluator_cfg.auc_floor, evaluator_cfg.max_auc_regression
    lo, hi = getattr(evaluator_cfg, "calibration_band", None) or gates.DEFAULT_BAND
    if blessed:
        return (f"AUC >= floor {floor}, no worse than the baseline by more than {margin} "
                f"(or no baseline yet), calibration in [{lo}, {hi}]")
    msgs = []
    for per_slice in getattr(validation, "metric_validations_per_slice", []):
        for failure in per_slice.failures:
            key = failure.metric_key
            what = "change vs baseline" if key.is_diff else "value"
            msgs.append(f"{key.name} {what} {failure.metric_value.double_value.value:.4f}: FAIL"
                        + (f" ({failure.message})" if failure.message else ""))
    return "; ".join(msgs) or (f"thresholds not met (AUC floor {floor}, max regression {margin}, "
                               f"calibration [{lo}, {hi}])")
