"""The Trainer as a TFJob: the package compiled with ``trainer_job.kind: tfjob``, and the cluster side.

The package (configs/demo.yaml, configs/kubeflow.yaml with the switch on and 3 workers) is
compiled once per module. It loads with kfp's loaders and differs from the golden package
(switch off) only in the Trainer's executor, which launches the job; the job the launcher
would submit from those arguments validates as in tests/unit/test_tfjob.py.
"""
import copy
import json
import os

import pytest
import yaml
from google.protobuf import json_format

from feedrank.config import load
from feedrank.runners.kubeflow import container_resources
from feedrank.runners.kubeflow_config import load_kubeflow_config
from feedrank.runners.tfjob import render
from feedrank.runners.tfjob.launch import API_VERBS
from tests.helpers import tfjob_checks as checks
from tests.unit.test_kubeflow import DEMO, GOLDEN, KF, ROOT, normalise


@pytest.fixture(scope="module")
def kf(tmp_path_factory):
    return checks.kubeflow_config_with_tfjob(tmp_path_factory.mktemp("kf"))


@pytest.fixture(scope="module")
def tfjob_docs(kf, tmp_path_factory):
    from feedrank.runners.kubeflow import compile_pipeline
    from pipeline import create_pipeline

    out = str(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")
    compile_pipeline(create_pipeline, load(DEMO), kf, out)
    with open(out) as f:
        return out, [d for d in yaml.safe_load_all(f) if d]


def _trainer_container(spec):
    label = spec["components"][spec["root"]["dag"]["tasks"]["Trainer"]["componentRef"]["name"]]["executorLabel"]
    return label, spec["deploymentSpec"]["executors"][label]["container"]


# --- the compiled package ---------------------------------------------------------------------

def test_the_package_with_the_switch_loads_with_kfp(tfjob_docs):
    from kfp import components
    from kfp.client.client import _extract_pipeline_yaml
    from kfp.pipeline_spec import pipeline_spec_pb2

    path, docs = tfjob_docs
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())   # strict: no unknown fields
    assert _extract_pipeline_yaml(path).pipeline_spec == spec
    assert set(components.load_component_from_file(path).component_spec.inputs) == {
        "input_base", "data_version", "trainer_config", "mlflow_tracking_uri"}


def test_only_the_trainer_step_differs_from_the_golden_package(tfjob_docs):
    _, docs = tfjob_docs
    with open(GOLDEN) as f:
        golden = [d for d in yaml.safe_load_all("".join(ln for ln in f if not ln.startswith("#"))) if d]
    ours = [normalise(copy.deepcopy(d)) for d in docs]
    label, theirs = _trainer_container(golden[0])
    _, mine = _trainer_container(ours[0])
    assert mine["args"][mine["args"].index("--") + 1:] == theirs["args"]   # the workers get TFX's own arguments
    golden[0]["deploymentSpec"]["executors"][label]["container"] = mine
    assert ours[0] == golden[0]
    platform = golden[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(platform) == {label} and "nodeSelector" in platform[label]   # the pool goes to the workers
    assert len(ours) == 1


def test_the_trainer_step_launches_the_configured_job(tfjob_docs, kf):
    from tests.unit.test_images import GPU_LOCK, dockerfile_stages, documented_builds, installs, target_lines

    _, docs = tfjob_docs
    _, container = _trainer_container(docs[0])
    assert container["command"] == ["python", "-m", render.LAUNCH_MODULE] and container["image"] == kf.image
    assert container["resources"] == container_resources(kf.resources["default"], gpus=0)   # no GPU to wait
    args = container["args"]
    assert args[:4] == [render.TEMPLATE_FLAG, args[1], render.POLL_FLAG, "30"] and args[4] == "--"
    template = json.loads(args[1])
    assert template == render.render_tfjob(kf)
    job = checks.job_for(template, args)
    checks.assert_valid(job)
    pod = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    assert job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == checks.WORKERS
    assert pod["nodeSelector"] == kf.trainer_gpu.node_selector
    assert pod["containers"][0]["image"] == kf.images["Trainer"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == str(kf.trainer_gpu.count)
    stages, builds = dockerfile_stages(), documented_builds()   # both images are built; the workers' has CUDA
    assert installs(target_lines(stages, builds[pod["containers"][0]["image"]]), GPU_LOCK)
    assert not installs(target_lines(stages, builds[container["image"]]), GPU_LOCK)


# --- the cluster side ------------------------------------------------------------------------

def test_the_pipeline_role_lets_the_step_launch_its_job():
    from tests.unit.test_manifests import render as kustomize

    objs = {(o["kind"], o["metadata"]["name"]): o for o in kustomize(os.path.join(ROOT, "manifests", "base"))}
    kf = load_kubeflow_config(KF)
    assert ("ServiceAccount", kf.trainer_job.service_account) in objs
    rules = objs[("Role", "feedrank-pipeline")]["rules"]
    granted = {v for r in rules if render.GROUP in r["apiGroups"] and render.PLURAL in r["resources"]
               for v in r["verbs"]}
    assert set(API_VERBS) <= granted


def test_max_gpus_is_the_gpu_pool_quota():
    from tests.unit.test_manifests import render as kustomize

    objs = {(o["kind"], o["metadata"]["name"]): o
            for o in kustomize(os.path.join(ROOT, "manifests", "overlays", "gpu-pool"))}
    quota = objs[("ResourceQuota", "feedrank-gpu")]["spec"]["hard"]["requests.nvidia.com/gpu"]
    assert load_kubeflow_config(KF).trainer_job.max_gpus == int(quota)
