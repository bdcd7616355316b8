"""BST: Behavior Sequence Transformer.

Chen, Q. et al. "Behavior Sequence Transformer for E-commerce Recommendation
in Alibaba." DLP-KDD 2019. https://arxiv.org/abs/1905.06874

The candidate is appended to the click sequence as one more step; every step
is its post ++ category ++ region embedding (shared with the candidate) with a
learned position embedding concatenated.  Positions count recency over the
real steps (candidate 0, most recent click 1, ...), the paper's "position
relative to the target item", so they do not depend on where padding sits.
``transformer_layers`` post-LN encoder layers (multi-head self-attention with
a key padding mask, LeakyReLU FFN) follow; the output at the candidate's
position (``bst_pooling: candidate``, default) or the masked mean over all
real positions (``bst_pooling: mean``) joins the candidate, mean-pooled
page-view, conversion and search histories, the user and the dense features in the MLP.

Config: transformer_layers (1, the paper's best), transformer_heads (8),
transformer_ff_units (default: the model width), transformer_dropout (0.0),
position_dim (8), bst_pooling.
"""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train.families import common
from feedrank.train.settings import TrainerSettings


# The BST layers (registered as feedrank>TransformerBlock etc.; saved models load by that name).
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
class MaskedMultiHeadAttention(keras.layers.MultiHeadAttention):
    """Keras's MultiHeadAttention with its masked softmax computed in float32
    (`layers.masked_softmax`), so under ``mixed_float16`` a query row with no
    real key gets a zero vector instead of NaN."""

    def _masked_softmax(self, attention_scores, attention_mask=None):
        if attention_mask is None:
            return L.masked_softmax(attention_scores, tf.ones_like(attention_scores, tf.bool))
        # [B, T, S] -> [B, 1, T, S]: the heads axis, as the parent class expands it.
        for _ in range(len(attention_scores.shape) - len(attention_mask.shape)):
            attention_mask = tf.expand_dims(attention_mask, axis=-len(self._attention_axes) * 2 - 1)
        return L.masked_softmax(attention_scores, attention_mask)


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
        self.mha = MaskedMultiHeadAttention(self.num_heads, max(1, -(-d // self.num_heads)),
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


def encode(e: common.Embedded, config: TrainerSettings, name: str = "bst") -> tf.Tensor:
    """The Transformer interest [B, Dc + position_dim] of the click sequence
    with the candidate appended (reused by the double-channel family)."""
    seq = tf.concat([e.click_seq, e.candidate[:, None, :]], axis=1)          # [B, L + 1, Dc]
    mask = tf.concat([e.click_mask, tf.ones_like(e.click_mask[:, :1])], axis=1)
    s = config.bst
    x = RecencyPositionEmbedding(F.CLICK_LEN + 1, s.position_dim, name=f"{name}_position")(seq, mask)
    for i in range(s.transformer_layers):
        x = TransformerBlock(s.transformer_heads, s.transformer_ff_units, s.transformer_dropout,
                             name=f"{name}_block{i}")(x, mask)
    pooling = s.bst_pooling
    if pooling == "candidate":
        return x[:, -1]
    if pooling == "mean":
        return L.MaskedPooling("mean", name=f"{name}_mean")(x, mask)
    raise ValueError(f"bst_pooling must be 'candidate' or 'mean', got {pooling!r}")


def build(vocab_sizes: Mapping[str, int], config: TrainerSettings, *, spec: F.FeatureSpec) -> keras.Model:
    """Returns a Keras model: the transformed features of ``spec`` (a dict) -> click probability [B]."""
    e = common.embed(vocab_sizes, config, spec=spec)
    interest = encode(e, config)
    x = tf.concat([e.candidate, interest, *common.pooled_history(e), e.user, e.dense], axis=-1)
    prob = common.head(x, config)
    return keras.Model(inputs=e.inputs, outputs=prob, name="bst")
