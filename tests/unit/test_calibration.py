"""The served probability's calibration (`feedrank.train.calibration`): Platt scaling and
isotonic regression against hand-computed fits, the out-of-fold choice, the degenerate
validation splits, the TF function against the numpy one, and the record's round trip."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from feedrank.train import calibration as C
from feedrank.train.settings import TrainerSettings
from feedrank.typed import ConfigError


def _levels(rows):
    """(p, labels) with, for each (p, n, positives) of ``rows``, n rows of p, the first ``positives`` clicked."""
    p = np.concatenate([np.full(n, q) for q, n, _ in rows])
    labels = np.concatenate([(np.arange(n) < k).astype(float) for _, n, k in rows])
    return p, labels


def _logit(x: float) -> float:
    return math.log(x / (1 - x))


def _sample(a: float, b: float, n: int = 20000, seed: int = 0):
    """Scores p = sigmoid(z), z ~ N(-1.5, 1), and labels drawn from sigmoid(a z + b)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.5, 1.0, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-(a * z + b)))).astype(float)
    return 1 / (1 + np.exp(-z)), labels


def test_platt_fits_two_levels_exactly():
    """Two score levels: the fit passes through both click rates, a = (logit .3 - logit .1) /
    (logit .5 - logit .2) = 0.973766, b = logit .3 = -0.847298."""
    p, labels = _levels([(0.2, 1000, 100), (0.5, 1000, 300)])
    fitted = C.fit_platt(p, labels)
    assert fitted.a == pytest.approx((_logit(0.3) - _logit(0.1)) / (0 - _logit(0.2)), abs=1e-6)
    assert fitted.a == pytest.approx(0.973766, abs=1e-6) and fitted.b == pytest.approx(-0.847298, abs=1e-6)
    np.testing.assert_allclose(fitted.predict(np.array([0.2, 0.5])), [0.1, 0.3], atol=1e-6)


def test_platt_recovers_a_known_miscalibration():
    p, labels = _sample(a=0.6, b=-0.5, n=100_000)
    fitted = C.fit_platt(p, labels)
    assert fitted.a == pytest.approx(0.6, abs=0.03) and fitted.b == pytest.approx(-0.5, abs=0.03)


def test_platt_refuses_scores_that_order_the_rows_the_wrong_way():
    p, labels = _levels([(0.2, 500, 300), (0.5, 500, 100)])
    with pytest.raises(ValueError, match="a > 0"):
        C.fit_platt(p, labels)


def test_isotonic_pools_a_step_miscalibration_and_lowers_the_log_loss():
    """Click rates .05, .05, .4, .6 at p = .1, .2, .3, .4: the two .05 levels pool into one
    block at mean p .15; the knots are the blocks' (mean p, rate) between (0, 0) and (1, 1).
    Log loss by hand: identity .489345, isotonic .452771."""
    p, labels = _levels([(0.1, 1000, 50), (0.2, 1000, 50), (0.3, 1000, 400), (0.4, 1000, 600)])
    fitted = C.fit_isotonic(p, labels)
    np.testing.assert_allclose(fitted.x, [0, 0.15, 0.3, 0.4, 1], atol=1e-12)
    np.testing.assert_allclose(fitted.y, [0, 0.05, 0.4, 0.6, 1], atol=1e-12)
    np.testing.assert_allclose(fitted.predict(np.array([0.1, 0.2, 0.3, 0.4])), [1 / 30, 1 / 6, 0.4, 0.6], atol=1e-12)
    assert C.log_loss(p, labels) == pytest.approx(0.489345, abs=1e-6)
    assert C.log_loss(fitted.predict(p), labels) == pytest.approx(0.452771, abs=1e-6)
    grid = fitted.predict(np.linspace(0, 1, 1001))
    assert np.all(np.diff(grid) > 0)   # strictly increasing: the candidates keep their order


def test_isotonic_is_monotone_on_noisy_scores():
    p, labels = _sample(a=0.6, b=-0.5, n=5000, seed=3)
    fitted = C.fit_isotonic(p, labels)
    assert np.all(np.diff(fitted.x) > 0) and np.all(np.diff(fitted.y) >= 0)
    assert np.all(np.diff(fitted.predict(np.sort(p))) >= 0)
    assert C.log_loss(fitted.predict(p), labels) < C.log_loss(p, labels)


def test_the_out_of_fold_choice_keeps_calibrated_scores_and_corrects_miscalibrated_ones():
    p, labels = _sample(a=1.0, b=0.0)
    calibrator, record = C.choose(p, labels)
    assert calibrator == C.Calibrator() and record["method"] == "identity"
    assert record["reason"] == "lowest out-of-fold log loss" and record["rows"] == 20000
    for method in C.METHODS:
        scores = record["methods"][method]
        assert len(scores["fold_logloss"]) == C.FOLDS and np.isfinite(scores["oof_logloss"])
        assert {"logloss", "calibration"} <= set(scores)

    p, labels = _sample(a=0.6, b=-0.5)
    calibrator, record = C.choose(p, labels)
    assert calibrator.method in ("platt", "isotonic")
    methods = record["methods"]
    assert methods[calibrator.method]["oof_logloss"] < methods["identity"]["oof_logloss"] * (1 - C.MIN_GAIN)
    assert abs(methods[calibrator.method]["calibration"] - 1) < abs(methods["identity"]["calibration"] - 1)
    assert record["params"] == calibrator.to_dict()
    json.dumps(record, allow_nan=False)   # calibration.json is plain JSON


