"""The TFX Trainer entry point: `run_fn` -> `train()` -> `export()`.

The model family and its hyperparameters come from ``custom_config``, the
flat form of `feedrank.train.settings.TrainerSettings` (the config's
``trainer:`` section), parsed back with the same checks; vocabulary sizes
come from the Transform output.  The Trainer component (components/trainer)
adds the Examples artifact's negative sampling rate under `EXAMPLES_ARTIFACT_KEY`.
When the Trainer is given the TFX Tuner's best hyperparameters
(``fn_args.hyperparameters``), they replace the matching settings
(`feedrank.tune.genes.trainer_overrides`: learning rate, batch size, dropout,
the MLP's units) before the settings are checked.

The model is fitted on the train split and early-stopped on the validation
split (the Trainer's ``eval_args`` split, ``valid``); the eval split is the
Evaluator's alone.  The ``gbdt`` family's trees are grown by TF-DF in one
pass over each split instead of Keras epochs (`families.gbdt.fit`); its
curves are the validation loss and accuracy per logged tree count.
Per-epoch train/validation curves are logged and written
to the model run dir as ``curves.json`` (Keras's keys: ``loss``, ``auc``, ...
for train, ``val_loss``, ``val_auc``, ... for validation) and ``curves.png``;
``training.json`` records the sampling rate and the files trained and
validated on.

The fitted model then scores the whole validation split (sampling-corrected)
and `calibration.choose` fits the calibrator of ``trainer.calibration``; the
export puts it into both signatures, its record goes to ``calibration.json``.
The Keras model's served scores on a sample of validation examples go to
``valid_scores.json``, so a test can check the pushed SavedModel (with the
tf.Transform graph attached) reproduces them.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from feedrank import features as F
from feedrank.train import calibration, data, distribute, word_vectors
from feedrank.train import export as export_lib
from feedrank.train.curves import TENSORBOARD_DIR, CurveLogger, tensorboard_callbacks, write_curves
from feedrank.train.distribute import distribution_strategy
from feedrank.train.families import build_model, gbdt
from feedrank.train.settings import EXAMPLES_ARTIFACT_KEY, TrainerSettings, as_settings
from feedrank.transform.preprocessing import vocab_file_name
from feedrank.tune.genes import apply_trainer_hyperparameters
from feedrank.typed import ConfigError

log = logging.getLogger(__name__)


def feature_spec(config: Union[TrainerSettings, Mapping[str, Any]]) -> F.FeatureSpec:
    """The feature contract the settings carry (``declared_features``, the JSON of
    `features.FeatureSpec.to_json`; a run that declares no columns passes none)."""
    return F.FeatureSpec.from_json(as_settings(config).declared_features)


def vocab_sizes(tf_transform_output: tft.TFTransformOutput, *, spec: F.FeatureSpec) -> Dict[str, int]:
    """Embedding table sizes of ``spec``'s vocabularies: padding row + vocabulary + OOV buckets."""
    return {v.name: v.size or 1 + tf_transform_output.vocabulary_size_by_name(vocab_file_name(v))
            + v.num_oov_buckets for v in spec.vocabs}


def input_spec(tf_transform_output: tft.TFTransformOutput, raw_examples: bool, *, spec: F.FeatureSpec):
    """(feature spec of the Trainer's records, tf.Transform layer or None).

    Raw examples are parsed with ``spec``'s raw feature spec (labels included,
    metadata not) and need the layer; transformed examples need neither."""
    if not raw_examples:
        return tf_transform_output.transformed_feature_spec(), None
    return (spec.raw_feature_spec(include_labels=True, include_metadata=False),
            tf_transform_output.transform_features_layer())


