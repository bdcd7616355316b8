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


def encode(e: common.Embedded, config: Mapping, name: str = "bst") -> tf.Tensor:
    """The Transformer interest [B, Dc + position_dim] of the click sequence
    with the candidate appended (reused by the double-channel family)."""
    seq = tf.concat([e.click_seq, e.candidate[:, None, :]], axis=1)          # [B, L + 1, Dc]
    mask = tf.concat([e.click_mask, tf.ones_like(e.click_mask[:, :1])], axis=1)
    x = L.RecencyPositionEmbedding(F.CLICK_LEN + 1, int(config.get("position_dim", 8)),
                                   name=f"{name}_position")(seq, mask)
    for i in range(int(config.get("transformer_layers", 1))):
        x = L.TransformerBlock(int(config.get("transformer_heads", 8)), config.get("transformer_ff_units"),
                               float(config.get("transformer_dropout", 0.0)), name=f"{name}_block{i}")(x, mask)
    pooling = config.get("bst_pooling", "candidate")
    if pooling == "candidate":
        return x[:, -1]
    if pooling == "mean":
        return L.MaskedPooling("mean", name=f"{name}_mean")(x, mask)
    raise ValueError(f"bst_pooling must be 'candidate' or 'mean', got {pooling!r}")


def build(vocab_sizes: Mapping[str, int], config: Mapping) -> keras.Model:
    """Returns a Keras model: transformed features dict -> click probability [B]."""
    e = common.embed(vocab_sizes, config)
    interest = encode(e, config)
    x = tf.concat([e.candidate, interest, *common.pooled_history(e), e.user, e.dense], axis=-1)
    prob = common.head(x, config)
    return keras.Model(inputs=e.inputs, outputs=prob, name="bst")
