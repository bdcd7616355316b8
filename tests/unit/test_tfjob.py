"""The Trainer as a TFJob (``trainer_job.kind: tfjob``): the config and the rendered job.

Validated offline, without Kubernetes or the Training Operator:

* the job the Trainer step would submit validates against ``tests/schemas/tfjob_v1.yaml``
  (a minimal kubeflow.org/v1 TFJob schema written from the documented API, with the v1.8
  webhook's rules); each pod template validates strictly against Kubernetes 1.30's schema
  and round-trips through the kubernetes client's ``V1PodTemplateSpec``; the whole job
  round-trips through the kubeflow-training SDK's ``KubeflowOrgV1TFJob`` (1.7.0, in the lock);
* each worker gets the step's own TFX arguments, through Kubernetes' argument expansion,
  with its own executor output file (the package: tests/unit/test_tfjob_package.py).
"""
import copy
import dataclasses
import json
import os
import re

import pytest
import yaml

from feedrank.config import ConfigError
from feedrank.runners.kubeflow_config import load_kubeflow_config
from feedrank.runners.tfjob import render, worker
from tests.helpers import tfjob_checks as checks
from tests.unit.test_kubeflow import DEMO, KF, ROOT, _cli


@pytest.fixture(scope="module")
def kf(tmp_path_factory):
    return checks.kubeflow_config_with_tfjob(tmp_path_factory.mktemp("kf"))


# --- the config switch ------------------------------------------------------------------------

def test_the_switch_is_off_by_default():
    assert load_kubeflow_config(KF).trainer_job.kind == "pod" and not load_kubeflow_config(KF).trainer_job.enabled
    with open(KF) as f:
        raw = yaml.safe_load(f)
    assert raw["trainer_job"]["kind"] == "pod"   # written out, with its neighbours, in configs/kubeflow.yaml


@pytest.mark.parametrize("section,message", [
    ({"kind": "tfjob", "workers": 0}, "kubeflow.yaml.trainer_job.workers must be an integer >= 1"),
    ({"kind": "pytorchjob"}, "kubeflow.yaml.trainer_job.kind must be one of ['pod', 'tfjob']"),
    ({"kind": "tfjob", "workers": 3, "max_gpus": 4},
     "kubeflow.yaml.trainer_job.workers: 3 workers x trainer_gpu.count 2 = 6 GPUs exceed "
     "kubeflow.yaml.trainer_job.max_gpus 4"),
    ({"kind": "tfjob", "restart_policy": "Always"}, "kubeflow.yaml.trainer_job.restart_policy must be one of"),
    ({"kind": "tfjob", "worker": 2}, "kubeflow.yaml.trainer_job: unknown key(s) ['worker']"),
])
def test_a_wrong_trainer_job_is_one_line_naming_the_field(tmp_path, section, message):
    path = tmp_path / "kubeflow.yaml"
    path.write_text(yaml.safe_dump({"trainer_job": section, "trainer_gpu": {"count": 2}}))
    with pytest.raises(ConfigError) as e:
        load_kubeflow_config(str(path))
    assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


def test_the_documented_section_is_the_configs_with_the_switch_on(tmp_path):
    with open(os.path.join(ROOT, "docs", "kubeflow.md")) as f:
        blocks = re.findall(r"```yaml\n(.*?)```", f.read(), re.S)
    (block,) = [b for b in blocks if b.startswith("# configs/kubeflow.yaml\ntrainer_job:")]
    documented = yaml.safe_load(block)["trainer_job"]
    with open(KF) as f:
        assert documented == {**yaml.safe_load(f)["trainer_job"], "kind": "tfjob"}
    path = tmp_path / "kubeflow.yaml"
    path.write_text(yaml.safe_dump({"trainer_job": documented}))
    assert load_kubeflow_config(str(path)).trainer_job.enabled


