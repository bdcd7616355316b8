"""Multi-channel ranker: click, page-view, conversion and search histories,
each with its own encoder, fused before the MLP head.

Channel encoders follow:
  * click: DIN target attention (Zhou et al., KDD 2018, arXiv:1706.06978;
    ``click_encoder: din``, default) or the Behavior Sequence Transformer
    (Chen et al., DLP-KDD 2019, arXiv:1905.06874; ``click_encoder: transformer``);
  * page view: its own DIN target attention (own weights) over the views;
  * conversion: conversions are sparse, so posts are replaced by CLUSTERS
    (as in 58.com's multi-channel home-feed ranker, which clusters post
    vectors learned by Word2Vec, Mikolov et al. 2013, arXiv:1310.4546);
    the conversion clusters are embedded and DIN-attention-pooled against the
    candidate's cluster;
  * search: the mean of the query-token vectors over the real tokens (a
    bag-of-words query vector), optionally initialised from pretrained
    (e.g. Word2Vec) token vectors.
The channels are concatenated (``fusion: concat``, default) or gated
(``fusion: gated``: each projected to ``fusion_units``, scaled by a sigmoid
gate over all channels), then join the candidate, user and dense features.

Clusters (config):
  * ``item_clusters``: one k-means label per ROW of the item table
    (len == vocab_sizes["item"]; labels 0..K-1, -1 for rows without a vector
    such as OOV buckets; row 0 is padding and ignored), an array or a .npy
    path.  It becomes a non-trainable item idx -> cluster idx lookup stored as
    a weight (0 padding, k -> k + 1, -1 -> K + 1).
  * absent, ``conversion_clusters_from: category`` (the DEFAULT): the post's
    category is its cluster (conv_category_ids / category_id: no extra lookup,
    always consistent with the transform vocabularies).
  * ``conversion_clusters_from: hash``: a deterministic hash of the item idx
    mod ``conversion_clusters`` (default 64): a stand-in that tests the lookup
    path, with no semantic grouping.
  ``cluster_dim`` (16) is the cluster embedding width.
Search: ``token_vectors`` (array [vocab_sizes["token"], d] or .npy path)
initialises a search-channel token table (row 0 zeroed; trainable unless
``token_vectors_trainable: false``); absent, the shared token table is used.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train.families import bst, common
from feedrank.train.settings import TrainerSettings


# The conversion channel's cluster lookup and the gated channel fusion
# (registered as feedrank>ClusterLookup etc.; saved models load by that name).
@keras.utils.register_keras_serializable(package="feedrank")
class ClusterLookup(keras.layers.Layer):
    """Non-trainable map item idx -> cluster idx (0 stays padding).

    The table is a non-trainable int64 weight, so it travels with the
    checkpoint, not the config; set it with ``set_table`` after building
    (see `cluster_table`).
    """

    def __init__(self, num_items: int, **kwargs):
        super().__init__(**kwargs)
        self.num_items = int(num_items)

    def build(self, input_shape):
        self.table = self.add_weight(name="item_to_cluster", shape=(self.num_items,), dtype=tf.int64,
                                     initializer="zeros", trainable=False)
        super().build(input_shape)

    def set_table(self, table: np.ndarray) -> None:
        if not self.built:
            self.build(None)
        self.table.assign(np.asarray(table, dtype=np.int64))

    def call(self, ids):
        return tf.gather(self.table, tf.cast(ids, tf.int64))

    def get_config(self):
        return {**super().get_config(), "num_items": self.num_items}


def cluster_table(labels: np.ndarray, num_items: int) -> tuple[np.ndarray, int]:
    """Cluster labels per item-table row (0..K-1, or -1 for 'no vector') ->
    (table, embedding rows): row 0 (padding) -> 0, label k -> k + 1, -1 -> K + 1."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.shape[0] != num_items:
        raise ValueError(f"item_clusters has {labels.shape[0]} rows; the item table has {num_items}")
    real = np.delete(labels, F.PAD_ID)
    if real.min(initial=0) < -1:
        raise ValueError("item_clusters labels must be >= -1")
    k = int(real.max(initial=-1)) + 1
    table = np.where(labels >= 0, labels + 1, k + 1)
    table[F.PAD_ID] = 0
    return table, k + 2


def hash_clusters(num_items: int, num_clusters: int) -> np.ndarray:
    """Deterministic fallback labels: a multiplicative hash of the item idx mod K."""
    idx = np.arange(num_items, dtype=np.uint64)
    return ((idx * np.uint64(2654435761)) % np.uint64(2 ** 32) % np.uint64(num_clusters)).astype(np.int64)


