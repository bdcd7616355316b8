"""Serialisable Keras layers of the session recommenders (`drnn`, `gru4rec`).

Page and item ids use 0 as padding; a session's pages are in time order (the
most recent real page last) and the padding may sit anywhere, every layer
derives its own mask from the ids.  Layers are registered as
``feedrank>ClassName`` like `feedrank.train.layers`.

* `RecentPages`: the ``width`` most recent real pages, right-aligned, and the
  mask of the older pages that the history state collapses.
* `HistoryState`: the DRNN's history state, the older pages weighted by the
  dwell-time ageing factor.
* `DeepRecurrence`: ``length`` stacked recurrent layers run over the states,
  one set of weights for every state, with the "height" shortcuts.
* `FusedSoftmax`: item logits of one or several branches fused with learned
  weights; also the sampled-softmax training loss.
* `MultiHot`, `HashBucket`: the purchase-history bitmap and the user-id bucket.
"""
from __future__ import annotations

import logging
from typing import List, Sequence

import tensorflow as tf
import tf_keras as keras

log = logging.getLogger(__name__)

PAD_ID = 0
CELLS = ("simple", "gru", "lstm")
AGEING_SCOPES = ("session", "history")


@keras.utils.register_keras_serializable(package="feedrank")
class RecentPages(keras.layers.Layer):
    """``[mask [B, T], value_1 [B, T] or [B, T, D], ...]`` -> ``[recent_mask [B, k],
    older_mask [B, T], recent_1 [B, k(, D)], ...]``.

    The k = ``width`` most recent real steps of every row move, in order, to
    the right end of a [B, k] window (a row with fewer real steps is padded on
    the left, its recent_mask False there); ``older_mask`` marks the real steps
    before them.  Values must be floating point.
    """

    def __init__(self, width: int, **kwargs):
        super().__init__(**kwargs)
        if int(width) < 1:
            raise ValueError(f"RecentPages width must be >= 1, got {width}")
        self.width = int(width)

    def call(self, inputs):
        mask, *values = inputs
        m = tf.cast(mask, tf.int32)
        from_end = tf.cumsum(m, axis=1, reverse=True) * m          # 1 = most recent real step
        older = from_end > self.width
        recent = tf.logical_and(tf.cast(mask, tf.bool), tf.logical_not(older))
        slot = tf.where(recent, self.width - from_end, -1)          # one_hot(-1) is all zeros
        place = tf.one_hot(slot, self.width)                        # [B, T, k]
        recent_mask = tf.reduce_any(place > 0.5, axis=1)
        out = []
        for v in values:
            p = tf.cast(place, v.dtype)
            out.append(tf.einsum("btk,bt->bk", p, v) if v.shape.rank == 2 else tf.einsum("btk,btd->bkd", p, v))
        return [recent_mask, older] + out

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "width": self.width}


@keras.utils.register_keras_serializable(package="feedrank")
class HistoryState(keras.layers.Layer):
    """The history state: the older pages collapsed into one input.

    ``h = sum_i eps_i x_i`` over the older pages i, with the ageing factor
    ``eps_i = theta(p_i) / sum_{j >= i} theta(p_j)`` (theta = dwell time, clipped
    at 0; j runs over the older pages only with ``ageing="history"``, so the
    newest older page gets 1, as `feedrank.sessions.samples.ageing_weights`
    computes them; or over every later real page of the session so far with
    ``"session"``, so the history fades as time goes to the recent pages).
    Padding has weight 0 and a zero denominator gives 0.  Since a page's input
    is its embedding (a linear map of its one-hot vector), ``h`` is the
    embedding of the paper's weighted page vector ``sum_i eps_i p_i``.
    """

    def __init__(self, ageing: str = "history", **kwargs):
        super().__init__(**kwargs)
        if ageing not in AGEING_SCOPES:
            raise ValueError(f"HistoryState ageing must be one of {list(AGEING_SCOPES)}, got {ageing!r}")
        self.ageing = ageing

    def ageing_weights(self, dwell: tf.Tensor, mask: tf.Tensor, older: tf.Tensor) -> tf.Tensor:
        """[B, T] dwell, real-page mask and older-page mask -> [B, T] eps (0 off the older pages)."""
        theta = tf.maximum(tf.cast(dwell, tf.float32), 0.0)
        scope = tf.cast(mask if self.ageing == "session" else older, tf.float32)
        later = tf.cumsum(theta * scope, axis=1, reverse=True)      # sum_{j >= i}
        return tf.math.divide_no_nan(theta, later) * tf.cast(older, tf.float32) * tf.cast(mask, tf.float32)

    def call(self, values: tf.Tensor, dwell: tf.Tensor, mask: tf.Tensor, older: tf.Tensor) -> tf.Tensor:
        eps = tf.cast(self.ageing_weights(dwell, mask, older), values.dtype)
        return tf.reduce_sum(eps[..., None] * values, axis=1)

    def get_config(self):
        return {**super().get_config(), "ageing": self.ageing}


def _cell(kind: str, units: int, name: str) -> keras.layers.Layer:
    if kind == "simple":
        return keras.layers.SimpleRNNCell(units, name=name)
    if kind == "gru":
        return keras.layers.GRUCell(units, name=name)
    return keras.layers.LSTMCell(units, name=name)


