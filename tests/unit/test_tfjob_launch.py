"""The Trainer step's launcher against a loopback stand-in of the Kubernetes API and the operator.

`launch` talks to the stand-in through the real kubernetes client. The stand-in stores
TFJobs and plays the Training Operator's part as v1.8 does it: for a job of more than one
replica it gives each worker the operator's ``TF_CONFIG``, runs the worker's container
command (`feedrank.runners.tfjob.worker`, then TFX's real ``kubeflow_v2_run_executor``
with a small recording executor, tests/helpers/tfjob_executor.py) as a process here, and
writes the conditions the operator writes: Created, Running, then Succeeded once worker 0
exits 0, or Failed with the operator's message. A contract test of what the launcher sends
and how it reads the answers; it proves nothing about a real cluster.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from feedrank.runners.kubeflow_config import KubeflowConfig
from feedrank.runners.tfjob import launch, render
from feedrank.runners.tfjob.settings import TrainerJob
from tests.helpers import tfjob_checks as checks
from tests.helpers.config import ROOT
from tests.helpers.json_api import JsonApiHandler, loopback_kube

NS = "feedrank"


class _FakeOperator(JsonApiHandler):
    """TFJobs in memory; ``mode`` says what the operator does with a new one: run (the workers,
    as processes), fail, hang (Running forever) or succeed without running anything."""

    jobs: dict = {}
    requests: list = []
    stderr: dict = {}   # job name -> each worker's stderr tail
    mode = "run"
    unavailable = 0     # the next GETs answered 503
    PREFIX = f"/apis/{render.GROUP}/{render.VERSION}/namespaces/{NS}/{render.PLURAL}"

    def do_POST(self):
        job = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = job["metadata"]["name"]
        self.requests.append(("POST", name))
        if name in self.jobs:
            return self._send({"kind": "Status", "code": 409, "reason": "AlreadyExists"}, 409)
        _conditions(job, ("Created", f"TFJob {NS}/{name} is created."))
        self.jobs[name] = job
        if self.mode == "run":
            threading.Thread(target=_operate, args=(job,), daemon=True).start()
        elif self.mode == "fail":
            _conditions(job, ("Failed", f"TFJob {NS}/{name} has failed because 1 Worker replica(s) failed."))
        elif self.mode == "succeed":
            _conditions(job, ("Succeeded", f"TFJob {NS}/{name} successfully completed."))
        else:
            _conditions(job, ("Running", f"TFJob {NS}/{name} is running."))
        self._send(job, 201)

    def do_GET(self):
        name = self._name()
        self.requests.append(("GET", name))
        if _FakeOperator.unavailable > 0:
            _FakeOperator.unavailable -= 1
            return self._send({"kind": "Status", "code": 503, "reason": "ServiceUnavailable"}, 503)
        if name not in self.jobs:
            return self._send({"kind": "Status", "code": 404, "reason": "NotFound"}, 404)
        self._send(self.jobs[name])

    def do_DELETE(self):
        name = self._name()
        self.requests.append(("DELETE", name))
        if self.jobs.pop(name, None) is None:
            return self._send({"kind": "Status", "code": 404, "reason": "NotFound"}, 404)
        self._send({"kind": "Status", "status": "Success"})


def _conditions(job, *new):
    """Appends conditions (type, message) as the operator does, replacing the status in one step."""
    old = (job.get("status") or {}).get("conditions", [])
    job["status"] = {"conditions": old + [{"type": kind, "status": "True", "reason": f"TFJob{kind}", "message": msg}
                                          for kind, msg in new]}


def _operate(job):
    """The operator's part: TF_CONFIG per worker, the container command run here, the conditions."""
    name, spec = job["metadata"]["name"], job["spec"]["tfReplicaSpecs"]["Worker"]
    replicas, (container,) = spec["replicas"], spec["template"]["spec"]["containers"]
    cluster = [f"{name}-worker-{i}.{NS}.svc:{render.PORT}" for i in range(replicas)]
    procs = []
    for i in range(replicas):
        env = dict(os.environ, PYTHONPATH=ROOT)
        if replicas > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": i},
                                           "environment": "cloud"})
        command = [sys.executable if c == "python" else c for c in container["command"]]
        args = [a.replace("$$", "$") for a in container["args"]]   # Kubernetes' unescaping
        procs.append(subprocess.Popen(command + args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    _conditions(job, ("Running", f"TFJob {NS}/{name} is running."))
    codes = [p.wait(timeout=300) for p in procs]
    _FakeOperator.stderr[name] = [p.stderr.read()[-3000:] for p in procs]
    if not any(codes):
        _conditions(job, ("Succeeded", f"TFJob {NS}/{name} successfully completed."))
    else:
        failed = sum(1 for c in codes if c)
        _conditions(job, ("Failed", f"TFJob {NS}/{name} has failed because {failed} Worker replica(s) failed."))


@pytest.fixture()
def operator(tmp_path):
    _FakeOperator.jobs, _FakeOperator.requests, _FakeOperator.stderr = {}, [], {}
    _FakeOperator.mode, _FakeOperator.unavailable = "run", 0
    with loopback_kube(_FakeOperator, tmp_path) as kubeconfig:
        yield kubeconfig, _FakeOperator


def _step(tmp_path, workers=2):
    """(template, TFX arguments as KFP fills them in, executor input) of a Trainer step."""
    kf = KubeflowConfig(trainer_job=TrainerJob(kind="tfjob", workers=workers))
    root = tmp_path / "pipeline-root" / "run-1" / "Trainer"
    executor_input = {
        "inputs": {"parameterValues": {"run_fn": "feedrank.train.trainer.run_fn"}},
        "outputs": {"artifacts": {"model": {"artifacts": [{"type": {"schemaTitle": "tfx.Model"},
                                                          "uri": str(root / "model")}]}},
                    "outputFile": str(tmp_path / "kfp_outputs" / "output_metadata.json")}}
    inputs_spec = {"parameters": {"run_fn": {"parameterType": "STRING"}}}
    tfx_args = ["--executor_class_path", "tests.helpers.tfjob_executor.Executor",
                "--json_serialized_invocation_args", json.dumps(executor_input),
                "--json_serialized_inputs_spec_args", json.dumps(inputs_spec)]
    return render.render_tfjob(kf), tfx_args, executor_input


def test_the_workers_run_the_steps_executor_and_the_chiefs_outputs_are_the_steps(operator, tmp_path):
    kubeconfig, op = operator
    template, tfx_args, executor_input = _step(tmp_path, workers=2)
    name = launch.launch(template, tfx_args, launch._api(kubeconfig), NS, {"name": "step-pod", "uid": "u-1"},
                         poll_s=0.2)
    job = op.jobs[name]
    assert render.job_state(job)[0] == "Succeeded", op.stderr[name]
    assert op.requests[0] == ("POST", name) and ("DELETE", name) not in op.requests
    assert checks.schema_errors({k: v for k, v in job.items() if k != "status"}) == []   # what was submitted
    model_uri = executor_input["outputs"]["artifacts"]["model"]["artifacts"][0]["uri"]
    seen = {i: json.load(open(os.path.join(model_uri, f"worker-{i}.json"))) for i in range(2)}
    for i, record in seen.items():   # the same executor input for both, each with its own TF_CONFIG
        tf_config = json.loads(record["tf_config"])
        assert tf_config["task"] == {"type": "worker", "index": i} and len(tf_config["cluster"]["worker"]) == 2
        assert record["exec_properties"] == {"run_fn": "feedrank.train.trainer.run_fn"}
    with open(executor_input["outputs"]["outputFile"]) as f:
        output = json.load(f)
    (artifact,) = output["artifacts"]["model"]["artifacts"]
    assert artifact["uri"] == model_uri and artifact["metadata"]["written_by"] == "worker-0"
    exchange = render.exchange_dir(executor_input, name)
    assert json.load(open(render.worker_output_file(exchange, 1)))["artifacts"]["model"]["artifacts"][0][
        "metadata"]["written_by"] == "worker-1"


def test_a_failed_job_is_one_line_with_the_operators_words(operator, tmp_path, capsys):
    kubeconfig, op = operator
    op.mode = "fail"
    template, tfx_args, executor_input = _step(tmp_path)
    rc = launch.main([render.TEMPLATE_FLAG, json.dumps(template), "--kubeconfig", kubeconfig, "--namespace", NS,
                      render.POLL_FLAG, "0.1", "--", *tfx_args])
    errors = capsys.readouterr().err.strip().splitlines()
    (name,) = op.jobs
    assert rc == 1 and len(errors) == 1, errors
    assert errors[0] == (f"error: TFJob {NS}/{name} failed: TFJobFailed TFJob {NS}/{name} has failed because 1 Worker "
                         f"replica(s) failed.; the workers' logs: kubectl -n {NS} logs {name}-worker-0 (and -1, ...)")
    assert not os.path.exists(executor_input["outputs"]["outputFile"])


def test_a_job_without_the_chiefs_output_or_gone_is_an_error(operator, tmp_path):
    kubeconfig, op = operator
    op.mode = "succeed"
    template, tfx_args, _ = _step(tmp_path)
    api = launch._api(kubeconfig)
    with pytest.raises(launch.TFJobFailed, match="worker 0 wrote no executor output at .*/worker-0/"):
        launch.launch(template, tfx_args, api, NS, None, poll_s=0.1)
    op.mode = "hang"
    threading.Timer(0.5, lambda: op.jobs.clear()).start()   # deleted by someone else while running
    with pytest.raises(launch.TFJobFailed, match="was deleted before it finished"):
        launch.launch(template, tfx_args, api, NS, {"name": "p", "uid": "u-2"}, poll_s=0.1)


def _chief_wrote(executor_input, uid):
    """Worker 0's executor output, as a finished chief leaves it, for the job of pod ``uid``."""
    path = render.worker_output_file(render.exchange_dir(executor_input, render.job_name(uid)), 0)
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write('{"artifacts": {}}')


def test_a_relaunched_step_waits_on_its_job_instead_of_submitting_another(operator, tmp_path):
    kubeconfig, op = operator
    op.mode = "succeed"
    template, tfx_args, executor_input = _step(tmp_path)
    owner, api = {"name": "p", "uid": "u-3"}, launch._api(kubeconfig)
    _chief_wrote(executor_input, "u-3")
    first = launch.launch(template, tfx_args, api, NS, owner, poll_s=0.1)
    second = launch.launch(template, tfx_args, api, NS, owner, poll_s=0.1)
    assert first == second and [r for r in op.requests if r[0] == "POST"] == [("POST", first)] * 2
    assert len(op.jobs) == 1 and op.jobs[first]["metadata"]["ownerReferences"][0]["uid"] == "u-3"


def test_a_passing_api_outage_is_waited_out_and_a_long_one_is_an_error(operator, tmp_path):
    kubeconfig, op = operator
    op.mode = "succeed"
    template, tfx_args, executor_input = _step(tmp_path)
    api = launch._api(kubeconfig)
    _chief_wrote(executor_input, "u-4")
    op.unavailable = launch.READ_RETRIES
    launch.launch(template, tfx_args, api, NS, {"name": "p", "uid": "u-4"}, poll_s=0.05)
    with open(executor_input["outputs"]["outputFile"]) as f:
        assert json.load(f) == {"artifacts": {}}
    op.unavailable = launch.READ_RETRIES + 1
    with pytest.raises(launch.TFJobFailed, match=r"HTTP 503 .*6 times in a row; the job may still be running"):
        launch.launch(template, tfx_args, api, NS, {"name": "p", "uid": "u-5"}, poll_s=0.05)


def test_stopping_the_step_deletes_its_job(operator, tmp_path):
    kubeconfig, op = operator
    op.mode = "hang"
    template, tfx_args, _ = _step(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KFP_")}
    proc = subprocess.Popen([sys.executable, "-m", render.LAUNCH_MODULE, render.TEMPLATE_FLAG, json.dumps(template),
                             "--kubeconfig", kubeconfig, "--namespace", NS, render.POLL_FLAG, "0.1", "--", *tfx_args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(r[0] == "GET" for r in op.requests) and time.monotonic() < deadline:
        time.sleep(0.1)
    (name,) = op.jobs
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert ("DELETE", name) in op.requests and not op.jobs
