"""The GBDT family's input features, computed in the TF graph from the transformed features.

Trees split on columns, not on id sequences, so the ``gbdt`` family
(`feedrank.train.families.gbdt`) reads hand-built aggregates, the kind a
production feature pipeline computes for a GBDT ranker and the kind the
offline LightGBM baseline (`feedrank.train.lightgbm_baseline`) builds from the raw
examples.  Here they are a Keras layer (`TreeFeatures`) over the SAME
transformed features every deep family reads, used as TF-DF's
``preprocessing`` model: it runs in training and inside the exported
SavedModel, so serving sends the deep families' request and nothing is
computed outside the graph.

Per example (``B`` rows):

* static: every dense feature of the run's `features.FeatureSpec` (price, the post's
  historical impressions / clicks / CTR, region match, interest-category
  share, the user counters, the declared numbers), z-scored by Transform (a
  monotone map, so the same splits);
* categoricals, as strings of their vocabulary ids (TF-DF builds their
  dictionaries from the training data; rare and unseen values are
  out-of-dictionary): the candidate's category and region, the user's
  region, the declared categorical columns, and the funnel pair
  ``<category of the last conversion>|<candidate's category>`` (``0|c``
  without a conversion);
* per channel (click, view, conversion, search): the history's length;
* per matched history (``spec.matched``: each sequence against the candidate
  feature it shares a vocabulary with, the declared categorical item columns'
  history sequences included): the share of its entries
  equal to the candidate, the same share over the `RECENT` most recent
  entries and 1.0 when the most recent one matches (`layers.MatchFeatures`);
  with event ages also how long ago the youngest matching entry happened
  (`layers.MatchRecency`: when the user last clicked, viewed or converted on
  this post, or this category).

Ids are compared after the vocabulary lookup, so two different unseen values
that hash to the same OOV bucket count as a match (the LightGBM baseline
compares the raw strings).  Padding (`features.PAD_ID`) is never counted and
may sit on either side.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Tuple

import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L

log = logging.getLogger(__name__)

RECENT = 10   # as the LightGBM baseline and layers.MatchFeatures
FUNNEL = "funnel_last_conv_category_x_category"
CHANNEL_SEQUENCES = (F.CLICK_ITEMS, F.VIEW_ITEMS, F.CONV_ITEMS, F.SEARCH_TOKENS)   # one per channel


def categorical_ids(spec: F.FeatureSpec) -> List[F.IdFeature]:
    """The id features of ``spec`` that become categorical columns: the candidate's category
    and region, the user's region and the declared categorical columns."""
    declared = {c.feature_name for c in spec.declared}
    fixed = (F.CATEGORY_ID.name, F.REGION_ID.name, F.USER_REGION_ID.name)
    return [f for f in spec.id_features if f.name in fixed or f.name in declared]


def column_names(spec: F.FeatureSpec) -> Tuple[List[str], List[str]]:
    """(numerical columns, categorical columns) of `TreeFeatures` for ``spec``, in its output order."""
    numerical = [F.dense(d.name) for d in spec.dense_features]
    numerical += [f"n_{s.channel}" for s in CHANNEL_SEQUENCES]
    for seq, _ in spec.matched:
        numerical += [f"{seq.name}_match_share", f"{seq.name}_match_recent_share", f"{seq.name}_match_last"]
    if spec.event_ages:
        numerical += [f"{seq.name}_match_recency" for seq, _ in spec.matched]
    categorical = [F.idx(f.name) for f in categorical_ids(spec)] + [FUNNEL]
    return numerical, categorical


def last_entry(ids: tf.Tensor) -> tf.Tensor:
    """[B, L] ids -> [B]: the most recent real entry of each row (`features.PAD_ID` if none)."""
    mask = tf.cast(L.padding_mask(ids), tf.int64)
    from_end = tf.cumsum(mask, axis=1, reverse=True) * mask   # 1 = most recent real entry
    return tf.reduce_sum(ids * tf.cast(tf.equal(from_end, 1), ids.dtype), axis=1)


@keras.utils.register_keras_serializable(package="feedrank")
class TreeFeatures(keras.layers.Layer):
    """Transformed features (a dict, `features.FeatureSpec.model_input_names`) -> the GBDT's
    columns (a dict of [B] tensors: float32 numericals, string categoricals; `column_names`).

    ``declared_features``: the feature contract's JSON (`features.FeatureSpec.to_json`),
    kept in the layer's config so a restored layer reads the same columns."""

    def __init__(self, declared_features: str, recent: int = RECENT, **kwargs):
        super().__init__(**kwargs)
        self.declared_features = str(declared_features)
        self._spec = F.FeatureSpec.from_json(self.declared_features)
        self.recent = int(recent)
        self.match = L.MatchFeatures(recent=self.recent, name="match")
        self.recency = L.MatchRecency(len(F.AGE_LABELS), name="match_recency")

    def call(self, inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        spec = self._spec
        out: Dict[str, tf.Tensor] = {}
        for d in spec.dense_features:
            out[F.dense(d.name)] = tf.cast(inputs[F.dense(d.name)], tf.float32)
        for s in CHANNEL_SEQUENCES:
            mask = tf.cast(L.padding_mask(inputs[F.idx(s.name)]), tf.float32)
            out[f"n_{s.channel}"] = tf.reduce_sum(mask, axis=1)
        for seq, cand in spec.matched:
            m = self.match(inputs[F.idx(cand.name)], inputs[F.idx(seq.name)])
            for i, suffix in enumerate(("match_share", "match_recent_share", "match_last")):
                out[f"{seq.name}_{suffix}"] = m[:, i]
        if spec.event_ages:
            for seq, cand in spec.matched:
                out[f"{seq.name}_match_recency"] = self.recency(
                    inputs[F.idx(cand.name)], inputs[F.idx(seq.name)],
                    inputs[F.idx(spec.age_feature(seq.channel).name)])
        for f in categorical_ids(spec):
            out[F.idx(f.name)] = tf.strings.as_string(inputs[F.idx(f.name)])
        last_conv = last_entry(inputs[F.idx(F.CONV_CATEGORIES.name)])
        out[FUNNEL] = tf.strings.join([tf.strings.as_string(last_conv),
                                       tf.strings.as_string(inputs[F.idx(F.CATEGORY_ID.name)])], "|")
        return out

    def get_config(self):
        return {**super().get_config(), "declared_features": self.declared_features, "recent": self.recent}


def preprocessing_model(spec: F.FeatureSpec) -> keras.Model:
    """The functional model TF-DF runs before its trees: one Input per transformed
    feature of ``spec`` (`common.make_inputs`, the deep families' inputs) -> `TreeFeatures`."""
    from feedrank.train.families.common import make_inputs

    inputs = make_inputs(spec)
    return keras.Model(inputs, TreeFeatures(spec.to_json(), name="tree_features")(inputs), name="gbdt_features")
