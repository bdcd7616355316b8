"""tf.Transform `preprocessing_fn`: shared vocabularies, padded sequences, scaled numbers.

Every id feature and every sequence that names the same vocabulary in
`feedrank.features` is looked up in one vocabulary computed over all of them,
so a post id means the same row of the embedding table whether it is the
candidate or an entry of the click history.  Ids are shifted by one so that 0
is padding; OOV ids land in the buckets after the vocabulary.  Declared
item/user columns (docs/features.md) follow the same rules: a categorical
column or a token bag has its own vocabulary, a bag is padded like a sequence,
a numeric column is z-scored like the other numbers.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import tensorflow as tf
import tensorflow_transform as tft

from feedrank import features as F

# custom_config key of the feature contract (`features.FeatureSpec.to_json`), as the pipeline passes it
DECLARED_KEY = "declared_features"


def vocab_file_name(vocab: F.Vocab) -> str:
    """The deferred vocabulary's file name in the Transform output."""
    return f"{vocab.name}_vocab"


def _values(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """All string values of a dense [B] or sparse [B, None] tensor, flattened."""
    if isinstance(x, tf.SparseTensor):
        return x.values
    return tf.reshape(x, [-1])


def _lookup_shifted(x, vocab_path, vocab: F.Vocab):
    """Vocabulary index + 1 (0 stays free for padding); OOV go to buckets after V."""
    looked_up = tft.apply_vocabulary(x, vocab_path, num_oov_buckets=vocab.num_oov_buckets)
    if isinstance(looked_up, tf.SparseTensor):
        return tf.SparseTensor(looked_up.indices, looked_up.values + 1, looked_up.dense_shape)
    return looked_up + 1


def _pad(sparse_ids: tf.SparseTensor, max_len: int) -> tf.Tensor:
    """Sparse [B, <=max_len] ids -> dense [B, max_len], right-padded with PAD_ID.

    The example generator and the serving signature both keep only the most
    recent ``max_len`` values, so the slice never drops anything in practice.
    """
    batch = sparse_ids.dense_shape[0]
    sliced = tf.sparse.slice(sparse_ids, [0, 0], tf.stack([batch, tf.constant(max_len, tf.int64)]))
    dense = tf.sparse.to_dense(
        tf.sparse.reset_shape(sliced, tf.stack([batch, tf.constant(max_len, tf.int64)])),
        default_value=tf.constant(F.PAD_ID, tf.int64))
    return tf.reshape(dense, [-1, max_len])


def _lookup_fixed(x, vocab: F.Vocab):
    """Ids of a fixed vocabulary (`features.Vocab.labels`): label i -> i + 1, anything
    else -> ``len(labels) + 1``; the labels are ``<prefix>NN`` with a running two-digit NN."""
    def ids(values: tf.Tensor) -> tf.Tensor:
        prefix = vocab.labels[0][:-2]
        ok = tf.strings.regex_full_match(values, prefix + "[0-9][0-9]")
        padded = tf.strings.join([values, "9" * (len(prefix) + 2)])   # substr never runs past any value's end
        code = tf.strings.to_number(tf.where(ok, tf.strings.substr(padded, len(prefix), 2), "99"), tf.int64)
        n = len(vocab.labels)
        return tf.where(ok & (code < n), code + 1, tf.constant(n + 1, tf.int64))

    if isinstance(x, tf.SparseTensor):
        return tf.SparseTensor(x.indices, ids(x.values), x.dense_shape)
    return ids(x)


def _vocab_members(spec: F.FeatureSpec, vocab: F.Vocab) -> List[str]:
    names = [f.name for f in spec.id_features if f.vocab == vocab]
    names += [s.name for s in spec.seq_features if s.vocab == vocab]
    names += [b.name for b in spec.bag_features if b.vocab == vocab]
    return names


def spec_of(custom_config: Optional[Dict[str, Any]]) -> F.FeatureSpec:
    """The feature contract in the Transform component's ``custom_config``: its
    `DECLARED_KEY` (`features.FeatureSpec.to_json`); a run that declares no columns
    passes none, which is the built-in contract."""
    return F.FeatureSpec.from_json((custom_config or {}).get(DECLARED_KEY))


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Optional[Dict[str, Any]] = None) -> Dict[str, tf.Tensor]:
    """Raw features (see `features.FeatureSpec.raw_feature_spec`) -> model inputs.

    ``custom_config`` (the Transform component's): ``declared_features``, the run's
    feature contract (`spec_of`).
    """
    return transform_features(inputs, spec_of(custom_config))


def transform_features(inputs: Dict[str, tf.Tensor], spec: F.FeatureSpec) -> Dict[str, tf.Tensor]:
    """`preprocessing_fn` for the feature contract ``spec``."""
    outputs: Dict[str, tf.Tensor] = {}
    for vocab in spec.vocabs:
        if vocab.labels:   # fixed and ordered (the event ages): no analyzer
            for s in spec.seq_features:
                if s.vocab == vocab:
                    outputs[F.idx(s.name)] = _pad(_lookup_fixed(inputs[s.name], vocab), s.max_len)
            continue
        members = [n for n in _vocab_members(spec, vocab) if n in inputs]
        all_values = tf.concat([_values(inputs[n]) for n in members], axis=0)
        all_values = tf.boolean_mask(all_values, tf.strings.length(all_values) > 0)
        path = tft.vocabulary(
            all_values, vocab_filename=vocab_file_name(vocab),
            frequency_threshold=vocab.frequency_threshold if vocab.frequency_threshold > 1 else None)  # 1: keep all
        for f in spec.id_features:
            if f.vocab == vocab:
                outputs[F.idx(f.name)] = _lookup_shifted(inputs[f.name], path, vocab)
        for s in spec.seq_features:
            if s.vocab == vocab:
                outputs[F.idx(s.name)] = _pad(_lookup_shifted(inputs[s.name], path, vocab), s.max_len)
        for b in spec.bag_features:
            if b.vocab == vocab:
                outputs[F.idx(b.name)] = _pad(_lookup_shifted(inputs[b.name], path, vocab), b.max_len)
    for d in spec.dense_features:
        x = tf.cast(inputs[d.name], tf.float32)
        if d.log1p:
            x = tf.math.log1p(tf.maximum(x, 0.0))
        if d.max_value is not None and d.max_value <= 1.0 and d.min_value == 0.0:
            outputs[F.dense(d.name)] = x  # already in [0, 1]
        else:
            outputs[F.dense(d.name)] = tft.scale_to_z_score(x)
    if F.IMPRESSION_ID in inputs:  # passed through, to key scores; never a model input
        outputs[F.IMPRESSION_ID] = inputs[F.IMPRESSION_ID]
    for label in F.LABELS:
        if label in inputs:
            outputs[label] = tf.cast(inputs[label], tf.int64)
    return outputs
