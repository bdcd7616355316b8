"""tf.data input pipeline over GZIP TFRecords of transformed examples.

Files are interleaved in parallel, records are batched before parsing (one
vectorised `parse_example` per batch) and the result is prefetched.

``cache`` keeps the decompressed serialized records after the first pass,
before the shuffle, so every later epoch skips the GZIP read (the slowest
part: a single-shard split decompresses on one core) and still gets a fresh
order.  The records take about as much room as the uncompressed split (~3 KB
an example here).  `CACHE_MODES`: ``"memory"``; ``"disk"``, tf.data's file
cache in ``cache_dir`` under a name keyed to the files it caches (their paths,
sizes and modification times, `cache_key`), so a cache never serves records
of other data; ``""`` off.

Every stage keeps its order (``deterministic=True``), so with the same seed
the Trainer sees the same batches in the same order on every run.

With ``transform_layer`` the records are raw tf.Examples (Transform did not
materialise its output): each batch is parsed with the raw spec and mapped
through the tf.Transform layer, after the cache and the shuffle, so the model
sees the same batches as from the materialised transformed examples (which
Transform writes in the raw examples' order).

Under a multi-worker strategy ``shard`` (`feedrank.train.distribute.Shard`) cuts the
split to one worker's part: its files (``file``), or every n-th record of the shuffled
stream every worker builds alike (``data``, right before the batching); ``tap`` sees
each batch of serialized records before parsing (`feedrank.train.distribute.ShardTally`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from feedrank import features as F
from feedrank.train.distribute import Shard

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
CACHE_MODES = ("memory", "disk", "")


def expand(patterns: Sequence[str]) -> List[str]:
    """The sorted files ``patterns`` match (a pattern without a wildcard is a prefix)."""
    files: List[str] = []
    for p in patterns:
        files += tf.io.gfile.glob(p if any(c in p for c in "*?[") else p + "*")
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {list(patterns)}")
    return sorted(files)


def cache_key(files: Sequence[str]) -> str:
    """A digest of the files' paths, sizes and modification times: the on-disk
    cache's name, so new or rewritten data never reads another's records."""
    stats = []
    for path in sorted(files):
        st = tf.io.gfile.stat(path)
        stats.append([path, st.length, st.mtime_nsec])
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:20]


def cache_path(files: Sequence[str], cache_dir: str) -> str:
    """The tf.data file-cache prefix for ``files``: ``<cache_dir>/records-<cache_key>``."""
    return os.path.join(cache_dir, f"records-{cache_key(files)}")


def dataset(patterns: Sequence[str], feature_spec: Dict[str, object], batch_size: int,
            shuffle: bool = False, seed: int = 0, label: str = F.LABEL,
            shuffle_buffer: int = 100_000, cache: str = "",
            transform_layer: Optional[Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]] = None,
            cache_dir: Optional[str] = None, *, spec: F.FeatureSpec, shard: Optional[Shard] = None,
            tap: Optional[Callable[[tf.Tensor], tf.Tensor]] = None) -> tf.data.Dataset:
    """(features, label) batches from transformed TFRecords; one pass per iteration.

    The features are the model inputs of the feature contract ``spec``
    (`features.FeatureSpec.model_input_names`).

    ``cache``: one of `CACHE_MODES`; ``"disk"`` writes under ``cache_dir``
    (`cache_path`), which the caller owns and removes.
    ``transform_layer``: the records are raw examples, ``feature_spec`` is their
    spec, and the layer (`TFTransformOutput.transform_features_layer`) transforms them.
    ``shard``: this worker's part of the split (module docstring); ``batch_size`` is then
    the per-replica batch.  ``tap``: called on each batch of serialized records.
    """
    if cache not in CACHE_MODES:
        raise ValueError(f"input cache must be one of {list(CACHE_MODES)}, got {cache!r}")
    if cache == "disk" and not cache_dir:
        raise ValueError("the 'disk' input cache needs a cache_dir (the run's own directory)")
    shard = shard or Shard()
    files = shard.files(expand(patterns))
    wanted = set(spec.model_input_names()) | {label}
    if transform_layer is None:
        parse_spec = {k: v for k, v in feature_spec.items() if k in wanted}

        def parse(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
            return tf.io.parse_example(serialized, parse_spec)
    else:
        def parse(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
            transformed = transform_layer(tf.io.parse_example(serialized, feature_spec))
            return {k: v for k, v in transformed.items() if k in wanted}
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:   # seeded: under the data policy every worker shuffles alike
        ds = ds.shuffle(len(files), seed=seed)
    ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
                       cycle_length=min(4, len(files)), num_parallel_calls=AUTOTUNE,
                       deterministic=True)
    if cache == "memory":
        ds = ds.cache()
    elif cache == "disk":
        tf.io.gfile.makedirs(cache_dir)
        prefix = cache_path(files, cache_dir)
        log.info("input cache for %d file(s): %s", len(files), prefix)
        ds = ds.cache(prefix)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = shard.records(ds).batch(batch_size)
    if tap is not None:
        ds = ds.map(tap)
    ds = ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)

    def split(batch: Dict[str, tf.Tensor]) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
        y = tf.cast(batch.pop(label), tf.float32)
        return batch, y

    return ds.map(split, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
