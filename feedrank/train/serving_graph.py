"""Request-level scoring: the user's side is computed once per request.

A ranking request carries one user (leading dimension 1) and N candidates.
`RequestScorer` scores it without copying the user's side N times:

* the raw user features go through the tf.Transform layer at batch 1 and
  the candidate features at batch N, in one call (every output of the
  transform graph is computed per feature, so mixed batch sizes are fine);
* the crosses compare the batch-1 user tensors with the N candidates by
  broadcasting (`transform.crosses.cross_features` broadcasts as written);
* the trained Keras model's functional graph is re-run node by node: a layer
  whose inputs are all user-side runs once at batch 1 (embedding lookups of
  the histories, pooling, DIEN's interest GRU, ...); where a layer first meets
  a candidate-side tensor, its batch-1 inputs are broadcast to N rows;
* with ``fold=True`` a target-attention layer (DIN's activation unit) whose
  query is the candidate and whose keys are the user's history is computed
  with its first Dense layer folded: for ``W = [W_q; W_k; W_d; W_p]`` acting
  on ``[q, k, q - k, q * k]``,
  ``x W = q (W_q + W_d) + k (W_k - W_d) + (q * k) W_p``.
  The key term and ``k ⊗ W_p`` are computed once per request; per candidate
  only ``q (W_q + W_d)`` and one matrix product with ``k ⊗ W_p`` remain.

Broadcasting a batch-1 tensor to N identical rows before a layer gives the
same result as running that layer on N identical rows for every layer that
works row by row, and for the batch-wide trims (`layers.TrimPadding`), whose
result over identical rows is the result over one row.  The tests compare
the scores with the unshared model for several families.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Mapping

import tensorflow as tf

from feedrank import features as F
from feedrank.transform.crosses import cross_features

log = logging.getLogger(__name__)


def strip_padding(x: tf.Tensor, max_len: int) -> tf.RaggedTensor:
    """Rows of a ``""``-padded string matrix as ragged rows without padding.

    Empty strings are dropped wherever they sit (left, right or in between),
    the remaining values keep their order (most recent last) and only the
    last ``max_len`` of each row are kept.
    """
    return tf.ragged.boolean_mask(x, tf.not_equal(x, ""))[:, -max_len:]


def user_input_names(spec: F.FeatureSpec) -> frozenset:
    """Transformed model inputs of ``spec`` that depend on the user's side only."""
    names = {F.idx(f.name) for f in spec.id_features if f.side == "user"}
    names |= {F.idx(s.name) for s in spec.seq_features}
    names |= {F.dense(d.name) for d in spec.dense_features if d.side == "user"}
    names |= {F.idx(b.name) for b in spec.bag_features if b.side == "user"}
    return frozenset(names)


def shared_raw_features(request: Mapping[str, tf.Tensor], *, spec: F.FeatureSpec) -> Dict[str, tf.Tensor]:
    """The raw features of ``spec`` in a request whose user side has exactly one row.

    User features keep batch 1 (sequences as sparse [1, <=max_len]); the
    candidate features and the two crosses have batch N.
    """
    raw: Dict[str, tf.Tensor] = {}
    click_categories = None
    for s in spec.seq_features:
        ragged = strip_padding(request[s.name], s.max_len)
        raw[s.name] = ragged.to_sparse()
        if s.name == F.CLICK_CATEGORIES.name:
            click_categories = ragged.to_tensor(default_value="")
    for b in spec.bag_features:   # declared token bags: ""-padded matrices, user [1, T] or candidates [N, T]
        raw[b.name] = strip_padding(request[b.name], b.max_len).to_sparse()
    for name in spec.features_of_side("user"):
        raw.setdefault(name, request[name])
    for name in spec.features_of_side("candidate"):
        raw.setdefault(name, request[name])
    raw.update(cross_features(raw[F.USER_REGION_ID.name], raw[F.REGION_ID.name],
                              click_categories, raw[F.CATEGORY_ID.name]))
    return raw


def user_rows(request: Mapping[str, tf.Tensor], *, spec: F.FeatureSpec) -> tf.Tensor:
    """Scalar bool: True when every user-side feature of ``spec`` in ``request`` has one row."""
    rows = [tf.shape(request[name])[0] for name in spec.features_of_side("user")]
    return tf.reduce_all(tf.equal(tf.stack(rows), 1))


def _broadcast_rows(x, n: tf.Tensor):
    """[1, ...] -> [n, ...] (a no-op view for anything that is not a tensor)."""
    if not isinstance(x, tf.Tensor):
        return x
    return tf.broadcast_to(x, tf.concat([tf.reshape(n, [1]), tf.shape(x)[1:]], axis=0))


def _is_target_attention(layer) -> bool:
    return all(hasattr(layer, a) for a in ("score_mlp", "score_out", "softmax")) and \
        type(layer).__name__ == "TargetAttention"