def test_the_cli_refuses_a_wrong_worker_count_in_one_line(tmp_path):
    path = tmp_path / "kubeflow.yaml"
    path.write_text(yaml.safe_dump({"trainer_job": {"kind": "tfjob", "workers": 0}}))
    proc = _cli("compile", "--config", DEMO, "--kubeflow-config", str(path), "--output", str(tmp_path / "p.yaml"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "trainer_job.workers must be an integer >= 1" in errors[0], proc.stderr


# --- the rendered job -------------------------------------------------------------------------

def test_the_job_runs_the_trainer_on_the_gpu_pool_and_validates(kf):
    kf = dataclasses.replace(
        kf, env={"TF_CPP_MIN_LOG_LEVEL": "1"}, image_pull_secrets=["regcred"],
        secret_env={"secret_name": "feedrank-object-store", "keys": {"AWS_ACCESS_KEY_ID": "access-key"}},
        trainer_job=dataclasses.replace(kf.trainer_job, priority_class="feedrank-training", active_deadline_s=7200))
    job = checks.job_for(render.render_tfjob(kf), ["--", "--json_serialized_invocation_args", "{{$}}"])
    checks.assert_valid(job)
    worker_spec = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert set(job["spec"]["tfReplicaSpecs"]) == {"Worker"} and worker_spec["replicas"] == checks.WORKERS
    assert worker_spec["restartPolicy"] == "ExitCode"
    assert job["spec"]["runPolicy"] == {"cleanPodPolicy": "Running", "backoffLimit": 3,
                                        "ttlSecondsAfterFinished": 86400, "activeDeadlineSeconds": 7200}
    pod = worker_spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "tensorflow"   # the container the operator writes TF_CONFIG into
    assert container["image"] == kf.images["Trainer"] != kf.image
    assert pod["nodeSelector"] == kf.trainer_gpu.node_selector and pod["tolerations"] == kf.trainer_gpu.tolerations
    res, gpus = kf.resources_for("Trainer"), str(kf.trainer_gpu.count)
    assert container["resources"] == {
        "requests": {"cpu": res["cpu_request"], "memory": res["memory_request"]},
        "limits": {"cpu": res["cpu_limit"], "memory": res["memory_limit"], "nvidia.com/gpu": gpus}}
    assert {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {
        "name": "feedrank-object-store", "key": "access-key"}}} in container["env"]
    assert {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "1"} in container["env"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}] and pod["priorityClassName"] == "feedrank-training"
    assert pod["serviceAccountName"] == kf.trainer_job.service_account
    assert job["metadata"]["ownerReferences"][0]["uid"] == "pod-uid-1"
    assert len(job["metadata"]["name"] + "-worker-99") <= 63   # the operator's per-worker Service names


def test_a_cpu_trainer_stays_off_the_gpu_pool(kf):
    kf = dataclasses.replace(kf, trainer_gpu=dataclasses.replace(kf.trainer_gpu, count=0))
    job = checks.job_for(render.render_tfjob(kf), ["--"], owner=False)
    checks.assert_valid(job)
    pod = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "ownerReferences" not in job["metadata"]


def test_the_schema_rejects_what_the_operator_would(kf):
    import kubernetes_validate

    good = checks.job_for(render.render_tfjob(kf), ["--"])
    cases = {
        "replicas as a string": ("spec.tfReplicaSpecs.Worker.replicas", lambda j: j["spec"]["tfReplicaSpecs"]
                                 ["Worker"].__setitem__("replicas", "3")),
        "a restart policy the API lacks": ("restartPolicy", lambda j: j["spec"]["tfReplicaSpecs"]["Worker"]
                                           .__setitem__("restartPolicy", "Sometimes")),
        "a replica type the API lacks": ("Workers", lambda j: j["spec"]["tfReplicaSpecs"].__setitem__(
            "Workers", j["spec"]["tfReplicaSpecs"].pop("Worker"))),
        "no container named tensorflow": ("containers", lambda j: j["spec"]["tfReplicaSpecs"]["Worker"]["template"]
                                          ["spec"]["containers"][0].__setitem__("name", "trainer")),
        "a misspelled run policy": ("cleanPodPolcy", lambda j: j["spec"]["runPolicy"].__setitem__(
            "cleanPodPolcy", "All")),
        "a name that is no DNS-1035 label": ("metadata.name", lambda j: j["metadata"].__setitem__(
            "name", "Feedrank_Trainer")),
    }
    for what, (where, change) in cases.items():
        job = copy.deepcopy(good)
        change(job)
        errors = checks.schema_errors(job)
        assert errors and any(where in e for e in errors), (what, errors)
    job = copy.deepcopy(good)   # the pod template's own fields: Kubernetes' schema and the client's models
    job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    assert checks.pod_template_dropped(job) == [
        ".spec.tfReplicaSpecs.Worker.template.spec.containers[0].imagePullPolcy"]
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolcy"):
        checks.validate_pod_templates(job)


