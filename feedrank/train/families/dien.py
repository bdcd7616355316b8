"""DIEN: Deep Interest Evolution Network.

Zhou, G. et al. "Deep Interest Evolution Network for Click-Through Rate
Prediction." AAAI 2019. https://arxiv.org/abs/1809.03672

Interest extractor: a GRU over the click sequence (post ++ category ++ region
embeddings, shared with the candidate).  Its hidden state h_t is supervised by
the AUXILIARY LOSS (paper eq. 3-4): h_t must tell the next click's post
embedding e_{t+1} from a negative post drawn uniformly from the post pool
(item ids 1..V-1 of the item table; never the positive, re-drawn when it is
anywhere in the same sequence, left out when all draws collide); pairs with
a padded step are masked out; only computed in training.

Interest evolution: an AUGRU whose update gate is scaled by the candidate's
attention score over the extractor states (paper eq. 5, softmax over the
unpadded steps), packed as the last input column of a `tf_keras` RNN with
the padding mask, so padded steps keep the state and the final interest is
the state at the last real step (right or left padding alike).

The final interest, the candidate, mean-pooled page-view, conversion and
search histories, the user and the dense features feed the MLP head.

Config:
  gru_units        hidden size of both GRUs (default: the candidate embedding
                   width, as in the paper);
  aux_loss_weight  the paper's alpha (default 1.0, the paper's setting;
                   0 disables the auxiliary loss and its sampling);
  aux_units        the auxiliary net's hidden units (default [100, 50], as in
                   the authors' code);
  aux_negative_tries  draws per step to avoid the sequence's own posts (4).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train.families import common
from feedrank.train.settings import TrainerSettings

# The DIEN layers (registered as feedrank>AUGRUCell etc.; saved models load by that name).


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
        return L.masked_softmax(s, seq_mask)  # float32; all zeros for an all-padded history


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


def embedding_table(e: common.Embedded, vocab: F.Vocab) -> keras.layers.Embedding:
    """The shared table `common.embed` built for ``vocab`` (to embed sampled ids)."""
    return keras.Model(e.inputs, e.candidate).get_layer(f"{vocab.name}_embedding")


def build(vocab_sizes: Mapping[str, int], config: TrainerSettings, *, spec: F.FeatureSpec) -> keras.Model:
    """Returns a Keras model: the transformed features of ``spec`` (a dict) -> click probability [B]."""
    e = common.embed(vocab_sizes, config, spec=spec)
    units = config.dien.gru_units or int(e.candidate.shape[-1])
    aux_weight = config.dien.aux_loss_weight
    # Both GRUs (and the auxiliary loss) run only up to the batch's longest click history.
    mask, click_seq, click_ids = L.TrimPadding(name="trim_clicks")(
        [e.click_mask, e.click_seq, e.inputs[F.idx(F.CLICK_ITEMS.name)]])

    hidden = keras.layers.GRU(units, return_sequences=True, name="interest_extractor")(
        click_seq, mask=mask)
    if aux_weight > 0:
        items = embedding_table(e, F.ITEM_VOCAB)
        neg_ids, neg_valid = NegativeSampler(
            vocab_sizes[F.ITEM_VOCAB.name], config.dien.aux_negative_tries,
            name="aux_negatives")(click_ids)
        hidden = AuxiliaryLoss(aux_weight, config.dien.aux_units, name="aux_loss")(
            [hidden, items(click_ids), items(neg_ids), mask, neg_valid])

    scores = BilinearAttention(name="evolution_attention")(hidden, e.candidate, mask)
    augru_in = tf.concat([hidden, scores[..., None]], axis=-1)
    interest = keras.layers.RNN(AUGRUCell(units), name="interest_evolution")(augru_in, mask=mask)

    x = tf.concat([e.candidate, interest, *common.pooled_history(e), e.user, e.dense], axis=-1)
    prob = common.head(x, config)
    return keras.Model(inputs=e.inputs, outputs=prob, name="dien")
