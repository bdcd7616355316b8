"""Request-level scoring: the user's side is computed once per request.

A ranking request carries one user (leading dimension 1) and N candidates.
`RequestScorer` scores it without copying the user's side N times:

* the raw user features go through the tf.Transform layer at batch 1 and
  the candidate features at batch N, in one call (every output of the
  transform graph is computed per feature, so mixed batch sizes are fine);
* the crosses compare the batch-1 user tensors with the N candidates
  (`shared_crosses`: the interest share hashes each click category once);
* the trained Keras model's functional graph is re-run node by node: a layer
  whose inputs are all user-side runs once at batch 1 (embedding lookups of
  the histories, pooling, DIEN's interest GRU, ...); where a layer first meets
  a candidate-side tensor, its batch-1 inputs are broadcast to N rows, except
  for layers that keep each input's side (`layers.IdDropout`, the identity at
  inference: the histories stay user-side) and layers whose ops broadcast a
  batch-1 history against N candidates as written (`layers.MatchFeatures`);
* with ``fold=True`` a target-attention layer (DIN's activation unit) whose
  query is the candidate and whose keys are the user's history is computed
  by `folded_target_attention`: padding dropped, the first Dense layer folded
  into one [D, L*H] matrix built once per request, so per candidate one
  matrix product and the rest of the attention MLP remain.

Broadcasting a batch-1 tensor to N identical rows before a layer gives the
same result as running that layer on N identical rows for every layer that
works row by row, and for the batch-wide trims (`layers.TrimPadding`), whose
result over identical rows is the result over one row.  The tests compare
the scores with the unshared model for several families.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Mapping, Optional

import tensorflow as tf

from feedrank import features as F

log = logging.getLogger(__name__)

# Name scopes of the serving graph's stages (op names start with them; `benchmarks/serving_profile.py`
# attributes the ops' time by them): the raw request's padding and crosses, the tf.Transform layer,
# and the model's layer calls by mode (`SharedUserGraph._plan_graph`).
STAGES = {"raw": "raw_features", "transform": "transform", "user": "user_side", "each": "user_side",
          "fold": "attention", "self": "candidate_side", "cand": "candidate_side"}


def kept(x: tf.Tensor, ids: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Which entries of a ``""``-padded string matrix are values: the non-empty ones; for a
    declared attribute sequence given its channel's item ids ``ids`` (`aligned_ids`), where
    those ids are non-empty, so a missing value ``""`` stays in place beside its post as in
    the example (a matrix of another shape than ``ids``: its own non-empty entries)."""
    own = tf.not_equal(x, "")
    if ids is None:
        return own
    same = tf.reduce_all(tf.equal(tf.shape(x), tf.shape(ids)))
    return tf.cond(same, lambda: tf.not_equal(ids, ""), lambda: own)


def aligned_ids(request: Mapping[str, tf.Tensor], seq: F.SeqFeature, spec: F.FeatureSpec) -> Optional[tf.Tensor]:
    """The item ids of ``seq``'s channel in ``request`` when ``seq`` is one of ``spec``'s declared
    attribute sequences (whose padding follows them, `kept`); None otherwise."""
    if seq not in spec.attribute_sequences:
        return None
    return request[F.ITEMS_OF[seq.channel].name]


def strip_padding(x: tf.Tensor, max_len: int, ids: Optional[tf.Tensor] = None) -> tf.RaggedTensor:
    """Rows of a ``""``-padded string matrix as ragged rows without padding.

    Empty strings are dropped wherever they sit (left, right or in between),
    the remaining values keep their order (most recent last) and only the
    last ``max_len`` of each row are kept.  With ``ids`` the padding is where
    the channel's item ids are empty (`kept`).
    """
    return tf.ragged.boolean_mask(x, kept(x, ids))[:, -max_len:]


def strip_padding_one_row(x: tf.Tensor, max_len: int, ids: Optional[tf.Tensor] = None) -> tf.SparseTensor:
    """`strip_padding` of a one-row matrix [1, W] as the sparse [1, n] tensor
    ``strip_padding(x, max_len, ids).to_sparse()`` is, in a handful of ops."""
    row = x[0]
    values = tf.boolean_mask(row, kept(x, ids)[0])[-max_len:]
    n = tf.size(values, out_type=tf.int64)
    indices = tf.stack([tf.zeros([n], tf.int64), tf.range(n)], axis=1)
    return tf.SparseTensor(indices, values, tf.stack([tf.constant(1, tf.int64), n]))


