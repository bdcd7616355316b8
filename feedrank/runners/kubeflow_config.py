"""Kubeflow settings (`configs/kubeflow.yaml`) and the pipeline target built from them.

`KubeflowConfig` is the validated YAML; `kubeflow_target(cfg, kf)` is the
`PipelineTarget` that builds the Kubeflow variant of the pipeline:
object-storage paths, the schema inside the image, Beam args and the trainer
settings as a run parameter, instead of the local paths, SQLite MLMD and
DirectRunner defaults.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List

from feedrank import features as F
from feedrank.config import Config, ConfigError, read_yaml_mapping
from feedrank.runners.target import PipelineTarget
from feedrank.runners.tfjob.settings import TrainerJob, check_gpus
from feedrank.typed import build_typed

RESOURCE_KEYS = ("cpu_request", "cpu_limit", "memory_request", "memory_limit")
OBJECT_STORE_SCHEMES = ("gs://", "s3://")
# Runtime parameters of the compiled package (root inputDefinitions).
PARAM_INPUT_BASE = "input_base"
PARAM_DATA_VERSION = "data_version"
PARAM_TRAINER_CONFIG = "trainer_config"
PARAM_MLFLOW_URI = "mlflow_tracking_uri"
# The components that read the event log at ``input_base`` (they get ``log_volume``).
LOG_READERS = ("BehaviorExampleGen", "Word2VecGen")
LOG_VOLUME_KEYS = ("pvc_name", "mount_path")


@dataclasses.dataclass
class GpuConfig:
    count: int = 1
    node_selector: Dict[str, str] = dataclasses.field(
        default_factory=lambda: {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"})
    tolerations: List[Dict[str, str]] = dataclasses.field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])


@dataclasses.dataclass
class KubeflowConfig:
    image: str = "registry.example.com/feedrank/pipeline:latest"
    images: Dict[str, str] = dataclasses.field(default_factory=dict)
    pipeline_root: str = "gs://feedrank-ml/pipeline-root"
    model_store_root: str = "gs://feedrank-ml/model_store"
    schema_dir_in_image: str = "/pipeline/schema"
    input_base: str = "gs://feedrank-ml/data/demo"
    data_version: str = "unversioned"
    enable_cache: bool = True
    never_cache: List[str] = dataclasses.field(
        default_factory=lambda: ["LatestBlessedModel", "Pusher", "MlflowLogger"])
    mlflow_tracking_uri: str = "http://mlflow.feedrank.svc.cluster.local:5000"
    beam_pipeline_args: List[str] = dataclasses.field(
        default_factory=lambda: ["--direct_running_mode=multi_processing", "--direct_num_workers=0"])
    trainer_gpu: GpuConfig = dataclasses.field(default_factory=GpuConfig)
    resources: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)
    secret_env: Dict[str, Any] = dataclasses.field(default_factory=dict)
    env: Dict[str, str] = dataclasses.field(default_factory=dict)
    image_pull_secrets: List[str] = dataclasses.field(default_factory=list)
    # A PersistentVolumeClaim holding the event log (the serving log sink writes its parts
    # there too), mounted at mount_path in LOG_READERS; input_base is then a path under it.
    log_volume: Dict[str, str] = dataclasses.field(default_factory=dict)
    # The Trainer in its own pod (default) or as a multi-worker TFJob (feedrank.runners.tfjob).
    trainer_job: TrainerJob = dataclasses.field(default_factory=TrainerJob)

    def resources_for(self, component_id: str) -> Dict[str, str]:
        merged = dict(self.resources.get("default", {}))
        merged.update(self.resources.get(component_id, {}))
        return merged


def load_kubeflow_config(path: str) -> KubeflowConfig:
    """Reads and validates ``configs/kubeflow.yaml``; raises ConfigError naming the key."""
    raw = read_yaml_mapping(path, "kubeflow config")
    where = os.path.basename(path)
    kf = build_typed(KubeflowConfig, raw, where)
    for key in ("pipeline_root", "model_store_root"):
        if not getattr(kf, key).startswith(OBJECT_STORE_SCHEMES):
            raise ConfigError(f"{where}.{key} must be object storage ({' or '.join(OBJECT_STORE_SCHEMES)}),"
                              f" got {getattr(kf, key)!r}: pods cannot see this machine's disk")
    for comp, res in kf.resources.items():
        bad = sorted(set(res) - set(RESOURCE_KEYS)) if isinstance(res, dict) else ["<not a mapping>"]
        if bad:
            raise ConfigError(f"{where}.resources.{comp}: unknown key(s) {bad}; allowed: {list(RESOURCE_KEYS)}")
    if kf.trainer_gpu.count < 0:
        raise ConfigError(f"{where}.trainer_gpu.count must be >= 0, got {kf.trainer_gpu.count}")
    check_gpus(kf.trainer_job, kf.trainer_gpu.count, where)
    if kf.secret_env:
        if set(kf.secret_env) != {"secret_name", "keys"} or not isinstance(kf.secret_env["keys"], dict):
            raise ConfigError(f"{where}.secret_env needs exactly `secret_name` and `keys` (ENV_VAR: secret-key)")
    if kf.log_volume:
        check_log_volume(kf, where)
    return kf


def check_log_volume(kf: KubeflowConfig, where: str) -> None:
    """``log_volume`` names a claim and an absolute mount path, and ``input_base`` lies under it."""
    lv = kf.log_volume
    if not isinstance(lv, dict) or set(lv) != set(LOG_VOLUME_KEYS) or not all(
            isinstance(lv[k], str) and lv[k] for k in LOG_VOLUME_KEYS):
        raise ConfigError(f"{where}.log_volume needs exactly {list(LOG_VOLUME_KEYS)} (non-empty strings), got {lv!r}")
    mount = lv["mount_path"].rstrip("/")
    if not mount.startswith("/"):
        raise ConfigError(f"{where}.log_volume.mount_path must be an absolute path, got {lv['mount_path']!r}")
    if not (kf.input_base == mount or kf.input_base.startswith(mount + "/")):
        raise ConfigError(f"{where}.input_base {kf.input_base!r} must lie under log_volume.mount_path {mount!r}: "
                          f"the example generator reads the log from the mounted volume")


def image_schema_path(schema_dir_in_image: str, spec: F.FeatureSpec) -> str:
    """The path inside the image of the schema file of the feature contract ``spec``:
    ``<dir>/<content hash>/schema.pbtxt``.

    Same hash as `feedrank.examples.tfdv_schema.write_schema`, so the Dockerfile's
    ``write_config_schemas('/pipeline/schema', 'configs')`` produces exactly this file.
    """
    from feedrank.examples.tfdv_schema import schema_digest

    return f"{schema_dir_in_image.rstrip('/')}/{schema_digest(spec)}/schema.pbtxt"


def trainer_config_parameter(config: Dict[str, Any]):
    """The Trainer's custom_config as one JSON RuntimeParameter (TFX 1.16 takes
    a RuntimeParameter for the whole dict, not for single keys)."""
    from tfx import v1 as tfx

    return tfx.dsl.experimental.RuntimeParameter(
        name=PARAM_TRAINER_CONFIG, ptype=str, default=json.dumps(config, sort_keys=True))


def kubeflow_target(cfg: Config, kf: KubeflowConfig) -> PipelineTarget:
    """The Kubeflow build's paths and settings. ``input_base`` and ``input_fingerprint``
    are the defaults of run parameters: `bind_runtime_parameters` turns them into
    RuntimeParameters once the components are built. No MLMD config: the backend has its own."""
    return PipelineTarget(
        pipeline_root=kf.pipeline_root.rstrip("/"),
        push_dir=f"{kf.model_store_root.rstrip('/')}/{cfg.model_name}",
        # the schema named by content hash lists the config's declared columns
        schema_file=image_schema_path(kf.schema_dir_in_image, cfg.features_spec),
        input_base=kf.input_base,
        input_fingerprint=kf.data_version,
        beam_pipeline_args=list(kf.beam_pipeline_args),
        enable_cache=kf.enable_cache,
        metadata_connection_config=None,
        wrap_trainer_config=trainer_config_parameter)


WORKERS_FLAG = "--direct_num_workers"


def cpu_cores(quantity: str) -> float:
    """A Kubernetes CPU quantity in cores ("4", "2.5", "500m")."""
    q = str(quantity).strip()
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def direct_workers(beam_args: List[str], cpu_limit: str) -> int:
    """The DirectRunner workers a pod with ``cpu_limit`` should run: its whole cores (at least 1),
    or 0 (leave the args alone) when ``beam_args`` name another runner or a worker count other
    than 0 ("one per CPU", which counts the node's CPUs, not the pod's limit)."""
    runner = next((a.split("=", 1)[1] for a in beam_args if a.startswith("--runner=")), "DirectRunner")
    workers = [a.split("=", 1)[1] for a in beam_args if a.startswith(WORKERS_FLAG + "=")]
    if runner not in ("DirectRunner", "direct") or (workers and workers[-1] != "0") or not cpu_limit:
        return 0
    return max(1, int(cpu_cores(cpu_limit)))


def bound_beam_workers(pipeline, kf: "KubeflowConfig") -> Dict[str, int]:
    """Gives each Beam component the DirectRunner worker count of its pod's CPU limit
    (`direct_workers`, from ``resources``) as its own Beam args; returns component id -> workers."""
    bound = {}
    for component in pipeline.components:
        if not hasattr(component, "with_beam_pipeline_args"):
            continue
        workers = direct_workers(list(kf.beam_pipeline_args),
                                 kf.resources_for(component.id).get("cpu_limit", ""))
        if workers:
            component.with_beam_pipeline_args([f"{WORKERS_FLAG}={workers}"])
            bound[component.id] = workers
    return bound


def bind_runtime_parameters(pipeline, kf: "KubeflowConfig") -> List[str]:
    """Turns exec properties into pipeline parameters after the components are built
    (their constructors coerce values with str(), so they cannot take a RuntimeParameter):

    * BehaviorExampleGen ``input_base`` -> ``input_base``, ``input_fingerprint`` -> ``data_version``
      (and Word2VecGen's, when the pipeline has one);
    * MlflowLogger ``tracking_uri`` -> ``mlflow_tracking_uri`` and its ``custom_config`` -> the
      Trainer's ``trainer_config`` parameter (so the logged hyperparameters are the run's);
      its ``run_nonce`` (a per-build cache breaker) becomes a constant: on Kubeflow the
      task is never cached instead (`never_cache`); the Pusher's ``run_nonce`` likewise;
    * LatestBlessedModel ``tracking_uri`` -> ``mlflow_tracking_uri`` (the champion is looked up in the
      cluster's registry when the task runs), and its build-time ``champion`` cache key becomes a
      constant: that task is never cached on Kubeflow either.

    Returns the parameter names bound.
    """
    from tfx import v1 as tfx
    from tfx.orchestration import data_types

    RP = tfx.dsl.experimental.RuntimeParameter
    by_id = {c.id: c for c in pipeline.components}

    def props(component_id: str, *names: str, required: bool = True):
        component = by_id.get(component_id)
        if component is None or any(n not in component.exec_properties for n in names):
            if required:
                raise ConfigError(f"cannot bind runtime parameters: no {component_id}.{names} in the pipeline")
            return None
        return component.exec_properties

    bound = []
    gen = (props("BehaviorExampleGen", "input_base", "input_fingerprint", required=False)
           or props("SessionSampleGen", "input_base", "input_fingerprint"))   # mode: session
    gen["input_base"] = RP(name=PARAM_INPUT_BASE, ptype=str, default=str(gen["input_base"]))
    gen["input_fingerprint"] = RP(name=PARAM_DATA_VERSION, ptype=str, default=str(gen["input_fingerprint"]))
    bound += [PARAM_INPUT_BASE, PARAM_DATA_VERSION]
    w2v = props("Word2VecGen", "input_base", "input_fingerprint", required=False)
    if w2v is not None:  # word2vec.enabled: the same log and data version as the example gen
        w2v["input_base"], w2v["input_fingerprint"] = gen["input_base"], gen["input_fingerprint"]
    pusher = props("Pusher", "run_nonce", required=False)
    if pusher is not None:  # like the logger's: a constant, the task is uncached instead
        pusher["run_nonce"] = "kubeflow-task-not-cached"
    logger = props("MlflowLogger", "tracking_uri", "custom_config", "run_nonce", required=False)
    if logger is not None:
        logger["tracking_uri"] = RP(name=PARAM_MLFLOW_URI, ptype=str, default=kf.mlflow_tracking_uri)
        logger["run_nonce"] = "kubeflow-task-not-cached"
        bound.append(PARAM_MLFLOW_URI)
        trainer = props("Trainer", "custom_config", required=False)
        if trainer is not None and isinstance(trainer["custom_config"], data_types.RuntimeParameter):
            logger["custom_config"] = trainer["custom_config"]
    baseline = props("LatestBlessedModel", "tracking_uri", "champion", required=False)
    if baseline is not None:
        baseline["tracking_uri"] = (logger["tracking_uri"] if logger is not None
                                    else RP(name=PARAM_MLFLOW_URI, ptype=str, default=kf.mlflow_tracking_uri))
        baseline["champion"] = "looked-up-when-the-task-runs"
        if PARAM_MLFLOW_URI not in bound:
            bound.append(PARAM_MLFLOW_URI)
    return bound


def default_images(kf: KubeflowConfig) -> Dict[str, Any]:
    """The runner's ``default_image`` map: per-component images plus the default."""
    images: Dict[str, Any] = dict(kf.images)
    images["default_image_path"] = kf.image  # tfx pipeline_builder.DEFAULT_IMAGE_PATH_KEY
    return images

