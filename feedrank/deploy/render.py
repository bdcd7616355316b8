"""InferenceServices for the ranker: champion, challenger canary, transformer, autoscaling.

Serverless (Knative) mode canaries with ``predictor.canaryTrafficPercent``:
the InferenceService names the challenger and KServe keeps the rest of the
traffic on the last rolled-out revision, which must be the champion (so a
canary is two applies: the champion at 100%, then the challenger).
Standard mode (kserve >= 0.20) names both at once: ``spec.predictor`` is the
champion and ``spec.canary[]`` the challenger with ``trafficPercent``; canary
predictors have fixed replicas (no maxReplicas/scaleMetric/scaleTarget).

An A/B test (`ab_plan`) is no KServe split: the champion's InferenceService
keeps the endpoint and its transformer assigns users by a stable hash, calling
the challenger's own InferenceService ``<name>-challenger`` for its share.

Model storage is a gs:// or s3:// ``storageUri`` read with the
ServiceAccount's identity (``serviceAccountName``); no credentials inline.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

from feedrank.deploy import FEEDRANK_RUNTIME, MODES, RUNTIMES, SERVERLESS, STANDARD, TFSERVING_RUNTIME, DeployError
from feedrank.deploy.versions import ServedVersion

log = logging.getLogger(__name__)

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
ANNOTATION = "feedrank.io"
DEPLOYMENT_MODE = {SERVERLESS: "Serverless", STANDARD: "Standard"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Cluster settings of the ranker's InferenceService."""

    name: str = "feedrank-ranker"
    namespace: str = "feedrank"
    image: str = "registry.example.com/feedrank/serving:0.1.0"
    service_account: str = "feedrank-serving"     # its identity reads the model bucket
    model_name: str = "feedrank"                  # /v1/models/<model_name>:predict
    redis_url: str = "redis://feedrank-redis:6379/0"
    predictor_cpu: str = "2"
    predictor_memory: str = "2Gi"
    predictor_memory_limit: str = "4Gi"
    transformer_cpu: str = "1"
    transformer_memory: str = "512Mi"
    transformer_memory_limit: str = "1Gi"
    min_replicas: int = 2
    max_replicas: int = 10
    target_concurrency: int = 8        # Serverless: in-flight requests per pod (Knative KPA)
    target_cpu_percent: int = 70       # Standard: HPA CPU utilisation (HPA has no concurrency metric)
    canary_replicas: int = 1           # Standard: fixed replicas of a canary predictor
    batch_size: int = 120


def _resources(cpu: str, memory: str, memory_limit: str) -> Dict[str, Any]:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory_limit}}


def _scaling(mode: str, s: Settings) -> Dict[str, Any]:
    if mode == SERVERLESS:
        return {"minReplicas": s.min_replicas, "maxReplicas": s.max_replicas,
                "scaleMetric": "concurrency", "scaleTarget": s.target_concurrency}
    return {"minReplicas": s.min_replicas, "maxReplicas": s.max_replicas,
            "scaleMetric": "cpu", "scaleTarget": s.target_cpu_percent}


def _predictor_body(runtime: str, v: ServedVersion, s: Settings) -> Dict[str, Any]:
    """The runtime part of a predictor (no scaling): our container or TF Serving."""
    if runtime == FEEDRANK_RUNTIME:
        return {"serviceAccountName": s.service_account, "containers": [{
            "name": "kserve-container",  # KServe's storage initializer fills /mnt/models from STORAGE_URI
            "image": s.image,
            "args": ["--model-dir", "/mnt/models", "--model-name", s.model_name, "--host", "0.0.0.0",
                     "--http-port", "8080", "--batch-size", str(s.batch_size)],
            "env": [{"name": "STORAGE_URI", "value": v.storage_uri}],
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": f"/v2/models/{s.model_name}/ready", "port": 8080}},
            "resources": _resources(s.predictor_cpu, s.predictor_memory, s.predictor_memory_limit)}]}
    # TF Serving loads the newest numeric version under its base path: the version's parent.
    base = v.storage_uri.rsplit("/", 1)[0]
    return {"serviceAccountName": s.service_account, "model": {
        "modelFormat": {"name": "tensorflow"}, "runtime": "kserve-tensorflow-serving",
        "protocolVersion": "v1", "storageUri": base,
        "resources": _resources(s.predictor_cpu, s.predictor_memory, s.predictor_memory_limit)}}