def user_input_names(spec: F.FeatureSpec) -> frozenset:
    """Transformed model inputs of ``spec`` that depend on the user's side only."""
    names = {F.idx(f.name) for f in spec.id_features if f.side == "user"}
    names |= {F.idx(s.name) for s in spec.seq_features}
    names |= {F.dense(d.name) for d in spec.dense_features if d.side == "user"}
    names |= {F.idx(b.name) for b in spec.bag_features if b.side == "user"}
    return frozenset(names)


def shared_crosses(user_region_id: tf.Tensor, region_id: tf.Tensor, click_categories: tf.Tensor,
                   category_id: tf.Tensor) -> Dict[str, tf.Tensor]:
    """`transform.crosses.cross_features` for ONE user and N candidates, equal to it value for value.

    ``user_region_id`` [1], ``region_id`` [N], ``click_categories`` [C] (the one
    user's click categories without padding), ``category_id`` [N].  The interest
    share counts each category of the history once per request (one string
    hash per value instead of N x C string comparisons): the share of candidate
    n is the count of its category among the C clicks over C (0 without clicks).
    """
    region_match = tf.logical_and(tf.equal(user_region_id, region_id), tf.strings.length(user_region_id) > 0)
    c = tf.size(click_categories)
    _, idx = tf.unique(tf.concat([click_categories, category_id], axis=0))
    counts = tf.math.unsorted_segment_sum(tf.ones([c], tf.float32), idx[:c], tf.size(idx))
    share = tf.math.divide_no_nan(tf.gather(counts, idx[c:]), tf.cast(c, tf.float32))
    return {F.REGION_MATCH.name: tf.cast(region_match, tf.float32), F.INTEREST_CATEGORY_SHARE.name: share}


def shared_raw_features(request: Mapping[str, tf.Tensor], *, spec: F.FeatureSpec) -> Dict[str, tf.Tensor]:
    """The raw features of ``spec`` in a request whose user side has exactly one row.

    User features keep batch 1 (sequences as sparse [1, <=max_len]); the
    candidate features and the two crosses (`shared_crosses`) have batch N.
    """
    raw: Dict[str, tf.Tensor] = {}
    for s in spec.seq_features:
        raw[s.name] = strip_padding_one_row(request[s.name], s.max_len, aligned_ids(request, s, spec))
    for b in spec.bag_features:   # declared token bags: ""-padded matrices, user [1, T] or candidates [N, T]
        if b.side == "user":
            raw[b.name] = strip_padding_one_row(request[b.name], b.max_len)
        else:
            raw[b.name] = strip_padding(request[b.name], b.max_len).to_sparse()
    for name in spec.features_of_side("user"):
        raw.setdefault(name, request[name])
    for name in spec.features_of_side("candidate"):
        raw.setdefault(name, request[name])
    raw.update(shared_crosses(raw[F.USER_REGION_ID.name], raw[F.REGION_ID.name],
                              raw[F.CLICK_CATEGORIES.name].values, raw[F.CATEGORY_ID.name]))
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


def _keeps_input_sides(layer) -> bool:
    """`layers.IdDropout`: at inference output i is input i, whatever the inputs' batch sizes."""
    return type(layer).__name__ == "IdDropout"


def _broadcasts_itself(layer) -> bool:
    """`layers.MatchFeatures`: its ops broadcast a [1, L] history against [N] candidates as written."""
    return type(layer).__name__ == "MatchFeatures"


_ROW_WISE = ("Dense", "Activation", "Dropout")   # Keras layers that take rows of any rank alike


def _is_elementwise(layer) -> bool:
    """A Keras ``Activation`` layer (the same function of every value, whatever the shape)."""
    return type(layer).__name__ == "Activation"


