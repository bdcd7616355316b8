"""manifests/serving/ and `pipeline.py deploy | rollback`, validated offline.

Core objects (ServiceAccount, Redis, the feature updater) validate strictly
against Kubernetes 1.30's schema (kubernetes-validate, as tests/unit/test_manifests.py).
InferenceServices round-trip through the kserve SDK's models in the serving
venv (tests/helpers/kserve_roundtrip.py, a subprocess): a dropped field fails.  kserve
0.15's SDK has no ``spec.canary`` (kserve >= 0.20); its entries are checked as
``{trafficPercent, predictor: PredictorSpec + name}`` plus KServe's canary rules
below.  deploy/rollback run against a real ``mlflow server``.  Applying to a
cluster is not tested (no Kubernetes here).
"""
import json
import os
import subprocess

import pytest
import yaml

import pipeline
from feedrank.deploy import examples
from feedrank.tracking import candidate as cand_lib
from tests.helpers.config import ROOT
from tests.unit.test_manifests import CREDENTIAL, K8S_VERSION, _pod_specs, render

SERVING = os.path.join(ROOT, "manifests", "serving")
OVERLAYS = sorted(examples.overlays())
SERVING_PY = os.path.join(ROOT, ".venv-serving", "bin", "python")
MODEL = "feedrank-deploy-test"
AUTOSCALING = ("maxReplicas", "scaleMetric", "scaleTarget", "autoScaling")


def round_trip(isvcs):
    """tests/helpers/kserve_roundtrip.py's verdicts for ``isvcs``."""
    if not os.access(SERVING_PY, os.X_OK):
        pytest.fail("the serving venv is missing: run `make serving-install`")
    proc = subprocess.run([SERVING_PY, os.path.join(ROOT, "tests", "helpers", "kserve_roundtrip.py")],
                          input=json.dumps(isvcs), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def assert_valid_isvcs(isvcs):
    verdicts = round_trip(isvcs)
    assert len(verdicts) == len(isvcs)
    for v in verdicts:
        assert v["error"] == "" and v["dropped"] == [], v
    for isvc in isvcs:
        check_canary_rules(isvc)


def check_canary_rules(isvc):
    """KServe's rules: canaryTrafficPercent only in Serverless; spec.canary only in Standard, named,
    unique, sum <= 100, fixed replicas <= the stable predictor's; model storage by ServiceAccount."""
    mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    spec = isvc["spec"]
    if "canaryTrafficPercent" in spec["predictor"]:
        assert mode == "Serverless" and 0 <= spec["predictor"]["canaryTrafficPercent"] <= 100
    canaries = spec.get("canary", [])
    if canaries:
        assert mode == "Standard"
        names = [c["predictor"]["name"] for c in canaries]
        assert len(set(names)) == len(names) and all(names)
        assert sum(c["trafficPercent"] for c in canaries) <= 100
        for c in canaries:
            assert 0 <= c["trafficPercent"] <= 100 and not any(k in c["predictor"] for k in AUTOSCALING)
            assert c["predictor"].get("minReplicas", 0) <= spec["predictor"]["minReplicas"]
    for pred in [spec["predictor"]] + [c["predictor"] for c in canaries]:
        assert pred["serviceAccountName"] == "feedrank-serving"
        uris = [e["value"] for ct in pred.get("containers", []) for e in ct.get("env", [])
                if e["name"] == "STORAGE_URI"] + ([pred["model"]["storageUri"]] if "model" in pred else [])
        assert len(uris) == 1 and uris[0].startswith(("gs://", "s3://")), pred
    for part in [spec["predictor"], spec.get("transformer", {})] + [c["predictor"] for c in canaries]:
        for ct in part.get("containers", []):
            assert not any(CREDENTIAL.search(e["name"]) for e in ct.get("env", [])), ct["name"]
    if mode == "Serverless":
        assert spec["predictor"]["scaleMetric"] == "concurrency" and spec["predictor"]["scaleTarget"] > 0
    else:
        assert spec["predictor"]["scaleMetric"] in ("cpu", "memory")  # HPA's metrics


@pytest.fixture(scope="module", params=["base"] + [f"overlays/{o}" for o in OVERLAYS])
def rendered(request):
    return request.param, render(os.path.join(SERVING, request.param))


def test_core_objects_validate_and_keep_credentials_out(rendered):
    import kubernetes_validate

    name, objs = rendered
    core = [o for o in objs if o["kind"] != "InferenceService"]
    assert {(o["kind"], o["metadata"]["name"]) for o in core} >= {
        ("ServiceAccount", "feedrank-serving"), ("Deployment", "feedrank-redis"), ("Service", "feedrank-redis"),
        ("Deployment", "feedrank-feature-updater")}, name
    for o in core:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)
        assert o["metadata"]["namespace"] == "feedrank" and o["kind"] != "Secret"
        for pod in _pod_specs(o):
            for c in pod["containers"]:
                assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
                assert not any(CREDENTIAL.search(e["name"]) and "value" in e for e in c.get("env", []))
    isvcs = [o for o in objs if o["kind"] == "InferenceService"]
    assert len(isvcs) == (0 if name == "base" else 1)


