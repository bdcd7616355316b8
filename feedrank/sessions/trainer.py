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

Under a multi-worker ``TF_CONFIG`` the model is built under MultiWorkerMirroredStrategy,
each worker trains on its shard of the train split (``file`` or ``data`` as
`feedrank.train.distribute` chooses) with ``batch_size`` samples a step across the
cluster, and only the chief writes the export and the run's files; every worker writes
its ``workers/<task>.json`` record (`feedrank.train.distribute.ShardTally`).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

from feedrank.sessions import drnn
from feedrank.sessions.settings import SessionTrainerSettings
from feedrank.sessions.transform import ITEM_VOCAB, LABEL_ITEMS, PAGE_VOCAB
from feedrank.train import distribute

log = logging.getLogger(__name__)

# custom_config keys the pipeline adds to the trainer section (not trainer settings)
PIPELINE_KEYS = ("top_k", "gap_s", "k_pages", "code_version")
TRAINER_LEVEL = ("epochs", "batch_size")   # tuned hyperparameters that are not the family's


def files_of(file_patterns: Sequence[str]) -> List[str]:
    """The sorted files of ``file_patterns``; a ValueError when none matches."""
    files = sorted(f for p in file_patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise ValueError(f"no transformed examples match {list(file_patterns)}")
    return files


def dataset(file_patterns: Sequence[str], tf_transform_output: Any, batch_size: int, shuffle_buffer: int = 0,
            seed: int = 0, shard: Optional[distribute.Shard] = None,
            tap: Optional[Callable[[tf.Tensor], tf.Tensor]] = None) -> tf.data.Dataset:
    """Transform's materialised examples (GZIP TFRecords) -> (model inputs, item ids) batches,
    one row per known label item.  ``shard``: this worker's part (its files, or every n-th
    sample of the shuffled stream; ``batch_size`` is then the per-replica batch); ``tap``
    sees each batch of serialized samples."""
    shard = shard or distribute.Shard()
    spec = tf_transform_output.transformed_feature_spec()
    ds = tf.data.TFRecordDataset(shard.files(files_of(file_patterns)), compression_type="GZIP")
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = shard.records(ds).batch(batch_size)
    if tap is not None:
        ds = ds.map(tap)
    ds = ds.map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE)

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
          log_dir: Optional[str] = None, tally: Optional[distribute.ShardTally] = None,
          ) -> Tuple[drnn.SessionModel, List[Dict[str, float]]]:
    """Fits the configured family on the transformed train split; returns (model, per-epoch curves).
    ``tally`` counts the samples this worker read, per epoch.  Under a multi-worker
    strategy ``batch_size`` samples are a global step's (`feedrank.train.distribute`)."""
    strategy = distribute.distribution_strategy()   # before any TensorFlow op
    keras.utils.set_random_seed(settings.seed)
    num_pages = tf_transform_output.vocabulary_size_by_name(PAGE_VOCAB) + 1
    num_items = tf_transform_output.vocabulary_size_by_name(ITEM_VOCAB) + 1
    with strategy.scope():
        model = build_model(settings, num_pages, num_items)

    def worker_input(shard: distribute.Shard) -> tf.data.Dataset:
        if tally is not None:
            tally.describe(strategy, shard, files_of(train_files), settings.batch_size)
        return dataset(train_files, tf_transform_output, settings.batch_size, settings.shuffle_buffer, settings.seed,
                       shard=shard, tap=tally.tap if tally else None)

    ds = distribute.sharded_dataset(strategy, files_of(train_files), worker_input)
    callbacks = [keras.callbacks.TensorBoard(log_dir=log_dir)] if log_dir else []
    with distribute.timed(tally):
        history = model.fit(ds, epochs=settings.epochs, verbose=2, callbacks=[*callbacks, *([tally] if tally else [])])
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
    cluster = distribute.cluster_from_env()
    distribute.distribution_strategy()   # the process's first TensorFlow work
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    tally = distribute.ShardTally(cluster)
    with distribute.output_dir(fn_args.model_run_dir, cluster) as run_dir, \
            distribute.output_dir(fn_args.serving_model_dir, cluster) as serving_dir:
        model, curves = train(settings, fn_args.train_files, tft_output, log_dir=run_dir, tally=tally)
        tally.write(fn_args.model_run_dir)   # every worker: its own record, in the real run dir
        info = {"gap_s": int(pipeline.get("gap_s", 1800)), "k_pages": int(pipeline.get("k_pages", 5)),
                "family": settings.model, "settings": settings.to_dict()}
        export(model, tft_output, serving_dir, int(pipeline.get("top_k", 20)), info)
        tf.io.gfile.makedirs(run_dir)
        with tf.io.gfile.GFile(os.path.join(run_dir, "curves.json"), "w") as f:
            f.write(json.dumps(curves, indent=1))
