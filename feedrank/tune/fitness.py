"""Fitness of a trial and the early termination of unpromising trials.

**Fitness.**
- Session models: ``accuracy + 1 / (1 + loss)`` on the tuning validation
  set, where accuracy is the top-k accuracy the Evaluator blesses on (top-10
  by default, top-1 selectable) and loss is the validation cross-entropy.
  Both terms are in [0, 1]; fitness grows with accuracy and falls with loss.
- CTR families: the validation AUC (what the ranking Trainer early-stops on).

A trial trains for at most R epochs; its fitness is the best fitness over its
epochs (KerasTuner's score of the ``fitness`` metric).

**Early termination** (the paper stops configurations that cannot beat the
best found so far without finishing their R epochs).  The rule, exactly:
after epoch ``e < R`` of a trial, let ``B_e`` be the best fitness after epoch
``e`` among the trials already finished (completed or terminated).  The trial
stops if its fitness ``f_e < termination_fraction * B_e``.  Comparing at the
same epoch keeps a slow start from being judged against finished training;
the last epoch is never cut (nothing would be saved), and with no finished
trial that reached epoch ``e`` nothing is cut.  ``termination_fraction = 0``
turns it off.  A terminated trial keeps the fitness it reached, so it is
rarely selected as a parent.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Dict, List, Mapping, Optional

import tf_keras as keras

log = logging.getLogger(__name__)

FITNESS = "fitness"
ACCURACY_METRICS = {"top1": "cart_top1", "top10": "cart_top10"}   # the session model's add-to-cart output


def session_fitness(accuracy: float, loss: float) -> float:
    """``accuracy + 1 / (1 + loss)``; a non-finite or negative loss adds 0 (NaN stays NaN)."""
    if math.isnan(accuracy) or math.isnan(loss):
        return float("nan")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    inv = 1.0 / (1.0 + loss) if math.isfinite(loss) and loss >= 0.0 else 0.0
    return float(accuracy + inv)


def session_fitness_from_logs(logs: Mapping[str, float], accuracy: str = "top10") -> float:
    """The session fitness from a Keras epoch's logs (``val_<accuracy>`` and ``val_loss``)."""
    key = f"val_{ACCURACY_METRICS.get(accuracy, accuracy)}"
    if key not in logs or "val_loss" not in logs:
        raise ValueError(f"epoch logs lack {key!r} or 'val_loss' (have {sorted(logs)}): fit with validation data")
    return session_fitness(float(logs[key]), float(logs["val_loss"]))


def auc_fitness_from_logs(logs: Mapping[str, float]) -> float:
    """The CTR fitness: the epoch's validation AUC."""
    if "val_auc" not in logs:
        raise ValueError(f"epoch logs lack 'val_auc' (have {sorted(logs)}): fit with validation data")
    return float(logs["val_auc"])


def should_terminate(curve: List[float], finished: List[List[float]], max_epochs: int,
                     fraction: float) -> bool:
    """The module's rule for a trial whose per-epoch fitness so far is ``curve``, given the
    per-epoch fitness curves of the finished trials."""
    e = len(curve)
    if fraction <= 0.0 or e >= max_epochs or not curve:
        return False
    reached = [c[e - 1] for c in finished if len(c) >= e and math.isfinite(c[e - 1])]
    if not reached:
        return False
    return curve[-1] < fraction * max(reached)


class FitnessCallback(keras.callbacks.Callback):
    """Adds ``fitness`` to each epoch's logs and stops training by the early-termination rule.

    ``finished`` returns the finished trials' per-epoch fitness curves (read at each epoch)."""

    def __init__(self, fitness_fn: Callable[[Mapping[str, float]], float], max_epochs: int,
                 fraction: float, finished: Callable[[], List[List[float]]]):
        super().__init__()
        self.fitness_fn, self.max_epochs, self.fraction, self.finished = fitness_fn, max_epochs, fraction, finished
        self.curve: List[float] = []
        self.terminated_after: Optional[int] = None

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        logs = logs if logs is not None else {}
        f = self.fitness_fn(logs)
        logs[FITNESS] = f
        self.curve.append(f)
        if should_terminate(self.curve, self.finished(), self.max_epochs, self.fraction):
            self.terminated_after = len(self.curve)
            log.info("trial terminated after epoch %d: fitness %.4f below %.2f x the best at that epoch",
                     len(self.curve), f, self.fraction)
            self.model.stop_training = True