def _transformer(mode: str, s: Settings, extra_args: Sequence[str] = ()) -> Dict[str, Any]:
    # KServe appends --model_name/--predictor_host/--http_port unless present: give all three.
    return {**_scaling(mode, s), "containers": [{
        "name": "kserve-container", "image": s.image,
        "command": ["python", "-m", "serving.transformer"],
        "args": ["--model_name", s.model_name, "--predictor_host", f"{s.name}-predictor.{s.namespace}",
                 "--http_port", "8080", "--host", "0.0.0.0", "--redis", s.redis_url, *extra_args],
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": f"/v1/models/{s.model_name}", "port": 8080}},
        "resources": _resources(s.transformer_cpu, s.transformer_memory, s.transformer_memory_limit)}]}


def inference_service(mode: str, runtime: str, stable: ServedVersion, canary: Optional[ServedVersion] = None,
                      percent: int = 0, s: Settings = Settings()) -> Dict[str, Any]:
    """The InferenceService: ``stable`` (the champion) and optionally ``canary`` at ``percent``%.

    Serverless: the predictor names ``canary`` (KServe's previous revision,
    the champion, keeps 100 - percent). Standard: ``spec.canary[]``.
    """
    if mode not in MODES or runtime not in RUNTIMES:
        raise DeployError(f"mode must be one of {MODES} and runtime one of {RUNTIMES}")
    if canary is not None:
        if not 0 <= percent <= 100:
            raise DeployError(f"--canary must be a percentage 0..100, got {percent}")
        if runtime == TFSERVING_RUNTIME:
            raise DeployError("the TensorFlow Serving runtime serves the newest version under one base path, "
                              "so it cannot hold a champion/challenger pair: canary with --runtime feedrank")
    scaling = _scaling(mode, s)
    tfs = runtime == TFSERVING_RUNTIME
    annotations = {"serving.kserve.io/deploymentMode": DEPLOYMENT_MODE[mode],
                   f"{ANNOTATION}/registered-model": stable.model,
                   f"{ANNOTATION}/champion-version": stable.version,
                   f"{ANNOTATION}/champion-uri": stable.storage_uri}
    if canary is not None:
        annotations.update({f"{ANNOTATION}/challenger-version": canary.version,
                            f"{ANNOTATION}/challenger-uri": canary.storage_uri,
                            f"{ANNOTATION}/canary-percent": str(percent)})
    spec: Dict[str, Any] = {}
    if mode == SERVERLESS and canary is not None:
        spec["predictor"] = {**scaling, "canaryTrafficPercent": percent, **_predictor_body(runtime, canary, s)}
    else:
        spec["predictor"] = {**scaling, **_predictor_body(runtime, stable, s)}
    if mode == STANDARD and canary is not None:
        spec["canary"] = [{"trafficPercent": percent, "predictor": {
            "name": f"v{canary.version}", "minReplicas": min(s.canary_replicas, s.min_replicas),
            **_predictor_body(runtime, canary, s)}}]
    if not tfs:  # the ranking API in front; TF Serving stays a bare v1 predictor
        spec["transformer"] = _transformer(mode, s)
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": s.name, "namespace": s.namespace,
                         "labels": {"app.kubernetes.io/name": s.name, "app.kubernetes.io/part-of": "feedrank"},
                         "annotations": annotations},
            "spec": spec}


@dataclasses.dataclass
class Rendered:
    """What `deploy`/`rollback` write and apply, in order (``stages[-1]`` is the target state).

    ``companions`` are applied (and awaited Ready) before the stages: an A/B test's
    challenger InferenceService. ``remove`` names InferenceServices deleted once the
    target is applied (a finished A/B test's challenger)."""

    stages: List[Dict[str, Any]]
    summary: Dict[str, Any]
    companions: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    remove: List[str] = dataclasses.field(default_factory=list)


def deploy_plan(mode: str, runtime: str, champion: ServedVersion, challenger: ServedVersion, percent: int,
                s: Settings = Settings()) -> Rendered:
    """Champion with the challenger at ``percent``%. Serverless: champion first, then the canary."""
    target = inference_service(mode, runtime, champion, challenger, percent, s)
    stages = [target]
    if mode == SERVERLESS:
        stages.insert(0, inference_service(mode, runtime, champion, None, 0, s))
    return Rendered(stages, {"action": "deploy", "mode": mode, "runtime": runtime, "name": s.name,
                             "namespace": s.namespace, "model": champion.model,
                             "champion": dataclasses.asdict(champion),
                             "challenger": dataclasses.asdict(challenger), "canary_percent": percent},
                    remove=[ab_challenger_name(s)])  # an A/B test's challenger, if one runs


def rollback_plan(mode: str, runtime: str, target: ServedVersion, s: Settings = Settings()) -> Rendered:
    """100% to ``target``; no canary (Serverless: a new revision of it; Standard: canary[] removed)."""
    isvc = inference_service(mode, runtime, target, None, 0, s)
    return Rendered([isvc], {"action": "rollback", "mode": mode, "runtime": runtime, "name": s.name,
                             "namespace": s.namespace, "model": target.model,
                             "champion": dataclasses.asdict(target), "challenger": None, "canary_percent": 0},
                    remove=[ab_challenger_name(s)])  # an A/B test's challenger, if one runs


