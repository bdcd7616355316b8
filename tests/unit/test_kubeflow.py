"""Kubeflow: the compiled package, its Kubernetes settings, the golden file, and the client path.

The package is compiled once per module (TFX import dominates: ~30-50 s).
The kfp.Client tests run against a loopback HTTP server that records the
requests and answers with plausible JSON: a *contract* test of what we send,
not a test against a real KFP backend.

Regenerate the golden file after an intended change:
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_kubeflow.py -k golden
"""
import copy
import difflib
import json
import os
import re
import subprocess
import sys
import threading
import warnings
from http.server import ThreadingHTTPServer

import pytest
import yaml
from google.protobuf import json_format

from feedrank.config import ConfigError, load
from feedrank.ports import free_port
from feedrank.runners import kfp_client
from feedrank.runners.kfp_client import KfpError, validate_cron
from feedrank.runners.kubeflow import UnsupportedOnKubeflow, check_supported, container_resources, postprocess
from feedrank.runners.kubeflow_config import KubeflowConfig, load_kubeflow_config
from tests.helpers.config import ROOT
from tests.helpers.json_api import JsonApiHandler

GOLDEN = os.path.join(ROOT, "tests", "golden", "kubeflow_pipeline.yaml")
DEMO = os.path.join(ROOT, "configs", "demo.yaml")
KF = os.path.join(ROOT, "configs", "kubeflow.yaml")
PARAMS = {"input_base", "data_version", "trainer_config", "mlflow_tracking_uri"}
warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    from feedrank.runners.kubeflow import compile_pipeline
    from pipeline import create_pipeline

    out = str(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")
    assert compile_pipeline(create_pipeline, load(DEMO), load_kubeflow_config(KF), out) == out
    return out


@pytest.fixture(scope="module")
def docs(package):
    with open(package) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _executor(spec, task):
    return spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]["executorLabel"]


# --- the package, loaded the ways kfp loads it -------------------------------------------------

def test_package_loads_with_kfp(package, docs):
    from kfp import components
    from kfp.client.client import _extract_pipeline_yaml
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    assert package.endswith(".yaml") and len(docs) == 2
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())  # strict: no unknown fields
    assert spec.schema_version == "2.1.0"
    platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
    for label, executor in docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
        json_format.ParseDict(executor, k8s_pb2.KubernetesExecutorConfig())  # kfp-kubernetes' own schema
        assert label in docs[0]["deploymentSpec"]["executors"]
    assert "kubernetes" in platform.platforms
    doc = _extract_pipeline_yaml(package)  # what kfp.Client uploads
    assert doc.pipeline_spec == spec and doc.platform_spec == platform
    comp = components.load_component_from_file(package)  # as a reusable graph component
    assert set(comp.component_spec.inputs) == PARAMS


def test_trainer_gpu_node_selector_tolerations(docs):
    spec, platform = docs
    kf = load_kubeflow_config(KF)
    label = _executor(spec, "Trainer")
    container = spec["deploymentSpec"]["executors"][label]["container"]
    acc = container["resources"]["accelerator"]
    assert acc["resourceType"] == acc["type"] == "nvidia.com/gpu"
    assert acc["resourceCount"] == acc["count"] == str(kf.trainer_gpu.count) != "0"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][label]
    assert k8s["nodeSelector"] == {"labels": kf.trainer_gpu.node_selector}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["tolerations"]
    # Only the Trainer asks for a GPU and is pinned to the GPU pool.
    for task in spec["root"]["dag"]["tasks"]:
        if task != "Trainer":
            lbl = _executor(spec, task)
            assert "accelerator" not in spec["deploymentSpec"]["executors"][lbl]["container"].get("resources", {})
            assert "nodeSelector" not in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].get(lbl, {})


