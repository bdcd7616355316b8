"""Offline checks of a rendered TFJob: the minimal kubeflow.org/v1 schema, Kubernetes' own
schema for each pod template, and round trips through SDK models.

* `schema_errors(job)`: messages of ``tests/schemas/tfjob_v1.yaml`` (jsonschema, draft 2020-12);
* `validate_pod_templates(job)`: each replica's template as a core ``PodTemplate``, strictly
  (kubernetes-validate, Kubernetes 1.30 as tests/unit/test_manifests.py);
* `pod_template_dropped(job)`: the field paths of each pod template that do not survive the
  kubernetes client's ``V1PodTemplateSpec`` model (an unknown or misplaced field is dropped);
* `tfjob_dropped(job)`: the same for the whole job through the kubeflow-training SDK's
  ``KubeflowOrgV1TFJob`` (kubeflow-training 1.7.0, in the lock; docs/kubeflow.md says why that version);
* `assert_valid(job)`: the first three; `kubeflow_config_with_tfjob(dir)`: configs/kubeflow.yaml
  with the switch on and `WORKERS` workers; `job_for(template, args)`: the job the launcher
  would submit for a Trainer step's arguments, with `EXECUTOR_INPUT` for KFP's ``{{$}}``.
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import yaml

from feedrank.runners.kubeflow_config import KubeflowConfig, load_kubeflow_config
from feedrank.runners.tfjob import render
from tests.helpers.config import ROOT
from tests.helpers.json_diff import dropped

SCHEMA = os.path.join(ROOT, "tests", "schemas", "tfjob_v1.yaml")
KF = os.path.join(ROOT, "configs", "kubeflow.yaml")
K8S_VERSION = "1.30.0"
WORKERS = 3
# What KFP puts in for ``{{$}}`` in a Trainer step (the parts the launcher and the workers read).
EXECUTOR_INPUT = {"inputs": {"parameterValues": {"run_fn": "feedrank.train.trainer.run_fn"}},
                  "outputs": {"artifacts": {
                      "model": {"artifacts": [{"type": {"schemaTitle": "tfx.Model"},
                                               "uri": "gs://feedrank-ml/pipeline-root/r-1/Trainer/model"}]},
                      "model_run": {"artifacts": [{"type": {"schemaTitle": "tfx.ModelRun"},
                                                   "uri": "gs://feedrank-ml/pipeline-root/r-1/Trainer/model_run"}]}},
                      "outputFile": "/tmp/kfp_outputs/output_metadata.json"}}


def schema_errors(job: Dict[str, Any]) -> List[str]:
    import jsonschema

    with open(SCHEMA) as f:
        schema = yaml.safe_load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in jsonschema.Draft202012Validator(schema).iter_errors(job))


def _templates(job: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {rtype: spec["template"] for rtype, spec in job["spec"]["tfReplicaSpecs"].items()}


def validate_pod_templates(job: Dict[str, Any]) -> None:
    import kubernetes_validate

    for rtype, template in _templates(job).items():
        obj = {"apiVersion": "v1", "kind": "PodTemplate",
               "metadata": {"name": f"tfjob-{rtype.lower()}", "namespace": "feedrank"}, "template": template}
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def _strip_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _strip_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_strip_none(v) for v in x]
    return x


class _Response:
    def __init__(self, data: Any):
        self.data = json.dumps(data)


def _round_trip(client, obj: Dict[str, Any], klass: str) -> Any:
    return _strip_none(client.sanitize_for_serialization(client.deserialize(_Response(obj), klass)))


def pod_template_dropped(job: Dict[str, Any]) -> List[str]:
    from kubernetes.client import ApiClient

    client = ApiClient()
    return [f".spec.tfReplicaSpecs.{rtype}.template{p}" for rtype, template in _templates(job).items()
            for p in dropped(template, _round_trip(client, copy.deepcopy(template), "V1PodTemplateSpec"))]


def tfjob_dropped(job: Dict[str, Any]) -> List[str]:
    from kubeflow.training import ApiClient  # kubeflow-training (a test-time check; the library never imports it)

    return dropped(job, _round_trip(ApiClient(), copy.deepcopy(job), "KubeflowOrgV1TFJob"))


def assert_valid(job: Dict[str, Any]) -> None:
    assert schema_errors(job) == []
    validate_pod_templates(job)
    assert pod_template_dropped(job) == []


def kubeflow_config_with_tfjob(directory: str) -> KubeflowConfig:
    """configs/kubeflow.yaml with ``trainer_job.kind: tfjob`` and `WORKERS` workers, read as compile reads it."""
    with open(KF) as f:
        raw = yaml.safe_load(f)
    raw["trainer_job"] = {**raw["trainer_job"], "kind": "tfjob", "workers": WORKERS}
    path = os.path.join(str(directory), "kubeflow.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return load_kubeflow_config(path)


def tfx_args(args: Sequence[str], executor_input: Optional[Dict[str, Any]] = None) -> List[str]:
    """The TFX arguments after the launcher's ``--``, with KFP's ``{{$}}`` filled in."""
    filled = json.dumps(executor_input or EXECUTOR_INPUT)
    return [filled if a == "{{$}}" else a for a in args[list(args).index("--") + 1:]]


def job_for(template: Dict[str, Any], args: Sequence[str], owner: bool = True,
            executor_input: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The job `feedrank.runners.tfjob.launch.launch` submits for a step's ``args``."""
    executor_input = executor_input or EXECUTOR_INPUT
    name = render.job_name("pod-uid-1")
    pod = {"name": "feedrank-abc-system-container-impl", "uid": "pod-uid-1"}
    return render.instantiate(template, name=name, namespace="feedrank", tfx_args=tfx_args(args, executor_input),
                              exchange=render.exchange_dir(executor_input, name), owner=pod if owner else None)