def folded_target_attention(layer, query: tf.Tensor, keys: tf.Tensor, mask: tf.Tensor,
                            trim: bool = True) -> tf.Tensor:
    """`layers.TargetAttention` for N queries against ONE history, first layer folded.

    query [N, D], keys [1, L, D], mask [1, L] -> [N, D], equal (up to float
    rounding) to ``layer(query, broadcast(keys), broadcast(mask))``.

    For the first Dense layer's kernel ``[W_q; W_k; W_d; W_p]`` on
    ``[q, k, q - k, q * k]`` and its bias ``b``, the pre-activation of
    candidate n and step l is ``q_n (W_q + W_d + diag(k_l) W_p) + k_l (W_k - W_d) + b``:
    the [D, L*H] matrix of the ``M_l = W_q + W_d + diag(k_l) W_p`` and the
    [L*H] term ``k_l (W_k - W_d) + b`` are built once per request, and the
    N x L x H pre-activations are one matrix product plus a bias, fused with
    the activation.  The rest of the MLP runs on the [N*L, H] rows (on
    [N, L, H] where a layer needs that rank, e.g. Dice).  With
    ``trim`` the padded steps are dropped first (their weight is exactly 0 in
    the layer, also under its softmax); without, every shape is static (XLA).
    """
    if not trim:
        return _attend(layer, query, keys[0], mask[0])
    k = tf.boolean_mask(keys[0], mask[0])                              # [L', D] the real steps
    # no real step: the layer's output is 0 (and oneDNN refuses empty matrix products)
    return tf.cond(tf.shape(k)[0] > 0, lambda: _attend(layer, query, k),
                   lambda: tf.zeros(tf.shape(query), query.dtype))


def _attend(layer, query: tf.Tensor, k: tf.Tensor, mask: Optional[tf.Tensor] = None) -> tf.Tensor:
    """`folded_target_attention` on the steps ``k`` [L, D] (all real when ``mask`` [L] is None)."""
    first, *rest = layer.score_mlp.layers
    w_q, w_k, w_d, w_p = tf.split(first.kernel, 4, axis=0)            # each [D, H]
    length, n = tf.shape(k)[0], tf.shape(query)[0]
    d, h = tf.shape(w_p)[0], tf.shape(w_p)[1]
    key_term = tf.matmul(k, w_k - w_d)                                 # [L, H]
    if first.use_bias:
        key_term += first.bias
    m = tf.transpose(k)[:, :, None] * w_p[:, None, :] + (w_q + w_d)[:, None, :]   # [D, L, H]
    x = tf.nn.bias_add(tf.matmul(query, tf.reshape(m, tf.stack([d, length * h]))),
                       tf.reshape(key_term, [-1]))                     # [N, L * H]
    if first.activation is not None:
        x = first.activation(x)
    while rest and _is_elementwise(rest[0]):   # before the reshape: fused with the product
        x = rest.pop(0)(x)
    if all(type(sub).__name__ in _ROW_WISE for sub in rest):   # matrix products of [N*L, H] rows
        x = tf.reshape(x, tf.stack([n * length, h]))
    else:                                                    # e.g. Dice, built for [B, L, H]
        x = tf.reshape(x, tf.stack([n, length, h]))
    for sub in rest:
        x = sub(x, training=False) if getattr(sub, "_expects_training_arg", False) else sub(x)
    s = tf.reshape(layer.score_out(x), tf.stack([n, length]))          # [N, L]
    if mask is not None and layer.softmax:
        s = tf.where(mask[None], s, tf.constant(-1e9, s.dtype))
    if layer.softmax:
        s = tf.nn.softmax(s, axis=-1)
    if mask is not None:
        s = s * tf.cast(mask, s.dtype)[None]
    return tf.matmul(s, k)                                             # [N, D]