def test_images_resources_command(docs):
    spec, _ = docs
    kf = load_kubeflow_config(KF)
    for task in spec["root"]["dag"]["tasks"]:
        container = spec["deploymentSpec"]["executors"][_executor(spec, task)]["container"]
        assert container["image"] == kf.images.get(task, kf.image), task
        # The image's ENTRYPOINT is pipeline.py: the spec must set TFX's own entry point.
        assert container["command"][-1] == "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
        res = container["resources"]
        want = kf.resources_for(task)
        assert res["resourceCpuRequest"] == want["cpu_request"] and res["resourceMemoryLimit"] == want["memory_limit"]
    assert kf.images["Trainer"] != kf.image  # the override is really exercised


def test_parameters_defaults_and_wiring(docs):
    spec, _ = docs
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == PARAMS
    assert all(p["parameterType"] == "STRING" and p["isOptional"] for p in params.values())
    assert params["input_base"]["defaultValue"] == load_kubeflow_config(KF).input_base
    trainer = json.loads(params["trainer_config"]["defaultValue"])
    assert trainer["model"] == load(DEMO).model_name and "epochs" in trainer
    tasks = spec["root"]["dag"]["tasks"]
    gen = tasks["BehaviorExampleGen"]["inputs"]["parameters"]
    assert gen["input_base"] == {"componentInputParameter": "input_base"}
    assert gen["input_fingerprint"] == {"componentInputParameter": "data_version"}
    assert tasks["Trainer"]["inputs"]["parameters"]["custom_config"] == {"componentInputParameter": "trainer_config"}


def test_caching_and_oss_support(docs):
    spec, _ = docs
    kf = load_kubeflow_config(KF)
    check_supported(spec)  # no resolver executors, no driver hooks
    assert not any("lifecycle" in e.get("container", {}) for e in spec["deploymentSpec"]["executors"].values())
    tasks = spec["root"]["dag"]["tasks"]
    for side_effect in ("Pusher", "LatestBlessedModel"):
        assert tasks[side_effect]["cachingOptions"] == {}, side_effect
    if "MlflowLogger" in tasks:
        assert tasks["MlflowLogger"]["cachingOptions"] == {}
    cached = [t for t in tasks if t not in kf.never_cache]
    assert cached and all(tasks[t]["cachingOptions"] == {"enableCache": True} for t in cached)


# --- the form kfp's own compiler writes ---------------------------------------------------------

def test_same_form_as_kfp_compiler(tmp_path):
    """Our resources/platform entries equal what kfp 2.13 + kfp-kubernetes emit for the same settings."""
    from kfp import compiler, dsl, kubernetes

    @dsl.component(base_image="python:3.11")
    def train() -> int:
        return 1

    @dsl.pipeline(name="tiny")
    def tiny():
        t = train()
        t.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(2)
        t.set_cpu_request("2").set_cpu_limit("4").set_memory_request("8G").set_memory_limit("16Gi")
        kubernetes.add_node_selector(t, label_key="pool", label_value="gpu")
        kubernetes.add_toleration(t, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        kubernetes.use_secret_as_env(t, secret_name="s3", secret_key_to_env={"access-key": "AWS_ACCESS_KEY_ID"})

    path = str(tmp_path / "tiny.yaml")
    compiler.Compiler().compile(tiny, path)
    with open(path) as f:
        kspec, kplat = list(yaml.safe_load_all(f))
    kfp_resources = kspec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    ours = container_resources({"cpu_request": "2", "cpu_limit": "4", "memory_request": "8G",
                                "memory_limit": "16Gi"}, gpus=2)
    assert ours == kfp_resources
    # Our post-processing of a minimal spec gives kfp-kubernetes' platform entry.
    spec = {"components": {"c": {"executorLabel": "exec-train"}},
            "deploymentSpec": {"executors": {"exec-train": {"container": {"image": "x"}}}},
            "root": {"dag": {"tasks": {"Trainer": {"componentRef": {"name": "c"}}}}}}
    kf = KubeflowConfig(secret_env={"secret_name": "s3", "keys": {"AWS_ACCESS_KEY_ID": "access-key"}})
    kf.trainer_gpu.node_selector = {"pool": "gpu"}
    _, platform = postprocess(spec, kf)
    assert platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"] == \
        kplat["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]


