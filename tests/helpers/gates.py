"""Small real inputs for the baseline and blessing-gate tests.

`save_scaled_model` writes a SavedModel with the pipeline's serving contract
(a ``serving_tf_example`` signature taking serialized tf.Examples and
returning ``{"probabilities": [N]}``) that predicts ``scale * p`` from an
example's feature ``p``; `write_eval_examples` writes an eval split whose
labels are drawn with probability ``p``.  So ``scale=1`` is a calibrated
model, ``scale=2`` predicts twice the observed CTR with the same ranking
(the same AUC), and `run_evaluator` runs the TFX Evaluator on them exactly as
the pipeline configures it.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from feedrank import features as F

P_FEATURE = "p"


class _Scaled(tf.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = tf.Variable(scale, dtype=tf.float32, trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(self, examples):
        parsed = tf.io.parse_example(examples, {P_FEATURE: tf.io.FixedLenFeature([], tf.float32)})
        return {"probabilities": tf.clip_by_value(self.scale * parsed[P_FEATURE], 0.0, 1.0)}


def save_scaled_model(path: str, scale: float) -> str:
    """A SavedModel at ``path`` predicting ``scale * p`` (see the module docstring)."""
    module = _Scaled(scale)
    tf.saved_model.save(module, path, signatures={
        "serving_tf_example": module.serve_tf_examples.get_concrete_function()})
    return path


def write_eval_examples(examples_uri: str, n: int = 3000, seed: int = 0) -> str:
    """``<examples_uri>/Split-eval/`` with ``n`` GZIP tf.Examples: ``p`` in [0.02, 0.3], label ~ Bernoulli(p)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.3, n).astype(np.float32)
    labels = (rng.uniform(size=n) < p).astype(np.int64)
    split = os.path.join(examples_uri, "Split-eval")
    os.makedirs(split, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(split, "data_tfrecord-00000-of-00001.gz"), "GZIP") as w:
        for pi, yi in zip(p, labels):
            ex = tf.train.Example(features=tf.train.Features(feature={
                P_FEATURE: tf.train.Feature(float_list=tf.train.FloatList(value=[float(pi)])),
                F.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(yi)]))}))
            w.write(ex.SerializeToString())
    return examples_uri


def run_evaluator(tmp: str, examples_uri: str, candidate_uri: str, baseline_uri: Optional[str],
                  auc_floor: float = 0.5, max_auc_regression: float = 0.002,
                  calibration_band: Sequence[float] = (0.9, 1.1)):
    """Runs the TFX Evaluator executor with `make_eval_config`; returns (evaluation, blessing) artifacts.

    ``candidate_uri`` / ``baseline_uri`` are Model artifact directories holding ``Format-Serving/``."""
    from tfx.components.evaluator import executor as evaluator_executor
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import artifact_utils, standard_artifacts
    from tfx.utils import proto_utils

    from feedrank.evaluate.eval_config import make_eval_config

    def artifact(cls, uri):
        a = cls()
        a.uri = uri
        os.makedirs(uri, exist_ok=True)
        return a

    examples = artifact(standard_artifacts.Examples, examples_uri)
    examples.split_names = artifact_utils.encode_split_names(["eval"])
    inputs = {"examples": [examples], "model": [artifact(standard_artifacts.Model, candidate_uri)]}
    if baseline_uri:
        inputs["baseline_model"] = [artifact(standard_artifacts.Model, baseline_uri)]
    evaluation = artifact(standard_artifacts.ModelEvaluation, os.path.join(tmp, "evaluation"))
    blessing = artifact(standard_artifacts.ModelBlessing, os.path.join(tmp, "blessing"))
    config = make_eval_config(auc_floor, max_auc_regression, [], calibration_band)
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"],
        tmp_dir=os.path.join(tmp, "beam_tmp"), unique_id="1")
    evaluator_executor.Executor(context).Do(
        inputs, {"evaluation": [evaluation], "blessing": [blessing]},
        {"eval_config": proto_utils.proto_to_json(config), "example_splits": json.dumps(["eval"])})
    return evaluation, blessing