@contextlib.contextmanager
def input_cache_dir(mode: str, run_dir: Optional[str]) -> Iterator[Optional[str]]:
    """The directory of the ``disk`` input cache (None for other modes), removed on exit:
    ``<run_dir>/input_cache`` (one per worker under a multi-worker TF_CONFIG), or a
    temporary directory without ``run_dir``.  Never the working directory."""
    if mode != "disk":
        yield None
        return
    temp = None if run_dir else tempfile.mkdtemp(prefix="feedrank-input-cache-")
    path = os.path.join(run_dir or temp, "input_cache")
    cluster = distribute.cluster_from_env()
    if cluster is not None:
        path = os.path.join(path, f"{cluster.task_type}-{cluster.task_index}")
    try:
        yield path
    finally:
        for d in (path, temp):
            if d and tf.io.gfile.exists(d):
                tf.io.gfile.rmtree(d)


def train(train_files, valid_files, tf_transform_output: tft.TFTransformOutput,
          config: Union[TrainerSettings, Mapping[str, Any]],
          run_dir: Optional[str] = None, callbacks: Sequence[keras.callbacks.Callback] = (),
          spec: Optional[F.FeatureSpec] = None,
          tally: Optional[distribute.ShardTally] = None) -> Tuple[keras.Model, list]:
    """Builds the configured family, fits it on ``train_files``, early-stops it on
    ``valid_files`` (the validation split, never the eval split), returns (model,
    per-epoch curves).

    ``input_cache: disk`` caches the records under ``run_dir`` (the run's own
    directory; a temporary one without it) and removes them after training.

    ``word_vectors_uri`` (set by components/trainer) with ``word2vec`` options
    initialises the item table from Word2Vec vectors (`word_vectors`).

    ``mixed_precision: true`` trains in float16 on GPUs (the output stays
    float32); it is ignored on CPU, where it would only slow training down.

    ``callbacks`` join the Keras fit's (the Tuner's fitness and early termination).

    ``spec``: the feature contract the data, the model and the export share; None:
    the one the settings carry (`feature_spec`).

    Under a multi-worker ``TF_CONFIG`` each worker trains on its shard of the train
    split (`feedrank.train.distribute`); ``tally`` counts what it read, per epoch.
    """
    strategy = distribution_strategy()   # before any TensorFlow op: collective ops are set up at start
    cfg = as_settings(config)
    if spec is None:
        spec = feature_spec(cfg)
    if cfg.mixed_precision and tf.config.list_logical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(cfg.seed)
    board = [] if run_dir is None else tensorboard_callbacks(os.path.join(run_dir, TENSORBOARD_DIR), cfg)
    with input_cache_dir(cfg.input_cache, run_dir) as cache_dir:
        return _fit(train_files, valid_files, tf_transform_output, cfg, cache_dir, [*board, *callbacks], spec,
                    strategy, tally)


def _fit(train_files, valid_files, tf_transform_output: tft.TFTransformOutput, cfg: TrainerSettings,
         cache_dir: Optional[str], extra_callbacks: Sequence[keras.callbacks.Callback], spec: F.FeatureSpec,
         strategy: tf.distribute.Strategy, tally: Optional[distribute.ShardTally]) -> Tuple[keras.Model, list]:
    """`train` with the input cache's directory and the strategy decided."""
    records, layer = input_spec(tf_transform_output, cfg.raw_examples, spec=spec)
    if cfg.model == "gbdt":   # trees: one pass over each split, no epochs, optimiser or callbacks
        one_pass = [data.dataset(files, records, cfg.batch_size, transform_layer=layer, spec=spec)
                    for files in (train_files, valid_files)]
        return gbdt.fit(*one_pass, vocab_sizes(tf_transform_output, spec=spec), cfg, spec=spec)
    cache = cfg.input_cache
    log.info("distribution strategy: %s (%d replica(s))", type(strategy).__name__,
             strategy.num_replicas_in_sync)

    def train_input(shard: distribute.Shard) -> tf.data.Dataset:
        if tally is not None:
            tally.describe(strategy, shard, data.expand(train_files), cfg.batch_size)
        return data.dataset(train_files, records, cfg.batch_size, shuffle=True, seed=cfg.seed, cache=cache,
                            transform_layer=layer, cache_dir=cache_dir, spec=spec, shard=shard,
                            tap=tally.tap if tally else None)

    train_ds = distribute.sharded_dataset(strategy, data.expand(train_files), train_input)
    valid_ds = distribute.sharded_dataset(
        strategy, data.expand(valid_files),
        lambda shard: data.dataset(valid_files, records, cfg.batch_size, cache=cache, transform_layer=layer,
                                   cache_dir=cache_dir, spec=spec, shard=shard))
    sizes = vocab_sizes(tf_transform_output, spec=spec)
    cfg = word_vectors.attach(cfg, tf_transform_output, sizes[F.ITEM_VOCAB.name])  # Word2Vec rows, if given
    with strategy.scope():
        model = build_model(cfg.model, sizes, cfg, spec=spec)
        model.compile(
            optimizer=keras.optimizers.Adam(cfg.learning_rate),
            loss=keras.losses.BinaryCrossentropy(),
            metrics=[keras.metrics.AUC(num_thresholds=2000, name="auc"),
                     keras.metrics.BinaryCrossentropy(name="logloss")])
    curves = CurveLogger()
    callbacks = [curves, keras.callbacks.EarlyStopping(
        monitor="val_auc", mode="max", patience=cfg.early_stopping_patience,
        restore_best_weights=True), *([tally] if tally else []), *extra_callbacks]
    log.info("training %s for up to %d epochs, early-stopped on the validation split", cfg.model, cfg.epochs)
    with distribute.timed(tally):
        model.fit(train_ds, validation_data=valid_ds, epochs=cfg.epochs, callbacks=callbacks, verbose=2)
    return model, curves.curves


