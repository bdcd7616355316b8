"""Serialisable sequence layers for the deep-interest model zoo.

DIEN: `AUGRUCell` (attention-gated GRU), `BilinearAttention` (the AUGRU's
candidate-conditioned scores), `NegativeSampler` and `AuxiliaryLoss`.
BST: `RecencyPositionEmbedding` and `TransformerBlock`.
Multi-channel and Wide & Deep: `ClusterLookup`, `GatedFusion`, `HashedCross`,
`first_occurrence_mask`.

Conventions (as in `feedrank.train.layers`): sequences are [B, L, ...] with a
[B, L] boolean mask, True on real steps; padded steps never change an output.
This module imports nothing from `layers.py` (which re-exports it), so either
can be imported first.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from feedrank import features as F

_NEG_INF = -1e9


def masked_softmax(scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Softmax over the last axis restricted to ``mask``; exactly 0 on masked
    steps and all zeros when every step is masked."""
    s = tf.where(mask, scores, tf.fill(tf.shape(scores), tf.constant(_NEG_INF, scores.dtype)))
    return tf.nn.softmax(s, axis=-1) * tf.cast(mask, scores.dtype)


# --------------------------------------------------------------------------
# DIEN
# --------------------------------------------------------------------------
@keras.utils.register_keras_serializable(package="feedrank")
class AUGRUCell(keras.layers.Layer):
    """GRU with attentional update gate (DIEN, Zhou et al., AAAI 2019, eq. 6).

    Each step's input is ``[i_t, a_t]``: the interest state from the extractor
    with the attention score packed as the LAST column (tf_keras `RNN` wants a
    single tensor per step).  With gates ordered (update, reset, candidate):

        u_t = sigmoid(W_u i_t + U_u h_{t-1} + b_u)
        r_t = sigmoid(W_r i_t + U_r h_{t-1} + b_r)
        c_t = tanh(W_h i_t + r_t * (U_h h_{t-1}) + b_h)
        u'_t = a_t * u_t
        h_t = (1 - u'_t) * h_{t-1} + u'_t * c_t

    Wrap in ``keras.layers.RNN(cell)`` and pass the sequence mask: masked
    steps then keep the state, so the final state is the last real step's.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.state_size = self.units
        self.output_size = self.units

    def build(self, input_shape):
        d = int(input_shape[-1]) - 1
        u = self.units
        self.kernel = self.add_weight(name="kernel", shape=(d, 3 * u), initializer="glorot_uniform")
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=(u, 3 * u),
                                                initializer="orthogonal")
        self.bias = self.add_weight(name="bias", shape=(3 * u,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, states, training=None):
        h = states[0] if isinstance(states, (list, tuple)) else states
        x, a = inputs[:, :-1], inputs[:, -1:]
        xu, xr, xh = tf.split(tf.matmul(x, self.kernel) + self.bias, 3, axis=-1)
        hu, hr, hh = tf.split(tf.matmul(h, self.recurrent_kernel), 3, axis=-1)
        u = tf.sigmoid(xu + hu) * a
        r = tf.sigmoid(xr + hr)
        c = tf.tanh(xh + r * hh)
        h_new = (1.0 - u) * h + u * c
        return h_new, [h_new]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.utils.register_keras_serializable(package="feedrank")
class BilinearAttention(keras.layers.Layer):
    """DIEN's AUGRU attention (paper eq. 5): a_t = softmax_t(h_t W e_a) over
    unpadded steps.

    keys [B, L, Dk], query [B, Dq], mask [B, L] -> weights [B, L]; exactly 0
    on padded steps (all zeros for an all-padded history).  ``W`` is the
    kernel of a bias-free Dense applied to the query (Dq -> Dk).
    """

    def build(self, input_shape):
        self.proj = keras.layers.Dense(int(input_shape[-1]), use_bias=False, name="w")
        super().build(input_shape)

    def call(self, keys, query, seq_mask):
        s = tf.einsum("bld,bd->bl", keys, self.proj(query))
        return masked_softmax(s, seq_mask)


@keras.utils.register_keras_serializable(package="feedrank")
class NegativeSampler(keras.layers.Layer):
    """Negatives for DIEN's auxiliary loss: one post id per step, uniform over
    the post pool ids 1..pool_size-1 (the item table minus its padding row).

    The positive is excluded exactly (draw from pool_size-2 values, shift past
    the positive); ``num_tries`` draws per step then pick the first one that
    is not anywhere in the same sequence; if all collide, ``valid`` is False
    and the step is left out of the loss.  Returns (ids [B, L], valid [B, L]);
    outside training it returns zeros/False without sampling.
    """

    def __init__(self, pool_size: int, num_tries: int = 4, **kwargs):
        super().__init__(**kwargs)
        if pool_size < 3:
            raise ValueError(f"NegativeSampler needs pool_size >= 3, got {pool_size}")
        self.pool_size = int(pool_size)
        self.num_tries = int(num_tries)

    def sample(self, ids: tf.Tensor):
        ids = tf.cast(ids, tf.int64)
        shape = tf.concat([tf.shape(ids, out_type=tf.int64), [self.num_tries]], 0)
        r = tf.random.uniform(shape, 1, self.pool_size - 1, dtype=tf.int64)
        neg = r + tf.cast(r >= ids[..., None], tf.int64)             # never the positive
        in_seq = tf.reduce_any(tf.equal(neg[..., None], ids[:, None, None, :]), axis=-1)
        ok = tf.logical_not(in_seq)
        first = tf.argmax(tf.cast(ok, tf.int32), axis=-1, output_type=tf.int32)
        chosen = tf.gather(neg, first, batch_dims=2)
        return chosen, tf.reduce_any(ok, axis=-1)

    def call(self, ids, training=None):
        if training:
            return self.sample(ids)
        ids = tf.cast(ids, tf.int64)
        return tf.zeros_like(ids), tf.zeros_like(ids, dtype=tf.bool)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "num_tries": self.num_tries}


@keras.utils.register_keras_serializable(package="feedrank")
class AuxiliaryLoss(keras.layers.Layer):
    """DIEN's auxiliary loss on the interest extractor (paper eq. 3-4).

    The state h_t should tell the next click e_{t+1} (positive) from a sampled
    post (negative): a small sigmoid MLP scores [h_t, e]; the loss per pair is
    -log s(h_t, e_{t+1}) - log(1 - s(h_t, neg_{t+1})), averaged over pairs
    whose both steps are real (so padding never counts and an all-padded
    batch gives 0).  Negatives whose ``neg_valid`` is False are skipped.
    Added with ``add_loss`` (times ``weight``, the paper's alpha) only when
    training; the layer passes ``hidden`` through unchanged.

    Called on one list ``[hidden [B, L, U], pos_emb [B, L, D], neg_emb
    [B, L, D], seq_mask [B, L], neg_valid [B, L]]`` so `build` sees every
    shape and creates the net's weights up front (lazily created weights of
    nested layers are not restored by `load_model`).
    """

    def __init__(self, weight: float = 1.0, hidden_units: Sequence[int] = (100, 50), **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)
        self.hidden_units = [int(u) for u in hidden_units]
        self.net = [keras.layers.Dense(u, activation="sigmoid", name=f"aux_dense{i}")
                    for i, u in enumerate(self.hidden_units)]
        self.out = keras.layers.Dense(1, name="aux_out")

    def build(self, input_shape):
        width = int(input_shape[0][-1]) + int(input_shape[1][-1])
        for layer in self.net:
            layer.build((None, width))
            width = layer.units
        self.out.build((None, width))
        super().build(input_shape)

    def logits(self, h: tf.Tensor, e: tf.Tensor) -> tf.Tensor:
        x = tf.concat([h, e], axis=-1)
        for layer in self.net:
            x = layer(x)
        return tf.squeeze(self.out(x), axis=-1)

    def loss_value(self, hidden, pos_emb, neg_emb, seq_mask, neg_valid) -> tf.Tensor:
        """The unweighted loss: hidden [B, L, U], pos/neg [B, L, D], masks [B, L]."""
        h = hidden[:, :-1]
        pair = tf.logical_and(seq_mask[:, :-1], seq_mask[:, 1:])
        neg_pair = tf.logical_and(pair, neg_valid[:, 1:])
        pos_loss = tf.nn.softplus(-self.logits(h, pos_emb[:, 1:]))   # -log sigmoid(x)
        neg_loss = tf.nn.softplus(self.logits(h, neg_emb[:, 1:]))    # -log(1 - sigmoid(x))
        # where(), not multiply: garbage at padded steps must not leak in as NaN*0.
        zeros = tf.zeros_like(pos_loss)
        total = (tf.reduce_sum(tf.where(pair, pos_loss, zeros))
                 + tf.reduce_sum(tf.where(neg_pair, neg_loss, zeros)))
        return tf.math.divide_no_nan(total, tf.reduce_sum(tf.cast(pair, total.dtype)))

    def call(self, inputs, training=None):
        hidden, pos_emb, neg_emb, seq_mask, neg_valid = inputs
        if training and self.weight > 0:
            self.add_loss(self.weight * self.loss_value(hidden, pos_emb, neg_emb, seq_mask, neg_valid))
        return tf.identity(hidden)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight, "hidden_units": self.hidden_units}


# --------------------------------------------------------------------------
# BST
# --------------------------------------------------------------------------
def recency_positions(mask: tf.Tensor) -> tf.Tensor:
    """[B, L] bool -> [B, L] int32: the number of real steps strictly after each
    step.  The last real step gets 0, the one before 1, ...; independent of
    where the padding sits."""
    m = tf.cast(mask, tf.int32)
    return tf.cumsum(m, axis=1, reverse=True, exclusive=True)


@keras.utils.register_keras_serializable(package="feedrank")
class RecencyPositionEmbedding(keras.layers.Layer):
    """Learned position embeddings by recency, concatenated (or added) to [B, L, D].

    BST (Chen et al., 2019) embeds each behaviour's position relative to the
    candidate; with the candidate appended as the last real step it gets
    position 0, the most recent click 1, and so on.  Counting recency over
    real steps only makes the positions independent of padding.
    """

    def __init__(self, max_position: int, dim: int, mode: str = "concat", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("concat", "add"):
            raise ValueError(f"mode must be 'concat' or 'add', got {mode!r}")
        self.max_position = int(max_position)
        self.dim = int(dim)
        self.mode = mode

    def build(self, input_shape):
        self.table = self.add_weight(name="positions", shape=(self.max_position, self.dim),
                                     initializer=keras.initializers.RandomNormal(stddev=0.05))
        super().build(input_shape)

    def call(self, values, seq_mask):
        pos = tf.minimum(recency_positions(seq_mask), self.max_position - 1)
        p = tf.gather(self.table, pos)
        if self.mode == "add":
            return values + p
        return tf.concat([values, p], axis=-1)

    def get_config(self):
        return {**super().get_config(), "max_position": self.max_position, "dim": self.dim,
                "mode": self.mode}


@keras.utils.register_keras_serializable(package="feedrank")
class TransformerBlock(keras.layers.Layer):
    """One post-LN Transformer encoder layer as in BST (Vaswani et al., 2017):
    S' = LN(S + Dropout(MHA(S))), F = LN(S' + Dropout(FFN(S'))), FFN with
    LeakyReLU.  Padded steps are masked as keys (weight exactly 0); their own
    rows are computed but never read by a real step."""

    def __init__(self, num_heads: int = 2, ff_units: int | None = None, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.ff_units = None if ff_units is None else int(ff_units)
        self.dropout = float(dropout)

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.mha = keras.layers.MultiHeadAttention(self.num_heads, max(1, -(-d // self.num_heads)),
                                                   dropout=self.dropout, name="mha")
        # Build the attention's variables now: created lazily on first call,
        # a nested MultiHeadAttention is not restored by `load_model`.
        shape = tf.TensorShape(input_shape)
        self.mha._build_from_signature(shape, shape)
        self.ln1 = keras.layers.LayerNormalization(name="ln1")
        self.ln2 = keras.layers.LayerNormalization(name="ln2")
        self.ff1 = keras.layers.Dense(self.ff_units or d, name="ff1")
        self.ff2 = keras.layers.Dense(d, name="ff2")
        self.drop = keras.layers.Dropout(self.dropout)
        super().build(input_shape)

    @staticmethod
    def attention_mask(seq_mask: tf.Tensor) -> tf.Tensor:
        """[B, L] -> [B, L, L]: every query may attend to the real keys only."""
        n = tf.shape(seq_mask)[1]
        return tf.broadcast_to(seq_mask[:, None, :], tf.stack([tf.shape(seq_mask)[0], n, n]))

    def attention_scores(self, x, seq_mask):
        """[B, heads, L, L] attention weights (for tests)."""
        _, w = self.mha(x, x, attention_mask=self.attention_mask(seq_mask),
                        return_attention_scores=True)
        return w

    def call(self, x, seq_mask, training=None):
        a = self.mha(x, x, attention_mask=self.attention_mask(seq_mask), training=training)
        x = self.ln1(x + self.drop(a, training=training))
        f = self.ff2(tf.nn.leaky_relu(self.ff1(x)))
        return self.ln2(x + self.drop(f, training=training))

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "ff_units": self.ff_units,
                "dropout": self.dropout}


# --------------------------------------------------------------------------
# Multi-channel and Wide & Deep
# --------------------------------------------------------------------------
@keras.utils.register_keras_serializable(package="feedrank")
class ClusterLookup(keras.layers.Layer):
    """Non-trainable map item idx -> cluster idx (0 stays padding).

    The table is a non-trainable int64 weight, so it travels with the
    checkpoint, not the config; set it with ``set_table`` after building
    (see `cluster_table`).
    """

    def __init__(self, num_items: int, **kwargs):
        super().__init__(**kwargs)
        self.num_items = int(num_items)

    def build(self, input_shape):
        self.table = self.add_weight(name="item_to_cluster", shape=(self.num_items,), dtype=tf.int64,
                                     initializer="zeros", trainable=False)
        super().build(input_shape)

    def set_table(self, table: np.ndarray) -> None:
        if not self.built:
            self.build(None)
        self.table.assign(np.asarray(table, dtype=np.int64))

    def call(self, ids):
        return tf.gather(self.table, tf.cast(ids, tf.int64))

    def get_config(self):
        return {**super().get_config(), "num_items": self.num_items}


def cluster_table(labels: np.ndarray, num_items: int) -> tuple[np.ndarray, int]:
    """Cluster labels per item-table row (0..K-1, or -1 for 'no vector') ->
    (table, embedding rows): row 0 (padding) -> 0, label k -> k + 1, -1 -> K + 1."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.shape[0] != num_items:
        raise ValueError(f"item_clusters has {labels.shape[0]} rows; the item table has {num_items}")
    real = np.delete(labels, F.PAD_ID)
    if real.min(initial=0) < -1:
        raise ValueError("item_clusters labels must be >= -1")
    k = int(real.max(initial=-1)) + 1
    table = np.where(labels >= 0, labels + 1, k + 1)
    table[F.PAD_ID] = 0
    return table, k + 2


def hash_clusters(num_items: int, num_clusters: int) -> np.ndarray:
    """Deterministic fallback labels: a multiplicative hash of the item idx mod K."""
    idx = np.arange(num_items, dtype=np.uint64)
    return ((idx * np.uint64(2654435761)) % np.uint64(2 ** 32) % np.uint64(num_clusters)).astype(np.int64)


@keras.utils.register_keras_serializable(package="feedrank")
class GatedFusion(keras.layers.Layer):
    """Fuses channel vectors: each projected to ``units``, scaled by a sigmoid
    gate computed from all channels, concatenated: [B, n * units]."""

    def __init__(self, units: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        n = len(input_shape)
        self.proj = [keras.layers.Dense(self.units, name=f"proj{i}") for i in range(n)]
        self.gate = keras.layers.Dense(n, activation="sigmoid", name="gate")
        super().build(input_shape)

    def call(self, channels):
        g = self.gate(tf.concat(channels, axis=-1))
        return tf.concat([g[:, i:i + 1] * p(c) for i, (p, c) in enumerate(zip(self.proj, channels))], -1)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


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


__all__ = [
    "masked_softmax", "AUGRUCell", "BilinearAttention", "NegativeSampler", "AuxiliaryLoss",
    "recency_positions", "RecencyPositionEmbedding", "TransformerBlock", "ClusterLookup",
    "cluster_table", "hash_clusters", "GatedFusion", "HashedCross", "first_occurrence_mask",
]