def test_inference_services_round_trip_and_follow_the_canary_rules():
    isvcs = [o for d in OVERLAYS for o in render(os.path.join(SERVING, "overlays", d))
             if o["kind"] == "InferenceService"]
    assert len(isvcs) == 4
    assert_valid_isvcs(isvcs)
    by = dict(zip(OVERLAYS, isvcs))
    assert by["serverless"]["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert "canary" not in by["serverless"]["spec"]
    assert by["standard"]["spec"]["canary"][0]["trafficPercent"] == 10
    assert "canaryTrafficPercent" not in by["standard"]["spec"]["predictor"]
    tfs = by["standard-tfserving"]["spec"]["predictor"]["model"]
    assert tfs["runtime"] == "kserve-tensorflow-serving" and tfs["modelFormat"]["name"] == "tensorflow"
    assert by["serverless"]["spec"]["transformer"]["containers"][0]["command"][-1] == "serving.transformer"


def test_the_round_trip_catches_a_dropped_field():
    isvc = examples.overlays()["standard"]
    isvc["spec"]["predictor"]["canaryTrafficPrecent"] = 10  # misspelled
    isvc["spec"]["canary"][0]["predictor"]["storageUrl"] = "gs://x"
    isvc["spec"]["canary"][0]["weight"] = 5
    (verdict,) = round_trip([isvc])
    assert set(verdict["dropped"]) == {".spec.predictor.canaryTrafficPrecent",
                                       ".spec.canary[0].predictor.storageUrl", ".spec.canary[0].weight"}


def test_committed_overlays_equal_the_renderer():
    for rel, text in examples.files().items():
        with open(os.path.join(SERVING, "overlays", rel)) as f:
            assert f.read() == text, f"{rel} is stale: python -m feedrank.deploy.examples"


# ---- deploy / rollback against a real MLflow server -------------------------------------------

@pytest.fixture(scope="module")
def registry(mlflow_url):  # noqa: F811
    """Versions 1, 2 (blessed, pushed to gs://), 3 (unblessed) and 4 (blessed, a local push dir)."""
    client = cand_lib.client_for(mlflow_url)
    client.create_registered_model(MODEL)
    exp = client.create_experiment("deploy-test")
    run_id = client.create_run(exp).info.run_id
    tags = [{"blessed": "true", "pushed_dir": "gs://feedrank-ml/model_store/din/100"},
            {"blessed": "true", "pushed_dir": "gs://feedrank-ml/model_store/din/200"},
            {"blessed": "false", "pushed_dir": "gs://feedrank-ml/model_store/din/300"},
            {"blessed": "true", "pushed_dir": "model_store/din/400"}]
    for t in tags:
        client.create_model_version(MODEL, f"runs:/{run_id}/pushed_model", run_id=run_id, tags=t)
    return client


@pytest.fixture(scope="module")
def config_file(mlflow_url, tmp_path_factory):  # noqa: F811
    raw = yaml.safe_load(open(os.path.join(ROOT, "configs", "tiny.yaml")))
    tmp = tmp_path_factory.mktemp("deploy")
    raw.update(run_root=str(tmp / "runs"),
               mlflow={**(raw.get("mlflow") or {}), "tracking_uri": mlflow_url, "registered_model": MODEL})
    path = tmp / "deploy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _aliases(client, champion, challenger):
    client.set_registered_model_alias(MODEL, "champion", str(champion))
    client.set_registered_model_alias(MODEL, "challenger", str(challenger))


def _run(capsys, *argv):
    rc = pipeline.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, [line for line in err.splitlines() if line.startswith("error:")]


def _load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def _uri(pred):
    return pred["containers"][0]["env"][0]["value"]


def test_deploy_renders_the_champion_with_a_10_percent_challenger(registry, config_file, tmp_path, capsys):
    _aliases(registry, 1, 2)
    out = tmp_path / "serverless"
    rc, text, errors = _run(capsys, "deploy", "--config", config_file, "--canary", "10", "--out", str(out))
    assert rc == 0 and not errors, errors
    assert "champion v1 90% + challenger v2 10%" in text
    canary, first = _load(out / "inferenceservice.yaml"), _load(out / "00-champion.yaml")
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert _uri(canary["spec"]["predictor"]) == "gs://feedrank-ml/model_store/din/200"
    assert "canaryTrafficPercent" not in first["spec"]["predictor"]  # the revision that keeps 90%
    assert _uri(first["spec"]["predictor"]) == "gs://feedrank-ml/model_store/din/100"
    summary = json.loads((out / "deploy.json").read_text())
    assert summary["champion"]["version"] == "1" and summary["challenger"]["version"] == "2"
    assert _load(out / "kustomization.yaml")["resources"] == ["inferenceservice.yaml"]

    std = tmp_path / "standard"
    rc, _, errors = _run(capsys, "deploy", "--config", config_file, "--canary", "10", "--mode", "standard",
                         "--out", str(std))
    assert rc == 0 and not errors, errors
    isvc = _load(std / "inferenceservice.yaml")
    assert _uri(isvc["spec"]["predictor"]) == "gs://feedrank-ml/model_store/din/100"
    (entry,) = isvc["spec"]["canary"]
    assert entry["trafficPercent"] == 10 and entry["predictor"]["name"] == "v2"
    assert _uri(entry["predictor"]) == "gs://feedrank-ml/model_store/din/200"
    assert not (std / "00-champion.yaml").exists()
    for d in (canary, first, isvc):
        d["metadata"]["namespace"] = "feedrank"
    assert_valid_isvcs([canary, first, isvc])


def test_deploy_and_rollback_refuse_an_unblessed_version(registry, config_file, tmp_path, capsys):
    _aliases(registry, 1, 3)
    rc, _, errors = _run(capsys, "deploy", "--config", config_file, "--out", str(tmp_path / "a"))
    assert rc == 2 and len(errors) == 1 and "version 3 (alias 'challenger')" in errors[0]
    assert "not blessed" in errors[0] and not (tmp_path / "a").exists()
    _aliases(registry, 3, 2)
    rc, _, errors = _run(capsys, "rollback", "--config", config_file, "--out", str(tmp_path / "b"))
    assert rc == 2 and len(errors) == 1 and "not blessed" in errors[0] and not (tmp_path / "b").exists()


def test_rollback_renders_100_percent_to_the_champion_without_the_challenger(registry, config_file, tmp_path,
                                                                           capsys):
    _aliases(registry, 2, 1)
    registry.set_model_version_tag(MODEL, "2", "previous_champion", "1")
    for mode in ("serverless", "standard"):
        out = tmp_path / mode
        rc, text, errors = _run(capsys, "rollback", "--config", config_file, "--mode", mode, "--out", str(out))
        assert rc == 0 and not errors and "version 2 100%, no challenger" in text
        isvc = _load(out / "inferenceservice.yaml")
        assert _uri(isvc["spec"]["predictor"]) == "gs://feedrank-ml/model_store/din/200"
        assert "canaryTrafficPercent" not in isvc["spec"]["predictor"] and "canary" not in isvc["spec"]
        assert "feedrank.io/challenger-version" not in isvc["metadata"]["annotations"]
    out = tmp_path / "previous"
    rc, _, errors = _run(capsys, "rollback", "--config", config_file, "--previous", "--out", str(out))
    assert rc == 0 and not errors
    assert _uri(_load(out / "inferenceservice.yaml")["spec"]["predictor"]) == "gs://feedrank-ml/model_store/din/100"


def test_a_local_push_dir_needs_the_bucket_it_is_synced_to(registry, config_file, tmp_path, capsys):
    _aliases(registry, 1, 4)
    rc, _, errors = _run(capsys, "deploy", "--config", config_file, "--out", str(tmp_path / "a"))
    assert rc == 2 and len(errors) == 1 and "--model-store-uri" in errors[0] and "--local" in errors[0]
    rc, _, errors = _run(capsys, "deploy", "--config", config_file, "--out", str(tmp_path / "b"),
                         "--model-store-uri", "s3://feedrank-ml/model_store")
    assert rc == 0 and not errors
    isvc = _load(tmp_path / "b" / "inferenceservice.yaml")
    assert _uri(isvc["spec"]["predictor"]) == "s3://feedrank-ml/model_store/din/400"


def test_local_deploy_and_rollback_act_on_the_registry_and_print_the_local_stack(registry, config_file, tmp_path,
                                                                                capsys):
    """--local: no cluster and a local model store; the checks and the alias moves hold, nothing is
    rendered, and the command that serves the result locally is printed."""
    _aliases(registry, 1, 4)
    out = tmp_path / "local"
    rc, text, errors = _run(capsys, "deploy", "--config", config_file, "--local", "--canary", "25", "--out", str(out))
    assert rc == 0 and not errors and not out.exists()
    local_push = os.path.abspath("model_store/din/400")
    assert f"champion v1 (gs://feedrank-ml/model_store/din/100) and challenger v4 ({local_push})" in text
    assert (f"-m serving.stack --log data/tiny --model models:/{MODEL}@champion --challenger-model "
            f"models:/{MODEL}@challenger --challenger-share 0.25") in text
    _aliases(registry, 3, 4)                                        # an unblessed champion is refused
    rc, _, errors = _run(capsys, "deploy", "--config", config_file, "--local")
    assert rc == 2 and len(errors) == 1 and "not blessed" in errors[0]
    _aliases(registry, 4, 1)
    registry.set_model_version_tag(MODEL, "4", "previous_champion", "2")
    rc, text, errors = _run(capsys, "rollback", "--config", config_file, "--local", "--previous")
    assert rc == 0 and not errors and "moved back from version 4 to version 2" in text
    assert registry.get_model_version_by_alias(MODEL, "champion").version == "2"
    assert f"make serve MODEL=models:/{MODEL}@champion" in text
    rc, _, errors = _run(capsys, "rollback", "--config", config_file, "--local", "--model-store-uri", "s3://b/m")
    assert rc == 2 and "--local acts on the registry" in errors[0]
