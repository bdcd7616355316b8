"""Compile the feedrank pipeline for the open-source Kubeflow Pipelines v2 backend.

`compile_pipeline(build, cfg, kf_cfg, output_path)` builds the pipeline with
``build`` (``pipeline.create_pipeline``, passed in by the CLI) and the Kubeflow
`PipelineTarget`, compiles it with TFX's `KubeflowV2DagRunner` to a
``.yaml`` package, and post-processes that package so it runs on a plain
Kubernetes cluster:

* the Trainer's container gets ``resources.accelerator`` (``nvidia.com/gpu``,
  the count from the config) and every container CPU/memory requests and
  limits, in the form kfp 2.13's compiler writes for ``set_accelerator_*`` /
  ``set_cpu_*`` / ``set_memory_*``;
* with ``trainer_job.kind: tfjob`` the Trainer's container instead launches a
  multi-worker TFJob that runs the Trainer on the GPU pool
  (`feedrank.runners.tfjob`): it gets the default image and resources, no GPU
  and no GPU-pool placement, which go to the job's workers;
* a second YAML document ``platforms.kubernetes.deploymentSpec.executors``
  (kfp-kubernetes' format) carries the Trainer's nodeSelector and
  tolerations, object-store credentials from a Secret, image pull secrets and
  the event log's volume for the components that read the log (``log_volume``);
* caching is per task: the config's default, and never for side-effecting
  or mutable-state components (``never_cache``);
* anything the open-source backend cannot run (resolver nodes, driver hooks
  such as FileBasedExampleGen's ``preCacheCheck``) is an error.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, List, Tuple

import yaml

from feedrank.config import Config, ConfigError
from feedrank.runners.kubeflow_config import (
    LOG_READERS,
    KubeflowConfig,
    bind_runtime_parameters,
    bound_beam_workers,
    cpu_cores,
    default_images,
    kubeflow_target,
)
from feedrank.runners.target import PipelineBuilder
from feedrank.runners.tfjob.render import as_launcher

GPU_RESOURCE = "nvidia.com/gpu"
TRAINER_ID = "Trainer"


class UnsupportedOnKubeflow(RuntimeError):
    """The compiled spec holds something the open-source KFP backend cannot run."""


def _quantity_number(q: str, memory: bool) -> float:
    """kfp's deprecated float fields: CPU in cores, memory in G (as kfp 2.13 writes)."""
    q = str(q)
    if not memory:
        return cpu_cores(q)
    units = {"Ki": 1024 / 1e9, "Mi": 1024 ** 2 / 1e9, "Gi": 1024 ** 3 / 1e9, "Ti": 1024 ** 4 / 1e9,
             "K": 1e-6, "M": 1e-3, "G": 1.0, "T": 1e3}
    for suffix in sorted(units, key=len, reverse=True):
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * units[suffix]
    return float(q) / 1e9


def container_resources(res: Dict[str, str], gpus: int) -> Dict[str, Any]:
    """``PipelineContainerSpec.resources`` exactly as kfp 2.13's compiler emits it."""
    out: Dict[str, Any] = {}
    if gpus:
        out["accelerator"] = {"count": str(gpus), "resourceCount": str(gpus),
                              "resourceType": GPU_RESOURCE, "type": GPU_RESOURCE}
    for key, field in (("cpu_limit", "cpuLimit"), ("cpu_request", "cpuRequest"),
                       ("memory_limit", "memoryLimit"), ("memory_request", "memoryRequest")):
        if key in res:
            value = str(res[key])
            out[field] = _quantity_number(value, memory=key.startswith("memory"))
            out["resource" + field[0].upper() + field[1:]] = value
    return out


def task_executors(spec: Dict[str, Any]) -> Dict[str, str]:
    """TFX component id (the task name) -> executor label."""
    out = {}
    for task_name, task in spec["root"]["dag"]["tasks"].items():
        comp = spec["components"][task["componentRef"]["name"]]
        if "executorLabel" in comp:
            out[task_name] = comp["executorLabel"]
    return out


def check_supported(spec: Dict[str, Any]) -> None:
    """Raises UnsupportedOnKubeflow for resolver executors and driver hooks."""
    problems = []
    for label, executor in spec["deploymentSpec"]["executors"].items():
        if "resolver" in executor:
            problems.append(f"{label}: a resolver node (not implemented by the open-source backend)")
        if "lifecycle" in executor.get("container", {}):
            problems.append(f"{label}: a container lifecycle/driver hook "
                            f"({sorted(executor['container']['lifecycle'])}) with no open-source handler")
    if problems:
        raise UnsupportedOnKubeflow("the compiled pipeline cannot run on open-source KFP: " + "; ".join(problems))


