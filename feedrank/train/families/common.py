"""The Embedding part of Embedding&MLP, shared by every model family.

`embed` creates one Keras `Input` per transformed feature of the run's feature
contract (a `feedrank.features.FeatureSpec`, passed to every builder) and one
embedding table per vocabulary, so a history sequence always shares the table
of the candidate feature it mirrors.
Table sizes come from the Transform output (`vocab_sizes`), never constants.
A declared categorical item column reaches both sides of the attention
(`HistoryAttributes`): each history entry and the candidate get the column's
embedding through one shared zero-initialised projection.
Optional Word2Vec post vectors (`feedrank.train.word_vectors`) initialise (and
may freeze) the item table and add similarity features to ``dense``.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Mapping

import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train import word_vectors as W
from feedrank.train.settings import TrainerSettings

# Embedding width of a vocabulary ``embedding_dims`` does not name: a declared column's
# (categorical or tokens, docs/features.md).
DECLARED_EMBEDDING_DIM = 8
AGE_EMBEDDING_DIM = 8   # the event-age buckets' table (`with_ages`)


@dataclasses.dataclass
class Embedded:
    """Embedded views of one batch that model families combine."""

    spec: F.FeatureSpec           # the feature contract the inputs follow
    inputs: Dict[str, keras.Input]
    candidate: tf.Tensor          # [B, Dc]   item ++ category ++ region (+ projected declared item columns)
    click_seq: tf.Tensor          # [B, L, Dc] aligned with `candidate` (+ projected attributes, + ages)
    click_mask: tf.Tensor         # [B, L] bool
    view_seq: tf.Tensor           # [B, Lv, Dc] aligned with `candidate`
    view_mask: tf.Tensor
    conv_seq: tf.Tensor           # [B, Lc, Di + Dcat]
    conv_mask: tf.Tensor
    search_seq: tf.Tensor         # [B, Ls, Dt]
    search_mask: tf.Tensor
    user: tf.Tensor               # [B, Dr (+ declared user-side embeddings)] user region
    dense: tf.Tensor              # [B, n_dense (+ 2 word-vector similarities) (+ declared candidate-side embeddings)]
    # the id inputs after `item_id_dropout` (the inputs themselves outside training)
    ids: Dict[str, tf.Tensor] = dataclasses.field(default_factory=dict)


def make_inputs(spec: F.FeatureSpec) -> Dict[str, keras.Input]:
    """One Keras Input per transformed model feature of ``spec``."""
    inputs: Dict[str, keras.Input] = {}
    for f in spec.id_features:
        inputs[F.idx(f.name)] = keras.Input(shape=(), dtype=tf.int64, name=F.idx(f.name))
    for s in spec.seq_features:
        inputs[F.idx(s.name)] = keras.Input(shape=(s.max_len,), dtype=tf.int64, name=F.idx(s.name))
    for d in spec.dense_features:
        inputs[F.dense(d.name)] = keras.Input(shape=(), dtype=tf.float32, name=F.dense(d.name))
    for b in spec.bag_features:
        inputs[F.idx(b.name)] = keras.Input(shape=(b.max_len,), dtype=tf.int64, name=F.idx(b.name))
    return inputs


def declared_embeddings(spec: F.FeatureSpec, inputs: Mapping[str, tf.Tensor],
                        tables: Mapping[str, keras.layers.Embedding]) -> Dict[str, list]:
    """Embeddings of ``spec``'s declared categorical columns and token bags (masked mean of
    the tokens' rows), by side: ``{"user": [...], "candidate": [...]}``, each [B, d]."""
    declared = {c.feature_name for c in spec.declared}
    out: Dict[str, list] = {"user": [], "candidate": []}
    for f in spec.id_features:
        if f.name in declared:
            out[f.side].append(tables[f.vocab.name](inputs[F.idx(f.name)]))
    for b in spec.bag_features:
        ids = inputs[F.idx(b.name)]
        out[b.side].append(L.MaskedPooling("mean", name=f"{b.name}_mean")(
            tables[b.vocab.name](ids), L.padding_mask(ids)))
    return out


def item_id_dropout(spec: F.FeatureSpec, inputs: Dict[str, tf.Tensor], vocab_sizes: Mapping[str, int],
                    config: TrainerSettings) -> Dict[str, tf.Tensor]:
    """``inputs`` with the post ids (candidate and histories) passed through
    `layers.IdDropout` when ``config.id_dropout`` > 0 (a no-op outside training)."""
    if config.id_dropout <= 0:
        return dict(inputs)
    names = [F.idx(f.name) for f in spec.id_features if f.vocab == F.ITEM_VOCAB]
    names += [F.idx(s.name) for s in spec.seq_features if s.vocab == F.ITEM_VOCAB]
    layer = L.IdDropout(vocab_sizes[F.ITEM_VOCAB.name], F.ITEM_VOCAB.num_oov_buckets, config.id_dropout,
                        name="item_id_dropout")
    return {**inputs, **dict(zip(names, layer([inputs[n] for n in names])))}