def test_unsupported_nodes_are_refused():
    base = {"deploymentSpec": {"executors": {"r": {"resolver": {"outputArtifactQueries": {}}}}}}
    with pytest.raises(UnsupportedOnKubeflow, match="resolver"):
        check_supported(base)
    hook = {"deploymentSpec": {"executors": {"g": {"container": {
        "image": "x", "lifecycle": {"preCacheCheck": {"command": ["python"]}}}}}}}
    with pytest.raises(UnsupportedOnKubeflow, match="preCacheCheck"):
        check_supported(hook)


def test_kubeflow_config_errors(tmp_path):
    bad = tmp_path / "kf.yaml"
    bad.write_text("pipeline_root: /tmp/local\n")
    with pytest.raises(ConfigError, match="pipeline_root must be object storage"):
        load_kubeflow_config(str(bad))
    bad.write_text("trainer_gpus: 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_kubeflow_config(str(bad))
    bad.write_text("resources: {Trainer: {gpu: 1}}\n")
    with pytest.raises(ConfigError, match="resources.Trainer"):
        load_kubeflow_config(str(bad))


# --- golden file --------------------------------------------------------------------------------

_VOLATILE = [(re.compile(r'"code_version": "[0-9a-f]+"'), '"code_version": "<code-version>"'),
             (re.compile(r"/schema/[0-9a-f]{12}/schema\.pbtxt"), "/schema/<schema-hash>/schema.pbtxt")]


def normalise(obj):
    """Drops what changes without a behaviour change: sdkVersion, code/schema content hashes."""
    if isinstance(obj, dict):
        return {k: normalise(v) for k, v in obj.items() if k != "sdkVersion"}
    if isinstance(obj, list):
        return [normalise(v) for v in obj]
    if isinstance(obj, str):
        for pattern, repl in _VOLATILE:
            obj = pattern.sub(repl, obj)
    return obj


def test_golden(docs):
    text = yaml.safe_dump_all([normalise(copy.deepcopy(d)) for d in docs], sort_keys=True, width=100)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, "w") as f:
            f.write("# Normalised output of `pipeline.py compile` (configs/demo.yaml + configs/kubeflow.yaml).\n"
                    "# Regenerate: UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_kubeflow.py -k golden\n")
            f.write(text)
        pytest.skip("golden file rewritten")
    assert os.path.exists(GOLDEN), "no golden file: run UPDATE_GOLDEN=1 pytest tests/unit/test_kubeflow.py -k golden"
    with open(GOLDEN) as f:
        want = "".join(line for line in f if not line.startswith("#"))
    if text != want:
        diff = "".join(list(difflib.unified_diff(want.splitlines(True), text.splitlines(True),
                                                 "golden", "compiled", n=2))[:80])
        pytest.fail("compiled package differs from tests/golden/kubeflow_pipeline.yaml; if intended, "
                    "regenerate with UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_kubeflow.py -k golden"
                    f"\n{diff}")


# --- the client path: a loopback contract test -------------------------------------------------

class _FakeKfp(JsonApiHandler):
    requests = []

    def _record(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"null") if n else None
        self.requests.append((self.command, self.path.split("?")[0], body))
        return body

    def do_GET(self):
        self._record()
        path = self.path.split("?")[0]
        if path == "/apis/v2beta1/healthz":
            return self._send({"commit_sha": "test", "tag_name": "2.4.0", "multi_user": False})
        if path == "/apis/v2beta1/experiments":
            return self._send({"experiments": [], "total_size": 0})
        self._send({"error": "not found"}, 404)

    def do_POST(self):
        body = self._record() or {}
        path = self.path.split("?")[0]
        if path == "/apis/v2beta1/experiments":
            return self._send({"experiment_id": "exp-1", "display_name": body.get("display_name")})
        if path == "/apis/v2beta1/runs":
            return self._send({"run_id": "run-42", "display_name": body.get("display_name"),
                               "experiment_id": body.get("experiment_id"), "state": "PENDING"})
        if path == "/apis/v2beta1/recurringruns":
            return self._send({"recurring_run_id": "rr-7", "display_name": body.get("display_name"),
                               "status": "ENABLED"})
        self._send({"error": "not found"}, 404)


