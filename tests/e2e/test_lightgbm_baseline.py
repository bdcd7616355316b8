"""The LightGBM baseline's aggregates equal the deep models' in-graph match features.

Both are computed on the tiny pipeline run's eval split: `lgbm.features` from
the raw examples, `layers.MatchFeatures` from the transformed ones, joined on
the impression id.  Post ids new in the eval day share OOV buckets after the
Transform, so a few post-id matches may differ; categories and regions are
all in the vocabulary and must agree exactly.
"""
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from feedrank import features as F
from feedrank.evaluate.mlmd_reader import latest_run
from feedrank.train import layers as L
from feedrank.train import lightgbm_baseline as lgbm

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def eval_views(first_run):
    cfg, _ = first_run
    run = latest_run(cfg.metadata_path)
    spec = cfg.features_spec
    raw = lgbm.read_raw(os.path.join(run.artifact("BehaviorExampleGen", "examples").uri, "Split-eval"), spec=spec)
    out_spec = tft.TFTransformOutput(run.artifact("Transform", "transform_graph").uri).transformed_feature_spec()
    files = tf.io.gfile.glob(os.path.join(run.artifact("Transform", "transformed_examples").uri, "Split-eval", "*"))
    records = tf.stack(list(tf.data.TFRecordDataset(files, compression_type="GZIP")))
    return raw, tf.io.parse_example(records, out_spec), spec


def test_lightgbm_aggregates_equal_the_in_graph_match_features(eval_views):
    raw, transformed, spec = eval_views
    frame = lgbm.features(raw, spec=spec)
    row_of = {i: n for n, i in enumerate(raw[F.IMPRESSION_ID])}
    order = np.array([row_of[i] for i in transformed[F.IMPRESSION_ID].numpy()])
    assert len(order) == raw["n"] > 100
    layer = L.MatchFeatures(recent=lgbm.RECENT)
    for seq, cand in spec.matched:
        got = layer(transformed[F.idx(cand.name)], transformed[F.idx(seq.name)]).numpy()
        want = frame[[f"{seq.name}_match_share", f"{seq.name}_match_recent_share",
                      f"{seq.name}_match_last"]].to_numpy()[order]
        same = np.isclose(got, want, atol=1e-6).all(axis=1)
        if cand is F.ITEM_ID:
            assert same.mean() >= 0.98, (seq.name, same.mean())
        else:
            assert same.all(), (seq.name, np.flatnonzero(~same)[:5])
    assert frame[f"{F.VIEW_CATEGORIES.name}_match_share"].max() > 0   # not vacuous


def test_lightgbm_fits_and_scores_unseen_categorical_levels(eval_views):
    raw, _, spec = eval_views
    x, y = lgbm.features(raw, spec=spec), raw[F.LABEL]
    half = len(y) // 2
    booster = lgbm.fit(x[:half], y[:half], x[half:], y[half:], seed=0, max_rounds=20, patience=5, spec=spec)
    unseen = x[half:].copy()
    unseen[F.CATEGORY_ID.name] = "never-seen-category"
    p = lgbm.predict(booster, x[:half], unseen, spec=spec)
    assert p.shape == (len(y) - half,) and np.all((p > 0) & (p < 1))


def test_funnel_pair_is_the_last_conversions_category_with_the_candidates():
    # row 0: conversions c1 then c2 (most recent last), row 1: none, row 2: one in c3
    raw = {"n": 3, F.CATEGORY_ID.name: np.array([b"c9", b"c1", b"c3"], dtype=object),
           F.CONV_CATEGORIES.name: (np.array([0, 0, 2]), np.array([2, 1, 1]),
                                    np.array([b"c1", b"c2", b"c3"], dtype=object))}
    assert lgbm.funnel_pairs(raw, 3).tolist() == ["c2|c9", "none|c1", "c3|c3"]
    assert lgbm.FUNNEL in lgbm.CATEGORICAL