def validation_probabilities(model, files, tf_transform_output: tft.TFTransformOutput, cfg: TrainerSettings,
                             sampling_rate: float, *, spec: F.FeatureSpec) -> Tuple[np.ndarray, np.ndarray]:
    """(sampling-corrected probabilities, labels) of the in-memory model on every example of ``files``."""
    records, layer = input_spec(tf_transform_output, cfg.raw_examples, spec=spec)
    score = tf.function(lambda x: export_lib.correct_for_sampling(model(x, training=False), sampling_rate),
                        reduce_retracing=True)
    probs, labels = [], []
    for x, y in data.dataset(files, records, cfg.batch_size, transform_layer=layer, spec=spec):
        probs.append(score(x).numpy().reshape(-1))
        labels.append(y.numpy().reshape(-1))
    return np.concatenate(probs), np.concatenate(labels)


def trainer_scores(model, files, tf_transform_output: tft.TFTransformOutput,
                   sampling_rate: float, n: int = 512, raw_examples: bool = False, *,
                   spec: F.FeatureSpec, calibrator: Optional[calibration.Calibrator] = None) -> Dict[str, float]:
    """The in-memory Keras model's served scores (`export.served_probability`) on the first
    ``n`` examples of ``files``, keyed by impression id: the reference the pushed model must match."""
    parse_spec, layer = input_spec(tf_transform_output, raw_examples, spec=spec)
    records = tf.stack(list(tf.data.TFRecordDataset(data.expand(files), compression_type="GZIP").take(n)))
    batch = tf.io.parse_example(records, parse_spec)
    if layer is not None:
        ids = tf.io.parse_example(records, {F.IMPRESSION_ID: tf.io.FixedLenFeature([], tf.string)})
        batch = {**layer(batch), **ids}
    q = model({k: batch[k] for k in spec.model_input_names()}, training=False)
    probs = export_lib.served_probability(q, sampling_rate, calibrator).numpy()
    return {i.decode(): float(p) for i, p in zip(batch[F.IMPRESSION_ID].numpy(), probs)}


