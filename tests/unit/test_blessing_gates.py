"""The blessing gates: the TFX Evaluator, configured by `make_eval_config`, on small real SavedModels.

The candidate models share one ranking (the same AUC) and differ only in
calibration (tests/helpers/gates.py), so the calibration gate alone decides.
The baseline comes from the baseline component's own executor (the newest
push, no registry).  The reason is read back as the run summary and the
MlflowLogger read it.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from components.baseline.component import SERVING_SUBDIR
from components.baseline.component import Executor as BaselineExecutor
from feedrank.config import ConfigError, EvaluatorConfig, load
from feedrank.evaluate import gates, scoring
from tests.helpers import gates as H
from tests.helpers.config import ROOT


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gates")
    examples = H.write_eval_examples(str(tmp / "examples"))
    for name, scale in (("calibrated", 1.0), ("overconfident", 2.0)):
        H.save_scaled_model(str(tmp / name / SERVING_SUBDIR), scale)
    H.save_scaled_model(str(tmp / "model_store" / "din" / "3"), 1.0)  # a pushed, blessed model
    from tfx.types import standard_artifacts

    baseline = standard_artifacts.Model()
    baseline.uri = str(tmp / "baseline")
    os.makedirs(baseline.uri)
    BaselineExecutor().Do({}, {"model": [baseline]}, {"push_dir": str(tmp / "model_store" / "din"),
                                                      "tracking_uri": "", "registered_model": ""})
    return tmp, examples, baseline.uri


def _observed_calibration(examples_uri, scale):
    files = tf.io.gfile.glob(os.path.join(examples_uri, "Split-eval", "*"))
    spec = {H.P_FEATURE: tf.io.FixedLenFeature([], tf.float32), "label": tf.io.FixedLenFeature([], tf.int64)}
    p, y = [], []
    for rec in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        ex = tf.io.parse_single_example(rec, spec)
        p.append(float(ex[H.P_FEATURE]))
        y.append(int(ex["label"]))
    return float(np.clip(scale * np.array(p), 0, 1).sum() / np.sum(y))


@pytest.mark.e2e
def test_an_overconfident_model_fails_the_calibration_gate_and_the_reason_names_it(setup):
    tmp, examples, baseline = setup
    cfg = EvaluatorConfig(auc_floor=0.5, max_auc_regression=0.002)
    evaluation, blessing = H.run_evaluator(str(tmp / "run_over"), examples, str(tmp / "overconfident"),
                                           baseline, cfg.auc_floor, cfg.max_auc_regression, cfg.calibration_band)
    assert blessing.get_int_custom_property("blessed") == 0
    assert not os.path.exists(os.path.join(blessing.uri, "BLESSED"))
    _, _, validation = scoring.tfma_results(evaluation.uri)
    checks = {c.name: c for c in gates.gate_checks(evaluation.uri, cfg, validation)}
    # TFMA's Calibration is sum(predictions) / sum(labels), as computed here from the examples.
    assert checks["calibration"].value == pytest.approx(_observed_calibration(examples, 2.0), rel=1e-4)
    assert checks["calibration"].value > 1.8 and checks["calibration"].passed is False
    assert checks["auc_floor"].passed is True and checks["auc_change"].passed is True
    assert checks["auc_change"].value == pytest.approx(0.0, abs=1e-4)  # the same ranking as the baseline
    reason = scoring.blessing_reason(False, validation, cfg, eval_uri=evaluation.uri)
    auc = checks["auc_floor"].value
    assert reason == (f"AUC {auc:.4f} >= floor 0.5000: pass; "
                      f"AUC change +0.0000 vs latest push v3 (din) >= -0.0020: pass; "
                      f"calibration {checks['calibration'].value:.3f} outside [0.90, 1.10]: FAIL")
    assert gates.baseline_record(evaluation.uri)["source"] == "latest_push"


@pytest.mark.e2e
def test_a_calibrated_first_model_is_blessed_and_every_check_is_named(setup):
    tmp, examples, _ = setup
    cfg = EvaluatorConfig(auc_floor=0.5, max_auc_regression=0.002, calibration_band=[0.9, 1.1])
    evaluation, blessing = H.run_evaluator(str(tmp / "run_cal"), examples, str(tmp / "calibrated"), None,
                                           cfg.auc_floor, cfg.max_auc_regression, cfg.calibration_band)
    assert blessing.get_int_custom_property("blessed") == 1
    _, _, validation = scoring.tfma_results(evaluation.uri)
    reason = scoring.blessing_reason(True, validation, cfg, eval_uri=evaluation.uri)
    cal = _observed_calibration(examples, 1.0)
    assert 0.9 < cal < 1.1
    parts = reason.split("; ")
    assert len(parts) == 3 and parts[0].startswith("AUC 0.") and parts[0].endswith(">= floor 0.5000: pass")
    assert parts[1] == "AUC change: not applied (no baseline yet)"
    assert parts[2] == f"calibration {cal:.3f} in [0.90, 1.10]: pass"
    assert gates.baseline_record(evaluation.uri) is None


@pytest.mark.e2e
def test_a_wider_band_blesses_the_overconfident_model(setup):
    tmp, examples, baseline = setup
    evaluation, blessing = H.run_evaluator(str(tmp / "run_wide"), examples, str(tmp / "overconfident"),
                                           baseline, calibration_band=(0.5, 2.5))
    assert blessing.get_int_custom_property("blessed") == 1
    cfg = EvaluatorConfig(auc_floor=0.5, calibration_band=[0.5, 2.5])
    reason = scoring.blessing_reason(True, scoring.tfma_results(evaluation.uri)[2], cfg, evaluation.uri)
    assert "in [0.50, 2.50]: pass" in reason and "FAIL" not in reason


def _config(tmp_path, evaluator):
    base = os.path.join(ROOT, "configs", "tiny.yaml")
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"base": base, "evaluator": evaluator}))
    return str(path)


@pytest.mark.parametrize("band", [[1.1, 0.9], [0.9], [0.9, 1.1, 1.2], ["low", 1.1], [0, 1.1], [-1, 2],
                                  [1.05, 1.2], [0.8, 0.95], [True, 1.1], [1.0, 1.0]])
def test_a_bad_calibration_band_is_a_config_error(tmp_path, band):
    with pytest.raises(ConfigError) as e:
        load(_config(tmp_path, {"calibration_band": band}))
    msg = str(e.value)
    assert "evaluator.calibration_band" in msg and repr(band) in msg and "0 < lo <= 1 <= hi" in msg


def test_the_band_and_the_thresholds_load(tmp_path):
    cfg = load(_config(tmp_path, {"calibration_band": [0.8, 1.25]}))
    assert cfg.evaluator.calibration_band == [0.8, 1.25]
    assert load(os.path.join(ROOT, "configs", "demo.yaml")).evaluator.calibration_band == [0.9, 1.1]
    with pytest.raises(ConfigError, match="evaluator.calibration_band must be a list"):
        load(_config(tmp_path, {"calibration_band": "0.9-1.1"}))
    with pytest.raises(ConfigError, match=r"evaluator.auc_floor must be a number in \[0, 1\] \(.*\), got 1.5"):
        load(_config(tmp_path, {"auc_floor": 1.5}))
    with pytest.raises(ConfigError, match="evaluator.max_auc_regression must be a number >= 0"):
        load(_config(tmp_path, {"max_auc_regression": -0.01}))
