"""The word-vectors directory (the `feedrank.WordVectors` artifact's files).

  item_vectors.npy   float32 [n_items, d]   one row per line of item_ids.txt
  item_ids.txt       post ids, one a line
  token_vectors.npy  float32 [n_tokens, d_t] one row per line of tokens.txt
  tokens.txt         query tokens, one a line
  meta.json          counts, the window (start/end, unix seconds) and the parameters

Plain NumPy and text, so the Trainer reads it without gensim.  Paths with a
URI scheme (gs://, s3://) go through `tf.io.gfile`.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import IO, Any, Dict, List

import numpy as np

ITEM_VECTORS = "item_vectors.npy"
ITEM_IDS = "item_ids.txt"
TOKEN_VECTORS = "token_vectors.npy"
TOKENS = "tokens.txt"
META = "meta.json"


@dataclasses.dataclass
class WordVectors:
    """Post and query-token vectors with their keys and the run's facts."""

    item_ids: List[str]
    item_vectors: np.ndarray      # [len(item_ids), d] float32
    tokens: List[str]
    token_vectors: np.ndarray     # [len(tokens), d_t] float32
    meta: Dict[str, Any]

    def __post_init__(self):
        if len(self.item_ids) != len(self.item_vectors) or len(self.tokens) != len(self.token_vectors):
            raise ValueError(f"keys and vectors differ in length: {len(self.item_ids)} item ids vs "
                             f"{len(self.item_vectors)} rows, {len(self.tokens)} tokens vs "
                             f"{len(self.token_vectors)} rows")


def _open(path: str, mode: str) -> IO:
    if "://" in path:
        import tensorflow as tf  # only for object storage

        return tf.io.gfile.GFile(path, mode)
    return open(path, mode)


def _makedirs(path: str) -> None:
    if "://" in path:
        import tensorflow as tf

        tf.io.gfile.makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def _save_npy(path: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float32), allow_pickle=False)
    with _open(path, "wb") as f:
        f.write(buf.getvalue())


def _load_npy(path: str) -> np.ndarray:
    with _open(path, "rb") as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


def _save_lines(path: str, keys: List[str]) -> None:
    bad = [k for k in keys if "\n" in k or "\r" in k]
    if bad:
        raise ValueError(f"keys must not contain line breaks: {bad[:3]}")
    with _open(path, "w") as f:
        f.write("".join(f"{k}\n" for k in keys))


def _load_lines(path: str) -> List[str]:
    with _open(path, "r") as f:
        return [line.rstrip("\n") for line in f.read().splitlines(keepends=True)]


def save(vectors: WordVectors, out_dir: str) -> str:
    """Writes the five files into ``out_dir`` (created); returns it."""
    _makedirs(out_dir)
    _save_npy(os.path.join(out_dir, ITEM_VECTORS), vectors.item_vectors)
    _save_lines(os.path.join(out_dir, ITEM_IDS), vectors.item_ids)
    _save_npy(os.path.join(out_dir, TOKEN_VECTORS), vectors.token_vectors)
    _save_lines(os.path.join(out_dir, TOKENS), vectors.tokens)
    with _open(os.path.join(out_dir, META), "w") as f:
        json.dump(vectors.meta, f, indent=1, sort_keys=True)
    return out_dir


def load(in_dir: str) -> WordVectors:
    """Reads a directory written by `save`."""
    with _open(os.path.join(in_dir, META), "r") as f:
        meta = json.load(f)
    return WordVectors(
        item_ids=_load_lines(os.path.join(in_dir, ITEM_IDS)),
        item_vectors=_load_npy(os.path.join(in_dir, ITEM_VECTORS)),
        tokens=_load_lines(os.path.join(in_dir, TOKENS)),
        token_vectors=_load_npy(os.path.join(in_dir, TOKEN_VECTORS)),
        meta=meta)
