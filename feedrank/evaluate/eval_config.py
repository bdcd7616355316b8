"""The TFMA EvalConfig: AUC, logloss, calibration, slices, and the blessing rule.

Blessing needs every gate, on the overall slice of the eval split:
  * AUC >= ``auc_floor`` (an absolute floor);
  * AUC >= baseline AUC - ``max_auc_regression``, where the baseline is the
    served model (the registry's champion, else the newest blessed push; see
    `components.baseline`); skipped when there is no baseline yet;
  * calibration (TFMA's ``Calibration``: sum of predictions / sum of labels,
    i.e. mean predicted CTR over observed CTR) inside ``calibration_band``.
    The ``serving_tf_example`` signature's predictions are already corrected
    for negative down-sampling, so 1.0 is a calibrated model.
Slices are reported, not gated.  AUC uses 10,000 thresholds, which matches
the exact (rank-based) AUC to about 1e-4; the run summary also reports the
exact sklearn AUC.  `feedrank.evaluate.gates` explains the verdict.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow_model_analysis as tfma

from feedrank import features as F

AUC_THRESHOLDS = 10_000
DEFAULT_CALIBRATION_BAND = (0.9, 1.1)


def _overall(threshold: tfma.MetricThreshold) -> list:
    return [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)]


def make_eval_config(auc_floor: float, max_auc_regression: float, slice_features: Sequence[str],
                     calibration_band: Sequence[float] = DEFAULT_CALIBRATION_BAND) -> tfma.EvalConfig:
    """TFMA config evaluating the ``serving_tf_example`` signature on raw examples."""
    lo, hi = (float(x) for x in calibration_band)
    auc_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": auc_floor}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -max_auc_regression}))
    calibration_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": lo}, upper_bound={"value": hi}))
    metrics = [
        tfma.MetricConfig(class_name="ExampleCount"),
        tfma.MetricConfig(class_name="AUC", config=f'{{"num_thresholds": {AUC_THRESHOLDS}}}',
                          per_slice_thresholds=_overall(auc_threshold)),
        tfma.MetricConfig(class_name="BinaryCrossentropy", config='{"name": "logloss"}'),
        tfma.MetricConfig(class_name="Calibration", per_slice_thresholds=_overall(calibration_threshold)),
        tfma.MetricConfig(class_name="MeanLabel"),
        tfma.MetricConfig(class_name="MeanPrediction"),
        tfma.MetricConfig(class_name="CalibrationPlot", config='{"num_buckets": 20}'),
    ]
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_tf_example", label_key=F.LABEL)],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[f]) for f in slice_features],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)])