def _platform_executor(kf: KubeflowConfig, component_id: str) -> Dict[str, Any]:
    ex: Dict[str, Any] = {}
    if component_id == TRAINER_ID and kf.trainer_gpu.count > 0 and not kf.trainer_job.enabled:
        if kf.trainer_gpu.node_selector:
            ex["nodeSelector"] = {"labels": dict(kf.trainer_gpu.node_selector)}
        if kf.trainer_gpu.tolerations:
            ex["tolerations"] = [dict(t) for t in kf.trainer_gpu.tolerations]
    if kf.secret_env:
        name = kf.secret_env["secret_name"]
        ex["secretAsEnv"] = [{
            "keyToEnv": [{"envVar": env, "secretKey": key} for env, key in sorted(kf.secret_env["keys"].items())],
            "secretName": name,
            "secretNameParameter": {"runtimeValue": {"constant": name}}}]
    if kf.image_pull_secrets:
        ex["imagePullSecret"] = [{"secretName": s, "secretNameParameter": {"runtimeValue": {"constant": s}}}
                                 for s in kf.image_pull_secrets]
    if kf.log_volume and component_id in LOG_READERS:  # kfp-kubernetes' mount_pvc form
        pvc = kf.log_volume["pvc_name"]
        ex["pvcMount"] = [{"constant": pvc, "mountPath": kf.log_volume["mount_path"],
                           "pvcNameParameter": {"runtimeValue": {"constant": pvc}}}]
    return ex


def postprocess(spec: Dict[str, Any], kf: KubeflowConfig,
                platform: Dict[str, Any] | None = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Returns (pipeline spec, platform spec) with the Kubernetes settings applied."""
    spec = copy.deepcopy(spec)
    check_supported(spec)
    executors = task_executors(spec)
    platform = copy.deepcopy(platform) if platform else {}
    k8s = platform.setdefault("platforms", {}).setdefault("kubernetes", {})
    k8s_execs = k8s.setdefault("deploymentSpec", {}).setdefault("executors", {})
    for component_id, label in sorted(executors.items()):
        container = spec["deploymentSpec"]["executors"][label]["container"]
        launcher = component_id == TRAINER_ID and kf.trainer_job.enabled   # the TFJob's workers train
        gpus = kf.trainer_gpu.count if component_id == TRAINER_ID and not launcher else 0
        res = dict(kf.resources.get("default", {})) if launcher else kf.resources_for(component_id)
        resources = container_resources(res, gpus)
        if resources:
            container["resources"] = resources
        if launcher:
            as_launcher(container, kf)
        if kf.env:
            container["env"] = [{"name": k, "value": str(v)} for k, v in sorted(kf.env.items())]
        extra = _platform_executor(kf, component_id)
        if extra:
            k8s_execs.setdefault(label, {}).update(extra)
        task = spec["root"]["dag"]["tasks"][component_id]
        cache = kf.enable_cache and component_id not in kf.never_cache
        task["cachingOptions"] = {"enableCache": True} if cache else {}  # kfp writes {} for "off"
    if not k8s_execs:
        platform = {}
    return spec, platform


def runtime_parameter_defaults(pipeline) -> Dict[str, Any]:
    """Name -> default of every RuntimeParameter in the components' exec properties."""
    from tfx.orchestration import data_types

    out = {}
    for component in pipeline.components:
        for value in component.exec_properties.values():
            if isinstance(value, data_types.RuntimeParameter) and value.default is not None:
                out[value.name] = value.default
    return out


def set_parameter_defaults(spec: Dict[str, Any], defaults: Dict[str, Any]) -> None:
    """TFX writes parameter defaults only into a Vertex PipelineJob's runtimeConfig, so a
    .yaml package has none; add them (and ``isOptional``) as kfp's compiler does."""
    params = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    for name, default in defaults.items():
        if name in params:
            params[name]["defaultValue"] = default
            params[name]["isOptional"] = True


def _read_package(path: str) -> Tuple[str, List[Dict[str, Any]]]:
    with open(path) as f:
        text = f.read()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    docs = [d for d in yaml.safe_load_all(text) if d]
    return header, docs


def _unwrap(doc: Dict[str, Any]) -> Dict[str, Any]:
    """TFX writes the bare PipelineSpec for .yaml (a PipelineJob dict for .json)."""
    return doc.get("pipelineSpec", doc)


def write_package(path: str, header: str, spec: Dict[str, Any], platform: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    docs = [spec] + ([platform] if platform else [])
    with open(path, "w") as f:
        f.write(header)
        yaml.safe_dump_all(docs, f, sort_keys=True)


def compile_pipeline(build: PipelineBuilder, cfg: Config, kf: KubeflowConfig, output_path: str) -> str:
    """Compiles ``build(cfg, kubeflow_target(cfg, kf))`` into ``output_path`` (.yaml); returns the path."""
    if not output_path.endswith((".yaml", ".yml")):
        raise ConfigError(f"--output must end in .yaml: a .json package is a Vertex PipelineJob "
                          f"that kfp.Client rejects (got {output_path!r})")
    from tfx import v1 as tfx

    pipeline = build(cfg, kubeflow_target(cfg, kf))
    bind_runtime_parameters(pipeline, kf)
    bound_beam_workers(pipeline, kf)
    out_dir = os.path.dirname(os.path.abspath(output_path))
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            display_name=cfg.pipeline_name, default_image=default_images(kf),
            use_pipeline_spec_2_1=True),  # schemaVersion 2.1.0: what the open-source backend reads
        output_dir=out_dir, output_filename=os.path.basename(output_path))
    runner.run(pipeline, write_out=True)
    header, docs = _read_package(output_path)
    spec = _unwrap(docs[0])
    platform = docs[1] if len(docs) > 1 else None
    set_parameter_defaults(spec, runtime_parameter_defaults(pipeline))
    spec, platform = postprocess(spec, kf, platform)
    write_package(output_path, header, spec, platform)
    return output_path