@keras.utils.register_keras_serializable(package="feedrank")
class DeepRecurrence(keras.layers.Layer):
    """``length`` stacked recurrent layers over the states ``[B, S, D]`` (masked
    states are skipped: the state carries over them).

    Every layer has ONE cell whose weights serve every state.  The output is
    the final hidden state of the top layer followed by those of the
    ``height`` layers below it (top first): ``[B, units * (1 + height)]``, the
    "height" shortcuts from lower hidden layers to the output.
    """

    def __init__(self, units: int, length: int = 1, cell: str = "simple", height: int = 0,
                 dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if cell not in CELLS:
            raise ValueError(f"DeepRecurrence cell must be one of {list(CELLS)}, got {cell!r}")
        if units < 1 or length < 1 or not 0 <= height < length:
            raise ValueError(f"DeepRecurrence needs units >= 1, length >= 1 and 0 <= height < length, "
                             f"got units={units}, length={length}, height={height}")
        self.units, self.length, self.cell, self.height = int(units), int(length), cell, int(height)
        self.dropout = float(dropout)
        self.rnns: List[keras.layers.RNN] = [
            keras.layers.RNN(_cell(cell, self.units, f"cell{i}"), return_sequences=True, return_state=True,
                             name=f"recurrent{i}") for i in range(self.length)]
        self.drop = keras.layers.Dropout(self.dropout) if self.dropout > 0 else None

    def call(self, states: tf.Tensor, mask: tf.Tensor, training=None) -> tf.Tensor:
        x, finals = states, []
        mask = tf.cast(mask, tf.bool)
        for i, rnn in enumerate(self.rnns):
            x, *cell_states = rnn(x, mask=mask, training=training)
            finals.append(cell_states[0])                               # the hidden state h (LSTM: not c)
            if self.drop is not None and i < self.length - 1:
                x = self.drop(x, training=training)
        return tf.concat(finals[::-1][: 1 + self.height], axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "units": self.units, "length": self.length, "cell": self.cell,
                "height": self.height, "dropout": self.dropout}


@keras.utils.register_keras_serializable(package="feedrank")
class FusedSoftmax(keras.layers.Layer):
    """Item logits of several branches fused with learned weights.

    For branch vectors x_b [B, d_b]: ``logits = sum_b alpha_b (x_b W_b^T + c_b)``,
    W_b [num_items, d_b]; the fusion weights alpha (one per branch, initially 1)
    are trainable when there are two or more branches.  The padding item 0
    gets a logit of -1e9, so it is never predicted.  `sampled_loss` is the same
    model's sampled-softmax loss (`tf.nn.sampled_softmax_loss`): the fused
    logits are one projection of ``concat(alpha_b x_b)`` by ``concat(W_b)``.
    """

    def __init__(self, num_items: int, **kwargs):
        super().__init__(**kwargs)
        if int(num_items) < 2:
            raise ValueError(f"FusedSoftmax needs num_items >= 2 (0 is padding), got {num_items}")
        self.num_items = int(num_items)

    def build(self, input_shape):
        shapes = input_shape if isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple, tf.TensorShape)) else [input_shape]
        n = len(shapes)
        self.kernels = [self.add_weight(name=f"kernel{b}", shape=(self.num_items, int(s[-1])),
                                        initializer="glorot_uniform") for b, s in enumerate(shapes)]
        self.biases = [self.add_weight(name=f"bias{b}", shape=(self.num_items,), initializer="zeros")
                       for b in range(n)]
        self.fusion = self.add_weight(name="fusion", shape=(n,), initializer="ones", trainable=n > 1)
        super().build(input_shape)

    def _branches(self, inputs) -> Sequence[tf.Tensor]:
        return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]

    def call(self, inputs) -> tf.Tensor:
        xs = self._branches(inputs)
        logits = tf.add_n([self.fusion[b] * (tf.matmul(x, k, transpose_b=True) + c)
                           for b, (x, k, c) in enumerate(zip(xs, self.kernels, self.biases))])
        pad = tf.one_hot(PAD_ID, self.num_items, on_value=-1e9, off_value=0.0, dtype=logits.dtype)
        return logits + pad

    def sampled_loss(self, inputs, labels: tf.Tensor, num_sampled: int) -> tf.Tensor:
        """Per-example sampled-softmax loss [B] for item labels [B] (log-uniform sampler)."""
        xs = self._branches(inputs)
        fused_x = tf.concat([self.fusion[b] * x for b, x in enumerate(xs)], axis=-1)
        weights = tf.concat(self.kernels, axis=-1)
        bias = tf.add_n([self.fusion[b] * c for b, c in enumerate(self.biases)])
        labels = tf.reshape(tf.cast(labels, tf.int64), [-1, 1])
        return tf.nn.sampled_softmax_loss(weights, bias, labels, fused_x, num_sampled, self.num_items)

    def get_config(self):
        return {**super().get_config(), "num_items": self.num_items}


@keras.utils.register_keras_serializable(package="feedrank")
class MultiHot(keras.layers.Layer):
    """Item ids [B, P] -> the purchase bitmap [B, num_items] (1.0 where bought; padding 0 ignored)."""

    def __init__(self, num_items: int, **kwargs):
        super().__init__(**kwargs)
        self.num_items = int(num_items)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        hot = tf.reduce_max(tf.one_hot(tf.cast(ids, tf.int64), self.num_items), axis=1)
        return hot * (1.0 - tf.one_hot(PAD_ID, self.num_items))

    def get_config(self):
        return {**super().get_config(), "num_items": self.num_items}


@keras.utils.register_keras_serializable(package="feedrank")
class HashBucket(keras.layers.Layer):
    """User ids (strings) [B] -> buckets [B] in [0, buckets) (`tf.strings.to_hash_bucket_fast`)."""

    def __init__(self, buckets: int, **kwargs):
        super().__init__(**kwargs)
        self.buckets = int(buckets)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.strings.to_hash_bucket_fast(ids, self.buckets)

    def get_config(self):
        return {**super().get_config(), "buckets": self.buckets}
