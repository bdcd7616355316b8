"""Writing a rendered deployment to a directory, and applying it through the Kubernetes API.

Applying uses the kubernetes client's custom-objects API (create, or replace
at the live resourceVersion); no kubectl. A Serverless canary applies the
champion first when the live InferenceService does not already serve it, and
waits for it to be Ready, because KServe splits a canary against the last
rolled-out revision.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Dict, Optional

import yaml

from feedrank.deploy import SERVERLESS, DeployError
from feedrank.deploy.render import ANNOTATION, Rendered, without_namespace

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
ISVC_FILE = "inferenceservice.yaml"
CHAMPION_STAGE_FILE = "00-champion.yaml"


def write(rendered: Rendered, out_dir: str) -> Dict[str, str]:
    """``inferenceservice.yaml`` (the target state), ``<name>.yaml`` per companion (an A/B
    test's challenger), a kustomization for them, ``00-champion.yaml`` for a Serverless
    canary's first stage, and ``deploy.json``; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"inferenceservice": os.path.join(out_dir, ISVC_FILE),
             "kustomization": os.path.join(out_dir, "kustomization.yaml"),
             "summary": os.path.join(out_dir, "deploy.json")}
    target = rendered.stages[-1]
    with open(paths["inferenceservice"], "w") as f:
        yaml.safe_dump(without_namespace(target), f, sort_keys=False)
    if len(rendered.stages) > 1:
        paths["champion_stage"] = os.path.join(out_dir, CHAMPION_STAGE_FILE)
        with open(paths["champion_stage"], "w") as f:
            yaml.safe_dump(without_namespace(rendered.stages[0]), f, sort_keys=False)
    elif os.path.exists(os.path.join(out_dir, CHAMPION_STAGE_FILE)):
        os.remove(os.path.join(out_dir, CHAMPION_STAGE_FILE))
    companions = []
    for obj in rendered.companions:  # e.g. an A/B test's challenger: <name>.yaml, listed first
        rel = f"{obj['metadata']['name']}.yaml"
        with open(os.path.join(out_dir, rel), "w") as f:
            yaml.safe_dump(without_namespace(obj), f, sort_keys=False)
        companions.append(rel)
        paths[f"companion:{obj['metadata']['name']}"] = os.path.join(out_dir, rel)
    for name in rendered.remove:  # a stale companion file from an earlier render into this directory
        stale = os.path.join(out_dir, f"{name}.yaml")
        if f"{name}.yaml" not in companions and os.path.exists(stale):
            os.remove(stale)
    with open(paths["kustomization"], "w") as f:
        yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                        "namespace": target["metadata"]["namespace"], "resources": companions + [ISVC_FILE]}, f,
                       sort_keys=False)
    with open(paths["summary"], "w") as f:
        json.dump(rendered.summary, f, indent=2)
    return paths


def _api(kubeconfig: str):
    from kubernetes import client, config

    if not os.path.isfile(kubeconfig):
        raise DeployError(f"kubeconfig {kubeconfig!r} does not exist")
    return client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))


def _get(api, ns: str, name: str) -> Optional[Dict[str, Any]]:
    from kubernetes.client.exceptions import ApiException

    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    except ApiException as e:
        if e.status == 404:
            return None
        raise DeployError(f"reading InferenceService {ns}/{name}: HTTP {e.status} {e.reason}") from None


def apply_object(api, obj: Dict[str, Any]) -> Dict[str, Any]:
    """Creates the InferenceService, or replaces the live one (at its resourceVersion)."""
    from kubernetes.client.exceptions import ApiException

    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    live = _get(api, ns, name)
    try:
        if live is None:
            log.info("creating InferenceService %s/%s", ns, name)
            return api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj)
        body = dict(obj, metadata={**obj["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]})
        log.info("replacing InferenceService %s/%s", ns, name)
        return api.replace_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, body)
    except ApiException as e:
        raise DeployError(f"applying InferenceService {ns}/{name}: HTTP {e.status} {e.reason}") from None


def _ready(obj: Optional[Dict[str, Any]]) -> bool:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def wait_ready(api, ns: str, name: str, timeout_s: float, poll_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _ready(_get(api, ns, name)):
            return
        time.sleep(poll_s)
    raise DeployError(f"InferenceService {ns}/{name} was not Ready within {timeout_s:.0f} s")


def delete_object(api, ns: str, name: str) -> bool:
    """Deletes an InferenceService; False when there was none."""
    from kubernetes.client.exceptions import ApiException

    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    except ApiException as e:
        if e.status == 404:
            return False
        raise DeployError(f"deleting InferenceService {ns}/{name}: HTTP {e.status} {e.reason}") from None
    log.info("deleted InferenceService %s/%s", ns, name)
    return True


def apply(rendered: Rendered, kubeconfig: str, wait_s: float = 600.0) -> str:
    """Applies the companions (each awaited Ready), the stages in order, then deletes the
    InferenceServices named in ``remove``; returns a one-line account."""
    api = _api(kubeconfig)
    target = rendered.stages[-1]
    ns, name = target["metadata"]["namespace"], target["metadata"]["name"]
    for obj in rendered.companions:  # the A/B challenger is Ready before the transformer calls it
        apply_object(api, obj)
        wait_ready(api, obj["metadata"]["namespace"], obj["metadata"]["name"], wait_s)
    champion = rendered.summary["champion"]["version"]
    if rendered.summary["mode"] == SERVERLESS and len(rendered.stages) > 1:
        live = _get(api, ns, name)
        serves = ((live or {}).get("metadata", {}).get("annotations") or {})
        if not (_ready(live) and serves.get(f"{ANNOTATION}/champion-version") == champion
                and f"{ANNOTATION}/challenger-version" not in serves):
            apply_object(api, rendered.stages[0])  # the champion at 100%: KServe's last rolled-out revision
            wait_ready(api, ns, name, wait_s)
    apply_object(api, target)
    removed = [other for other in rendered.remove if delete_object(api, ns, other)]
    return (f"applied InferenceService {ns}/{name} ({rendered.summary['action']})"
            + "".join(f", applied {o['metadata']['name']}" for o in rendered.companions)
            + "".join(f", deleted {other}" for other in removed))
