"""Double-channel ranker: the 58.com "Guess You Like" home-feed design.

Source: the 58.com recommendation team's public description of their
home-feed ("Guess You Like") ranker, which has no peer-reviewed paper; this
module is our reading of it.  The sequence channel's encoder is the Behavior
Sequence Transformer (Chen et al., DLP-KDD 2019, arXiv:1905.06874).

The model splits into two channels that meet in one MLP:
  * the hand-built FEATURE channel: the static post and user attributes
    (candidate post/category/region embeddings, user region embedding) and
    the dense features, incl. the cross features and the post's historical
    CTR, through their own small MLP (``feature_mlp_units``, default [64]);
  * the SEQUENCE channel: the user's real-time interest from the click
    behaviour sequence, encoded by the Behavior Sequence Transformer
    (Chen et al., DLP-KDD 2019, https://arxiv.org/abs/1905.06874; the
    `bst` family's encoder, reused with its config keys), with the
    mean-pooled page-view history (dense where clicks are sparse).
Both channel outputs are concatenated into the MLP head.
"""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train.families import bst, common
from feedrank.train.settings import TrainerSettings


def build(vocab_sizes: Mapping[str, int], config: TrainerSettings, *, spec: F.FeatureSpec) -> keras.Model:
    """Returns a Keras model: the transformed features of ``spec`` (a dict) -> click probability [B]."""
    e = common.embed(vocab_sizes, config, spec=spec)
    static = tf.concat([e.candidate, e.user, e.dense], axis=-1)
    feature_channel = L.mlp(config.double_channel.feature_mlp_units, config.activation, config.dropout,
                            name="feature_channel")(static)
    sequence_channel = tf.concat([
        bst.encode(e, config, name="sequence_channel"),
        L.MaskedPooling("mean", name="view_mean")(e.view_seq, e.view_mask)], axis=-1)
    prob = common.head(tf.concat([feature_channel, sequence_channel], axis=-1), config)
    return keras.Model(inputs=e.inputs, outputs=prob, name="double_channel")
