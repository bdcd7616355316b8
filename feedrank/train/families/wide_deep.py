"""Wide & Deep.

Cheng, H.-T. et al. "Wide & Deep Learning for Recommender Systems."
DLRS 2016. https://arxiv.org/abs/1606.07792

Wide part: a linear model over hashed cross-product features, each cross with
its own table of scalar weights (initialised to zero):
  * candidate category x user region,
  * candidate region x user region,
  * candidate category x each clicked category, multi-hot (each distinct real
    clicked category counted once; padding never counts),
  * candidate category x each viewed category, multi-hot likewise,
plus a linear term over the dense and cross features (with the bias).
Deep part: the `dnn` family's Embedding&MLP (sum-pooled histories).
The two logits are summed, then one sigmoid: p = sigmoid(wide + deep).

Deviation from the paper: one optimizer (the trainer's Adam) trains both
parts jointly instead of FTRL+L1 for the wide and AdaGrad for the deep part;
``wide_l2`` adds an L2 penalty on the cross weights.
Config: ``wide_buckets`` (hash buckets per cross, default 10007), ``wide_l2``.
"""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train.families import common, dnn
from feedrank.train.settings import TrainerSettings


# The wide part's crosses (registered as feedrank>HashedCross; saved models load by that name).
@keras.utils.register_keras_serializable(package="feedrank")
class HashedCross(keras.layers.Layer):
    """Cross of two id features hashed into ``num_buckets``: a [B] with b [B] or
    [B, L] -> bucket ids of b's shape (deterministic, no string ops)."""

    def __init__(self, num_buckets: int, **kwargs):
        super().__init__(**kwargs)
        self.num_buckets = int(num_buckets)

    def call(self, a, b):
        a = tf.cast(a, tf.int64)
        b = tf.cast(b, tf.int64)
        if b.shape.rank == 2:
            a = a[:, None]
        h = a * 2654435761 + b * 40503 + 97
        return tf.math.floormod(h, self.num_buckets)

    def get_config(self):
        return {**super().get_config(), "num_buckets": self.num_buckets}


def first_occurrence_mask(ids: tf.Tensor, seq_mask: tf.Tensor) -> tf.Tensor:
    """[B, L] ids -> True at the first real occurrence of each id (multi-hot)."""
    same = tf.logical_and(tf.equal(ids[:, :, None], ids[:, None, :]), seq_mask[:, None, :])
    n = tf.shape(ids)[1]
    earlier = tf.cast(tf.linalg.band_part(tf.ones(tf.stack([n, n])), -1, 0)
                      - tf.eye(n), tf.bool)  # [t, s] True where s < t
    dup = tf.reduce_any(tf.logical_and(same, earlier[None]), axis=-1)
    return tf.logical_and(seq_mask, tf.logical_not(dup))


def build(vocab_sizes: Mapping[str, int], config: TrainerSettings, *, spec: F.FeatureSpec) -> keras.Model:
    """Returns a Keras model: the transformed features of ``spec`` (a dict) -> click probability [B]."""
    e = common.embed(vocab_sizes, config, spec=spec)
    buckets = config.wide_deep.wide_buckets
    l2 = config.wide_deep.wide_l2
    reg = keras.regularizers.l2(l2) if l2 > 0 else None
    ids = e.inputs

    def weights(name: str) -> keras.layers.Embedding:
        return keras.layers.Embedding(buckets, 1, embeddings_initializer="zeros",
                                      embeddings_regularizer=reg, name=f"wide_{name}_weights")

    cand_cat = ids[F.idx(F.CATEGORY_ID.name)]
    cand_region = ids[F.idx(F.REGION_ID.name)]
    user_region = ids[F.idx(F.USER_REGION_ID.name)]

    terms = [
        weights("cat_x_user_region")(HashedCross(buckets, name="cross_cat_user_region")(cand_cat, user_region)),
        weights("region_x_user_region")(
            HashedCross(buckets, name="cross_region_user_region")(cand_region, user_region)),
    ]
    for kind, seq, mask in (("clicked", F.CLICK_CATEGORIES, e.click_mask),
                            ("viewed", F.VIEW_CATEGORIES, e.view_mask)):
        cats = ids[F.idx(seq.name)]
        cross = weights(f"cat_x_{kind}_cat")(
            HashedCross(buckets, name=f"cross_cat_{kind}_cat")(cand_cat, cats))          # [B, L, 1]
        multi_hot = first_occurrence_mask(cats, mask)
        terms.append(L.MaskedPooling("sum", name=f"wide_{kind}_cat_sum")(cross, multi_hot))
    terms.append(keras.layers.Dense(1, name="wide_dense")(e.dense))
    wide_logit = tf.add_n(terms)[:, 0]

    h = L.mlp(config.mlp_units, config.activation, config.dropout, name="deep_mlp")(dnn.deep_input(e))
    deep_logit = keras.layers.Dense(1, name="deep_logit")(h)[:, 0]
    # float32 output even under a mixed_float16 policy (a no-op otherwise)
    prob = keras.layers.Activation("sigmoid", dtype="float32", name="wide_deep_prob")(wide_logit + deep_logit)
    return keras.Model(inputs=e.inputs, outputs=prob, name="wide_deep")
