"""MlflowLogger: logs every candidate to MLflow, after the Evaluator and the Pusher.

One MLflow run per candidate (blessed or not) in the pipeline's experiment:
params (model family, the Trainer's custom_config, data span, code version),
metrics (exact AUC/GAUC/logloss, TFMA metrics, per-slice AUC, per-epoch
curves), artifacts (ROC and calibration plots, schema, eval config, model
card, curves) and tags (TFX/KFP run ids, git commit, blessed, model
fingerprint).  Only a model that is blessed for *this* candidate and pushed
becomes a version of the registered model, with the alias ``challenger``; the
logger checks that itself (`feedrank.tracking.collect`).  A model whose
content fingerprint a version already carries is not registered again: the
run is tagged ``existing_version`` instead (`feedrank.tracking.candidate.register`).
The eval split's exact metrics go to MLflow and to ``exact_metrics.json`` in
the ``mlflow_run`` artifact, where the run summary reads them.

Caching: the component is side-effecting (it writes to MLflow), so it must run
on every pipeline run even when all its inputs are cached.  TFX has no per-node
cache switch (the compiler copies the pipeline's ``enable_cache`` onto every
node), so ``run_nonce`` - a fresh value each time the pipeline is built - is an
exec property and therefore part of the cache key.  LocalDagRunner builds the
pipeline on every run, so the logger never hits the cache.  (The runtime
placeholder ``ph.execution_invocation().pipeline_run_id`` would be nicer, but
the Kubeflow V2 compiler rejects it.  On Kubeflow one compiled package runs many
times, so `feedrank/runners/kubeflow_config.py` pins the nonce and the runner
disables caching for this task instead (``never_cache``).)
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Dict, Optional, Union

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.mlflow_logger.executor import Executor


class MlflowRun(types.Artifact):
    """The MLflow run of one candidate (custom properties ``run_id``,
    ``experiment_id``, ``tracking_uri``, ``registered_version`` (created by this
    run), ``existing_version`` (the version already holding the same model),
    ``model_fingerprint``; files ``mlflow_run.json`` and ``exact_metrics.json``)."""

    TYPE_NAME = "feedrank.MlflowRun"  # namespace.Name: what the KFP v2 compiler accepts


class MlflowLoggerSpec(ComponentSpec):
    PARAMETERS = {
        "tracking_uri": ExecutionParameter(type=str),
        "experiment_name": ExecutionParameter(type=str),
        "registered_model_name": ExecutionParameter(type=str),
        # The Trainer's custom_config (JSON): logged as the hyperparameters.
        "custom_config": ExecutionParameter(type=str),
        # Pipeline facts for params and the model card (JSON): input_base, evaluator thresholds...
        "run_context": ExecutionParameter(type=str, optional=True),
        # Unique per pipeline build, so the logger is never served from the cache (module doc).
        "run_nonce": ExecutionParameter(type=str),
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "model_run": ChannelParameter(type=standard_artifacts.ModelRun),
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
        "pushed_model": ChannelParameter(type=standard_artifacts.PushedModel),
        "schema": ChannelParameter(type=standard_artifacts.Schema),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {"mlflow_run": ChannelParameter(type=MlflowRun)}


class MlflowLogger(base_component.BaseComponent):
    """Logs the candidate as an MLflow run; registers it (alias ``challenger``) iff blessed and pushed."""

    SPEC_CLASS = MlflowLoggerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, *, model: types.BaseChannel, model_run: types.BaseChannel,
                 evaluation: types.BaseChannel, blessing: types.BaseChannel,
                 pushed_model: types.BaseChannel, schema: types.BaseChannel,
                 examples: types.BaseChannel, tracking_uri: str, experiment_name: str,
                 registered_model_name: str, custom_config: Union[str, Dict[str, Any]],
                 run_context: Optional[Dict[str, Any]] = None, run_nonce: Optional[str] = None):
        if not isinstance(custom_config, str):
            custom_config = json.dumps(custom_config, sort_keys=True)
        super().__init__(spec=MlflowLoggerSpec(
            model=model, model_run=model_run, evaluation=evaluation, blessing=blessing,
            pushed_model=pushed_model, schema=schema, examples=examples,
            tracking_uri=tracking_uri, experiment_name=experiment_name,
            registered_model_name=registered_model_name, custom_config=custom_config,
            run_context=json.dumps(run_context or {}, sort_keys=True, default=str),
            run_nonce=run_nonce or uuid.uuid4().hex,
            mlflow_run=types.Channel(type=MlflowRun)))