@keras.utils.register_keras_serializable(package="feedrank")
class GatedFusion(keras.layers.Layer):
    """Fuses channel vectors: each projected to ``units``, scaled by a sigmoid
    gate computed from all channels, concatenated: [B, n * units]."""

    def __init__(self, units: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        n = len(input_shape)
        self.proj = [keras.layers.Dense(self.units, name=f"proj{i}") for i in range(n)]
        self.gate = keras.layers.Dense(n, activation="sigmoid", name="gate")
        super().build(input_shape)

    def call(self, channels):
        g = self.gate(tf.concat(channels, axis=-1))
        return tf.concat([g[:, i:i + 1] * p(c) for i, (p, c) in enumerate(zip(self.proj, channels))], -1)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _array(value) -> np.ndarray:
    return np.load(value) if isinstance(value, str) else np.asarray(value)


def conversion_clusters(e: common.Embedded, vocab_sizes: Mapping[str, int], config: TrainerSettings):
    """(candidate cluster ids [B], conversion cluster ids [B, Lc], table rows)."""
    n_items = vocab_sizes[F.ITEM_VOCAB.name]
    s = config.multi_channel
    source = s.conversion_clusters_from
    if s.item_clusters is not None:
        table, rows = cluster_table(_array(s.item_clusters), n_items)
    elif source == "hash":
        table, rows = cluster_table(hash_clusters(n_items, s.conversion_clusters),
                                      n_items)
    elif source == "category":
        return (e.inputs[F.idx(F.CATEGORY_ID.name)], e.inputs[F.idx(F.CONV_CATEGORIES.name)],
                vocab_sizes[F.CATEGORY_VOCAB.name])
    else:
        raise ValueError(f"conversion_clusters_from must be 'category' or 'hash', got {source!r}")
    lookup = ClusterLookup(n_items, name="item_cluster_lookup")
    lookup.set_table(table)
    return (lookup(e.ids[F.idx(F.ITEM_ID.name)]), lookup(e.ids[F.idx(F.CONV_ITEMS.name)]), rows)


def search_sequence(e: common.Embedded, vocab_sizes: Mapping[str, int], config: TrainerSettings) -> tf.Tensor:
    """[B, Ls, Dt] token vectors: the shared table, or one from ``token_vectors``."""
    if config.multi_channel.token_vectors is None:
        return e.search_seq
    vectors = _array(config.multi_channel.token_vectors).astype(np.float32).copy()
    n = vocab_sizes[F.TOKEN_VOCAB.name]
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise ValueError(f"token_vectors must be [{n}, d], got {vectors.shape}")
    vectors[F.PAD_ID] = 0.0
    table = keras.layers.Embedding(n, vectors.shape[1], name="search_token_embedding",
                                   trainable=config.multi_channel.token_vectors_trainable)
    table.build((None,))
    table.set_weights([vectors])
    return table(e.inputs[F.idx(F.SEARCH_TOKENS.name)])


def build(vocab_sizes: Mapping[str, int], config: TrainerSettings, *, spec: F.FeatureSpec) -> keras.Model:
    """Returns a Keras model: the transformed features of ``spec`` (a dict) -> click probability [B]."""
    e = common.embed(vocab_sizes, config, spec=spec)
    attention_units = config.din.attention_units

    encoder = config.multi_channel.click_encoder
    if encoder == "din":
        click = L.TargetAttention(attention_units, name="click_attention")(e.candidate, e.click_seq, e.click_mask)
    elif encoder == "transformer":
        click = bst.encode(e, config, name="click_transformer")
    else:
        raise ValueError(f"click_encoder must be 'din' or 'transformer', got {encoder!r}")

    view = L.TargetAttention(attention_units, name="view_attention")(e.candidate, e.view_seq, e.view_mask)

    cand_cluster, conv_clusters, rows = conversion_clusters(e, vocab_sizes, config)
    cluster_embedding = keras.layers.Embedding(rows, config.multi_channel.cluster_dim, name="cluster_embedding")
    conv = L.TargetAttention(attention_units, name="conversion_attention")(
        cluster_embedding(cand_cluster), cluster_embedding(conv_clusters), e.conv_mask)

    search = L.MaskedPooling("mean", name="search_mean")(search_sequence(e, vocab_sizes, config), e.search_mask)

    fusion = config.multi_channel.fusion
    if fusion == "concat":
        fused = tf.concat([click, view, conv, search], axis=-1)
    elif fusion == "gated":
        fused = GatedFusion(config.multi_channel.fusion_units, name="channel_fusion")([click, view, conv, search])
    else:
        raise ValueError(f"fusion must be 'concat' or 'gated', got {fusion!r}")
    x = tf.concat([e.candidate, fused, e.user, e.dense], axis=-1)
    prob = common.head(x, config)
    return keras.Model(inputs=e.inputs, outputs=prob, name="multi_channel")
