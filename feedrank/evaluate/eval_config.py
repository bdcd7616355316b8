"""The TFMA EvalConfig: AUC, logloss, calibration, slices, and the blessing rule.

Blessing needs both:
  * AUC >= ``auc_floor`` (an absolute floor), and
  * AUC >= baseline AUC - ``max_auc_regression`` (no regression versus the
    last blessed model; ignored when there is no baseline yet).
AUC uses 10,000 thresholds, which matches the exact (rank-based) AUC to
about 1e-4; the run summary also reports the exact sklearn AUC.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow_model_analysis as tfma

from feedrank import features as F

AUC_THRESHOLDS = 10_000


def make_eval_config(auc_floor: float, max_auc_regression: float,
                     slice_features: Sequence[str]) -> tfma.EvalConfig:
    """TFMA config evaluating the ``serving_tf_example`` signature on raw examples."""
    auc_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": auc_floor}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -max_auc_regression}))
    metrics = [
        tfma.MetricConfig(class_name="ExampleCount"),
        # The gate applies to the overall slice only; slices are reported, not gated.
        tfma.MetricConfig(class_name="AUC", config=f'{{"num_thresholds": {AUC_THRESHOLDS}}}',
                          per_slice_thresholds=[tfma.PerSliceMetricThreshold(
                              slicing_specs=[tfma.SlicingSpec()], threshold=auc_threshold)]),
        tfma.MetricConfig(class_name="BinaryCrossentropy", config='{"name": "logloss"}'),
        tfma.MetricConfig(class_name="Calibration"),
        tfma.MetricConfig(class_name="MeanLabel"),
        tfma.MetricConfig(class_name="MeanPrediction"),
        tfma.MetricConfig(class_name="CalibrationPlot", config='{"num_buckets": 20}'),
    ]
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_tf_example", label_key=F.LABEL)],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[f]) for f in slice_features],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)])
