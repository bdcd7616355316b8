"""LatestBlessedModel: the last blessed, pushed model, as a standard `Model` artifact.

Why not `tfx.dsl.Resolver(LatestBlessedModelStrategy)`: the open-source
Kubeflow backend cannot run resolver nodes, and this pipeline must run there.
The Pusher only pushes blessed models, so the newest version directory under
``<push_root>/<model>/`` is the latest blessed model.  The Evaluator loads
``<artifact uri>/Format-Serving/``, so the SavedModel is copied into that
layout.  With nothing pushed yet the output channel is empty, and the
Evaluator then skips its change thresholds (a first model has no baseline).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

log = logging.getLogger(__name__)
SERVING_SUBDIR = "Format-Serving"


def latest_version(push_dir: str) -> Optional[str]:
    """Newest complete version directory (holding saved_model.pb), or None."""
    if not tf.io.gfile.isdir(push_dir):
        return None
    versions = [v.rstrip("/") for v in tf.io.gfile.listdir(push_dir)]
    complete = [v for v in versions if v.isdigit()
                and tf.io.gfile.exists(os.path.join(push_dir, v, "saved_model.pb"))]
    return max(complete, key=int) if complete else None


def _copy_tree(src: str, dst: str) -> None:
    for root, _, files in tf.io.gfile.walk(src):
        rel = os.path.relpath(root, src)
        tf.io.gfile.makedirs(os.path.join(dst, rel))
        for name in files:
            tf.io.gfile.copy(os.path.join(root, name), os.path.join(dst, rel, name), overwrite=True)


class LatestBlessedModelSpec(ComponentSpec):
    PARAMETERS = {
        "push_dir": ExecutionParameter(type=str),
        # The version seen when the pipeline was built: part of the cache key,
        # so a new push invalidates a cached lookup.
        "expected_version": ExecutionParameter(type=str),
    }
    INPUTS: Dict[str, ChannelParameter] = {}
    OUTPUTS = {"model": ChannelParameter(type=standard_artifacts.Model)}


class Executor(base_executor.BaseExecutor):
    """Copies the newest pushed SavedModel into a Model artifact, or emits none."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        push_dir = exec_properties["push_dir"]
        version = latest_version(push_dir)
        if version is None:
            log.info("no blessed model under %s yet: the candidate has no baseline", push_dir)
            output_dict["model"].clear()
            return
        model = output_dict["model"][0]
        src = os.path.join(push_dir, version)
        _copy_tree(src, os.path.join(model.uri, SERVING_SUBDIR))
        model.set_string_custom_property("pushed_dir", src)
        model.set_string_custom_property("pushed_version", version)
        log.info("baseline: blessed model version %s from %s", version, src)


class LatestBlessedModel(base_component.BaseComponent):
    """Outputs the last blessed, pushed model of ``push_dir`` (or nothing)."""

    SPEC_CLASS = LatestBlessedModelSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, push_dir: str):
        super().__init__(spec=LatestBlessedModelSpec(
            push_dir=push_dir, expected_version=latest_version(push_dir) or "none",
            model=types.Channel(type=standard_artifacts.Model)))
