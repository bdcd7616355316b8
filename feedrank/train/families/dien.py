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

from typing import Mapping

import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train.families import common


def embedding_table(e: common.Embedded, vocab: F.Vocab) -> keras.layers.Embedding:
    """The shared table `common.embed` built for ``vocab`` (to embed sampled ids)."""
    return keras.Model(e.inputs, e.candidate).get_layer(f"{vocab.name}_embedding")


def build(vocab_sizes: Mapping[str, int], config: Mapping) -> keras.Model:
    """Returns a Keras model: transformed features dict -> click probability [B]."""
    e = common.embed(vocab_sizes, config)
    units = int(config.get("gru_units") or e.candidate.shape[-1])
    aux_weight = float(config.get("aux_loss_weight", 1.0))
    # Both GRUs (and the auxiliary loss) run only up to the batch's longest click history.
    mask, click_seq, click_ids = L.TrimPadding(name="trim_clicks")(
        [e.click_mask, e.click_seq, e.inputs[F.idx(F.CLICK_ITEMS.name)]])

    hidden = keras.layers.GRU(units, return_sequences=True, name="interest_extractor")(
        click_seq, mask=mask)
    if aux_weight > 0:
        items = embedding_table(e, F.ITEM_VOCAB)
        neg_ids, neg_valid = L.NegativeSampler(
            vocab_sizes[F.ITEM_VOCAB.name], int(config.get("aux_negative_tries", 4)),
            name="aux_negatives")(click_ids)
        hidden = L.AuxiliaryLoss(aux_weight, config.get("aux_units", (100, 50)), name="aux_loss")(
            [hidden, items(click_ids), items(neg_ids), mask, neg_valid])

    scores = L.BilinearAttention(name="evolution_attention")(hidden, e.candidate, mask)
    augru_in = tf.concat([hidden, scores[..., None]], axis=-1)
    interest = keras.layers.RNN(L.AUGRUCell(units), name="interest_evolution")(augru_in, mask=mask)

    x = tf.concat([e.candidate, interest, *common.pooled_history(e), e.user, e.dense], axis=-1)
    prob = common.head(x, config)
    return keras.Model(inputs=e.inputs, outputs=prob, name="dien")
