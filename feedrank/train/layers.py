"""Serialisable Keras layers shared by several families: masking, pooling,
the MLP, target attention and the in-graph match features.

All sequence layers take ids where `features.PAD_ID` (0) is padding and
derive their own mask, so padding never changes an output.  A layer that one
family alone uses lives in that family's module (DIEN's AUGRU in
`families/dien.py`, BST's Transformer block in `families/bst.py`, ...).
Every layer is registered as ``feedrank>ClassName``: a saved model finds its
layers by that name, whichever module defines them, once
`feedrank.train.families` is imported.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf
import tf_keras as keras

from feedrank import features as F


def padding_mask(ids: tf.Tensor) -> tf.Tensor:
    """[B, L] ids -> [B, L] bool, True where a real (non-padding) id sits."""
    return tf.not_equal(ids, F.PAD_ID)


def masked_softmax(scores: tf.Tensor, mask: tf.Tensor, axis: int = -1) -> tf.Tensor:
    """Softmax of ``scores`` over ``axis`` restricted to ``mask`` (broadcast to
    the scores' shape): exactly 0 on masked steps, and a zero vector where every
    step is masked.

    Computed in float32 whatever the scores' dtype, then cast back: under the
    ``mixed_float16`` policy a -1e9 mask value is -inf in float16, and the
    softmax of a row of -inf (a user with no history) is NaN.
    """
    s = tf.cast(scores, tf.float32)
    # Broadcast by an elementwise op, not tf.broadcast_to(tf.shape(s)): the static shape
    # (a batch of 1 in the user-side-once serving graph) must survive for recurrent layers.
    m = tf.logical_and(tf.cast(mask, tf.bool), tf.ones_like(s, dtype=tf.bool))
    s = tf.where(m, s, tf.constant(-1e9, tf.float32))
    w = tf.nn.softmax(s, axis=axis) * tf.cast(m, tf.float32)
    return tf.cast(w, scores.dtype)


@keras.utils.register_keras_serializable(package="feedrank")
class TrimPadding(keras.layers.Layer):
    """Drops the trailing steps that are padding in EVERY row of the batch.

    ``[mask [B, L], seq_1 [B, L, ...], ...] -> the same list cut to [B, n]``,
    n = 1 + the last step index that is real in some row (at least 1, so an
    all-padded batch keeps one masked step).  Only all-padding columns go, so
    every output that masks its padding is unchanged; a recurrent layer then
    runs n steps instead of L (users' histories are short: in the quality
    data the batch's longest click history averages 38 of 50 steps).
    """

    def call(self, inputs):
        mask, *seqs = inputs
        steps = tf.range(1, tf.shape(mask)[1] + 1)
        n = tf.maximum(tf.reduce_max(tf.where(tf.reduce_any(mask, axis=0), steps, 0)), 1)
        return [mask[:, :n]] + [s[:, :n] for s in seqs]

    def compute_mask(self, inputs, mask=None):
        return None


@keras.utils.register_keras_serializable(package="feedrank")
class MaskedPooling(keras.layers.Layer):
    """Mean or sum of [B, L, D] over the unpadded steps (zeros when all padded)."""

    def __init__(self, mode: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("mean", "sum"):
            raise ValueError(f"MaskedPooling mode must be 'mean' or 'sum', got {mode!r}")
        self.mode = mode

    def call(self, values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        m = tf.cast(mask, values.dtype)[..., None]
        total = tf.reduce_sum(values * m, axis=1)
        if self.mode == "sum":
            return total
        return tf.math.divide_no_nan(total, tf.reduce_sum(m, axis=1))

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.utils.register_keras_serializable(package="feedrank")
class Dice(keras.layers.Layer):
    """Data-adaptive activation from the DIN paper (Zhou et al., KDD 2018).

    p(s) = sigmoid(BN(s)); f(s) = p * s + (1 - p) * alpha * s.
    """

    def __init__(self, epsilon: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.bn = keras.layers.BatchNormalization(center=False, scale=False, epsilon=self.epsilon)
        self.alpha = self.add_weight(name="alpha", shape=(input_shape[-1],),
                                     initializer="zeros", trainable=True)
        super().build(input_shape)

    def call(self, x: tf.Tensor, training=None) -> tf.Tensor:
        p = tf.sigmoid(self.bn(x, training=training))
        return p * x + (1.0 - p) * self.alpha * x

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def mlp(units: Sequence[int], activation: str, dropout: float, name: str) -> keras.Sequential:
    """Dense stack; ``activation`` is a Keras name or ``"dice"``/``"prelu"``."""
    layers = []
    for i, u in enumerate(units):
        layers.append(keras.layers.Dense(u, name=f"{name}_dense{i}"))
        if activation == "dice":
            layers.append(Dice(name=f"{name}_dice{i}"))
        elif activation == "prelu":
            layers.append(keras.layers.PReLU(name=f"{name}_prelu{i}"))
        else:
            layers.append(keras.layers.Activation(activation, name=f"{name}_act{i}"))
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout, name=f"{name}_drop{i}"))
    return keras.Sequential(layers, name=name)


@keras.utils.register_keras_serializable(package="feedrank")
class TargetAttention(keras.layers.Layer):
    """DIN's local activation unit: candidate-conditioned weights over the history.

    score_t = MLP([q, k_t, q - k_t, q * k_t]); weights are the raw scores
    (no softmax, as in the paper, so the interest's intensity is kept) with
    padded steps set to exactly zero.  Returns sum_t w_t k_t, shape [B, D].
    Set ``softmax=True`` for normalised weights (`masked_softmax`: float32,
    all zeros for an all-padded history).
    """

    def __init__(self, hidden_units: Sequence[int] = (80, 40), activation: str = "sigmoid",
                 softmax: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = list(hidden_units)
        self.activation = activation
        self.softmax = softmax

    def build(self, input_shape):
        self.score_mlp = mlp(self.hidden_units, self.activation, 0.0, name="att_mlp")
        self.score_out = keras.layers.Dense(1, name="att_out")
        super().build(input_shape)

    def scores(self, query: tf.Tensor, keys: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """[B, D], [B, L, D], [B, L] -> [B, L] attention weights (0 on padding)."""
        q = tf.broadcast_to(query[:, None, :], tf.shape(keys))
        x = tf.concat([q, keys, q - keys, q * keys], axis=-1)
        s = tf.squeeze(self.score_out(self.score_mlp(x)), axis=-1)
        if self.softmax:
            return masked_softmax(s, mask)
        return s * tf.cast(mask, s.dtype)

    def call(self, query: tf.Tensor, keys: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        w = self.scores(query, keys, mask)
        return tf.reduce_sum(w[..., None] * keys, axis=1)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "activation": self.activation, "softmax": self.softmax}


@keras.utils.register_keras_serializable(package="feedrank")
class MatchFeatures(keras.layers.Layer):
    """Hand-built user x post match features, computed in-graph from ids.

    For a candidate id [B] and a history of ids [B, L] (`PAD_ID` is padding,
    the most recent real entry last) returns [B, 3]: the share of the history
    equal to the candidate, the same share over the ``recent`` most recent
    entries, and 1.0 when the most recent entry matches.  These are the
    aggregates a production GBDT is built on (`feedrank.train.lightgbm_baseline` computes
    them from the raw examples); inside the model they travel with the
    SavedModel, so serving needs no extra feature code.  Where the padding
    sits (left or right) does not matter: recency counts real entries only.
    """

    def __init__(self, recent: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.recent = int(recent)

    def call(self, candidate: tf.Tensor, history: tf.Tensor) -> tf.Tensor:
        mask = tf.cast(padding_mask(history), tf.float32)
        hit = tf.cast(tf.equal(history, candidate[:, None]), tf.float32) * mask
        from_end = tf.cumsum(mask, axis=1, reverse=True) * mask      # 1 = most recent
        recent = tf.cast((from_end >= 1.0) & (from_end <= float(self.recent)), tf.float32)
        last = tf.cast(tf.equal(from_end, 1.0), tf.float32)
        share = tf.math.divide_no_nan(tf.reduce_sum(hit, 1), tf.reduce_sum(mask, 1))
        recent_share = tf.math.divide_no_nan(tf.reduce_sum(hit * recent, 1), tf.reduce_sum(recent, 1))
        return tf.stack([share, recent_share, tf.reduce_sum(hit * last, 1)], axis=-1)

    def get_config(self):
        return {**super().get_config(), "recent": self.recent}


@keras.utils.register_keras_serializable(package="feedrank")
class MatchRecency(keras.layers.Layer):
    """How recently the user's history met the candidate, from the event ages.

    For a candidate id [B], a history of ids [B, L] and its age ids [B, L] (the
    fixed, ordered age vocabulary: bucket b has id b + 1, `features.AGE_VOCAB`;
    0 padding, ``buckets + 1`` OOV) returns [B]: ``(buckets - b) / buckets`` for
    the youngest matching entry's bucket b (1.0 under a minute ago, 1/13 at 30
    days or more), 0.0 when no entry matches or its age is OOV.  With the post id
    it says when the user last clicked (viewed, converted on) this post; with the
    category, this category.
    """

    def __init__(self, buckets: int, **kwargs):
        super().__init__(**kwargs)
        self.buckets = int(buckets)

    def call(self, candidate: tf.Tensor, history: tf.Tensor, ages: tf.Tensor) -> tf.Tensor:
        hit = tf.equal(history, candidate[:, None]) & padding_mask(history)
        bucket = tf.cast(ages, tf.float32) - 1.0
        valid = hit & (bucket >= 0.0) & (bucket < float(self.buckets))
        score = tf.where(valid, (float(self.buckets) - bucket) / float(self.buckets), 0.0)
        return tf.reduce_max(score, axis=1)

    def get_config(self):
        return {**super().get_config(), "buckets": self.buckets}


@keras.utils.register_keras_serializable(package="feedrank")
class IdDropout(keras.layers.Layer):
    """Id dropout: in training, a random share ``rate`` of the vocabulary's ids is
    mapped to the OOV buckets, so the buckets an unseen id lands in at serving
    time are trained.

    Inputs are a list of int64 id tensors of one vocabulary (the candidate and
    every history sequence that shares its table) as `preprocessing` writes
    them: 0 padding, 1..V entries, V+1..V+num_oov OOV buckets (``vocab_size`` =
    1 + V + num_oov).  Each training step draws which entries drop, once for
    all inputs, so an id dropped as the candidate is dropped in the histories
    too (as an unseen post is at serving); a dropped id ``i`` goes to bucket
    ``V + 1 + i mod num_oov``.  Padding and OOV ids are left alone; outside
    training the layer is the identity.
    """

    def __init__(self, vocab_size: int, num_oov: int, rate: float, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"IdDropout rate must be in [0, 1), got {rate}")
        if num_oov < 1 or vocab_size < num_oov + 2:
            raise ValueError(f"IdDropout needs num_oov >= 1 and vocab_size >= num_oov + 2, got "
                             f"{vocab_size}, {num_oov}")
        self.vocab_size, self.num_oov, self.rate = int(vocab_size), int(num_oov), float(rate)

    def call(self, ids, training=None):
        if not training or self.rate == 0.0:
            return [tf.identity(x) for x in ids]
        n_vocab = self.vocab_size - 1 - self.num_oov          # V
        drop = tf.random.uniform([self.vocab_size]) < self.rate
        out = []
        for x in ids:
            entry = (x >= 1) & (x <= n_vocab)
            hit = tf.gather(drop, x) & entry
            bucket = n_vocab + 1 + tf.math.floormod(x, self.num_oov)
            out.append(tf.where(hit, bucket, x))
        return out

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "num_oov": self.num_oov, "rate": self.rate}
