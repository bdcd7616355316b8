"""DeepFM: a factorization machine and a deep MLP over shared field embeddings.

Guo, H., Tang, R., Ye, Y., Li, Z. and He, X. "DeepFM: A Factorization-Machine
based Neural Network for CTR Prediction." IJCAI 2017.
https://doi.org/10.24963/ijcai.2017/239 (https://arxiv.org/abs/1703.04247)

Fields: every id feature of `feedrank.features` (candidate post, category and
region, user region) and every behaviour sequence (click, view and conversion
ids, search tokens) is one field.  A field's vector is its row of the shared
embedding table (`common.embed`, the tables every family uses); a sequence
field is the MEAN of its real steps' rows (padding masked, an empty history is
the zero vector), the normalised multi-hot group of Rendle's FM paper.  The
tables have per-vocabulary widths (``embedding_dims``) and an FM pairs vectors
of one width k (``fm_dim``), so each field's vector is mapped to k by its own
linear map without bias: ``e_f W_f`` is the row of the table ``E W_f``, an
embedding table of width k.  These k-d field vectors ``v_f`` are the
embeddings of the paper; BOTH components read them:

* FM component: ``y_FM = <w, x> + sum_{i<j} <v_i, v_j>``.  The first-order
  term ``<w, x>`` is one scalar weight per (field, id) (tables initialised to
  zero; a sequence field takes the mean weight of its real steps) plus a
  linear term over the dense and cross features with the global bias.  The
  pairwise term uses the identity
  ``sum_{i<j} <v_i, v_j> = 0.5 * sum_k ((sum_i v_ik)^2 - sum_i v_ik^2)``
  (`FactorizationMachine`), linear in the number of fields.
* Deep component: an MLP over the concatenated field vectors and the dense
  features (the paper's deep input is the embeddings alone; the dense
  features join it as in the other families).

``p = sigmoid(y_FM + y_DNN)``, trained jointly end to end as in the paper.
Config: ``fm_dim`` (default 16).
"""
from __future__ import annotations

import logging
from typing import List, Mapping, Tuple

import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train.families import common
from feedrank.train.settings import TrainerSettings

log = logging.getLogger(__name__)


# Saved models find this layer by its registered name, feedrank>FactorizationMachine.
@keras.utils.register_keras_serializable(package="feedrank")
class FactorizationMachine(keras.layers.Layer):
    """The FM's pairwise term: F field vectors (a list of [B, k], or one [B, F, k])
    -> [B, 1] = sum over field pairs i < j of <v_i, v_j>.

    Computed in float32 whatever the compute dtype (the squared sums of float16
    vectors could overflow), returned in the compute dtype.
    """

    def call(self, fields) -> tf.Tensor:
        v = tf.stack(fields, axis=1) if isinstance(fields, (list, tuple)) else fields
        if v.shape.rank != 3:
            raise ValueError(f"FactorizationMachine needs field vectors [B, F, k], got shape {v.shape}")
        v = tf.cast(v, tf.float32)
        square_of_sum = tf.square(tf.reduce_sum(v, axis=1))          # [B, k]
        sum_of_squares = tf.reduce_sum(tf.square(v), axis=1)         # [B, k]
        pairwise = 0.5 * tf.reduce_sum(square_of_sum - sum_of_squares, axis=-1, keepdims=True)
        return tf.cast(pairwise, self.compute_dtype)


def field_names(spec: F.FeatureSpec) -> List[str]:
    """The FM's fields for the feature contract ``spec``, in the order `fields` returns them."""
    return ([f.name for f in spec.id_features] + [s.name for s in spec.seq_features]
            + [b.name for b in spec.bag_features])


def fields(e: common.Embedded, vocab_sizes: Mapping[str, int],
           config: TrainerSettings) -> Tuple[List[tf.Tensor], List[tf.Tensor]]:
    """(the k-d field vectors v_f, the first-order terms [B, 1] of the id fields), one per
    field of ``e.spec`` (`field_names`)."""
    spec = e.spec
    # The shared tables of `common.embed`, looked up by their layer names.
    probe = keras.Model(e.inputs, [e.candidate, e.user, e.dense, e.click_seq, e.view_seq, e.conv_seq,
                                    e.search_seq])
    tables = {v.name: probe.get_layer(f"{v.name}_embedding") for v in spec.vocabs}
    reg = keras.regularizers.l2(config.embedding_l2) if config.embedding_l2 > 0 else None
    k = config.deepfm.fm_dim
    vectors, first_order = [], []
    features = [(f.name, f.vocab, False) for f in spec.id_features]
    features += [(s.name, s.vocab, True) for s in spec.seq_features]
    features += [(b.name, b.vocab, True) for b in spec.bag_features]   # declared token bags: pooled like sequences
    for name, vocab, is_sequence in features:
        ids = e.ids.get(F.idx(name), e.inputs[F.idx(name)])
        rows = tables[vocab.name](ids)                                  # [B, d] or [B, L, d]
        weights = keras.layers.Embedding(vocab_sizes[vocab.name], 1, embeddings_initializer="zeros",
                                         embeddings_regularizer=reg, name=f"fm_{name}_weight_embedding")(ids)
        if is_sequence:
            mask = L.padding_mask(ids)
            rows = L.MaskedPooling("mean", name=f"fm_{name}_mean")(rows, mask)
            weights = L.MaskedPooling("mean", name=f"fm_{name}_weight_mean")(weights, mask)
        vectors.append(keras.layers.Dense(k, use_bias=False, name=f"fm_{name}_field")(rows))
        first_order.append(weights)
    return vectors, first_order


def build(vocab_sizes: Mapping[str, int], config: TrainerSettings, *, spec: F.FeatureSpec) -> keras.Model:
    """Returns a Keras model: the transformed features of ``spec`` (a dict) -> click probability [B]."""
    e = common.embed(vocab_sizes, config, spec=spec)
    v, weights = fields(e, vocab_sizes, config)
    log.info("DeepFM: %d fields of width %d", len(v), config.deepfm.fm_dim)
    first = keras.layers.Add(name="fm_first_order")(weights + [keras.layers.Dense(1, name="fm_dense")(e.dense)])
    second = FactorizationMachine(name="fm_second_order")(v)
    deep_input = keras.layers.Concatenate(name="deep_input")(v + [e.dense])
    h = L.mlp(config.mlp_units, config.activation, config.dropout, name="deep_mlp")(deep_input)
    deep = keras.layers.Dense(1, name="deep_logit")(h)
    logit = keras.layers.Add(name="deepfm_logit")([first, second, deep])
    # float32 output even under a mixed_float16 policy (a no-op otherwise)
    prob = keras.layers.Activation("sigmoid", dtype="float32", name="deepfm_prob")(logit)[:, 0]
    return keras.Model(inputs=e.inputs, outputs=prob, name="deepfm")