class SharedUserGraph:
    """Runs a functional Keras model with its user-side inputs at batch 1.

    Call with the transformed inputs (user-side at batch 1, the rest at batch
    N) and ``n``; returns the model's output at batch N.  ``spec`` is the
    feature contract the model was built with (which inputs are user-side,
    `user_input_names`).  ``fold`` enables `folded_target_attention` for
    target-attention nodes whose keys are user-side and whose query is not
    (``trim``: padding dropped there).  The ops of each layer call sit in a
    name scope of its stage (`STAGES`), which the profiles read.
    """

    def __init__(self, model, fold: bool = True, *, spec: F.FeatureSpec, trim: bool = True):
        if not hasattr(model, "_nodes_by_depth"):
            raise TypeError(f"SharedUserGraph needs a functional Keras model, got {type(model).__name__}")
        self.model = model
        self.fold, self.trim = fold, trim
        self.inputs = {t._keras_history.layer.name: t for t in model.inputs}
        user = user_input_names(spec)
        self.user_inputs = {name for name in self.inputs if name in user}
        self._plan: List = []   # (node, mode) in execution order
        self._plan_graph()

    def _plan_graph(self) -> None:
        """Each node's mode: ``user`` (all inputs user-side: runs at batch 1), ``each``
        (`_keeps_input_sides`), ``fold`` (`folded_target_attention`), ``self``
        (`_broadcasts_itself`) or ``cand`` (user-side inputs broadcast to N rows)."""
        side = {str(id(t)): ("user" if name in self.user_inputs else "cand")
                for name, t in self.inputs.items()}
        counts = {"user": 0, "each": 0, "fold": 0, "self": 0, "cand": 0}
        for depth in sorted(self.model._nodes_by_depth, reverse=True):
            for node in self.model._nodes_by_depth[depth]:
                if node.is_input:
                    continue
                in_sides = [side[i] for i in node.flat_input_ids]
                out_sides = ["cand"] * len(node.flat_output_ids)
                if in_sides and all(s == "user" for s in in_sides):
                    mode, out_sides = "user", ["user"] * len(out_sides)
                elif _keeps_input_sides(node.layer) and len(in_sides) == len(out_sides):
                    mode, out_sides = "each", in_sides
                elif self.fold and _is_target_attention(node.layer) and in_sides == ["cand", "user", "user"]:
                    mode = "fold"
                elif _broadcasts_itself(node.layer):
                    mode = "self"
                else:
                    mode = "cand"
                counts[mode] += 1
                side.update(zip(node.flat_output_ids, out_sides))
                self._plan.append((node, mode))
        self._output_ids = [str(id(t)) for t in self.model.outputs]
        log.info("%s: %d layer calls once per request, %d per candidate (%d broadcasting the user side), "
                 "%d folded attentions", self.model.name, counts["user"], counts["cand"] + counts["self"],
                 counts["cand"], counts["fold"])

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
            flat_in = [t for t in tf.nest.flatten((args, kwargs)) if isinstance(t, tf.Tensor)]
            with tf.name_scope(STAGES[mode]):
                out = self._run_node(node, mode, args, kwargs, user_ids, n)
            flat_out = tf.nest.flatten(out)
            if mode == "user":
                user_ids.update(id(y) for y in flat_out)
            elif mode == "each":   # output i keeps input i's side
                user_ids.update(id(y) for x, y in zip(flat_in, flat_out) if id(x) in user_ids)
            for o_id, y in zip(node.flat_output_ids, flat_out):
                keep.append(y)
                tensors[o_id] = [y] * usage[o_id]
        outs = [tensors[i].pop() for i in self._output_ids]
        outs = [_broadcast_rows(y, n) if id(y) in user_ids else y for y in outs]
        return tf.nest.pack_sequence_as(self.model._nested_outputs, outs)

    def _run_node(self, node, mode: str, args, kwargs, user_ids: set, n: tf.Tensor):
        if mode == "fold":
            return folded_target_attention(node.layer, *args, **kwargs, trim=self.trim)
        if mode == "cand":
            args, kwargs = tf.nest.map_structure(
                lambda t: _broadcast_rows(t, n) if id(t) in user_ids else t, (args, kwargs))
        if getattr(node.layer, "_expects_training_arg", False):
            kwargs = {**kwargs, "training": False}
        return node.layer(*args, **kwargs)


class RequestScorer:
    """Raw request (user side at batch 1, N candidates) -> model output [N].

    ``tft_layer`` is ``TFTransformOutput.transform_features_layer()``; ``spec``
    is the feature contract of the model and the request;
    ``jit_compile`` compiles the model part (not the string lookups) with XLA
    (the attention then keeps the padded steps: XLA needs static shapes).
    """

    def __init__(self, model, tft_layer, fold: bool = True, jit_compile: bool = False, *,
                 spec: F.FeatureSpec):
        self.graph = SharedUserGraph(model, fold=fold, spec=spec, trim=not jit_compile)
        self.spec = spec
        self.tft_layer = tft_layer
        self._model_fn: Callable = self.graph
        if jit_compile:
            self._model_fn = tf.function(self.graph, jit_compile=True, reduce_retracing=True)

    def __call__(self, request: Mapping[str, tf.Tensor]) -> tf.Tensor:
        n = tf.shape(request[F.ITEM_ID.name])[0]
        with tf.name_scope(STAGES["raw"]):
            raw = shared_raw_features(request, spec=self.spec)
        with tf.name_scope(STAGES["transform"]):
            transformed = self.tft_layer(raw)
        inputs = {k: transformed[k] for k in self.graph.inputs}
        return self._model_fn(inputs, n)
