"""GBDT: gradient boosted decision trees on hand-built aggregates, served like the deep families.

Friedman, J. H. "Greedy Function Approximation: A Gradient Boosting Machine."
Annals of Statistics 29(5), 2001. https://doi.org/10.1214/aos/1013203451
58.com ran a GBDT as its production ranker before its deep models and reports
it as the baseline they beat (GBDT AUC 0.634 < DIN 0.643 < DIEN 0.651); here
it is the champion a deep challenger must beat in an A/B test.

The trees are TensorFlow Decision Forests' ``GradientBoostedTreesModel``
(binary classification, log loss), trained on the columns of
`gbdt_features.TreeFeatures`, TF-DF's ``preprocessing`` model, computed in
the graph from the transformed features every deep family reads.  `servable`
wraps the trained forest in a functional Keras model with the deep families'
inputs and output (P(click) of shape [B]), so the export
(`feedrank.train.export`: both signatures, the tf.Transform layer, the
sampling-rate correction) and the Trainer's reference scores are the deep
families'.

Training (`fit`) is one pass over the train split (TF-DF reads the whole
dataset, then grows the trees; Keras epochs, optimisers and callbacks do not
apply); the validation split is TF-DF's ``validation_data``, on which boosting
stops early (``early_stopping_num_trees_look_ahead``), and the per-tree
validation loss and accuracy are the curves.  The settings are
`settings.GbdtSettings` (``trainer: {model: gbdt, num_trees: ..., ...}``).

TF-DF (``tensorflow_decision_forests``) is imported only when a GBDT is built;
a process that loads the exported SavedModel registers TF-DF's inference ops
first (`feedrank.train.tfdf_ops`).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Tuple

import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train.families import common, gbdt_features
from feedrank.train.settings import TrainerSettings

log = logging.getLogger(__name__)


def _tfdf():
    """The TF-DF module, with a clear error when it is not installed."""
    try:
        import tensorflow_decision_forests as tfdf
    except ImportError as e:
        raise ImportError("the gbdt family needs tensorflow_decision_forests (pinned in requirements.txt; "
                          f"install it with --no-deps): {e}") from None
    return tfdf


def build(vocab_sizes: Mapping[str, int], config: TrainerSettings, *, spec: F.FeatureSpec):
    """An untrained TF-DF gradient boosted trees model with `gbdt_features`'s preprocessing
    of the transformed features of ``spec``.

    ``vocab_sizes`` is unused: the ids become categorical strings, whose
    dictionaries TF-DF builds from the training data."""
    tfdf = _tfdf()
    g = config.gbdt
    extra = {} if g.max_num_nodes is None else {"max_num_nodes": g.max_num_nodes}
    look_ahead = g.early_stopping_num_trees_look_ahead
    return tfdf.keras.GradientBoostedTreesModel(
        task=tfdf.keras.Task.CLASSIFICATION,
        preprocessing=gbdt_features.preprocessing_model(spec),
        num_trees=g.num_trees, max_depth=g.max_depth, shrinkage=g.shrinkage, min_examples=g.min_examples,
        subsample=g.subsample, num_candidate_attributes_ratio=g.num_candidate_attributes_ratio,
        l2_regularization=g.l2_regularization, growing_strategy=g.growing_strategy,
        categorical_algorithm=g.categorical_algorithm,
        early_stopping="LOSS_INCREASE" if look_ahead else "NONE",
        early_stopping_num_trees_look_ahead=max(look_ahead, 1),
        random_seed=config.seed, verbose=1, name="gbdt_forest", **extra)


def _int_labels(ds: tf.data.Dataset) -> tf.data.Dataset:
    """(features, float label) -> (features, int64 label): TF-DF's classes."""
    return ds.map(lambda x, y: (x, tf.cast(y, tf.int64)))


def fit(train_ds: tf.data.Dataset, valid_ds: tf.data.Dataset, vocab_sizes: Mapping[str, int],
        config: TrainerSettings, *, spec: F.FeatureSpec) -> Tuple[keras.Model, List[Dict[str, float]]]:
    """Builds and trains the forest in one pass over ``train_ds`` (finite, (features,
    label) batches), stopping early on ``valid_ds``; returns (`servable` model, curves:
    one row per logged tree count with the validation loss and accuracy)."""
    forest = build(vocab_sizes, config, spec=spec)
    g = config.gbdt
    log.info("training gbdt: up to %d trees of depth %d, shrinkage %g, early-stopped on the validation split",
             g.num_trees, g.max_depth, g.shrinkage)
    forest.fit(_int_labels(train_ds), validation_data=_int_labels(valid_ds), verbose=2)
    logs = forest.make_inspector().training_logs()
    curves = [{"epoch": int(t.num_trees), "trees": int(t.num_trees), "val_loss": float(t.evaluation.loss),
               "val_accuracy": float(t.evaluation.accuracy)} for t in logs if t.evaluation is not None]
    trees = forest.make_inspector().num_trees()
    log.info("gbdt: %d trees kept (%d logged); final validation loss %s", trees, len(curves),
             f"{curves[-1]['val_loss']:.4f}" if curves else "n/a")
    return servable(forest, spec), curves


def servable(forest: keras.Model, spec: F.FeatureSpec) -> keras.Model:
    """The trained forest as a functional Keras model: the deep families' inputs of
    ``spec`` (`common.make_inputs`) -> P(click) [B], what the export and the Trainer expect."""
    inputs = common.make_inputs(spec)
    prob = forest(inputs)[:, 0]   # binary classification: P(label = 1), [B, 1] -> [B]
    return keras.Model(inputs, prob, name="gbdt")
