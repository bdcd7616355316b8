"""manifests/: every kustomization renders and every object validates against Kubernetes' schema.

kustomize is not installed here, so `render` implements the subset the
manifests use - resources (files and directories), namespace, labels /
commonLabels, patches / patchesStrategicMerge (strategic merge: maps merged,
lists of named items merged by ``name``, other lists replaced), secretGenerator
with envs and generatorOptions.disableNameSuffixHash - and refuses any other
kustomization key, so a manifest can never use a feature this test ignores.
Objects are validated with `kubernetes-validate` (strict: unknown fields fail).
"""
import base64
import copy
import os
import re

import pytest
import yaml

from tests.helpers.config import ROOT

MANIFESTS = os.path.join(ROOT, "manifests")
KUSTOMIZATIONS = ["base", "overlays/gpu-pool", "overlays/local"]
K8S_VERSION = "1.30.0"
CLUSTER_SCOPED = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding", "StorageClass"}
SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "labels", "commonLabels", "patches",
             "patchesStrategicMerge", "secretGenerator", "generatorOptions"}
CREDENTIAL = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL|_USER$|^DB_USER$|API_KEY", re.I)


def _load_yaml(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _merge(base, patch):
    """Strategic merge, simplified: see the module doc."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and patch and \
            all(isinstance(i, dict) and "name" in i for i in base + patch):
        out = [copy.deepcopy(i) for i in base]
        for item in patch:
            idx = next((n for n, b in enumerate(out) if b["name"] == item["name"]), None)
            if idx is None:
                out.append(copy.deepcopy(item))
            else:
                out[idx] = _merge(out[idx], item)
        return out
    return copy.deepcopy(patch)


def _read_env(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, _, v = line.partition("=")
                out[k] = v
    return out


def render(directory):
    """The objects `kustomize build directory` would output (for the subset above)."""
    path = os.path.join(directory, "kustomization.yaml")
    with open(path) as f:
        k = yaml.safe_load(f)
    unknown = set(k) - SUPPORTED
    assert not unknown, f"{path}: kustomization keys {unknown} are not supported by this test's renderer"
    objs = []
    for res in k.get("resources", []):
        full = os.path.normpath(os.path.join(directory, res))
        objs += render(full) if os.path.isdir(full) else _load_yaml(full)
    gen_opts = k.get("generatorOptions", {})
    for gen in k.get("secretGenerator", []):
        assert gen_opts.get("disableNameSuffixHash"), "name-suffix hashes would need reference rewriting"
        data = {}
        for env in gen.get("envs", []):
            data.update(_read_env(os.path.join(directory, env)))
        objs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]},
                     "type": gen.get("type", "Opaque"),
                     "data": {kk: base64.b64encode(v.encode()).decode() for kk, v in data.items()}})
    patches = [p if isinstance(p, dict) else {"path": p} for p in k.get("patchesStrategicMerge", [])]
    for p in k.get("patches", []) + patches:
        assert set(p) <= {"path"}, f"{path}: only file patches are supported, got {p}"
        for patch in _load_yaml(os.path.join(directory, p["path"])):
            hits = [i for i, o in enumerate(objs) if o["kind"] == patch["kind"]
                    and o["metadata"]["name"] == patch["metadata"]["name"]]
            assert len(hits) == 1, f"patch {p['path']} matches {len(hits)} objects"
            objs[hits[0]] = _merge(objs[hits[0]], patch)
    labels = dict(k.get("commonLabels", {}))
    for entry in k.get("labels", []):
        labels.update(entry["pairs"])
        assert not entry.get("includeSelectors"), "selector labels are not supported by the renderer"
    for o in objs:
        meta = o.setdefault("metadata", {})
        if labels:
            meta["labels"] = {**meta.get("labels", {}), **labels}
        if k.get("namespace") and o["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = k["namespace"]
            for s in o.get("subjects", []):
                if s.get("kind") == "ServiceAccount":
                    s["namespace"] = k["namespace"]
    return objs


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendered(request):
    return request.param, render(os.path.join(MANIFESTS, request.param))


def _pod_specs(obj):
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
        yield spec["template"]["spec"]
    elif obj["kind"] == "Pod":
        yield spec


def test_objects_validate(rendered):
    import kubernetes_validate

    name, objs = rendered
    assert objs, name
    seen = set()
    for o in objs:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)
        key = (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        assert key not in seen, f"{name}: duplicate {key}"
        seen.add(key)


def test_no_inline_credentials(rendered):
    name, objs = rendered
    for o in objs:
        if o["kind"] == "Secret":
            assert name == "overlays/local", f"{name} ships a Secret: Secrets are created out of band"
            values = [base64.b64decode(v).decode() for v in o["data"].values()]
            assert all(v in ("mlflow",) or v.startswith("change-me") for v in values), values
        if o["kind"] == "ConfigMap":
            assert not any(CREDENTIAL.search(key) for key in o.get("data", {})), o["metadata"]["name"]
        for pod in _pod_specs(o):
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                for env in c.get("env", []):
                    if CREDENTIAL.search(env["name"]):
                        assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), \
                            f"{name}: {o['metadata']['name']}/{c['name']} env {env['name']} must come from a Secret"
                text = " ".join(c.get("args", []) + c.get("command", []))
                assert not re.search(r"://[^:/@$]+:[^@$(]+@", text), f"credentials inline in {c['name']} args"


def test_mlflow_uses_postgres_and_s3(rendered):
    _, objs = rendered
    by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    mlflow = by[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"][0]
    args = " ".join(mlflow["args"])
    assert "--backend-store-uri=postgresql://$(DB_USER):$(DB_PASSWORD)@feedrank-postgres:5432/$(DB_NAME)" in args
    assert "--artifacts-destination=$(MLFLOW_ARTIFACTS_DESTINATION)" in args
    cm = by[("ConfigMap", "feedrank-mlflow")]["data"]
    assert cm["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://") and cm["MLFLOW_S3_ENDPOINT_URL"]
    assert ("Service", "feedrank-postgres") in by and ("StatefulSet", "feedrank-postgres") in by
    assert by[("StatefulSet", "feedrank-postgres")]["spec"]["volumeClaimTemplates"]
    rb = by[("RoleBinding", "feedrank-pipeline")]
    assert rb["subjects"][0]["namespace"] == "feedrank" and ("ServiceAccount", "feedrank-pipeline") in by


def test_gpu_overlay_matches_kubeflow_config():
    from feedrank.runners.kubeflow_config import load_kubeflow_config

    objs = {(o["kind"], o["metadata"]["name"]): o for o in render(os.path.join(MANIFESTS, "overlays/gpu-pool"))}
    kf = load_kubeflow_config(os.path.join(ROOT, "configs", "kubeflow.yaml"))
    pod = objs[("Job", "feedrank-gpu-check")]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == kf.trainer_gpu.node_selector
    assert pod["tolerations"] == kf.trainer_gpu.tolerations
    assert pod["priorityClassName"] == "feedrank-training" and ("PriorityClass", "feedrank-training") in objs
    assert "namespace" not in objs[("PriorityClass", "feedrank-training")]["metadata"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["containers"][0]["image"].startswith("nvidia/cuda:")  # patch merged, not replaced
    assert objs[("ResourceQuota", "feedrank-gpu")]["spec"]["hard"]["requests.nvidia.com/gpu"] == "4"
    # The base itself stays GPU-free.
    base = render(os.path.join(MANIFESTS, "base"))
    assert not any(p.get("nodeSelector") or p.get("tolerations") for o in base for p in _pod_specs(o))


def test_local_overlay_patch_and_secrets():
    objs = {(o["kind"], o["metadata"]["name"]): o for o in render(os.path.join(MANIFESTS, "overlays/local"))}
    pg = objs[("StatefulSet", "feedrank-postgres")]["spec"]
    assert pg["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    c = pg["template"]["spec"]["containers"][0]
    assert c["resources"]["requests"]["memory"] == "256Mi" and c["image"].startswith("postgres:")
    assert {"POSTGRES_PASSWORD", "POSTGRES_USER", "POSTGRES_DB"} <= set(objs[("Secret", "feedrank-postgres")]["data"])
    referenced = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                  for o in objs.values() for p in _pod_specs(o) for ct in p["containers"]
                  for e in ct.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    for secret, key in referenced:  # every reference resolves in the local overlay
        assert key in objs[("Secret", secret)]["data"], (secret, key)
    example = _read_env(os.path.join(MANIFESTS, "base", "secret.example.env"))
    assert {key for _, key in referenced} == set(example)