# ---- A/B test: users split by a stable hash in the transformer ---------------------------------------
#
# A canary (above) splits requests at random in KServe's router, so one user sees both
# models and a lift cannot be measured per user. An A/B test keeps the champion as the
# InferenceService's predictor and serves the challenger from a second InferenceService
# ``<name>-challenger`` (a predictor only); the one transformer assigns each user to an arm
# (feedrank/ab/assign.py: sha256 of "<salt>:<user_id>" against the share) and calls
# that arm's predictor, so a user stays on one model for the whole test.

def ab_challenger_name(s: Settings) -> str:
    """The challenger's InferenceService during an A/B test."""
    return f"{s.name}-challenger"


def ab_salt(champion: ServedVersion, challenger: ServedVersion) -> str:
    """A salt for one experiment when none is configured: the same pair keeps its users on
    re-render, a new challenger draws a fresh split (no carry-over from the last test's users)."""
    return f"{champion.model}:v{champion.version}-vs-v{challenger.version}"


def ab_settings(requested: float, ab: Any, config_path: str = "the config") -> Tuple[float, str]:
    """(share, salt) of the A/B test: the config's ``ab`` section, which `ab-report` tests the
    sample ratio against. ``requested`` < 0 means "the config's share"; another share is an error."""
    if requested >= 0 and abs(requested - ab.share) > 1e-9:
        raise DeployError(f"--ab-share {requested} differs from ab.share {ab.share} in {config_path}, the share "
                          f"ab-report tests the sample ratio against: set ab.share there (and a fresh ab.salt "
                          f"per experiment), or give --ab-share without a value")
    return float(ab.share), str(ab.salt)


def ab_plan(mode: str, runtime: str, champion: ServedVersion, challenger: ServedVersion, share: float,
            s: Settings = Settings(), salt: str = "") -> Rendered:
    """The champion's InferenceService with the A/B transformer, and the challenger's beside it.

    ``share`` is the challenger's fraction of the users, strictly between 0 and 1.
    """
    if mode not in MODES:
        raise DeployError(f"mode must be one of {MODES}, got {mode!r}")
    if runtime != FEEDRANK_RUNTIME:
        raise DeployError("an A/B test needs the transformer, which assigns the users: use --runtime feedrank")
    if not 0.0 < share < 1.0:
        raise DeployError(f"--ab-share is the challenger's fraction of the users and must be strictly between "
                          f"0 and 1, got {share}")
    salt = salt or ab_salt(champion, challenger)
    other = ab_challenger_name(s)
    main = inference_service(mode, runtime, champion, None, 0, s)
    main["spec"]["transformer"] = _transformer(mode, s, [
        "--challenger-url", f"http://{other}-predictor.{s.namespace}",
        "--challenger-share", repr(float(share)), "--ab-salt", salt])
    main["metadata"]["annotations"].update({
        f"{ANNOTATION}/challenger-version": challenger.version, f"{ANNOTATION}/challenger-uri": challenger.storage_uri,
        f"{ANNOTATION}/challenger-service": other, f"{ANNOTATION}/ab-share": repr(float(share)),
        f"{ANNOTATION}/ab-salt": salt})
    companion = {"apiVersion": API_VERSION, "kind": KIND,
                 "metadata": {"name": other, "namespace": s.namespace,
                              "labels": {"app.kubernetes.io/name": other, "app.kubernetes.io/part-of": "feedrank",
                                         f"{ANNOTATION}/arm": "challenger"},
                              "annotations": {"serving.kserve.io/deploymentMode": DEPLOYMENT_MODE[mode],
                                              f"{ANNOTATION}/registered-model": challenger.model,
                                              f"{ANNOTATION}/challenger-version": challenger.version,
                                              f"{ANNOTATION}/challenger-uri": challenger.storage_uri,
                                              f"{ANNOTATION}/ab-of": s.name}},
                 "spec": {"predictor": {**_scaling(mode, s), **_predictor_body(runtime, challenger, s)}}}
    return Rendered([main], {"action": "ab", "mode": mode, "runtime": runtime, "name": s.name,
                             "namespace": s.namespace, "model": champion.model,
                             "champion": dataclasses.asdict(champion), "challenger": dataclasses.asdict(challenger),
                             "canary_percent": 0, "ab_share": float(share), "ab_salt": salt,
                             "challenger_service": other}, companions=[companion])


def without_namespace(obj: Dict[str, Any]) -> Dict[str, Any]:
    """A copy for a kustomization that sets the namespace itself."""
    out = copy.deepcopy(obj)
    out["metadata"].pop("namespace", None)
    return out
