"""DNN: the Embedding&MLP baseline with sum-pooled histories (no attention).

Covington, P., Adams, J. and Sargin, E. "Deep Neural Networks for YouTube
Recommendations." RecSys 2016. https://doi.org/10.1145/2959100.2959190
It is also the "Base Model" of the DIN paper (Zhou et al., KDD 2018,
https://arxiv.org/abs/1706.06978, section 4.2): every behaviour sequence is
pooled into one fixed vector regardless of the candidate.

Click, page-view, conversion and search histories are SUM-pooled over their real steps
(padding contributes nothing) and concatenated with the candidate, the user
and the dense/cross features into the MLP head.
"""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train.families import common
from feedrank.train.settings import TrainerSettings


def deep_input(e: common.Embedded) -> tf.Tensor:
    """[candidate, sum-pooled click/view/conversion/search histories, user, dense]."""
    click = L.MaskedPooling("sum", name="click_sum")(e.click_seq, e.click_mask)
    view = L.MaskedPooling("sum", name="view_sum")(e.view_seq, e.view_mask)
    conv = L.MaskedPooling("sum", name="conv_sum")(e.conv_seq, e.conv_mask)
    search = L.MaskedPooling("sum", name="search_sum")(e.search_seq, e.search_mask)
    return tf.concat([e.candidate, click, view, conv, search, e.user, e.dense], axis=-1)


def build(vocab_sizes: Mapping[str, int], config: TrainerSettings, *, spec: F.FeatureSpec) -> keras.Model:
    """Returns a Keras model: the transformed features of ``spec`` (a dict) -> click probability [B]."""
    e = common.embed(vocab_sizes, config, spec=spec)
    prob = common.head(deep_input(e), config)
    return keras.Model(inputs=e.inputs, outputs=prob, name="dnn")