def test_the_job_round_trips_through_the_training_sdk(kf):
    job = checks.job_for(render.render_tfjob(kf), ["--", "--json_serialized_invocation_args", "{{$}}"])
    assert checks.tfjob_dropped(job) == []
    job["spec"]["runPolicy"]["cleanPodPolcy"] = "All"
    assert checks.tfjob_dropped(job) == [".spec.runPolicy.cleanPodPolcy"]


def _expand(arg, env):
    """Kubernetes' expansion of a container argument: ``$(VAR)`` from env, ``$$`` -> ``$``."""
    return re.sub(r"\$(\$|\(([A-Za-z_][A-Za-z0-9_]*)\))",
                  lambda m: "$" if m.group(1) == "$" else env.get(m.group(2), m.group(0)), arg)


def test_each_worker_runs_the_steps_own_arguments_with_its_own_output_file(kf):
    tfx = ["--executor_class_path", "components.trainer.component.Executor",
           "--json_serialized_invocation_args", "{{$}}", "--direct_num_workers=0"]
    sent = copy.deepcopy(checks.EXECUTOR_INPUT)   # a value Kubernetes would expand if it were passed as it is
    sent["inputs"]["parameterValues"]["custom_config"] = '{"note": "costs $(HOME) or $$5"}'
    job = checks.job_for(render.render_tfjob(kf), ["--", *tfx], executor_input=sent)
    container = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", render.WORKER_MODULE]
    argv = [_expand(a, {"HOME": "/root"}) for a in container["args"]]   # what the process receives
    cluster = [f"{job['metadata']['name']}-worker-{i}.feedrank.svc:2222" for i in range(checks.WORKERS)]
    tf_config = json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": 1},
                            "environment": "cloud"})                 # as the operator writes it
    index, got = worker.worker_argv(argv, tf_config)
    exchange = argv[argv.index(render.EXCHANGE_FLAG) + 1]
    assert index == 1 and exchange.startswith("gs://feedrank-ml/pipeline-root/r-1/Trainer/tfjob-")
    want = checks.tfx_args(["--", *tfx], sent)
    i, executor_input = render.invocation(got)
    assert got[:i] + got[i + 1:] == want[:i] + want[i + 1:]
    assert executor_input["outputs"]["outputFile"] == f"{exchange}/worker-1/executor_output.json"
    executor_input["outputs"]["outputFile"] = sent["outputs"]["outputFile"]
    assert executor_input == sent   # the same executor input, the $ signs included
    assert worker.worker_argv(argv, None)[0] == 0   # one worker: the operator sets no TF_CONFIG
    with pytest.raises(ValueError, match="'ps' task"):
        worker.task_index('{"cluster": {}, "task": {"type": "ps", "index": 0}}')


@pytest.mark.parametrize("conditions,state", [
    ([], "Pending"),
    ([{"type": "Created", "status": "True"}], "Created"),
    ([{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}], "Running"),
    ([{"type": "Running", "status": "False"}, {"type": "Restarting", "status": "True"}], "Restarting"),
    ([{"type": "Running", "status": "False"}, {"type": "Succeeded", "status": "True"}], "Succeeded"),
    ([{"type": "Running", "status": "False"}, {"type": "Failed", "status": "True", "reason": "TFJobFailed",
                                               "message": "1 Worker replica(s) failed."}], "Failed"),
])
def test_job_state(conditions, state):
    got, message = render.job_state({"status": {"conditions": conditions}})
    assert got == state
    if state == "Failed":
        assert message == "TFJobFailed 1 Worker replica(s) failed."


