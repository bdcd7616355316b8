"""A GRU4Rec-style baseline: one GRU over the session's pages -> softmax over items.

Hidasi, B., Karatzoglou, A., Baltrunas, L. and Tikk, D. "Session-based
Recommendations with Recurrent Neural Networks." ICLR 2016.
https://arxiv.org/abs/1511.06939

It reads every page of the session (no width limit, no history state, no
dwell times, no purchase history): the page embeddings run through one GRU
layer and its final state feeds the DRNN's output head (`layers.CatalogueHead`:
the next page and the next add-to-cart over the catalogue, tied embeddings; the
repeat path off by default, as GRU4Rec has none).  Trained, like the DRNN, on
every page transition and add-to-cart with the softmax cross-entropy, not
GRU4Rec's session-parallel mini-batches with a pairwise loss, so the
comparison isolates the encoder.  Inputs are `drnn.INPUTS` (only ``pages`` is used).
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
class Gru4recSettings(drnn._Checked):
    """The single-GRU baseline's settings."""
    SECTION = "gru4rec"
    units: int = setting(100, min=1)
    page_dim: int = setting(32, min=1)
    dropout: float = setting(0.0, min=0.0, below=1.0)
    repeat: bool = False


def build(settings: Gru4recSettings | Mapping[str, Any], item_mask: Optional[Sequence[bool]] = None,
          next_weight: float = 1.0) -> drnn.SessionModel:
    """The single-GRU model for ``settings`` (a `Gru4recSettings` or its mapping), compiled."""
    s = settings if isinstance(settings, Gru4recSettings) else Gru4recSettings.from_mapping(settings)
    pages = keras.Input([None], dtype=tf.int64, name=drnn.PAGES)
    emb = keras.layers.Embedding(s.num_pages, s.page_dim, name="page_embedding")(pages)
    state = keras.layers.GRU(s.units, name="gru")(emb, mask=TL.padding_mask(pages))
    if s.dropout > 0:
        state = keras.layers.Dropout(s.dropout, name="gru_dropout")(state)
    encoder = keras.Model(inputs=[pages], outputs=[state], name="gru4rec_encoder")
    head = SL.CatalogueHead(s.num_pages, s.page_dim, item_mask or drnn.default_item_mask(s.num_pages), s.repeat,
                            name="catalogue")
    model = drnn.SessionModel(encoder, head, s.sampled, name="gru4rec")
    log.info("GRU4Rec baseline: %d units, repeat=%s over %d catalogue ids", s.units, s.repeat, s.num_pages)
    return drnn.compile_model(model, s.learning_rate, next_weight)