def item_vectors(vocab_sizes: Mapping[str, int], config: TrainerSettings) -> W.ItemVectors | None:
    """The Word2Vec options of the settings (None without vectors)."""
    return W.from_config(config, vocab_sizes[F.ITEM_VOCAB.name], config.embedding_dims.item)


def embed(vocab_sizes: Mapping[str, int], config: TrainerSettings, *, spec: F.FeatureSpec) -> Embedded:
    """Builds the inputs of ``spec`` and the shared embedding tables; returns the embedded views.

    ``config`` is the Trainer's settings: ``embedding_dims``, ``embedding_l2``,
    ``id_dropout`` (`item_id_dropout`),
    ``match_features`` (default on: the in-graph user x post match features of
    `layers.MatchFeatures` appended to ``dense``) and ``word2vec`` (see
    `item_vectors`): Word2Vec rows for the item table (``init``, ``freeze``)
    and, with ``similarity``, the two similarity features appended to
    ``dense``, computed from a frozen copy of the vectors.
    """
    dims = dataclasses.asdict(config.embedding_dims)
    l2 = config.embedding_l2
    vectors = item_vectors(vocab_sizes, config)
    missing = [v.name for v in spec.vocabs if v.name not in vocab_sizes]
    if missing:
        raise ValueError(f"vocab_sizes lacks {missing}; got {sorted(vocab_sizes)}")
    reg = keras.regularizers.l2(l2) if l2 > 0 else None
    default_dim = {F.AGE_VOCAB.name: AGE_EMBEDDING_DIM}
    tables = {v.name: keras.layers.Embedding(vocab_sizes[v.name],
                                             dims.get(v.name, default_dim.get(v.name, DECLARED_EMBEDDING_DIM)),
                                             embeddings_regularizer=reg, name=f"{v.name}_embedding")
              for v in spec.vocabs}
    if vectors is not None and vectors.init:
        W.initialise(tables[F.ITEM_VOCAB.name], vectors)
    inputs = make_inputs(spec)
    ids = item_id_dropout(spec, inputs, vocab_sizes, config)

    def emb(name: str, vocab: F.Vocab) -> tf.Tensor:
        return tables[vocab.name](ids[F.idx(name)])

    def aged(seq: tf.Tensor, channel: str) -> tf.Tensor:
        """``seq`` plus its entries' age embeddings, projected to its width (`with_ages`)."""
        age = spec.age_feature(channel)
        if age is None:
            return seq
        return with_ages(seq, emb(age.name, age.vocab), name=f"{channel}_age")

    candidate = tf.concat([emb(f.name, f.vocab) for f in (F.ITEM_ID, F.CATEGORY_ID, F.REGION_ID)], -1)
    attributes = HistoryAttributes(spec, candidate, emb)
    candidate = attributes.candidate

    def history(channel: str, seqs) -> tf.Tensor:
        """A channel's built-in embeddings, plus its declared attributes and its ages."""
        return aged(attributes.added(tf.concat([emb(s.name, s.vocab) for s in seqs], -1), channel), channel)

    click_seq = history("click", F.CLICK_SEQUENCE)
    view_seq = history("view", F.VIEW_SEQUENCE)
    conv_seq = history("conversion", F.CONVERSION_SEQUENCE)
    search_seq = aged(emb(F.SEARCH_TOKENS.name, F.SEARCH_TOKENS.vocab), "search")
    dense = tf.stack([inputs[F.dense(d.name)] for d in spec.dense_features], axis=-1)
    if config.match_features:
        dense = tf.concat([dense, match_features(spec, ids)], axis=-1)
    if vectors is not None and vectors.similarity:
        frozen = W.frozen_table(vectors)
        click_ids = inputs[F.idx(F.CLICK_ITEMS.name)]
        similarity = W.VectorSimilarity(name="w2v_similarity", dtype="float32")(
            frozen(inputs[F.idx(F.ITEM_ID.name)]), frozen(click_ids), L.padding_mask(click_ids))
        dense = tf.concat([dense, similarity], axis=-1)
    compute_dtype = keras.mixed_precision.global_policy().compute_dtype
    if dense.dtype != compute_dtype:  # mixed_float16: the embeddings are float16
        dense = tf.cast(dense, compute_dtype)
    user = emb(F.USER_REGION_ID.name, F.USER_REGION_ID.vocab)
    declared = declared_embeddings(spec, inputs, tables)   # declared columns: user side -> user, candidates -> dense
    if declared["user"]:
        user = tf.concat([user] + declared["user"], axis=-1)
    if declared["candidate"]:
        dense = tf.concat([dense] + declared["candidate"], axis=-1)
    return Embedded(
        spec=spec, inputs=inputs, candidate=candidate,
        click_seq=click_seq, click_mask=L.padding_mask(inputs[F.idx(F.CLICK_ITEMS.name)]),
        view_seq=view_seq, view_mask=L.padding_mask(inputs[F.idx(F.VIEW_ITEMS.name)]),
        conv_seq=conv_seq, conv_mask=L.padding_mask(inputs[F.idx(F.CONV_ITEMS.name)]),
        search_seq=search_seq, search_mask=L.padding_mask(inputs[F.idx(F.SEARCH_TOKENS.name)]),
        user=user, dense=dense, ids=ids)


