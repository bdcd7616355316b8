"""The session Trainer's run function: `train` a session model on Transform's output, `export` it.

`run_fn` (the TFX Trainer's) is thin: it reads the settings from ``custom_config``
(`feedrank.sessions.settings.SessionTrainerSettings` plus the pipeline's keys below), takes
the Tuner's best hyperparameters when the pipeline has a Tuner, calls `train` and `export`,
and writes the per-epoch curves to the ModelRun artifact.

The families are ``drnn`` (`feedrank.sessions.drnn`), ``gru4rec``
(`feedrank.sessions.gru4rec`) and ``sasrec`` (`feedrank.sessions.sasrec`); their id space is
the Transform's ``pages`` vocabulary (the catalogue) and the ``items`` vocabulary marks the
ids an add-to-cart can name. A sample with several label items is one training row per label
item, a sample without one a single row with only its next-page target (as
`feedrank.sessions.drnn.from_samples` builds them): both outputs train together, the next
page's loss weighted by ``next_weight``. With ``patience`` > 0, training stops when the add-
to-cart top-10 accuracy on the ``val`` split (the sessions just before the eval period) has
not improved for ``patience`` epochs, and the best epoch's weights are kept; the eval split
is only the Evaluator's.

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

from feedrank.sessions import catalogue, drnn
from feedrank.sessions.settings import SessionTrainerSettings
from feedrank.sessions.transform import FULL_PATH, ITEM_VOCAB, LABEL_ITEMS, NEXT_PAGE, PAGE_VOCAB, vocabulary_list
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


def item_mask(tf_transform_output: Any) -> List[bool]:
    """[num ids] flags: True for the catalogue ids that are item pages (0 and out of vocabulary not)."""
    return catalogue.item_flags(vocabulary_list(tf_transform_output, PAGE_VOCAB),
                                set(vocabulary_list(tf_transform_output, ITEM_VOCAB)))


def dataset(file_patterns: Sequence[str], tf_transform_output: Any, batch_size: int, shuffle_buffer: int = 0,
            seed: int = 0, shard: Optional[distribute.Shard] = None,
            tap: Optional[Callable[[tf.Tensor], tf.Tensor]] = None, cart_rows: str = "last") -> tf.data.Dataset:
    """Transform's materialised examples (GZIP TFRecords) -> (model inputs, targets, sample weights)
    batches: one row per label item (one row for a sample without one); the targets and weights
    as `feedrank.sessions.drnn.from_samples` gives them (``cart_rows`` as there).  ``shard``: this
    worker's part (its files, or every n-th sample of the shuffled stream; ``batch_size`` is then
    the per-replica batch);
    ``tap`` sees each batch of serialized samples."""
    shard = shard or distribute.Shard()
    spec = tf_transform_output.transformed_feature_spec()
    ds = tf.data.TFRecordDataset(shard.files(files_of(file_patterns)), compression_type="GZIP")
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = shard.records(ds).batch(batch_size)
    if tap is not None:
        ds = ds.map(tap)
    ds = ds.map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE)

    flags = item_mask(tf_transform_output)
    mask, oov = tf.constant(flags), len(flags) - 1

    def rows(batch: Dict[str, tf.Tensor]) -> Tuple[Dict[str, tf.Tensor], Dict[str, tf.Tensor], Dict[str, tf.Tensor]]:
        labels = batch[LABEL_ITEMS]
        has = labels > 0
        n_labels = tf.reduce_sum(tf.cast(has, tf.int64), axis=1)
        keep = tf.concat([has, tf.equal(n_labels, 0)[:, None]], axis=1)       # no label: one row, cart 0
        at = tf.where(keep)
        row = at[:, 0]
        cart = tf.gather_nd(tf.concat([labels, tf.zeros_like(labels[:, :1])], axis=1), at)
        nxt = tf.gather(batch[NEXT_PAGE], row)
        share = 1.0 / tf.cast(tf.maximum(tf.gather(n_labels, row), 1), tf.float32)
        next_w = tf.where((nxt > 0) & (nxt < oov), share, 0.0)
        x = {k: tf.gather(batch[k], row) for k in drnn.INPUTS}
        cart_w = tf.cast(tf.gather(mask, cart), tf.float32)
        if cart_rows == "last":
            cart_w *= tf.cast(tf.gather(batch[FULL_PATH], row) > 0, tf.float32)
        return x, {drnn.CART: cart, drnn.NEXT: nxt}, {drnn.CART: cart_w, drnn.NEXT: next_w}

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


def build_model(settings: SessionTrainerSettings, mask: Sequence[bool]) -> drnn.SessionModel:
    """The configured family over the catalogue ids (``mask``: which are items), compiled."""
    from feedrank.sessions import gru4rec, sasrec

    family = settings.family_settings(num_pages=len(mask), num_items=len(mask))
    builder = {"drnn": drnn.build, "gru4rec": gru4rec.build, "sasrec": sasrec.build}[settings.model]
    return builder(family, list(mask), settings.next_weight)


def train(settings: SessionTrainerSettings, train_files: Sequence[str], tf_transform_output: Any,
          log_dir: Optional[str] = None, tally: Optional[distribute.ShardTally] = None,
          val_files: Optional[Sequence[str]] = None) -> Tuple[drnn.SessionModel, List[Dict[str, float]]]:
    """Fits the configured family on the transformed train split; returns (model, per-epoch curves).
    ``val_files`` (with ``patience`` > 0): the val split for early stopping.  ``tally`` counts the
    samples this worker read, per epoch.  Under a multi-worker strategy ``batch_size`` samples
    are a global step's (`feedrank.train.distribute`)."""
    strategy = distribute.distribution_strategy()   # before any TensorFlow op
    keras.utils.set_random_seed(settings.seed)
    mask = item_mask(tf_transform_output)
    with strategy.scope():
        model = build_model(settings, mask)

    def worker_input(shard: distribute.Shard) -> tf.data.Dataset:
        if tally is not None:
            tally.describe(strategy, shard, files_of(train_files), settings.batch_size)
        return dataset(train_files, tf_transform_output, settings.batch_size, settings.shuffle_buffer, settings.seed,
                       shard=shard, tap=tally.tap if tally else None, cart_rows=settings.cart_rows)

    ds = distribute.sharded_dataset(strategy, files_of(train_files), worker_input)
    callbacks = [keras.callbacks.TensorBoard(log_dir=log_dir)] if log_dir else []
    val = None
    if settings.patience and val_files:
        val = dataset(val_files, tf_transform_output, settings.batch_size, cart_rows=settings.cart_rows)
        callbacks.append(keras.callbacks.EarlyStopping(monitor=f"val_{drnn.CART}_top10", mode="max",
                                                       patience=settings.patience, restore_best_weights=True))
    with distribute.timed(tally):
        history = model.fit(ds, epochs=settings.epochs, verbose=2, validation_data=val,
                            callbacks=[*callbacks, *([tally] if tally else [])])
    curves = [{"epoch": i + 1, **{k: float(v[i]) for k, v in history.history.items()}}
              for i in range(len(history.epoch))]
    log.info("Trainer: %s on %d catalogue pages (%d items), %d epochs, last %s", settings.model, len(mask) - 2,
             sum(mask), len(curves), curves[-1] if curves else {})
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
        model, curves = train(settings, fn_args.train_files, tft_output, log_dir=run_dir, tally=tally,
                              val_files=fn_args.eval_files)
        tally.write(fn_args.model_run_dir)   # every worker: its own record, in the real run dir
        info = {"gap_s": int(pipeline.get("gap_s", 1800)), "k_pages": int(pipeline.get("k_pages", 5)),
                "family": settings.model, "settings": settings.to_dict()}
        export(model, tft_output, serving_dir, int(pipeline.get("top_k", 20)), info)
        tf.io.gfile.makedirs(run_dir)
        with tf.io.gfile.GFile(os.path.join(run_dir, "curves.json"), "w") as f:
            f.write(json.dumps(curves, indent=1))
