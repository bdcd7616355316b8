"""`SessionEvaluator`: evaluates a session model on the eval split and blesses it (or not).

The session pipeline's Evaluator (docs/session_pipeline.md).  TFMA is built for per-example
metrics; the session metrics rank every item after every page view, so this component calls
the served models itself (`feedrank.sessions.evaluate`): the candidate's and the baseline's
raw ``serving_default`` on the eval split's sessions.

It blesses iff the candidate's top-10 accuracy is at least ``top10_floor`` and, with a
baseline (`components.baseline.component.LatestBlessedModel`: the champion, else the newest
push), at most ``max_top10_regression`` below the baseline's.  Outputs:

* ``evaluation`` (ModelEvaluation): ``session_metrics.json`` with both models' top-1/top-10
  accuracy, recall@20, MRR@20, path compression, the thresholds, the decision and its reason;
* ``blessing`` (ModelBlessing): the file ``BLESSED`` or ``NOT_BLESSED`` and the custom
  properties the Pusher and the MlflowLogger check (`feedrank.push.blessing`): ``blessed``,
  ``current_model``, ``current_model_id``, ``baseline_model`` and ``blessing_message`` (the reason).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter
from tfx.utils import path_utils

from feedrank.sessions import evaluate as evaluate_lib

log = logging.getLogger(__name__)
BASELINE_FILE = "baseline.json"   # written by LatestBlessedModel beside the baseline's SavedModel


class SessionEvaluatorSpec(ComponentSpec):
    PARAMETERS = {
        "top10_floor": ExecutionParameter(type=float),
        "max_top10_regression": ExecutionParameter(type=float),
        "example_split": ExecutionParameter(type=str),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "baseline_model": ChannelParameter(type=standard_artifacts.Model, optional=True),
    }
    OUTPUTS = {
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


def _baseline(input_dict: Dict[str, List[types.Artifact]]) -> tuple:
    """(SavedModel dir, description, artifact) of the baseline, or (None, "", None)."""
    arts = input_dict.get("baseline_model") or []
    if not arts:
        return None, "", None
    art = arts[0]
    name = "the last blessed model"
    path = os.path.join(art.uri, BASELINE_FILE)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            record = json.loads(f.read())
        name = f"the {record.get('source', 'baseline')} v{record.get('version', '?')}"
    return path_utils.serving_model_path(art.uri), name, art


class Executor(base_executor.BaseExecutor):
    """Evaluates, writes the metrics, and writes the blessing."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        model = artifact_utils.get_single_instance(input_dict["model"])
        evaluation = artifact_utils.get_single_instance(output_dict["evaluation"])
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        baseline_dir, baseline_name, baseline = _baseline(input_dict)
        result = evaluate_lib.evaluate(
            examples.uri, path_utils.serving_model_path(model.uri), baseline_dir,
            float(exec_properties["top10_floor"]), float(exec_properties["max_top10_regression"]),
            split=exec_properties.get("example_split") or "eval", baseline_name=baseline_name or "the baseline")
        result["baseline_name"] = baseline_name or None
        evaluate_lib.write_result(evaluation.uri, result)
        blessed = bool(result["blessed"])
        tf.io.gfile.makedirs(blessing.uri)
        with tf.io.gfile.GFile(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"), "w") as f:
            f.write(result["reason"])
        blessing.set_int_custom_property("blessed", int(blessed))
        blessing.set_string_custom_property("current_model", model.uri)
        blessing.set_int_custom_property("current_model_id", model.id)
        if baseline is not None:
            blessing.set_string_custom_property("baseline_model", baseline.uri)
            blessing.set_int_custom_property("baseline_model_id", baseline.id)
        blessing.set_string_custom_property("blessing_message", result["reason"])
        for key, value in result["candidate"].items():
            evaluation.set_float_custom_property(key.replace("@", "_at_"), float(value))
        log.info("SessionEvaluator: %s", result["reason"])


class SessionEvaluator(base_component.BaseComponent):
    """Session metrics of ``model`` (and ``baseline_model``) on ``example_split``; blesses on top-10 accuracy."""

    SPEC_CLASS = SessionEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, *, examples: types.BaseChannel, model: types.BaseChannel,
                 baseline_model: Optional[types.BaseChannel] = None, top10_floor: float = 0.05,
                 max_top10_regression: float = 0.01, example_split: str = "eval"):
        if not 0.0 <= top10_floor <= 1.0 or max_top10_regression < 0:
            raise ValueError(f"top10_floor must be in [0, 1] and max_top10_regression >= 0, got "
                             f"{top10_floor}, {max_top10_regression}")
        super().__init__(spec=SessionEvaluatorSpec(
            examples=examples, model=model, baseline_model=baseline_model, top10_floor=float(top10_floor),
            max_top10_regression=float(max_top10_regression), example_split=example_split,
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