class HistoryAttributes:
    """The declared item columns on both sides of the attention (`features.history_sequences`).

    One bias-free projection, initialised to zero, maps the concatenated embeddings of
    ``spec.history_columns`` (their own tables, shared by the candidate and the
    histories) to the candidate's width: `candidate` is the candidate plus its own
    columns' projection, `added` a history plus its entries' projection (cut to the
    history's width: the conversion history is the candidate's post ++ category prefix).
    The same weights on both sides keep the attention comparing like with like, and at
    initialisation the model is the model without them.  Without such columns both are
    the identity."""

    def __init__(self, spec: F.FeatureSpec, candidate: tf.Tensor, emb):
        self.spec, self.emb = spec, emb
        self.projection = None
        self.candidate = candidate
        columns = spec.history_columns
        if not columns:
            return
        self.projection = keras.layers.Dense(int(candidate.shape[-1]), use_bias=False, kernel_initializer="zeros",
                                             name="declared_attribute_projection")
        own = tf.concat([emb(c.feature_name, c.vocab) for c in columns], -1)
        self.candidate = self._add(candidate, own, "candidate")

    def _add(self, x: tf.Tensor, attributes: tf.Tensor, name: str) -> tf.Tensor:
        projected = self.projection(attributes)[..., :int(x.shape[-1])]
        return keras.layers.Add(name=f"{name}_attributes_added")([x, tf.cast(projected, x.dtype)])

    def added(self, seq: tf.Tensor, channel: str) -> tf.Tensor:
        """``seq`` [B, L, D] (channel ``channel``) plus its entries' declared attributes."""
        seqs = self.spec.attributes_of(channel)
        if self.projection is None or not seqs:
            return seq
        return self._add(seq, tf.concat([self.emb(s.name, s.vocab) for s in seqs], -1), channel)


def with_ages(seq: tf.Tensor, ages: tf.Tensor, name: str) -> tf.Tensor:
    """A history [B, L, D] with each entry's event age added: the age bucket's
    embedding [B, L, Da] through a bias-free projection to D, initialised to zero
    so training starts from the history without ages.  DIN's and the multi-channel
    model's attention keys, DIEN's interest GRU, BST's transformer tokens and every
    pooled history see when each behaviour happened, not only what it was."""
    projected = keras.layers.Dense(int(seq.shape[-1]), use_bias=False, kernel_initializer="zeros",
                                   name=f"{name}_projection")(ages)
    return keras.layers.Add(name=f"{name}_added")([seq, tf.cast(projected, seq.dtype)])


def match_features(spec: F.FeatureSpec, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """[B, 3 * len(spec.matched) + 4 (+ len(spec.matched) with event ages)]: `layers.MatchFeatures`
    of every matched pair, log(1 + length) of the click, view, conversion and search
    histories and, with event ages, `layers.MatchRecency` of every matched pair (when the
    user last met this post, or this category, in each channel)."""
    match = L.MatchFeatures(name="match_features")
    parts = [match(inputs[F.idx(c.name)], inputs[F.idx(s.name)]) for s, c in spec.matched]
    if spec.event_ages:
        recency = L.MatchRecency(len(F.AGE_LABELS), name="match_recency")
        parts += [recency(inputs[F.idx(c.name)], inputs[F.idx(s.name)],
                          inputs[F.idx(spec.age_feature(s.channel).name)])[:, None] for s, c in spec.matched]
    for s in (F.CLICK_ITEMS, F.VIEW_ITEMS, F.CONV_ITEMS, F.SEARCH_TOKENS):
        n = tf.reduce_sum(tf.cast(L.padding_mask(inputs[F.idx(s.name)]), tf.float32), axis=1)
        parts.append(tf.math.log1p(n)[:, None])
    return tf.concat(parts, axis=-1)


def pooled_history(e: Embedded, channels=("view", "conv", "search")) -> list:
    """Masked mean of each named history channel: the user context that
    families which attend over clicks only add beside their interest vector."""
    return [L.MaskedPooling("mean", name=f"{c}_mean")(getattr(e, f"{c}_seq"), getattr(e, f"{c}_mask"))
            for c in channels]


def head(x: tf.Tensor, config: TrainerSettings, name: str = "head") -> tf.Tensor:
    """The MLP tower ending in one click probability per example."""
    h = L.mlp(config.mlp_units, config.activation, config.dropout, name=f"{name}_mlp")(x)
    # float32 output even under a mixed_float16 policy (a no-op otherwise)
    return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name=f"{name}_prob")(h)[:, 0]
