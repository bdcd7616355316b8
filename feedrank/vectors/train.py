"""Skip-gram Word2Vec (gensim) on the corpus: post vectors and query-token vectors.

Mikolov, T. et al. "Distributed Representations of Words and Phrases and
their Compositionality." NIPS 2013 (arXiv:1310.4546): posts clicked near each
other by the same user get nearby vectors, as words in one sentence do.
One worker thread and a fixed seed (and a process-independent hash for
gensim's per-word initial vectors) make a run reproducible.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from feedrank.vectors.artifact import WordVectors
from feedrank.vectors.corpus import Corpus

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Word2VecParams:
    """gensim parameters (skip-gram, negative sampling) for both vocabularies."""

    vector_size: int = 32          # post vectors: the Trainer's item embedding dim
    token_vector_size: int = 16    # query-token vectors: the Trainer's token embedding dim
    window: int = 5
    min_count: int = 1
    epochs: int = 10
    negative: int = 5
    sample: float = 1e-3           # down-sampling of frequent keys (0: none; tiny corpora want 0)
    seed: int = 0

    def __post_init__(self):
        for name in ("vector_size", "token_vector_size", "window", "min_count", "epochs", "negative"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"word2vec {name} must be >= 1, got {getattr(self, name)}")
        if self.sample < 0:
            raise ValueError(f"word2vec sample must be >= 0, got {self.sample}")


def stable_hash(text: str) -> int:
    """Process-independent stand-in for gensim's default ``hash`` (salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


def fit(sentences: Sequence[List[str]], vector_size: int, params: Word2VecParams,
        what: str) -> Tuple[List[str], np.ndarray]:
    """Trains skip-gram Word2Vec; returns (keys, float32 [n, vector_size]); empty when
    ``sentences`` hold no word seen ``min_count`` times."""
    from gensim.models import Word2Vec  # heavy; only the component needs it

    words = sum(len(s) for s in sentences)
    if not words:
        return [], np.zeros((0, vector_size), np.float32)
    started = time.time()
    model = Word2Vec(vector_size=vector_size, window=params.window, min_count=params.min_count,
                     sg=1, negative=params.negative, sample=params.sample, seed=params.seed, workers=1,
                     hashfxn=stable_hash)
    model.build_vocab(sentences)
    if not len(model.wv):
        log.warning("word2vec %s: no key occurs %d time(s); no vectors", what, params.min_count)
        return [], np.zeros((0, vector_size), np.float32)
    model.train(sentences, total_examples=model.corpus_count, epochs=params.epochs)
    keys = list(model.wv.index_to_key)
    log.info("word2vec %s: %d vectors (dim %d) from %d sentences / %d words, %d epochs, %.1f s",
             what, len(keys), vector_size, len(sentences), words, params.epochs, time.time() - started)
    return keys, np.asarray(model.wv.vectors, dtype=np.float32)


def train_vectors(corpus: Corpus, params: Word2VecParams) -> WordVectors:
    """Post vectors from the click sequences, token vectors from the queries."""
    item_ids, item_vectors = fit(corpus.click_sequences, params.vector_size, params, "posts")
    tokens, token_vectors = fit(corpus.queries, params.token_vector_size, params, "query tokens")
    meta: Dict[str, Any] = {
        "window_start_ts": corpus.window_start, "window_end_ts": corpus.window_end,
        "counts": {**corpus.counts, "item_vectors": len(item_ids), "token_vectors": len(tokens)},
        "params": dataclasses.asdict(params), "model": "gensim Word2Vec skip-gram",
    }
    return WordVectors(item_ids, item_vectors, tokens, token_vectors, meta)
