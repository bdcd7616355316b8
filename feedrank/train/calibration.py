"""Calibration of the served probability, fitted on the validation split.

The Trainer scores the validation split with the trained model, corrected for
negative down-sampling (`export.correct_for_sampling`), and `choose` fits a
`Calibrator` to those probabilities and the labels:

* ``identity``: the corrected probability as it is;
* ``platt``: ``p' = sigmoid(a * logit(p) + b)`` with ``a > 0``, fitted by
  Newton's method on the log loss;
* ``isotonic``: pool-adjacent-violators on the rows sorted by ``p`` (rows with
  equal ``p`` pooled first, blocks with equal click rates merged), then
  piecewise-linear interpolation through the blocks' (mean ``p``, click rate)
  with the end knots (0, 0) and (1, 1) (centred isotonic regression: Oron, A. P.
  and Flournoy, N. "Centered Isotonic Regression", Statistics in
  Biopharmaceutical Research 9(3), 2017).  Unlike the step function of plain
  isotonic regression it is strictly increasing, so, like Platt's, it keeps
  the order of the candidates (AUC and GAUC) instead of tying the rows of a block.

With ``trainer.calibration: auto`` the method is chosen by the log loss out of
fold: the rows are split into `FOLDS` folds by a fixed permutation, every
method is fitted on all folds but one and scored on that one, and a more
flexible method (identity < platt < isotonic) replaces the simpler one only
when its out-of-fold log loss is lower by more than `MIN_GAIN` (relative).
The chosen method is then refitted on every validation row.  ``platt`` and
``isotonic`` fit that method; ``none`` is the identity.  A validation split
with fewer than `MIN_ROWS` rows or fewer than `MIN_CLASS_ROWS` positives or
negatives gets the identity, with the reason logged and recorded.

`Calibrator.apply` is the TF function the export puts into both signatures
(its parameters are constants in the graph); `Calibrator.predict` is the same
function in numpy.  Probabilities are clipped to ``[EPS, 1 - EPS]`` before the
logit and before the interpolation; the identity passes them through unchanged.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from feedrank.train.settings import CALIBRATION_SETTINGS as SETTINGS  # trainer.calibration

log = logging.getLogger(__name__)

EPS = 1e-7
METHODS = ("identity", "platt", "isotonic")      # simplest first
FOLDS = 5
MIN_ROWS = 200
MIN_CLASS_ROWS = 10
MIN_GAIN = 1e-3   # relative out-of-fold log-loss gain a more flexible method must bring
SEED = 0          # the folds' permutation
FILE = "calibration.json"   # the record `choose` returns, in the Trainer's run directory


@dataclasses.dataclass(frozen=True)
class Calibrator:
    """A fitted calibration: ``method`` (`METHODS`), Platt's ``a``/``b`` or the isotonic knots ``x``/``y``."""
    method: str = "identity"
    a: float = 1.0
    b: float = 0.0
    x: Tuple[float, ...] = ()
    y: Tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method must be one of {list(METHODS)}, got {self.method!r}")
        if self.method == "platt" and not (np.isfinite(self.a) and np.isfinite(self.b) and self.a > 0):
            raise ValueError(f"Platt scaling needs a finite a > 0 and a finite b, got a={self.a}, b={self.b}")
        if self.method == "isotonic":
            x, y = np.asarray(self.x, float), np.asarray(self.y, float)
            if x.ndim != 1 or x.shape != y.shape or x.size < 2 or np.any(np.diff(x) <= 0) \
                    or np.any(np.diff(y) < 0) or not np.all(np.isfinite(y)):
                raise ValueError("isotonic knots need equally long x and y, at least 2, x strictly increasing "
                                 "and y non-decreasing")

    def to_dict(self) -> Dict[str, Any]:
        """``{"method": ...}`` plus ``a``/``b`` (platt) or ``x``/``y`` (isotonic)."""
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b}
        if self.method == "isotonic":
            return {"method": "isotonic", "x": list(self.x), "y": list(self.y)}
        return {"method": "identity"}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Calibrator":
        """The inverse of `to_dict`; a missing, unknown or inconsistent field is a ValueError."""
        method = values.get("method")
        try:
            if method == "platt":
                return cls("platt", a=float(values["a"]), b=float(values["b"]))
            if method == "isotonic":
                return cls("isotonic", x=tuple(map(float, values["x"])), y=tuple(map(float, values["y"])))
        except KeyError as e:
            raise ValueError(f"calibration {method!r} lacks its parameter {e.args[0]!r}") from None
        return cls(str(method))

    def predict(self, p: np.ndarray) -> np.ndarray:
        """The calibrated probabilities of ``p`` (numpy, float64)."""
        p = np.asarray(p, np.float64)
        if self.method == "identity":
            return p
        q = np.clip(p, EPS, 1 - EPS)
        if self.method == "platt":
            return _sigmoid(self.a * _logit(q) + self.b)
        return np.interp(q, self.x, self.y)

    def apply(self, p: tf.Tensor) -> tf.Tensor:
        """`predict` as TF ops with the parameters as graph constants; the dtype of ``p`` is kept."""
        if self.method == "identity":
            return p
        q = tf.clip_by_value(tf.cast(p, tf.float64), EPS, 1 - EPS)
        if self.method == "platt":
            out = tf.sigmoid(self.a * (tf.math.log(q) - tf.math.log1p(-q)) + self.b)
        else:
            x, y = tf.constant(self.x, tf.float64), tf.constant(self.y, tf.float64)
            flat = tf.reshape(q, [-1])
            i = tf.clip_by_value(tf.searchsorted(x, flat, side="right") - 1, 0, len(self.x) - 2)
            x0, x1, y0, y1 = tf.gather(x, i), tf.gather(x, i + 1), tf.gather(y, i), tf.gather(y, i + 1)
            out = tf.reshape(y0 + (flat - x0) * (y1 - y0) / (x1 - x0), tf.shape(q))
        return tf.cast(out, p.dtype)


