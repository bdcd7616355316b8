"""A SASRec-style baseline: causal self-attention over the session's pages -> the catalogue head.

Kang, W.-C. and McAuley, J. "Self-Attentive Sequential Recommendation." ICDM 2018.
https://arxiv.org/abs/1808.09781

The page embeddings (scaled by sqrt(dim)) plus a learned position embedding, counted
from the most recent page backwards (so left or right padding and any request length
give the same positions), run through ``blocks`` pre-norm Transformer blocks (multi-head
self-attention where a page attends to itself and earlier pages only, then a two-layer
position-wise feed-forward network, each with a residual connection and dropout); the
output at the most recent page feeds the DRNN's head (`layers.CatalogueHead`: the next
page and the next add-to-cart over the catalogue, tied to the page embeddings, the repeat
path off by default).  Only the last ``max_len`` pages are read.  Trained like the DRNN
on every page transition and add-to-cart (the paper trains every position of a sequence
in one pass with sampled negatives; here each prefix is a sample and the softmax is
full), so the comparison isolates the encoder.  Inputs are `drnn.INPUTS` (only
``pages`` is used).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping, Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from feedrank.sessions import drnn
from feedrank.sessions import layers as SL
from feedrank.train import layers as TL
from feedrank.typed import setting

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SasrecSettings(drnn._Checked):
    """The self-attention baseline's settings."""
    SECTION = "sasrec"
    page_dim: int = setting(32, min=2)
    blocks: int = setting(2, min=1)
    heads: int = setting(1, min=1)
    max_len: int = setting(50, min=1)
    dropout: float = setting(0.2, min=0.0, below=1.0)
    repeat: bool = False


@keras.utils.register_keras_serializable(package="feedrank")
class RecencyPositions(keras.layers.Layer):
    """Page ids [B, T] -> (positions [B, T], causal mask [B, T, T], last [B, T]): position 1 is the
    most recent real page, 2 the one before, ... capped at ``max_len`` (0: padding or older); the
    mask lets a real page attend to itself and earlier real pages; ``last`` flags the most recent."""

    def __init__(self, max_len: int, **kwargs):
        super().__init__(**kwargs)
        self.max_len = int(max_len)

    def call(self, pages):
        real = TL.padding_mask(pages)
        r = tf.cast(real, tf.int32)
        from_end = tf.cumsum(r, axis=1, reverse=True) * r
        kept = tf.logical_and(real, from_end <= self.max_len)
        positions = tf.where(kept, from_end, 0)
        earlier = from_end[:, None, :] >= from_end[:, :, None]                  # key not after the query
        mask = tf.logical_and(tf.logical_and(kept[:, :, None], kept[:, None, :]), earlier)
        return positions, mask, tf.equal(from_end, 1)

    def get_config(self):
        return {**super().get_config(), "max_len": self.max_len}


def build(settings: SasrecSettings | Mapping[str, Any], item_mask: Optional[Sequence[bool]] = None,
          next_weight: float = 1.0) -> drnn.SessionModel:
    """The self-attention model for ``settings`` (a `SasrecSettings` or its mapping), compiled."""
    s = settings if isinstance(settings, SasrecSettings) else SasrecSettings.from_mapping(settings)
    pages = keras.Input([None], dtype=tf.int64, name=drnn.PAGES)
    emb = keras.layers.Embedding(s.num_pages, s.page_dim, name="page_embedding")(pages)
    positions, mask, last = RecencyPositions(s.max_len, name="positions")(pages)
    x = emb * (s.page_dim ** 0.5) + keras.layers.Embedding(s.max_len + 1, s.page_dim, name="position_embedding")(
        positions)
    x = keras.layers.Dropout(s.dropout)(x)
    for b in range(s.blocks):
        h = keras.layers.LayerNormalization(epsilon=1e-6, name=f"attention_norm{b}")(x)
        a = keras.layers.MultiHeadAttention(s.heads, max(1, s.page_dim // s.heads), dropout=s.dropout,
                                            name=f"attention{b}")(h, h, attention_mask=mask)
        x = x + keras.layers.Dropout(s.dropout)(a)
        h = keras.layers.LayerNormalization(epsilon=1e-6, name=f"ffn_norm{b}")(x)
        f = keras.layers.Dense(s.page_dim, activation="relu", name=f"ffn{b}_1")(h)
        f = keras.layers.Dense(s.page_dim, name=f"ffn{b}_2")(keras.layers.Dropout(s.dropout)(f))
        x = x + keras.layers.Dropout(s.dropout)(f)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    state = tf.reduce_sum(x * tf.cast(last, x.dtype)[..., None], axis=1)      # the most recent page's output
    encoder = keras.Model(inputs=[pages], outputs=[state], name="sasrec_encoder")
    head = SL.CatalogueHead(s.num_pages, s.page_dim, item_mask or drnn.default_item_mask(s.num_pages), s.repeat,
                            name="catalogue")
    model = drnn.SessionModel(encoder, head, s.sampled, name="sasrec")
    log.info("SASRec baseline: %d blocks, %d heads, dim %d, repeat=%s over %d catalogue ids", s.blocks, s.heads,
             s.page_dim, s.repeat, s.num_pages)
    return drnn.compile_model(model, s.learning_rate, next_weight)
