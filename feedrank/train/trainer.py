"""The TFX Trainer entry point: `run_fn` -> `train()` -> `export()`.

The model family and its hyperparameters come from ``custom_config``, the
flat form of `feedrank.train.settings.TrainerSettings` (the config's
``trainer:`` section), parsed back with the same checks; vocabulary sizes
come from the Transform output.
Per-epoch train/eval curves are logged and written to the model run dir as
``curves.json`` (and ``curves.png``); the Keras model's scores on a sample of
eval examples go to ``eval_scores.json``, so a test can check the pushed
SavedModel (with the tf.Transform graph attached) reproduces them.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Mapping, Tuple, Union

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from feedrank import features as F
from feedrank.train import data, word_vectors
from feedrank.train import export as export_lib
from feedrank.train.families import build_model
from feedrank.train.settings import TrainerSettings, as_settings
from feedrank.transform.preprocessing import vocab_file_name

log = logging.getLogger(__name__)


def vocab_sizes(tf_transform_output: tft.TFTransformOutput) -> Dict[str, int]:
    """Embedding table sizes: padding row + vocabulary + OOV buckets."""
    return {v.name: 1 + tf_transform_output.vocabulary_size_by_name(vocab_file_name(v))
            + v.num_oov_buckets for v in F.VOCABS}


class CurveLogger(keras.callbacks.Callback):
    """Logs every epoch's train and eval metrics and keeps them for curves.json."""

    def __init__(self):
        super().__init__()
        self.curves: list[Dict[str, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.curves.append(row)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch"))


def distribution_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirrored when TF_CONFIG names a cluster (the Kubeflow GPU pool),
    Mirrored on a multi-GPU machine, else the default (one device) strategy."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def input_spec(tf_transform_output: tft.TFTransformOutput, raw_examples: bool):
    """(feature spec of the Trainer's records, tf.Transform layer or None).

    Raw examples are parsed with the raw spec (labels included, metadata not)
    and need the layer; transformed examples need neither."""
    if not raw_examples:
        return tf_transform_output.transformed_feature_spec(), None
    return (F.raw_feature_spec(include_labels=True, include_metadata=False),
            tf_transform_output.transform_features_layer())


def train(train_files, eval_files, tf_transform_output: tft.TFTransformOutput,
          config: Union[TrainerSettings, Mapping[str, Any]]) -> Tuple[keras.Model, list]:
    """Builds the configured family, fits it, returns (model, per-epoch curves).

    ``word_vectors_uri`` (set by components/trainer) with ``word2vec`` options
    initialises the item table from Word2Vec vectors (`word_vectors`).

    ``mixed_precision: true`` trains in float16 on GPUs (the output stays
    float32); it is ignored on CPU, where it would only slow training down.
    """
    cfg = as_settings(config)
    if cfg.mixed_precision and tf.config.list_logical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(cfg.seed)
    spec, layer = input_spec(tf_transform_output, cfg.raw_examples)
    cache = cfg.input_cache
    train_ds = data.dataset(train_files, spec, cfg.batch_size, shuffle=True, seed=cfg.seed, cache=cache,
                            transform_layer=layer)
    eval_ds = data.dataset(eval_files, spec, cfg.batch_size,
                           cache=cache if cache in ("", "memory") else cache + ".eval", transform_layer=layer)
    strategy = distribution_strategy()
    log.info("distribution strategy: %s (%d replica(s))", type(strategy).__name__,
             strategy.num_replicas_in_sync)
    sizes = vocab_sizes(tf_transform_output)
    cfg = word_vectors.attach(cfg, tf_transform_output, sizes[F.ITEM_VOCAB.name])  # Word2Vec rows, if given
    with strategy.scope():
        model = build_model(cfg.model, sizes, cfg)
        model.compile(
            optimizer=keras.optimizers.Adam(cfg.learning_rate),
            loss=keras.losses.BinaryCrossentropy(),
            metrics=[keras.metrics.AUC(num_thresholds=2000, name="auc"),
                     keras.metrics.BinaryCrossentropy(name="logloss")])
    curves = CurveLogger()
    callbacks = [curves, keras.callbacks.EarlyStopping(
        monitor="val_auc", mode="max", patience=cfg.early_stopping_patience,
        restore_best_weights=True)]
    log.info("training %s for up to %d epochs", cfg.model, cfg.epochs)
    model.fit(train_ds, validation_data=eval_ds, epochs=cfg.epochs, callbacks=callbacks, verbose=2)
    return model, curves.curves


def write_curves(curves: list, out_dir: str) -> None:
    """curves.json plus a PNG of train vs eval loss and AUC per epoch."""
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
        ax.plot(epochs, [c.get(f"val_{metric}") for c in curves], "o-", label="eval")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "curves.png"), dpi=80)
    plt.close(fig)


def trainer_scores(model, eval_files, tf_transform_output: tft.TFTransformOutput,
                   sampling_rate: float, n: int = 512, raw_examples: bool = False) -> Dict[str, float]:
    """The in-memory Keras model's calibrated scores on the first ``n`` eval
    examples, keyed by impression id: the reference the pushed model must match."""
    spec, layer = input_spec(tf_transform_output, raw_examples)
    records = tf.stack(list(tf.data.TFRecordDataset(data._expand(eval_files), compression_type="GZIP").take(n)))
    batch = tf.io.parse_example(records, spec)
    if layer is not None:
        ids = tf.io.parse_example(records, {F.IMPRESSION_ID: tf.io.FixedLenFeature([], tf.string)})
        batch = {**layer(batch), **ids}
    q = model({k: batch[k] for k in F.model_input_names()}, training=False)
    probs = export_lib.correct_for_sampling(q, sampling_rate).numpy()
    return {i.decode(): float(p) for i, p in zip(batch[F.IMPRESSION_ID].numpy(), probs)}


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (GenericExecutor); a bad ``custom_config`` is a ConfigError naming the key."""
    config = TrainerSettings.from_dict(fn_args.custom_config or {}, "Trainer custom_config")
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    model, curves = train(fn_args.train_files, fn_args.eval_files, tft_output, config)
    write_curves(curves, fn_args.model_run_dir)
    export_lib.export(model, tft_output, fn_args.serving_model_dir, config.negative_sampling_rate)
    scores = trainer_scores(model, fn_args.eval_files, tft_output, config.negative_sampling_rate,
                            raw_examples=config.raw_examples)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "eval_scores.json"), "w") as f:
        json.dump(scores, f)
    log.info("exported %s to %s", config.model, fn_args.serving_model_dir)