def _logit(q: np.ndarray) -> np.ndarray:
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))   # no overflow warnings for large |z|


def log_loss(p: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary log loss of ``p`` (clipped to [EPS, 1 - EPS]) against 0/1 ``labels``."""
    q = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def calibration_ratio(p: np.ndarray, labels: np.ndarray) -> float:
    """Mean prediction / mean label (the Evaluator's calibration); NaN without positives."""
    positives = float(np.mean(labels)) if len(labels) else 0.0
    return float(np.mean(p) / positives) if positives > 0 else float("nan")


def fit_platt(p: np.ndarray, labels: np.ndarray, iterations: int = 100) -> Calibrator:
    """Platt scaling on ``logit(p)`` by Newton's method with step halving; ValueError where
    the fitted slope is not positive (the scores order the rows the wrong way)."""
    z = _logit(np.clip(np.asarray(p, np.float64), EPS, 1 - EPS))
    y = np.asarray(labels, np.float64)
    features = np.stack([z, np.ones_like(z)], axis=1)
    theta = np.array([1.0, 0.0])
    loss = log_loss(_sigmoid(features @ theta), y)
    for _ in range(iterations):
        s = _sigmoid(features @ theta)
        grad = features.T @ (s - y)
        hess = (features * (s * (1 - s))[:, None]).T @ features + 1e-9 * len(y) * np.eye(2)
        step = np.linalg.solve(hess, grad)
        for _ in range(30):   # halve the step until the loss does not grow
            new_loss = log_loss(_sigmoid(features @ (theta - step)), y)
            if new_loss <= loss:
                break
            step = step / 2
        else:
            break
        theta, loss = theta - step, new_loss
        if np.max(np.abs(step)) < 1e-10:
            break
    return Calibrator("platt", a=float(theta[0]), b=float(theta[1]))


def fit_isotonic(p: np.ndarray, labels: np.ndarray) -> Calibrator:
    """Pool-adjacent-violators, knots at the blocks' (mean p, click rate) and (0, 0), (1, 1)."""
    q = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    y = np.asarray(labels, np.float64)
    values, inverse = np.unique(q, return_inverse=True)   # rows with equal p pooled first
    weights = np.bincount(inverse).astype(np.float64)
    sums_x, sums_y = values * weights, np.bincount(inverse, weights=y)
    blocks: List[List[float]] = []   # [weight, sum of p, sum of labels]
    for w, sx, sy in zip(weights, sums_x, sums_y):
        blocks.append([w, sx, sy])
        while len(blocks) > 1 and blocks[-2][2] / blocks[-2][0] >= blocks[-1][2] / blocks[-1][0]:
            w2, sx2, sy2 = blocks.pop()
            blocks[-1] = [blocks[-1][0] + w2, blocks[-1][1] + sx2, blocks[-1][2] + sy2]
    x = [float(b[1] / b[0]) for b in blocks]
    rate = [float(min(max(b[2] / b[0], EPS), 1 - EPS)) for b in blocks]
    return Calibrator("isotonic", x=tuple([0.0, *x, 1.0]), y=tuple([0.0, *rate, 1.0]))


FITTERS = {"identity": lambda p, labels: Calibrator(), "platt": fit_platt, "isotonic": fit_isotonic}


def _fit_or_none(method: str, p: np.ndarray, labels: np.ndarray) -> Calibrator | None:
    """``method`` fitted, or None where it cannot be (a constant label, a slope <= 0)."""
    if len(np.unique(labels)) < 2 and method != "identity":
        return None
    try:
        return FITTERS[method](p, labels)
    except (ValueError, np.linalg.LinAlgError) as e:
        log.info("calibration: %s not fitted: %s", method, e)
        return None


def fold_scores(p: np.ndarray, labels: np.ndarray, folds: int = FOLDS, seed: int = SEED) -> Dict[str, Dict]:
    """Per method: the log loss of each held-out fold and the pooled out-of-fold log loss
    (None where the method could not be fitted on some fold's complement)."""
    fold = np.random.default_rng(seed).permutation(len(p)) % folds
    scores: Dict[str, Dict] = {}
    for method in METHODS:
        held_out, pooled = [], np.empty(len(p))
        for k in range(folds):
            test = fold == k
            fitted = _fit_or_none(method, p[~test], labels[~test])
            if fitted is None:
                held_out, pooled = [], None
                break
            pooled[test] = fitted.predict(p[test])
            held_out.append(log_loss(pooled[test], labels[test]))
        scores[method] = {"fold_logloss": held_out,
                          "oof_logloss": None if pooled is None else log_loss(pooled, labels)}
    return scores


def _pick(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """The simplest method no more flexible one beats by more than `MIN_GAIN`."""
    best = "identity"
    for method in METHODS[1:]:
        loss = scores[method]["oof_logloss"]
        if loss is not None and loss < scores[best]["oof_logloss"] * (1 - MIN_GAIN):
            best = method
    return best


def choose(p: Sequence[float], labels: Sequence[float], setting: str = "auto") -> Tuple[Calibrator, Dict]:
    """The calibrator of ``setting`` (`SETTINGS`) for validation probabilities ``p`` and 0/1
    ``labels``, and its record: the method, its parameters, why, and per method the log loss
    and calibration on all rows after refitting, and the fold scores."""
    if setting not in SETTINGS:
        raise ValueError(f"trainer.calibration must be one of {list(SETTINGS)}, got {setting!r}")
    p, labels = np.asarray(p, np.float64).reshape(-1), np.asarray(labels, np.float64).reshape(-1)
    if p.shape != labels.shape:
        raise ValueError(f"calibration needs one label per probability, got {p.size} and {labels.size}")
    positives = int(labels.sum())
    record: Dict[str, Any] = {"setting": setting, "rows": int(p.size), "positives": positives, "folds": FOLDS,
                              "min_gain": MIN_GAIN, "methods": {}}
    calibrator, reason = Calibrator(), _identity_reason(setting, p.size, positives)
    if not reason:
        scores = fold_scores(p, labels)
        refitted = {method: _fit_or_none(method, p, labels) for method in METHODS}   # on every row
        for method, fitted in refitted.items():
            after = {} if fitted is None else {"logloss": log_loss(fitted.predict(p), labels),
                                               "calibration": calibration_ratio(fitted.predict(p), labels)}
            record["methods"][method] = {**after, **scores[method]}
        method = _pick(scores) if setting == "auto" else setting
        fitted = refitted[method]
        if fitted is None:
            reason = f"{method} could not be fitted on the validation split"
        else:
            calibrator = fitted
            reason = "lowest out-of-fold log loss" if setting == "auto" else f"trainer.calibration is {setting}"
    record.update(method=calibrator.method, params=calibrator.to_dict(), reason=reason)
    log.info("%s", summary(record))
    return calibrator, record


def _identity_reason(setting: str, rows: int, positives: int) -> str:
    """Why the identity is used without fitting anything ("" where the split allows a fit)."""
    if setting == "none":
        return "trainer.calibration is none"
    if rows < MIN_ROWS:
        return f"{rows} validation rows, fewer than {MIN_ROWS}"
    if min(positives, rows - positives) < MIN_CLASS_ROWS:
        return (f"{positives} positive(s) and {rows - positives} negative(s) in validation; "
                f"at least {MIN_CLASS_ROWS} of each needed")
    return ""


def summary(record: Mapping[str, Any]) -> str:
    """One line: the method, why, and the validation log loss and calibration before and after."""
    line = f"calibration: {record['method']} ({record['reason']}; {record['rows']} validation rows)"
    methods = record.get("methods") or {}
    before, after = methods.get("identity", {}), methods.get(record["method"], {})
    if "logloss" in before and "logloss" in after:
        line += (f", logloss {before['logloss']:.5f} -> {after['logloss']:.5f}, "
                 f"calibration {before['calibration']:.3f} -> {after['calibration']:.3f}")
    return line


def write(record: Mapping[str, Any], run_dir: str) -> str:
    """Writes ``record`` (`choose`'s) as `FILE` in ``run_dir``; returns the path."""
    path = os.path.join(run_dir, FILE)
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(record, f, indent=1)
    return path


def read(run_dir: str) -> Calibrator:
    """The calibrator recorded in ``run_dir``'s `FILE`; the identity where there is none."""
    path = os.path.join(run_dir, FILE)
    if not tf.io.gfile.exists(path):
        return Calibrator()
    with tf.io.gfile.GFile(path) as f:
        return Calibrator.from_dict(json.load(f)["params"])