def folded_target_attention(layer, query: tf.Tensor, keys: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """`layers.TargetAttention` for N queries against ONE history, first layer folded.

    query [N, D], keys [1, L, D], mask [1, L] -> [N, D], equal (up to float
    rounding) to ``layer(query, broadcast(keys), broadcast(mask))``.
    """
    first, *rest = layer.score_mlp.layers
    w_q, w_k, w_d, w_p = tf.split(first.kernel, 4, axis=0)            # each [D, H]
    k = keys[0]                                                        # [L, D]
    d, h = tf.shape(w_p)[0], tf.shape(w_p)[1]
    length, n = tf.shape(k)[0], tf.shape(query)[0]
    key_term = tf.matmul(k, w_k - w_d)                                 # [L, H]   once
    if first.use_bias:
        key_term += first.bias
    k_wp = tf.reshape(tf.transpose(k[:, :, None] * w_p[None], [1, 0, 2]), [d, length * h])  # once
    cross = tf.reshape(tf.matmul(query, k_wp), [n, length, h])         # [N, L, H]
    x = cross + key_term[None] + tf.matmul(query, w_q + w_d)[:, None, :]
    if first.activation is not None:
        x = first.activation(x)
    for sub in rest:
        x = sub(x, training=False) if getattr(sub, "_expects_training_arg", False) else sub(x)
    s = tf.squeeze(layer.score_out(x), axis=-1)                       # [N, L]
    if layer.softmax:
        s = tf.where(mask, s, tf.fill(tf.shape(s), tf.constant(-1e9, s.dtype)))
        s = tf.nn.softmax(s, axis=-1)
    s = s * tf.cast(mask, s.dtype)
    return tf.matmul(s, k)                                             # [N, D]


class SharedUserGraph:
    """Runs a functional Keras model with its user-side inputs at batch 1.

    Call with the transformed inputs (user-side at batch 1, the rest at batch
    N) and ``n``; returns the model's output at batch N.  ``spec`` is the
    feature contract the model was built with (which inputs are user-side,
    `user_input_names`).  ``fold`` enables `folded_target_attention` for
    target-attention nodes whose keys are user-side and whose query is not.
    """

    def __init__(self, model, fold: bool = True, *, spec: F.FeatureSpec):
        if not hasattr(model, "_nodes_by_depth"):
            raise TypeError(f"SharedUserGraph needs a functional Keras model, got {type(model).__name__}")
        self.model = model
        self.fold = fold
        self.inputs = {t._keras_history.layer.name: t for t in model.inputs}
        user = user_input_names(spec)
        self.user_inputs = {name for name in self.inputs if name in user}
        self._plan: List = []   # (node, mode) in execution order
        self._plan_graph()

    def _plan_graph(self) -> None:
        side = {str(id(t)): ("user" if name in self.user_inputs else "cand")
                for name, t in self.inputs.items()}
        counts = {"user": 0, "cand": 0, "fold": 0}
        for depth in sorted(self.model._nodes_by_depth, reverse=True):
            for node in self.model._nodes_by_depth[depth]:
                if node.is_input:
                    continue
                in_sides = [side[i] for i in node.flat_input_ids]
                if in_sides and all(s == "user" for s in in_sides):
                    mode = "user"
                elif self.fold and _is_target_attention(node.layer) and \
                        [side[i] for i in node.flat_input_ids] == ["cand", "user", "user"]:
                    mode = "fold"
                else:
                    mode = "cand"
                counts[mode] += 1
                for o in node.flat_output_ids:
                    side[o] = "user" if mode == "user" else "cand"
                self._plan.append((node, mode))
        self._output_ids = [str(id(t)) for t in self.model.outputs]
        log.info("%s: %d layer calls once per request, %d per candidate, %d folded attentions",
                 self.model.name, counts["user"], counts["cand"], counts["fold"])

    def __call__(self, inputs: Mapping[str, tf.Tensor], n: tf.Tensor) -> tf.Tensor:
        usage = self.model._tensor_usage_count
        tensors: Dict[str, list] = {}
        user_ids = set()
        keep = []   # keeps every tensor alive so its id() stays unique
        for name, ref in self.inputs.items():
            x = inputs[name]
            if name in self.user_inputs:
                user_ids.add(id(x))
            keep.append(x)
            tensors[str(id(ref))] = [x] * usage[str(id(ref))]
        for node, mode in self._plan:
            args, kwargs = node.map_arguments(tensors)
            if mode == "fold":
                out = folded_target_attention(node.layer, *args, **kwargs)
            else:
                if mode == "cand":
                    args, kwargs = tf.nest.map_structure(
                        lambda t: _broadcast_rows(t, n) if id(t) in user_ids else t, (args, kwargs))
                if getattr(node.layer, "_expects_training_arg", False):
                    kwargs = {**kwargs, "training": False}
                out = node.layer(*args, **kwargs)
            for o_id, y in zip(node.flat_output_ids, tf.nest.flatten(out)):
                if mode == "user":
                    user_ids.add(id(y))
                keep.append(y)
                tensors[o_id] = [y] * usage[o_id]
        outs = [tensors[i].pop() for i in self._output_ids]
        outs = [_broadcast_rows(y, n) if id(y) in user_ids else y for y in outs]
        return tf.nest.pack_sequence_as(self.model._nested_outputs, outs)


class RequestScorer:
    """Raw request (user side at batch 1, N candidates) -> model output [N].

    ``tft_layer`` is ``TFTransformOutput.transform_features_layer()``; ``spec``
    is the feature contract of the model and the request;
    ``jit_compile`` compiles the model part (not the string lookups) with XLA.
    """

    def __init__(self, model, tft_layer, fold: bool = True, jit_compile: bool = False, *,
                 spec: F.FeatureSpec):
        self.graph = SharedUserGraph(model, fold=fold, spec=spec)
        self.spec = spec
        self.tft_layer = tft_layer
        self._model_fn: Callable = self.graph
        if jit_compile:
            self._model_fn = tf.function(self.graph, jit_compile=True, reduce_retracing=True)

    def __call__(self, request: Mapping[str, tf.Tensor]) -> tf.Tensor:
        n = tf.shape(request[F.ITEM_ID.name])[0]
        transformed = self.tft_layer(shared_raw_features(request, spec=self.spec))
        inputs = {k: transformed[k] for k in self.graph.inputs}
        return self._model_fn(inputs, n)
