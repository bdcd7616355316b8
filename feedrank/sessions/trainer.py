"""The session Trainer's run function: `train` a session model on Transform's output, `export` it.

`run_fn` (the TFX Trainer's) is thin: it reads the settings from ``custom_config``
(`feedrank.sessions.settings.SessionTrainerSettings` plus the pipeline's keys below), takes
the Tuner's best hyperparameters when the pipeline has a Tuner, calls `train` and `export`,
and writes the per-epoch curves to the ModelRun artifact.

The families are ``drnn`` (`feedrank.sessions.drnn`) and ``gru4rec``
(`feedrank.sessions.gru4rec`); their vocabulary sizes come from the Transform's ``pages`` and
``items`` vocabularies.  A sample with several label items is one training row per known label
item (as `feedrank.sessions.drnn.from_samples` builds them); a sample without one gives none.
Training runs a fixed number of epochs on the train split: the eval split is the Evaluator's.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

from feedrank.sessions import drnn
from feedrank.sessions.settings import SessionTrainerSettings
from feedrank.sessions.transform import ITEM_VOCAB, LABEL_ITEMS, PAGE_VOCAB

log = logging.getLogger(__name__)

# custom_config keys the pipeline adds to the trainer section (not trainer settings)
PIPELINE_KEYS = ("top_k", "gap_s", "k_pages", "code_version")
TRAINER_LEVEL = ("epochs", "batch_size")   # tuned hyperparameters that are not the family's


def dataset(file_patterns: Sequence[str], tf_transform_output: Any, batch_size: int, shuffle_buffer: int = 0,
            seed: int = 0) -> tf.data.Dataset:
    """Transform's materialised examples (GZIP TFRecords) -> (model inputs, item ids) batches,
    one row per known label item."""
    files = sorted(f for p in file_patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise ValueError(f"no transformed examples match {list(file_patterns)}")
    spec = tf_transform_output.transformed_feature_spec()
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE)

    def rows(batch: Dict[str, tf.Tensor]) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
        labels = batch[LABEL_ITEMS]
        mask = labels > 0
        row = tf.where(mask)[:, 0]
        return {k: tf.gather(batch[k], row) for k in drnn.INPUTS}, tf.boolean_mask(labels, mask)

    return ds.map(rows).prefetch(tf.data.AUTOTUNE)


def tuned(settings: SessionTrainerSettings, hyperparameters: Optional[Mapping[str, Any]]) -> SessionTrainerSettings:
    """``settings`` with the Tuner's best hyperparameters (a mapping, or KerasTuner's
    ``{"space": ..., "values": {...}}`` config) applied: ``epochs``/``batch_size`` to the
    trainer, every other key to the family's settings."""
    if not hyperparameters:
        return settings
    values = dict(hyperparameters.get("values", hyperparameters))
    top = {k: values.pop(k) for k in TRAINER_LEVEL if k in values}
    family = {**getattr(settings, settings.model), **values}
    out = SessionTrainerSettings.from_mapping({**settings.to_dict(), **top, settings.model: family})
    log.info("Trainer: the Tuner's hyperparameters %s", {**top, **values})
    return out


def build_model(settings: SessionTrainerSettings, num_pages: int, num_items: int) -> drnn.SessionModel:
    """The configured family for these vocabulary sizes, compiled."""
    from feedrank.sessions import gru4rec

    family = settings.family_settings(num_pages=num_pages, num_items=num_items)
    return drnn.build(family) if settings.model == "drnn" else gru4rec.build(family)


def train(settings: SessionTrainerSettings, train_files: Sequence[str], tf_transform_output: Any,
          log_dir: Optional[str] = None) -> Tuple[drnn.SessionModel, List[Dict[str, float]]]:
    """Fits the configured family on the transformed train split; returns (model, per-epoch curves)."""
    keras.utils.set_random_seed(settings.seed)
    num_pages = tf_transform_output.vocabulary_size_by_name(PAGE_VOCAB) + 1
    num_items = tf_transform_output.vocabulary_size_by_name(ITEM_VOCAB) + 1
    model = build_model(settings, num_pages, num_items)
    ds = dataset(train_files, tf_transform_output, settings.batch_size, settings.shuffle_buffer, settings.seed)
    callbacks = [keras.callbacks.TensorBoard(log_dir=log_dir)] if log_dir else []
    history = model.fit(ds, epochs=settings.epochs, verbose=2, callbacks=callbacks)
    curves = [{"epoch": i + 1, **{k: float(v[i]) for k, v in history.history.items()}}
              for i in range(len(history.epoch))]
    log.info("Trainer: %s on %d pages / %d items, last epoch %s", settings.model, num_pages - 1, num_items - 1,
             curves[-1] if curves else {})
    return model, curves


def export(model: drnn.SessionModel, tf_transform_output: Any, serving_dir: str, top_k: int,
           info: Optional[Mapping[str, Any]] = None) -> str:
    """The served form: raw ids in, top-k item ids out, the Transform layer attached."""
    from feedrank.sessions import export as export_lib

    return export_lib.export_raw(model, tf_transform_output, serving_dir, k=top_k, info=info)


def run_fn(fn_args: Any) -> None:
    """The TFX Trainer's entry point (module docstring)."""
    import tensorflow_transform as tft

    config = dict(fn_args.custom_config or {})
    pipeline = {k: config.pop(k) for k in PIPELINE_KEYS if k in config}
    settings = tuned(SessionTrainerSettings.from_mapping(config, "custom_config"), fn_args.hyperparameters)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    model, curves = train(settings, fn_args.train_files, tft_output, log_dir=fn_args.model_run_dir)
    info = {"gap_s": int(pipeline.get("gap_s", 1800)), "k_pages": int(pipeline.get("k_pages", 5)),
            "family": settings.model, "settings": settings.to_dict()}
    export(model, tft_output, fn_args.serving_model_dir, int(pipeline.get("top_k", 20)), info)
    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "curves.json"), "w") as f:
        f.write(json.dumps(curves, indent=1))
