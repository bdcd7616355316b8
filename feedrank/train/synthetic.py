"""Random batches of transformed features: what a model reads, without data.

`random_batch` draws, for a feature contract (`feedrank.features.FeatureSpec`),
the tensors the Transform output gives a model: ids in ``[1, vocab size)`` for
the id features, right-padded (`feedrank.features.PAD_ID`) id sequences of
random length for the behaviour sequences and declared token bags, and values
in ``[0, 1)`` for the dense features.  Model tests and the training-throughput
benchmark use it; nothing in the pipeline does.
"""
from __future__ import annotations

from typing import Dict, Mapping

import numpy as np

from feedrank import features as F


def _vocab_size(vocab_sizes: Mapping[str, int], vocab: F.Vocab, feature: str) -> int:
    try:
        size = int(vocab_sizes[vocab.name])
    except KeyError:
        raise ValueError(f"no size for vocabulary {vocab.name!r} (feature {feature!r}); "
                         f"vocab_sizes has {sorted(vocab_sizes)}") from None
    if size < 2:
        raise ValueError(f"vocabulary {vocab.name!r} has size {size}: at least 2 (padding and one id)")
    return size


def _padded_ids(rng: np.random.Generator, vocab_sizes: Mapping[str, int], feature, lens: np.ndarray) -> np.ndarray:
    """[n, max_len] ids, row i kept to its first ``lens[i]`` entries, the rest `F.PAD_ID`."""
    n = len(lens)
    ids = rng.integers(1, _vocab_size(vocab_sizes, feature.vocab, feature.name), (n, feature.max_len)).astype(np.int64)
    ids[np.arange(feature.max_len)[None, :] >= lens[:, None]] = F.PAD_ID
    return ids


def random_batch(n: int, vocab_sizes: Mapping[str, int], spec: F.FeatureSpec = F.BUILTIN,
                 seed: int = 0, min_len: int = 0) -> Dict[str, np.ndarray]:
    """``n`` rows of every model input of ``spec`` (`FeatureSpec.model_input_names`), keyed by
    transformed name.  Sequences of one channel share their lengths, drawn from
    ``[min_len, max_len]``; a bag's length is drawn per bag."""
    if n < 1:
        raise ValueError(f"random_batch needs n >= 1, got {n}")
    rng = np.random.default_rng(seed)
    batch: Dict[str, np.ndarray] = {}
    for f in spec.id_features:
        batch[F.idx(f.name)] = rng.integers(1, _vocab_size(vocab_sizes, f.vocab, f.name), n).astype(np.int64)
    lengths: Dict[str, np.ndarray] = {}
    for s in spec.seq_features:
        lens = lengths.setdefault(s.channel, rng.integers(min_len, s.max_len + 1, n))
        batch[F.idx(s.name)] = _padded_ids(rng, vocab_sizes, s, lens)
    for b in spec.bag_features:
        lens = rng.integers(min(min_len, b.max_len), b.max_len + 1, n)
        batch[F.idx(b.name)] = _padded_ids(rng, vocab_sizes, b, lens)
    for d in spec.dense_features:
        batch[F.dense(d.name)] = rng.random(n).astype(np.float32)
    return batch