@pytest.fixture()
def fake_kfp():
    _FakeKfp.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKfp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _FakeKfp.requests
    server.shutdown()
    server.server_close()


def _posted(requests, path):
    bodies = [b for m, p, b in requests if m == "POST" and p == path]
    assert len(bodies) == 1, (path, requests)
    return bodies[0]


def test_submit_contract(package, fake_kfp):
    host, requests = fake_kfp
    params = kfp_client.parse_params(["input_base=gs://b/data/2024-06-01", "trainer.epochs=2"], package)
    run_id, url = kfp_client.submit(package, host, params, experiment="feedrank-test",
                                    service_account="feedrank-pipeline")
    assert (run_id, url) == ("run-42", f"{host}/#/runs/details/run-42")
    assert _posted(requests, "/apis/v2beta1/experiments")["display_name"] == "feedrank-test"
    run = _posted(requests, "/apis/v2beta1/runs")
    assert run["experiment_id"] == "exp-1" and run["service_account"] == "feedrank-pipeline"
    sent = run["runtime_config"]["parameters"]
    assert sent["input_base"] == "gs://b/data/2024-06-01"
    assert json.loads(sent["trainer_config"])["epochs"] == 2
    # The package goes with its Kubernetes platform section (GPU pool placement).
    assert "kubernetes" in run["pipeline_spec"]["platform_spec"]["platforms"]
    assert run["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"]["Pusher"]["cachingOptions"] == {}


def test_schedule_contract(package, fake_kfp):
    host, requests = fake_kfp
    job_id, url = kfp_client.schedule(package, host, "0 0 3 * * *", {}, name="nightly")
    assert (job_id, url) == ("rr-7", f"{host}/#/recurringrun/details/rr-7")
    job = _posted(requests, "/apis/v2beta1/recurringruns")
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert job["display_name"] == "nightly" and job["experiment_id"] == "exp-1"
    assert job["max_concurrency"] in ("1", 1) and job["no_catchup"] is True
    assert "kubernetes" in job["pipeline_spec"]["platform_spec"]["platforms"]


@pytest.mark.parametrize("cron", ["0 0 3 * * *", "0 */15 * * * ?", "30 0 2 1-15 JAN,JUL MON-FRI", "0 0 0 1 1 0"])
def test_cron_ok(cron):
    assert validate_cron(cron) == cron


@pytest.mark.parametrize("cron,msg", [("0 3 * * *", "has 5 field"), ("0 0 3 * * * *", "has 7 field"),
                                      ("0 61 3 * * *", "minute 61"), ("0 0 24 * * *", "hour 24"),
                                      ("x 0 3 * * *", "bad second"), ("? 0 3 * * *", "bad second")])
def test_cron_bad(cron, msg):
    with pytest.raises(KfpError, match=msg):
        validate_cron(cron)


