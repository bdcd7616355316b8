"""The Trainer's per-epoch curves: logged, written as ``curves.json`` and ``curves.png``, and
TensorBoard logs in the run directory (`TENSORBOARD_DIR`)."""
from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Optional

import tensorflow as tf
import tf_keras as keras

from feedrank.train.settings import TrainerSettings

log = logging.getLogger(__name__)
TENSORBOARD_DIR = "tensorboard"   # in the Trainer's run directory (the ModelRun artifact)


class CurveLogger(keras.callbacks.Callback):
    """Logs every epoch's train and validation metrics and keeps them for curves.json."""

    def __init__(self):
        super().__init__()
        self.curves: list[Dict[str, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.curves.append(row)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch"))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's learning rate to each epoch's logs (TensorBoard writes it)."""

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(keras.backend.get_value(self.model.optimizer.learning_rate))


def tensorboard_callbacks(log_dir: str, cfg: TrainerSettings) -> List[keras.callbacks.Callback]:
    """TensorBoard logs of a fit in ``log_dir``: per epoch the train and validation loss, AUC
    and logloss, and the learning rate; weight histograms every ``tensorboard_histograms`` epochs."""
    return [LearningRateLogger(),
            keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=cfg.tensorboard_histograms,
                                        write_graph=False, update_freq="epoch", profile_batch=0)]


def write_curves(curves: list, out_dir: str) -> None:
    """curves.json plus a PNG of train vs validation loss and AUC per epoch."""
    tf.io.gfile.makedirs(out_dir)
    with tf.io.gfile.GFile(os.path.join(out_dir, "curves.json"), "w") as f:
        json.dump(curves, f, indent=1)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is a convenience; the JSON is the record
        return
    epochs = [c["epoch"] for c in curves]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("loss", "auc")):
        ax.plot(epochs, [c.get(metric) for c in curves], "o-", label="train")
        ax.plot(epochs, [c.get(f"val_{metric}") for c in curves], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "curves.png"), dpi=80)
    plt.close(fig)
