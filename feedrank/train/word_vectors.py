"""Word2Vec post vectors inside the models: table initialisation and similarity features.

The Trainer gets the `feedrank.WordVectors` artifact's URI as
``custom_config['word_vectors_uri']`` (components/trainer/) and
``custom_config['word2vec'] = {init, freeze, similarity}`` from the YAML.
`attach` maps Transform's item vocabulary onto the vectors (row = vocabulary
index + 1; 0 is padding; OOV buckets and posts without a vector are NaN rows)
and hands the matrix to the families as the settings' ``item_vectors``, which
`common.embed` turns into:

* ``init``: the item embedding table's rows with a vector are set to it after
  the table is built (not through an initializer, so the matrix never enters a
  Keras config); the others keep their random init; ``freeze`` makes the table
  non-trainable;
* ``similarity``: a FROZEN copy of the vectors (``item_w2v_embedding``, zeros
  for rows without a vector) and `VectorSimilarity`: the cosine between the
  candidate and the mean of the click-history vectors, and the max cosine over
  the click history, padding masked.  Both live in the model, so the exported
  SavedModel computes them exactly as training did.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train.settings import TrainerSettings, Word2VecUse

log = logging.getLogger(__name__)

URI_KEY = "word_vectors_uri"     # custom_config key set by components/trainer's executor
SIMILARITY_FEATURES = ("w2v_cos_click_mean", "w2v_cos_click_max")


@dataclasses.dataclass
class ItemVectors:
    """Pretrained rows of the item table and how the model uses them."""

    matrix: np.ndarray   # float32 [n_items, d]; NaN rows have no vector
    init: bool
    freeze: bool
    similarity: bool

    @property
    def has_vector(self) -> np.ndarray:
        return ~np.isnan(self.matrix).any(axis=1)

    def frozen_rows(self) -> np.ndarray:
        """The similarity table: the vectors, zeros for padding and rows without one."""
        rows = np.nan_to_num(self.matrix, nan=0.0).astype(np.float32)
        rows[F.PAD_ID] = 0.0
        return rows


def options(settings: TrainerSettings) -> Dict[str, bool]:
    """``trainer.word2vec`` with the defaults filled in (`Word2VecUse`)."""
    return dataclasses.asdict(settings.word2vec or Word2VecUse())


def from_config(settings: TrainerSettings, n_items: int, item_dim: int) -> Optional[ItemVectors]:
    """The families' view of the settings: None unless item vectors are given."""
    opts = options(settings)
    value = settings.item_vectors
    if value is None:
        if settings.word2vec is not None and (opts["init"] or opts["similarity"]):
            raise ValueError(f"word2vec asks for word vectors ({opts}) but none were "
                             f"given: enable the word2vec section so Word2VecGen feeds the Trainer")
        return None
    matrix = (np.load(value) if isinstance(value, str) else np.asarray(value)).astype(np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != n_items:
        raise ValueError(f"item_vectors must be [{n_items}, d] (one row per item table row), got {matrix.shape}")
    if opts["init"] and matrix.shape[1] != item_dim:
        raise ValueError(f"word vectors have dim {matrix.shape[1]} but the item embedding dim is {item_dim}: "
                         f"set word2vec.vector_size to {item_dim} (or 0) or embedding_dims.item")
    return ItemVectors(matrix, opts["init"], opts["freeze"], opts["similarity"])


def vocab_matrix(item_ids: Sequence[str], vectors: np.ndarray, vocab: Sequence, n_rows: int) -> np.ndarray:
    """[n_rows, d] with row ``i + 1`` = the vector of ``vocab[i]``; NaN where none."""
    out = np.full((n_rows, vectors.shape[1]), np.nan, np.float32)
    position = {k: i for i, k in enumerate(item_ids)}
    for i, key in enumerate(vocab):
        key = key.decode() if isinstance(key, bytes) else str(key)
        j = position.get(key)
        if j is not None and i + 1 < n_rows:
            out[i + 1] = vectors[j]
    return out


def attach(settings: TrainerSettings, tf_transform_output, n_items: int) -> TrainerSettings:
    """The settings with ``item_vectors`` mapped onto Transform's item vocabulary, when
    ``word_vectors_uri`` is set; logs the coverage."""
    uri = settings.word_vectors_uri
    if not uri:
        return settings
    from feedrank.transform.preprocessing import vocab_file_name
    from feedrank.vectors import artifact

    wv = artifact.load(uri)
    vocab = tf_transform_output.vocabulary_by_name(vocab_file_name(F.ITEM_VOCAB))
    matrix = vocab_matrix(wv.item_ids, wv.item_vectors, vocab, n_items)
    covered = int((~np.isnan(matrix).any(axis=1)).sum())
    log.info("word vectors %s: %d of %d item vocabulary entries have a vector (%.1f%%; %d vectors, "
             "window %s..%s); options %s", uri, covered, len(vocab), 100.0 * covered / max(1, len(vocab)),
             len(wv.item_ids), wv.meta.get("window_start_ts"), wv.meta.get("window_end_ts"), options(settings))
    return dataclasses.replace(settings, item_vectors=matrix)


def _build(table: keras.layers.Embedding) -> None:
    """Builds ``table`` now, its variable named ``<table name>/embeddings`` as a call would."""
    with tf.name_scope(table.name):
        table.build((None,))


def initialise(table: keras.layers.Embedding, vectors: ItemVectors) -> None:
    """Sets the rows with a vector (after building the table); optionally freezes it."""
    _build(table)
    weights = table.get_weights()[0]
    has = vectors.has_vector
    weights[has] = vectors.matrix[has]
    table.set_weights([weights])
    if vectors.freeze:
        table.trainable = False
    log.info("item table: %d of %d rows from word vectors%s", int(has.sum()), len(has),
             " (frozen)" if vectors.freeze else "")


def frozen_table(vectors: ItemVectors, name: str = "item_w2v_embedding") -> keras.layers.Embedding:
    """A non-trainable copy of the vectors for the similarity features."""
    rows = vectors.frozen_rows()
    table = keras.layers.Embedding(rows.shape[0], rows.shape[1], trainable=False, name=name)
    _build(table)
    table.set_weights([rows])
    return table


@keras.utils.register_keras_serializable(package="feedrank")
class VectorSimilarity(keras.layers.Layer):
    """[cos(candidate, mean of real history vectors), max cos over real steps] -> [B, 2].

    Padded steps never count; with no real step (or a zero vector) both are 0.
    """

    def call(self, candidate: tf.Tensor, history: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        candidate = tf.cast(candidate, tf.float32)
        history = tf.cast(history, tf.float32)
        m = tf.cast(mask, tf.float32)
        mean = tf.math.divide_no_nan(tf.reduce_sum(history * m[..., None], axis=1),
                                     tf.reduce_sum(m, axis=1, keepdims=True))
        c = tf.math.l2_normalize(candidate, axis=-1)
        cos_mean = tf.reduce_sum(c * tf.math.l2_normalize(mean, axis=-1), axis=-1)
        cos_steps = tf.einsum("bd,bld->bl", c, tf.math.l2_normalize(history, axis=-1))
        cos_max = tf.reduce_max(tf.where(mask, cos_steps, tf.fill(tf.shape(cos_steps), -2.0)), axis=1)
        cos_max = tf.where(tf.reduce_any(mask, axis=1), cos_max, tf.zeros_like(cos_max))
        return tf.stack([cos_mean, cos_max], axis=-1)