def _cli(*args, env_extra=None):
    # the CLI sets the native libraries' log levels itself (conftest.py's would win over them)
    unset = ("KFP_HOST", "KF_PIPELINES_ENDPOINT", "TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, os.path.join(ROOT, "pipeline.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_compile_writes_the_same_package_quietly(package, docs, tmp_path):
    out = str(tmp_path / "cli.yaml")
    proc = _cli("compile", "--config", DEMO, "--kubeflow-config", KF, "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out} (images: ")
    noise = ("Unable to register", "oneDNN", "absl::InitializeLog", "DEFAULT_IMAGE_PATH_KEY")
    assert not [line for line in proc.stderr.splitlines() if any(n in line for n in noise)], proc.stderr
    with open(out) as f:
        assert [d for d in yaml.safe_load_all(f) if d] == docs


def test_cli_unreachable_host(package):
    host = f"http://127.0.0.1:{free_port()}"  # a port nobody listens on
    for args in (["submit", "--host", host], ["schedule", "--cron", "0 0 3 * * *", "--host", host]):
        proc = _cli(*args, "--package", package)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert host in proc.stderr and "--host" in proc.stderr and "KFP_HOST" in proc.stderr
    proc = _cli("submit", "--package", package)  # no host at all
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--host" in proc.stderr and "KFP_HOST" in proc.stderr
    proc = _cli("submit", "--package", package, env_extra={"KFP_HOST": host})  # the env var is used
    assert proc.returncode == 2 and host in proc.stderr


def test_cli_bad_cron_and_params(package):
    proc = _cli("schedule", "--cron", "0 3 * * *", "--host", "http://127.0.0.1:9", "--package", package)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "needs 6" in proc.stderr and "'0 0 3 * * *'" in proc.stderr
    proc = _cli("submit", "--host", "http://127.0.0.1:9", "--package", package, "--param", "nope=1")
    assert proc.returncode == 2 and "no such parameter" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli("submit", "--host", "http://127.0.0.1:9", "--package", "missing.yaml")
    assert proc.returncode == 2 and "does not exist" in proc.stderr


# --- Beam: workers bounded by the pod, other runners as written --------------------------------

def test_direct_workers_follow_the_pods_cpu_limit():
    from feedrank.runners.kubeflow_config import direct_workers

    base = ["--direct_running_mode=multi_processing", "--direct_num_workers=0"]
    assert [direct_workers(base, q) for q in ("4", "2.5", "500m", "16")] == [4, 2, 1, 16]
    assert direct_workers(base, "") == 0                                     # no limit: left alone
    assert direct_workers(base + ["--direct_num_workers=3"], "8") == 0       # a count the user set
    assert direct_workers(["--runner=DataflowRunner", "--project=p"], "4") == 0


def test_each_beam_component_runs_as_many_workers_as_its_pod_has_cores(docs):
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

    spec = docs[0]
    kf = load_kubeflow_config(KF)
    for task in ("BehaviorExampleGen", "StatisticsGen", "Transform", "Evaluator"):
        args = spec["deploymentSpec"]["executors"][_executor(spec, task)]["container"]["args"]
        beam = [a for a in args if a.startswith("--direct_")]
        want = int(float(kf.resources_for(task)["cpu_limit"]))
        assert PipelineOptions(beam).view_as(DirectOptions).direct_num_workers == want, (task, beam)


def _doc_blocks():
    """The Dataflow and Flink ``beam_pipeline_args`` blocks docs/kubeflow.md shows."""
    text = open(os.path.join(ROOT, "docs", "kubeflow.md")).read()
    blocks = {}
    for body in re.findall(r"```yaml\n(.*?)```", text, re.S):
        lines = [line.strip() for line in body.splitlines()]
        if lines and lines[0].startswith("#") and any(line == "beam_pipeline_args:" for line in lines):
            name = lines[0].lstrip("# ").split()[0]
            blocks[name] = yaml.safe_load("\n".join(lines[1:]))["beam_pipeline_args"]
    return blocks


@pytest.mark.parametrize("runner", ["Dataflow", "Flink"])
def test_the_documented_runner_args_compile_into_every_beam_component(runner, tmp_path):
    import dataclasses

    from feedrank.runners.kubeflow import compile_pipeline
    from pipeline import create_pipeline

    args = _doc_blocks()[runner]
    assert any(a.startswith("--runner=") for a in args)
    kf = dataclasses.replace(load_kubeflow_config(KF), beam_pipeline_args=args)
    out = compile_pipeline(create_pipeline, load(DEMO), kf, str(tmp_path / "pipeline.yaml"))
    spec = [d for d in yaml.safe_load_all(open(out)) if d][0]
    for task in ("BehaviorExampleGen", "StatisticsGen", "Transform", "Evaluator"):
        got = spec["deploymentSpec"]["executors"][_executor(spec, task)]["container"]["args"]
        tail = got[-len(args):]
        assert tail == args and not any(a.startswith("--direct_num_workers") for a in got), (task, got[-8:])
