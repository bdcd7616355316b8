"""A content fingerprint of an exported model directory (local or gs://, through tf.io.gfile).

The fingerprint is ``sha256:<hex>`` over every file's relative path, size and
bytes, in sorted path order.  The push metadata file the store adds to a
version directory (`META_FILE`) is left out, so a pushed version has the same
fingerprint as the Trainer output it was copied from.
"""
from __future__ import annotations

import hashlib
import posixpath
from typing import List, Tuple

import tensorflow as tf

META_FILE = "push_meta.json"  # written by `feedrank.push.store` into each version directory
_CHUNK = 4 << 20


def _join(root: str, rel: str) -> str:
    return root.rstrip("/") + "/" + rel if rel else root


def listing(model_dir: str) -> List[Tuple[str, int]]:
    """Sorted ``(relative posix path, size)`` of every file under ``model_dir``, `META_FILE` excluded."""
    if not tf.io.gfile.isdir(model_dir):
        raise FileNotFoundError(f"model directory {model_dir!r} does not exist")
    root = model_dir.rstrip("/")
    out: List[Tuple[str, int]] = []
    for dirpath, _, files in tf.io.gfile.walk(root):
        rel_dir = dirpath.rstrip("/")[len(root):].lstrip("/")
        for name in files:
            rel = posixpath.join(rel_dir, name) if rel_dir else name
            if rel == META_FILE:
                continue
            out.append((rel, tf.io.gfile.stat(_join(root, rel)).length))
    return sorted(out)


def model_fingerprint(model_dir: str) -> str:
    """``sha256:<hex>`` of the files under ``model_dir`` (paths, sizes and contents)."""
    files = listing(model_dir)
    if not files:
        raise FileNotFoundError(f"model directory {model_dir!r} holds no files")
    h = hashlib.sha256()
    for rel, size in files:
        h.update(f"{rel}\0{size}\0".encode())
        with tf.io.gfile.GFile(_join(model_dir, rel), "rb") as f:
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                h.update(chunk)
    return "sha256:" + h.hexdigest()