@pytest.mark.parametrize("setting", ["platt", "isotonic"])
def test_a_named_method_is_fitted_even_where_auto_keeps_the_identity(setting):
    p, labels = _sample(a=1.0, b=0.0)
    calibrator, record = C.choose(p, labels, setting)
    assert calibrator.method == setting and record["reason"] == f"trainer.calibration is {setting}"


@pytest.mark.parametrize("p, labels, setting, words", [
    (np.full(500, 0.1), np.zeros(500), "auto", "0 positive(s) and 500 negative(s)"),
    (np.full(500, 0.1), np.ones(500), "platt", "500 positive(s) and 0 negative(s)"),
    (np.full(50, 0.1), np.arange(50) % 2, "isotonic", "50 validation rows, fewer than 200"),
    ([], [], "none", "trainer.calibration is none"),
])
def test_a_degenerate_validation_split_gets_the_identity_with_its_reason(p, labels, setting, words, caplog):
    with caplog.at_level("INFO", logger=C.__name__):
        calibrator, record = C.choose(p, labels, setting)
    assert calibrator == C.Calibrator() and words in record["reason"] and record["methods"] == {}
    assert any(words in r.getMessage() for r in caplog.records)


GRID = np.array([0.0, 1e-9, 1e-7, 1e-4, 0.01, 0.1, 0.2, 0.33, 0.5, 0.77, 0.9, 0.999, 1 - 1e-9, 1.0])
CALIBRATORS = [C.Calibrator(), C.Calibrator("platt", a=0.7, b=-0.4),
               C.Calibrator("isotonic", x=(0.0, 0.05, 0.3, 0.6, 1.0), y=(0.0, 0.02, 0.2, 0.7, 1.0))]


@pytest.mark.parametrize("calibrator", CALIBRATORS, ids=lambda c: c.method)
def test_the_tf_function_equals_the_numpy_one(calibrator, tmp_path):
    want = calibrator.predict(GRID)
    for dtype in (tf.float64, tf.float32):
        got = calibrator.apply(tf.constant(GRID, dtype))
        assert got.dtype == dtype
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6, rtol=0)
    module = tf.Module()   # the parameters are graph constants: a saved function needs nothing else
    module.f = tf.function(calibrator.apply, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    np.testing.assert_allclose(loaded.f(tf.constant(GRID, tf.float32)).numpy(), want, atol=1e-6, rtol=0)


def test_the_platt_and_isotonic_values_by_hand():
    platt, isotonic = CALIBRATORS[1:]
    assert platt.predict(np.array([0.5]))[0] == pytest.approx(1 / (1 + math.exp(0.4)), abs=1e-12)
    assert platt.predict(np.array([0.2]))[0] == pytest.approx(1 / (1 + math.exp(0.7 * math.log(4) + 0.4)), abs=1e-12)
    np.testing.assert_allclose(isotonic.predict(np.array([0.025, 0.3, 0.45, 0.8])), [0.01, 0.2, 0.45, 0.85])


@pytest.mark.parametrize("calibrator", CALIBRATORS, ids=lambda c: c.method)
def test_the_record_round_trips(calibrator, tmp_path):
    assert C.Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict()))) == calibrator
    C.write({"params": calibrator.to_dict()}, str(tmp_path))
    assert C.read(str(tmp_path)) == calibrator
    assert C.read(str(tmp_path / "none")) == C.Calibrator()   # a run without the file: the identity


@pytest.mark.parametrize("values, words", [
    ({"method": "beta"}, "must be one of"),
    ({"method": "platt", "a": 1.0}, "lacks its parameter 'b'"),
    ({"method": "platt", "a": -0.5, "b": 0.0}, "a > 0"),
    ({"method": "isotonic", "x": [0.0, 0.5, 0.5, 1.0], "y": [0.0, 0.1, 0.2, 1.0]}, "x strictly increasing"),
    ({"method": "isotonic", "x": [0.0, 1.0], "y": [0.5, 0.2]}, "y non-decreasing"),
])
def test_a_bad_record_is_refused(values, words):
    with pytest.raises(ValueError, match=words):
        C.Calibrator.from_dict(values)


def test_the_trainer_setting_is_typed_and_checked():
    assert TrainerSettings().calibration == "auto" and TrainerSettings().to_dict()["calibration"] == "auto"
    assert TrainerSettings.from_yaml({"calibration": "isotonic"}).calibration == "isotonic"
    with pytest.raises(ConfigError, match="calibration must be one of"):
        TrainerSettings.from_yaml({"calibration": "beta"})
    with pytest.raises(ValueError, match="trainer.calibration must be one of"):
        C.choose([0.5], [1], "Platt")
