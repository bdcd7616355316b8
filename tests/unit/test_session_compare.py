"""Paired bootstrap over users of two session models' per-sample values
(`feedrank.sessions.compare`), against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

from feedrank.sessions.compare import paired_interval


def test_identical_models_differ_by_exactly_zero():
    a = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    out = paired_interval(a, a.copy(), np.array(["u1", "u1", "u2", "u3", "u3"]), reps=200)
    assert (out["diff"], out["lo"], out["hi"]) == (0.0, 0.0, 0.0)
    assert out["ordered"] is False and out["groups"] == 3 and out["samples"] == 5


def test_a_constant_shift_is_the_difference_and_the_whole_interval():
    b = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    out = paired_interval(b + 0.25, b, np.array([1, 1, 2, 2, 3, 4]), reps=300)
    assert out["diff"] == pytest.approx(0.25)
    assert out["lo"] == pytest.approx(0.25) and out["hi"] == pytest.approx(0.25)
    assert out["ordered"] is True


def test_two_groups_by_hand():
    # a - b: user A's samples 1, 1; user B's sample 0.  A resample draws two users: (A, A) -> mean 1,
    # (A, B) -> 2/3, (B, B) -> 0, with probabilities 1/4, 1/2, 1/4: the 95% interval is [0, 1].
    a, b = np.array([1.0, 1.0, 0.5]), np.array([0.0, 0.0, 0.5])
    out = paired_interval(a, b, np.array(["A", "A", "B"]), reps=2000, seed=3)
    assert out["diff"] == pytest.approx(2 / 3)
    assert out["lo"] == pytest.approx(0.0) and out["hi"] == pytest.approx(1.0) and not out["ordered"]
    assert (out["groups"], out["samples"]) == (2, 3)


def test_a_clearly_better_model_is_ordered():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 2000, 20_000)
    b = (rng.random(20_000) < 0.3).astype(float)
    a = np.maximum(b, rng.random(20_000) < 0.2)
    out = paired_interval(a, b, groups, reps=1000)
    assert out["lo"] > 0 and out["ordered"] and out["lo"] < out["diff"] < out["hi"]
    assert out["diff"] == pytest.approx(float((a - b).mean()))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least 2 groups, got 1"):
        paired_interval(np.array([1.0, 0.0]), np.array([0.0, 0.0]), np.array(["u", "u"]))
    with pytest.raises(ValueError, match="of one length"):
        paired_interval(np.array([1.0, 0.0]), np.array([0.0]), np.array(["u", "v"]))
    with pytest.raises(ValueError, match="level must be in"):
        paired_interval(np.array([1.0, 0.0]), np.array([0.0, 0.0]), np.array(["u", "v"]), level=1.5)
