"""`layers.MatchRecency` and the LightGBM baseline's `match_recency` agree on
hand-computed values: the youngest matching entry's age bucket b gives (13 - b) / 13."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from feedrank import features as F
from feedrank.train import layers as L
from feedrank.train.lightgbm_baseline import match_recency

N = len(F.AGE_LABELS)   # 13 buckets; transformed age id = bucket + 1


def test_the_youngest_match_counts_padding_and_oov_never():
    candidate = tf.constant([7, 7, 7, 7], tf.int64)
    history = tf.constant([[7, 3, 7, 0],      # matches at buckets 5 and 2 -> 2 wins
                           [3, 4, 0, 0],      # no match
                           [0, 0, 0, 7],      # left padding, match at bucket 0 (under a minute)
                           [7, 7, 0, 0]], tf.int64)   # a match with an OOV age and one 30+ days old
    ages = tf.constant([[6, 1, 3, 0], [2, 3, 0, 0], [0, 0, 0, 1], [N + 1, N, 0, 0]], tf.int64)
    got = L.MatchRecency(N)(candidate, history, ages).numpy()
    assert got == pytest.approx([(N - 2) / N, 0.0, 1.0, 1 / N])


def test_the_lightgbm_baseline_computes_the_same_from_raw_labels():
    rows = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    hit = np.array([True, False, True, False, False, True, True, True])
    labels = np.array([F.AGE_LABELS[i].encode() for i in (5, 0, 2, 1, 2, 0)] + [b"bad", F.AGE_LABELS[-1].encode()])
    assert match_recency(rows, hit, labels, 4) == pytest.approx([(N - 2) / N, 0.0, 1.0, 1 / N])