def examples_properties(custom_config: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(the trainer settings' flat dict, the Examples artifact's properties) from ``custom_config``."""
    settings = dict(custom_config or {})
    props = settings.pop(EXAMPLES_ARTIFACT_KEY, None)
    if not isinstance(props, Mapping) or "negative_sampling_rate" not in props:
        raise ValueError("the Trainer's custom_config lacks the Examples artifact's negative_sampling_rate: "
                         "run feedrank.train.trainer.run_fn with the Trainer of components/trainer, "
                         "which reads it from the Examples artifact")
    return settings, dict(props)


@contextlib.contextmanager
def _phase(phases: Dict[str, float], name: str) -> Iterator[None]:
    """Times one phase of the Trainer run into ``phases`` and logs it."""
    t0 = time.time()
    yield
    phases[name] = round(time.time() - t0, 2)
    log.info("Trainer phase %s: %.1f s", name, phases[name])


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (components/trainer's executor); a bad ``custom_config``
    is a ConfigError naming the key.

    Under a multi-worker ``TF_CONFIG`` every worker runs all of it; only the chief writes
    the model and the run's files, every worker its own ``workers/<task>.json``
    (`feedrank.train.distribute`)."""
    settings, props = examples_properties(fn_args.custom_config)
    # the Tuner's best hyperparameters (TFX passes them when the Trainer gets the Tuner's output)
    settings = apply_trainer_hyperparameters(settings, getattr(fn_args, "hyperparameters", None))
    config = TrainerSettings.from_dict(settings, "Trainer custom_config")
    cluster = distribute.cluster_from_env()
    if cluster is not None and cluster.num_workers > 1 and config.model == "gbdt":
        raise ConfigError(f"trainer.model gbdt trains on one worker (TF-DF), but TF_CONFIG names "
                          f"{cluster.num_workers}: run it without a multi-worker TF_CONFIG")
    distribution_strategy()   # the process's first TensorFlow work (collective ops are set up at start)
    spec = feature_spec(config)   # the run's feature contract: data, model and export share it
    rate = float(props["negative_sampling_rate"])
    log.info("negative sampling rate %.4g (from the Examples artifact %s)", rate, props.get("uri", "?"))
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    tally = None if config.model == "gbdt" else distribute.ShardTally(cluster)
    started = time.time()
    phases: Dict[str, float] = {}
    with distribute.output_dir(fn_args.model_run_dir, cluster) as run_dir, \
            distribute.output_dir(fn_args.serving_model_dir, cluster) as serving_dir:
        with _phase(phases, "fit"):
            model, curves = train(fn_args.train_files, fn_args.eval_files, tft_output, config,
                                  run_dir=run_dir, spec=spec, tally=tally)
        if tally is not None:
            tally.write(fn_args.model_run_dir)   # every worker: its own record, in the real run dir
        _write_outputs(model, curves, fn_args, tft_output, config, rate, spec, props, started, run_dir, serving_dir,
                       phases)


def _write_outputs(model, curves: list, fn_args, tft_output: tft.TFTransformOutput, config: TrainerSettings,
                   rate: float, spec: F.FeatureSpec, props: Mapping[str, Any], started: float,
                   run_dir: str, serving_dir: str, phases: Dict[str, float]) -> None:
    """`run_fn` after training: curves, calibration, export, training.json (with each phase's
    seconds), valid_scores.json."""
    write_curves(curves, run_dir)
    with _phase(phases, "calibration"):
        probs, labels = ([], []) if config.calibration == "none" else \
            validation_probabilities(model, fn_args.eval_files, tft_output, config, rate, spec=spec)
        calibrator, calibration_record = calibration.choose(probs, labels, config.calibration)
        calibration.write(calibration_record, run_dir)
    with _phase(phases, "export"):
        export_lib.export(model, tft_output, serving_dir, rate, spec=spec, calibrator=calibrator)
    finished = time.time()
    with _phase(phases, "reference_scores"):
        scores = trainer_scores(model, fn_args.eval_files, tft_output, rate, raw_examples=config.raw_examples,
                                spec=spec, calibrator=calibrator)
    record = {"negative_sampling_rate": rate, "examples_uri": props.get("uri"),
              "train_files": list(fn_args.train_files), "valid_files": list(fn_args.eval_files),
              "started_at": round(started, 3), "finished_at": round(finished, 3),   # fit, calibrate, export
              "phase_seconds": phases}
    for name, content in (("training.json", record), ("valid_scores.json", scores)):
        with tf.io.gfile.GFile(os.path.join(run_dir, name), "w") as f:
            json.dump(content, f, indent=1 if name == "training.json" else None)
    log.info("exported %s to %s", config.model, serving_dir)
