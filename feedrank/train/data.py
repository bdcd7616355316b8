"""tf.data input pipeline over GZIP TFRecords of transformed examples.

Files are interleaved in parallel, records are batched before parsing (one
vectorised `parse_example` per batch) and the result is prefetched.

``cache`` keeps the decompressed serialized records after the first pass
("memory", or a file prefix for tf.data's on-disk cache), before the shuffle,
so every later epoch skips the GZIP read (the slowest part: a single-shard
split decompresses on one core) and still gets a fresh order.  The records
take about as much memory as the uncompressed split (~3 KB an example here).

Every stage keeps its order (``deterministic=True``), so with the same seed
the Trainer sees the same batches in the same order on every run.

With ``transform_layer`` the records are raw tf.Examples (Transform did not
materialise its output): each batch is parsed with the raw spec and mapped
through the tf.Transform layer, after the cache and the shuffle, so the model
sees the same batches as from the materialised transformed examples (which
Transform writes in the raw examples' order).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from feedrank import features as F

AUTOTUNE = tf.data.AUTOTUNE


def _expand(patterns: Sequence[str]) -> List[str]:
    files: List[str] = []
    for p in patterns:
        files += tf.io.gfile.glob(p if any(c in p for c in "*?[") else p + "*")
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {list(patterns)}")
    return sorted(files)


def dataset(patterns: Sequence[str], feature_spec: Dict[str, object], batch_size: int,
            shuffle: bool = False, seed: int = 0, label: str = F.LABEL,
            shuffle_buffer: int = 100_000, cache: str = "",
            transform_layer: Optional[Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]] = None
            ) -> tf.data.Dataset:
    """(features, label) batches from transformed TFRecords; one pass per iteration.

    ``cache``: "" (off), "memory", or a file prefix for the serialized records.
    ``transform_layer``: the records are raw examples, ``feature_spec`` is their
    spec, and the layer (`TFTransformOutput.transform_features_layer`) transforms them.
    """
    files = _expand(patterns)
    wanted = set(F.model_input_names()) | {label}
    if transform_layer is None:
        spec = {k: v for k, v in feature_spec.items() if k in wanted}

        def parse(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
            return tf.io.parse_example(serialized, spec)
    else:
        def parse(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
            transformed = transform_layer(tf.io.parse_example(serialized, feature_spec))
            return {k: v for k, v in transformed.items() if k in wanted}
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed)
    ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
                       cycle_length=min(4, len(files)), num_parallel_calls=AUTOTUNE,
                       deterministic=True)
    if cache:
        ds = ds.cache("" if cache == "memory" else cache)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)

    def split(batch: Dict[str, tf.Tensor]) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
        y = tf.cast(batch.pop(label), tf.float32)
        return batch, y

    return ds.map(split, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
