"""One helper that fits, saves, reloads and compares any model family.

Inputs are drawn from the feature contract (`feedrank.features`), so every
family sees exactly the tensors the Transform output would give it.
"""
from __future__ import annotations

from typing import Dict, Mapping

import numpy as np
import tensorflow as tf
import tf_keras as keras

from feedrank import features as F
from feedrank.train import synthetic
from feedrank.train.families import build_model

VOCAB_SIZES = {"item": 60, "category": 9, "region": 7, "token": 15, "age": 15}
TINY = {"mlp_units": [16, 8], "attention_units": [8], "activation": "dice",
        "embedding_dims": {"item": 8, "category": 4, "region": 4, "token": 4}}


def random_batch(n: int, seed: int = 0, min_len: int = 0, spec: F.FeatureSpec = F.BUILTIN) -> Dict[str, np.ndarray]:
    """Transformed-feature batch of ``spec`` over `VOCAB_SIZES`, sequences right-padded to a random length."""
    return synthetic.random_batch(n, VOCAB_SIZES, spec, seed=seed, min_len=min_len)


def transformed_spec(features: F.FeatureSpec = F.BUILTIN) -> Dict[str, object]:
    """tf.io spec of the Transform's output examples (model inputs + label) for ``features``."""
    spec: Dict[str, object] = {F.LABEL: tf.io.FixedLenFeature([], tf.int64)}
    for f in features.id_features:
        spec[F.idx(f.name)] = tf.io.FixedLenFeature([], tf.int64)
    for s in (*features.seq_features, *features.bag_features):
        spec[F.idx(s.name)] = tf.io.FixedLenFeature([s.max_len], tf.int64)
    for d in features.dense_features:
        spec[F.dense(d.name)] = tf.io.FixedLenFeature([], tf.float32)
    return spec


def write_transformed(path: str, batch: Mapping[str, np.ndarray], labels) -> None:
    """``batch`` (e.g. `random_batch`) as GZIP TFRecords of transformed tf.Examples, one per row."""
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
        for i in range(len(labels)):
            feats = {F.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[i])]))}
            for k, v in batch.items():
                row = np.atleast_1d(v[i])
                if v.dtype.kind == "f":
                    feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=row.tolist()))
                else:
                    feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=row.tolist()))
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def fit_save_reload(family: str, tmp_path, config: Mapping | None = None, n: int = 256):
    """Fits ``family`` briefly, saves it, reloads it; returns (before, after) scores."""
    cfg = {**TINY, **(config or {})}
    keras.utils.set_random_seed(0)
    model = build_model(family, VOCAB_SIZES, cfg, spec=F.BUILTIN)
    x = random_batch(n)
    y = (x[F.dense(F.INTEREST_CATEGORY_SHARE.name)] > 0.5).astype(np.float32)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    before = model.predict(x, verbose=0)
    path = str(tmp_path / f"{family}_model")
    model.save(path, save_format="tf")
    reloaded = keras.models.load_model(path)
    after = reloaded.predict(x, verbose=0)
    return before, after, model
