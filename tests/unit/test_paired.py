"""Paired bootstrap comparisons over users (`feedrank.evaluate.paired`), against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

from feedrank.evaluate import paired
from feedrank.evaluate.scoring import gauc


def test_weighted_auc_counts_ties_as_half_and_weights_rows():
    y, s = np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.4, 0.4])
    assert paired.weighted_auc(y, s) == pytest.approx(3.5 / 4)          # 2 + 1 + 0.5 of 4 pairs
    # positive 2 counts twice: (1*2 + 2*(1 + 0.5)) / (3 * 2)
    assert paired.weighted_auc(y, s, np.array([1, 1, 2, 1])) == pytest.approx(5 / 6)
    assert np.isnan(paired.weighted_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_full_sample_values_are_the_hand_computed_ones():
    y = np.array([1, 0, 1, 0, 0, 1, 1])
    users = np.array(["A", "A", "B", "B", "B", "C", "C"])   # C has one class: not in GAUC
    a = np.array([0.9, 0.1, 0.5, 0.6, 0.1, 0.3, 0.2])
    b = np.array([0.1, 0.9, 0.7, 0.6, 0.1, 0.3, 0.2])
    out = paired.compare(y, a, b, users, resamples=200)
    # GAUC: A 1.0 (2 impressions), B 0.5 (3): 0.7 for a; A 0.0, B 1.0: 0.6 for b
    assert (out["gauc"].a_value, out["gauc"].b_value) == (pytest.approx(0.7), pytest.approx(0.6))
    g = out["gauc"]
    assert g.a_value == pytest.approx(gauc(y, a, users)) and g.b_value == pytest.approx(gauc(y, b, users))
    from sklearn.metrics import roc_auc_score

    r = out["auc"]
    assert r.a_value == pytest.approx(roc_auc_score(y, a)) and r.b_value == pytest.approx(roc_auc_score(y, b))
    assert out["auc"].users == 3 and out["auc"].resamples == 200


def test_the_same_model_is_never_ordered_and_a_much_better_one_is():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(300), 8)
    y = rng.random(len(users)) < 0.3
    good = y + rng.normal(0, 0.8, len(y))
    noise = rng.normal(0, 1, len(y))
    same = paired.compare(y, good, good.copy(), users, resamples=300)
    assert all(d.diff == 0 and d.lo == 0 and d.hi == 0 and not d.ordered for d in same.values())
    better = paired.compare(y, good, noise, users, resamples=300)
    assert all(d.lo > 0 and d.ordered for d in better.values())
    assert better["auc"].verdict("good", "noise") == "good ahead of noise by auc"
    assert "not ordered" in same["gauc"].verdict("a", "b")


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="same impressions"):
        paired.compare(np.array([1, 0]), np.array([0.1, 0.2]), np.array([0.1]), np.array(["u", "u"]))
