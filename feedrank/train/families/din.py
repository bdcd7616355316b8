"""DIN: Deep Interest Network.

Zhou, G. et al. "Deep Interest Network for Click-Through Rate Prediction."
KDD 2018. https://arxiv.org/abs/1706.06978

The candidate post attends over the user's click history and, with a second
activation unit, over the page-view history (post, category and region
embeddings, shared with the candidate's); the activation weights are masked
so padding contributes nothing.  Conversion and search histories enter
as masked mean-pooled user features, with the dense and cross features, into
the Dice MLP.
"""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train.families import common
from feedrank.train.settings import TrainerSettings


def build(vocab_sizes: Mapping[str, int], config: TrainerSettings, *, spec: F.FeatureSpec) -> keras.Model:
    """Returns a Keras model: the transformed features of ``spec`` (a dict) -> click probability [B]."""
    e = common.embed(vocab_sizes, config, spec=spec)
    units = config.din.attention_units
    interest = L.TargetAttention(units, name="din_attention")(e.candidate, e.click_seq, e.click_mask)
    view_interest = L.TargetAttention(units, name="din_view_attention")(e.candidate, e.view_seq, e.view_mask)
    click_sum = L.MaskedPooling("mean", name="click_mean")(e.click_seq, e.click_mask)
    x = tf.concat([e.candidate, interest, view_interest, click_sum, *common.pooled_history(e),
                   e.user, e.dense], axis=-1)
    prob = common.head(x, config)
    return keras.Model(inputs=e.inputs, outputs=prob, name="din")
