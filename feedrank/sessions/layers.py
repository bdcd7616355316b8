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
* `CatalogueHead`: the next add-to-cart's and the next page's log-probabilities over
  the catalogue, tied to the page embeddings, with a repeat (copy) path.
* `MultiHot`, `HashBucket`: the purchase-history bitmap and the user-id bucket.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence

import numpy as np
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


CART, NEXT = "cart", "next"
TASKS = (CART, NEXT)
MAX_AGE = 20          # the repeat path's age biases: pages 0..19 back, and one for all older
RECENCY_INIT = 0.75   # the age biases' start: the weight of a page one step older, relative
_NEG = -1e9


@keras.utils.register_keras_serializable(package="feedrank")
class CatalogueHead(keras.layers.Layer):
    """Log-probabilities over the catalogue for both tasks: the next add-to-cart (``cart``,
    item pages only) and the next page (``next``), from the encoder's branch vectors.

    The output embeddings are the input page embeddings E [V, D] (tied).  For task t and the
    branch vectors concatenated into x [B, d]:

    * explore: logits ``e_t = (x Q_t) E^T + c_t`` over the catalogue;
    * repeat (RepeatNet, Ren et al. AAAI 2019, ``repeat=True``): attention over the session's
      own pages ``a_tj = softmax_j((x R_t) . E[page_j] + u_t[age_j] + v_t log(1 + dwell_j))``
      (age 0 the most recent page, ages from ``MAX_AGE`` on share one bias; the learned age
      biases u_t start at ``age * log(RECENCY_INIT)``, so at initialisation the attention ranks
      the session's pages as the recently-viewed heuristic with decay ``RECENCY_INIT`` does, and
      training moves them from there),
      ``p_rep(v) = sum_{j: page_j = v} a_tj``,
      mixed in by a gate ``g_t = sigmoid(x w_t + b_t)`` (0 when the session shows no page the task
      can name): ``p_t = g_t p_rep + (1 - g_t) softmax(e_t)``.

    The output is ``log p_t`` (without ``repeat``: ``e_t``); ids the task cannot name (0 the
    padding, the out-of-vocabulary id, and for ``cart`` every non-item page) are at -1e9, so a
    softmax of the output is the task's distribution and a top k never names them.  One linear
    map of all branches into the query fuses the DRNN with the FNN (the paper's learned
    weighted sum of the two networks' outputs is the special case of a block-diagonal map).
    """

    def __init__(self, num_pages: int, dim: int, item_mask: Sequence[bool], repeat: bool = True, **kwargs):
        super().__init__(**kwargs)
        mask = [bool(v) for v in item_mask]
        if int(num_pages) < 3 or len(mask) != int(num_pages):
            raise ValueError(f"CatalogueHead needs num_pages >= 3 (padding, a page, out of vocabulary) and one "
                             f"item flag per id, got num_pages={num_pages} and {len(mask)} flags")
        if not any(mask[1:-1]):
            raise ValueError("CatalogueHead: no id is an item page")
        self.num_pages, self.dim, self.item_mask, self.repeat = int(num_pages), int(dim), mask, bool(repeat)
        pages = [False] + [True] * (self.num_pages - 2) + [False]
        self._allowed = {CART: tf.constant([m and p for m, p in zip(mask, pages)]), NEXT: tf.constant(pages)}

    def build(self, input_shape):
        shapes = input_shape if isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple, tf.TensorShape)) else [input_shape]
        d, dim = sum(int(s[-1]) for s in shapes), self.dim
        self.query = {t: self.add_weight(name=f"{t}_query", shape=(d, dim), initializer="glorot_uniform")
                      for t in TASKS}
        self.bias = {t: self.add_weight(name=f"{t}_bias", shape=(self.num_pages,), initializer="zeros")
                     for t in TASKS}
        if self.repeat:
            self.repeat_query = {t: self.add_weight(name=f"{t}_repeat_query", shape=(d, dim),
                                                    initializer="glorot_uniform") for t in TASKS}
            self.gate = {t: self.add_weight(name=f"{t}_gate", shape=(d, 1), initializer="zeros") for t in TASKS}
            self.gate_bias = {t: self.add_weight(name=f"{t}_gate_bias", shape=(1,), initializer="zeros")
                              for t in TASKS}
            recency = keras.initializers.Constant(np.arange(MAX_AGE + 1) * np.log(RECENCY_INIT))
            self.age_bias = {t: self.add_weight(name=f"{t}_age_bias", shape=(MAX_AGE + 1,), initializer=recency)
                             for t in TASKS}
            self.dwell_weight = {t: self.add_weight(name=f"{t}_dwell_weight", shape=(), initializer="zeros")
                                 for t in TASKS}
        super().build(input_shape)

    def _x(self, inputs) -> tf.Tensor:
        xs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        return tf.concat(xs, axis=-1) if len(xs) > 1 else xs[0]

    def _repeat(self, t: str, x: tf.Tensor, embeddings: tf.Tensor, pages: tf.Tensor, dwell: Optional[tf.Tensor]):
        """(attention [B, T] over the session's pages the task can name, gate g [B, 1])."""
        ok = tf.logical_and(tf.gather(self._allowed[t], pages), pages > 0)                  # [B, T]
        real = tf.cast(pages > 0, tf.int32)
        age = tf.minimum(tf.cumsum(real, axis=1, reverse=True) * real - 1, MAX_AGE)        # 0: the newest page
        score = tf.einsum("bd,btd->bt", tf.matmul(x, self.repeat_query[t]), tf.gather(embeddings, pages))
        score += tf.gather(self.age_bias[t], tf.maximum(age, 0))
        if dwell is not None:
            score += self.dwell_weight[t] * tf.math.log1p(tf.maximum(tf.cast(dwell, score.dtype), 0.0))
        attn = tf.nn.softmax(tf.where(ok, score, _NEG), axis=1) * tf.cast(ok, score.dtype)
        any_ok = tf.cast(tf.reduce_any(ok, axis=1, keepdims=True), x.dtype)
        return attn, tf.sigmoid(tf.matmul(x, self.gate[t]) + self.gate_bias[t]) * any_ok

    @staticmethod
    def _mix(g: tf.Tensor, log_explore: tf.Tensor, p_repeat: tf.Tensor) -> tf.Tensor:
        """log(g p_repeat + (1 - g) exp(log_explore)), stably."""
        explore = tf.math.log1p(-tf.minimum(g, 1 - 1e-6)) + log_explore
        again = tf.math.log(tf.maximum(g, 1e-30)) + tf.math.log(tf.maximum(p_repeat, 1e-30))
        return tf.reduce_logsumexp(tf.stack([explore, again]), axis=0)

    def call(self, inputs, embeddings: tf.Tensor, pages: tf.Tensor, tasks: Sequence[str] | None = None,
             dwell: Optional[tf.Tensor] = None):
        tasks = tuple(tasks) if tasks else TASKS      # (Keras may pass an omitted argument as None)
        x = self._x(inputs)
        pages = tf.cast(pages, tf.int64)
        out = {}
        for t in tasks:
            allowed = self._allowed[t]
            logits = tf.matmul(tf.matmul(x, self.query[t]), embeddings, transpose_b=True) + self.bias[t]
            logits = tf.where(allowed[None, :], logits, _NEG)
            if not self.repeat:
                out[t] = logits
                continue
            attn, g = self._repeat(t, x, embeddings, pages, dwell)
            batch = tf.shape(pages, out_type=tf.int64)
            rows = tf.broadcast_to(tf.range(batch[0])[:, None], batch)
            p_rep = tf.scatter_nd(tf.reshape(tf.stack([rows, pages], -1), [-1, 2]), tf.reshape(attn, [-1]),
                                  tf.stack([batch[0], tf.constant(self.num_pages, tf.int64)]))
            mixed = self._mix(g[:, :1], tf.nn.log_softmax(logits, axis=-1), p_rep)
            out[t] = tf.where(allowed[None, :], mixed, _NEG)
        return out

    def sampled_log_prob(self, inputs, embeddings: tf.Tensor, pages: tf.Tensor, task: str, targets: tf.Tensor,
                         num_sampled: int, dwell: Optional[tf.Tensor] = None) -> tf.Tensor:
        """[B] the task's log-probability of ``targets`` with the explore softmax estimated on
        ``num_sampled`` ids drawn uniformly from the catalogue (sampled softmax, Jean et al.
        ACL 2015; the uniform proposal's correction is a constant and cancels), the repeat path
        exact.  A drawn id equal to the row's target, or one the task cannot name, is left out."""
        x = self._x(inputs)
        pages, targets = tf.cast(pages, tf.int64), tf.cast(targets, tf.int64)
        q = tf.matmul(x, self.query[task])                                                   # [B, D]
        target_logit = tf.reduce_sum(q * tf.gather(embeddings, targets), -1) + tf.gather(self.bias[task], targets)
        drawn, _, _ = tf.random.uniform_candidate_sampler(
            tf.reshape(targets, [-1, 1]), 1, num_sampled, True, self.num_pages)
        logits = tf.matmul(q, tf.gather(embeddings, drawn), transpose_b=True) + tf.gather(self.bias[task], drawn)
        keep = tf.logical_and(tf.gather(self._allowed[task], drawn)[None, :],
                              tf.not_equal(drawn[None, :], targets[:, None]))
        logits = tf.where(keep, logits, _NEG)
        log_explore = target_logit - tf.reduce_logsumexp(tf.concat([target_logit[:, None], logits], 1), axis=1)
        if not self.repeat:
            return log_explore
        attn, g = self._repeat(task, x, embeddings, pages, dwell)
        p_target = tf.reduce_sum(attn * tf.cast(tf.equal(pages, targets[:, None]), attn.dtype), axis=1)
        return self._mix(g[:, 0], log_explore, p_target)

    def get_config(self):
        return {**super().get_config(), "num_pages": self.num_pages, "dim": self.dim, "item_mask": self.item_mask,
                "repeat": self.repeat}


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
