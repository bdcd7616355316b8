"""LatestBlessedModel: the model a candidate must beat, as a standard `Model` artifact.

The baseline is what is served: the registry version that carries the
``champion`` alias (`components.baseline.champion`), whatever its family.
Without a champion, or when the registry cannot answer (a warning says so),
or when the champion's SavedModel cannot be read, it is the newest blessed
push under ``push_dir``: the Pusher pushes only blessed models, so the newest
complete version directory ``<push_dir>/<version>/`` is the newest blessed
model of this family.  With neither, the output channel is empty and the
Evaluator skips its change threshold (a first model has no baseline).

A baseline that reads a declared column (``declared_features.json`` beside its
SavedModel) which this run's feature contract lacks cannot score this run's
examples: it is skipped with one warning naming the columns, and the candidate
is judged without a change threshold (`foreign_columns`).

The Evaluator loads ``<artifact uri>/Format-Serving/``, so the SavedModel is
copied into that layout.  Which model it is goes into the artifact's custom
properties (``source`` = champion | latest_push, ``version``,
``registered_model``, ``family``, ``path``) and into ``baseline.json`` beside
the SavedModel, which the blessing reason reads (`feedrank.evaluate.gates`).

Why not `tfx.dsl.Resolver(LatestBlessedModelStrategy)`: the open-source
Kubeflow backend cannot run resolver nodes, and this pipeline must run there.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.baseline import champion as champ_lib
from feedrank import features as F

log = logging.getLogger(__name__)
SERVING_SUBDIR = "Format-Serving"
BASELINE_FILE = "baseline.json"  # which model the artifact holds (see the module docstring)
SOURCE_CHAMPION, SOURCE_LATEST_PUSH = "champion", "latest_push"


def latest_version(push_dir: str) -> Optional[str]:
    """Newest complete version directory (holding saved_model.pb), or None."""
    if not tf.io.gfile.isdir(push_dir):
        return None
    versions = [v.rstrip("/") for v in tf.io.gfile.listdir(push_dir)]
    complete = [v for v in versions if v.isdigit()
                and tf.io.gfile.exists(os.path.join(push_dir, v, "saved_model.pb"))]
    return max(complete, key=int) if complete else None


class LatestBlessedModelSpec(ComponentSpec):
    PARAMETERS = {
        "push_dir": ExecutionParameter(type=str),
        # Where the registry is; empty: no registry, the newest push is the baseline.
        "tracking_uri": ExecutionParameter(type=str),
        "registered_model": ExecutionParameter(type=str),
        # Looked up when the pipeline is built, for the cache key only: a new push
        # or a moved champion invalidates a cached baseline.
        "expected_version": ExecutionParameter(type=str),
        "champion": ExecutionParameter(type=str),
        # The run's FeatureSpec as JSON (empty: the built-in features only).
        "declared_features": ExecutionParameter(type=str, optional=True),
    }
    INPUTS: Dict[str, ChannelParameter] = {}
    OUTPUTS = {"model": ChannelParameter(type=standard_artifacts.Model)}


def _record(model: types.Artifact, record: Dict[str, str]) -> None:
    for key, value in record.items():
        model.set_string_custom_property(key, value)
    with tf.io.gfile.GFile(os.path.join(model.uri, BASELINE_FILE), "w") as f:
        f.write(json.dumps(record, indent=2, sort_keys=True))


def _champion_record(push_dir: str, uri: str, registered_model: str, dst: str) -> Optional[Dict[str, str]]:
    """Copies the champion into ``dst`` and describes it; None (with the reason logged) to fall back."""
    try:
        champ = champ_lib.find_champion(uri, registered_model)
    except champ_lib.RegistryUnavailable as e:
        log.warning("baseline: the MLflow registry is unreachable (%s); falling back to the newest "
                    "blessed push under %s", e, push_dir)
        return None
    if champ is None:
        log.info("baseline: %s has no %r alias; using the newest blessed push under %s",
                 registered_model, "champion", push_dir)
        return None
    try:
        path = champ_lib.fetch_saved_model(champ, uri, dst)
    except champ_lib.ChampionUnreadable as e:
        log.warning("baseline: the champion cannot be read (%s); falling back to the newest blessed push "
                    "under %s", e, push_dir)
        return None
    return {"source": SOURCE_CHAMPION, "version": champ.version, "registered_model": registered_model,
            "family": champ.family, "path": path, "pushed_dir": champ.pushed_dir,
            "pushed_version": champ.pushed_version}


def foreign_columns(baseline: F.FeatureSpec, run: F.FeatureSpec) -> List[str]:
    """``table.column (kind)`` of each column ``baseline`` reads that ``run`` does not declare alike."""
    ours = {(c.table, c.column, c.kind) for c in run.declared}
    return [f"{c.table}.{c.column} ({c.kind})" for c in baseline.declared if (c.table, c.column, c.kind) not in ours]


class Executor(base_executor.BaseExecutor):
    """Copies the champion (else the newest push) into a Model artifact, or emits none."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        push_dir = exec_properties["push_dir"]
        uri = exec_properties.get("tracking_uri") or ""
        registered_model = exec_properties.get("registered_model") or ""
        model = output_dict["model"][0]
        dst = os.path.join(model.uri, SERVING_SUBDIR)
        record = _champion_record(push_dir, uri, registered_model, dst) if uri and registered_model else None
        if record is None:
            version = latest_version(push_dir)
            if version is None:
                log.info("baseline: no champion and no blessed model under %s yet: the candidate has no "
                         "baseline", push_dir)
                output_dict["model"].clear()
                return
            src = os.path.join(push_dir, version)
            if tf.io.gfile.exists(dst):
                tf.io.gfile.rmtree(dst)  # a partial champion copy
            champ_lib.copy_tree(src, dst)
            record = {"source": SOURCE_LATEST_PUSH, "version": version, "registered_model": "",
                      "family": os.path.basename(push_dir.rstrip("/")), "path": src, "pushed_dir": src,
                      "pushed_version": version}
        foreign = foreign_columns(F.FeatureSpec.read(dst),
                                  F.FeatureSpec.from_json(exec_properties.get("declared_features") or ""))
        if foreign:
            log.warning("baseline: %s v%s (%s) reads declared column(s) %s that this run's examples do not "
                        "hold, so it cannot score them: the candidate is judged without a baseline (no "
                        "change threshold)", record["source"], record["version"], record["family"],
                        ", ".join(foreign))
            output_dict["model"].clear()
            return
        _record(model, record)
        log.info("baseline: %s v%s (%s) from %s", record["source"], record["version"], record["family"],
                 record["path"])


class LatestBlessedModel(base_component.BaseComponent):
    """Outputs the served model (the registry's champion), else the newest push of ``push_dir``, or nothing."""

    SPEC_CLASS = LatestBlessedModelSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, push_dir: str, tracking_uri: str = "", registered_model: str = "",
                 declared_features: str = ""):
        super().__init__(spec=LatestBlessedModelSpec(
            push_dir=push_dir, tracking_uri=tracking_uri, registered_model=registered_model,
            declared_features=declared_features or None,
            expected_version=latest_version(push_dir) or "none",
            champion=champ_lib.champion_key(tracking_uri, registered_model),
            model=types.Channel(type=standard_artifacts.Model)))
