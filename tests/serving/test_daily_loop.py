"""The daily loop, validated offline: served impressions reach the examples, the daily
package compiles and loads with kfp and is scheduled with the served log as its input,
and the A/B deployment's InferenceServices validate.

* Served log: a tiny simulated log plus one part as the serving log sink writes it
  (contract columns with ``arm``, ``model_version``, ``score``) is run through the
  real example generator (`feedrank.examples.beam_pipeline`).
* Daily package: ``configs/kubeflow_daily.yaml`` compiled from ``configs/demo.yaml``,
  loaded with kfp's own loaders; the recurring run is created against a loopback
  stand-in of the KFP API (what we send, not what a server does with it).
* A/B: `feedrank.deploy.render.ab_plan` and ``pipeline.py deploy --ab-share``
  against a real MLflow server; the InferenceServices round-trip through the kserve
  SDK (tests/helpers/kserve_roundtrip.py) and follow KServe's rules.
"""
import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from feedrank.deploy import DeployError, examples, render
from feedrank.events import append, contract, io
from tests.helpers import examplegen as H
from tests.helpers.config import ROOT
from tests.helpers.json_api import JsonApiHandler, loopback_kube
from tests.serving.test_serving_manifests import (  # noqa: F401 - fixtures: a real MLflow server and registry
    _aliases,
    _load,
    _run,
    _uri,
    assert_valid_isvcs,
    config_file,
    registry,
)
from tests.unit.test_kubeflow import _posted, fake_kfp  # noqa: F401 - a loopback stand-in of the KFP API

# ---- the served log flows into the examples ---------------------------------------------------

def served_part(ev: pd.DataFrame) -> pd.DataFrame:
    """A served request: five impressions ranked by the challenger and a click on position 1;
    a later request after the log's end, whose label window is still open at the new end of
    the log (censored: an example of the next day's run); and, as a replayed part would hold,
    a duplicate of a logged event id."""
    imps = ev[ev.event == contract.IMPRESSION]
    user = imps.user_id.iloc[0]
    items = list(dict.fromkeys(imps.item_id))[:5]
    end = int(pd.to_numeric(ev.ts).max())
    ts = end - 3000
    rows = [dict(event_id=f"srv-imp-{i}", user_id=user, item_id=item, event=contract.IMPRESSION, ts=ts,
                 request_id="srv-req-1", query="", dwell_s=np.nan, position=i, arm="challenger",
                 model_version="7", score=0.9 - 0.1 * i) for i, item in enumerate(items)]
    rows.append(dict(event_id="srv-click-1", user_id=user, item_id=items[1], event=contract.CLICK, ts=ts + 30,
                     request_id="srv-req-1", query="", dwell_s=np.nan, position=None, arm="",
                     model_version="", score=np.nan))
    rows += [dict(event_id=f"srv-late-{i}", user_id=user, item_id=item, event=contract.IMPRESSION, ts=end + 600,
                  request_id="srv-req-2", query="", dwell_s=np.nan, position=i, arm="challenger",
                  model_version="7", score=0.5) for i, item in enumerate(items[:2])]
    dup = imps.iloc[0]
    rows.append(dict(event_id=dup.event_id, user_id=dup.user_id, item_id=dup.item_id, event=contract.IMPRESSION,
                     ts=int(dup.ts) + 5, request_id="srv-req-0", query="", dwell_s=np.nan, position=0,
                     arm="champion", model_version="6", score=0.5))
    return pd.DataFrame(rows)


def write_part(df: pd.DataFrame, path: str) -> None:
    """A part in the contract's column order and types, as the sink writes it."""
    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}
    schema = pa.schema([(c, types[t]) for c, (t, _) in contract.EVENT_COLUMNS.items()])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df.reindex(columns=list(contract.EVENT_COLUMNS)), schema=schema,
                                        preserve_index=False),
                   path)


@pytest.fixture(scope="module")
def served_log(tmp_path_factory):
    """(log dir with the served part appended, the served frame)."""
    log_dir = H.make_log(str(tmp_path_factory.mktemp("log")))
    served = served_part(H.load(log_dir))
    ab_root = tmp_path_factory.mktemp("ab")   # one directory per A/B test, as the sink writes it
    write_part(served, str(ab_root / "exp-1" / "events" / "part-1732600000000-0-1732600000100-0.parquet"))
    added = append.append_parts(log_dir, str(ab_root / "exp-1" / "events"))
    assert [os.path.basename(p) for p in added] == ["part-1732600000000-0-1732600000100-0.parquet"]
    assert append.main(["--log", log_dir, "--served", str(ab_root / "*" / "events")]) == 0   # idempotent
    assert sorted(os.listdir(os.path.join(log_dir, "events"))) == [
        "part-0-base.parquet", "part-1732600000000-0-1732600000100-0.parquet"]
    return log_dir, served


def test_the_log_becomes_a_part_directory_read_in_file_order(served_log):
    log_dir, served = served_log
    assert not os.path.exists(os.path.join(log_dir, "events.parquet"))
    files = io.check_table(log_dir, contract.EVENTS)
    assert [os.path.basename(f.path) for f in files] == [
        "part-0-base.parquet", "part-1732600000000-0-1732600000100-0.parquet"]
    ev = io.read_events(log_dir)
    got = ev[ev.request_id == "srv-req-1"].set_index("event_id")
    assert got.loc["srv-imp-2", "arm"] == "challenger" and got.loc["srv-imp-2", "model_version"] == "7"
    assert got.loc["srv-imp-2", "score"] == pytest.approx(0.7)


def test_served_impressions_flow_into_examples_and_duplicates_are_quarantined(served_log, tmp_path):
    log_dir, served = served_log
    res = H.run(log_dir, str(tmp_path / "out"))
    examples = {k: H.to_dict(v) for k, v in H.by_impression(res["output_dir"]).items()}
    served_imps = served[served.event_id.str.startswith("srv-imp-")]
    for r in served_imps.itertuples():
        ex = examples[r.event_id]
        assert ex["user_id"] == [r.user_id] and ex["item_id"] == [r.item_id] and ex["ts"] == [r.ts]
        assert ex["label"] == [int(r.event_id == "srv-imp-1")]   # the click on position 1
    assert not any(k.startswith("srv-late-") for k in examples) and res["censored_eval"] >= 2
    # what served the impression never becomes a model input
    assert not {"arm", "model_version", "score"} & set(next(iter(examples.values())))
    q = H.quarantine(res)
    dup = served.iloc[-1]
    assert res["quarantined_by_reason"][contract.DUPLICATE_ID] == 1
    row = q.set_index("event_id").loc[dup.event_id]
    assert row.reason == contract.DUPLICATE_ID and row.arm == "champion" and row.request_id == "srv-req-0"


def test_append_refuses_a_clashing_or_incomplete_part(served_log, tmp_path, capsys):
    log_dir, served = served_log
    clash = tmp_path / "clash"
    write_part(served.head(2), str(clash / "part-1732600000000-0-1732600000100-0.parquet"))
    with pytest.raises(io.ContractError, match="already exists with other content"):
        append.append_parts(log_dir, str(clash))
    bad = tmp_path / "bad"
    bad.mkdir()
    served.drop(columns=["user_id"]).to_parquet(bad / "part-1.parquet", index=False)
    assert append.main(["--log", log_dir, "--served", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing required column(s) ['user_id']" in err[0]


def test_a_sink_writing_into_the_log_before_the_conversion(tmp_path):
    """The sink pointed at <log>/events while the base log is still one file: the conversion
    moves the file in beside the served parts (before it, both forms are an ambiguous table)."""
    ev = pd.DataFrame([dict(event_id="b1", user_id="u1", item_id="i1", event="impression", ts=100, request_id="r0",
                            query="", dwell_s=np.nan, position=0, arm="", model_version="", score=np.nan)])
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    ev[["event_id", "user_id", "item_id", "event", "ts"]].to_parquet(log_dir / "events.parquet", index=False)
    write_part(ev.assign(event_id="s1", ts=200, arm="champion", model_version="3", score=0.4),
               str(log_dir / "events" / "part-1732600000000-0-1732600000000-0.parquet"))
    with pytest.raises(io.ContractError, match="ambiguous"):
        io.check_table(str(log_dir), contract.EVENTS)
    assert append.main(["--log", str(log_dir)]) == 0
    got = io.read_events(str(log_dir))
    assert list(got.event_id) == ["b1", "s1"] and list(got.arm) == ["", "champion"]


# ---- the daily package and its schedule -------------------------------------------------------

DEMO = os.path.join(ROOT, "configs", "demo.yaml")
KF = os.path.join(ROOT, "configs", "kubeflow.yaml")
KF_DAILY = os.path.join(ROOT, "configs", "kubeflow_daily.yaml")
DAILY_KEYS = {"input_base", "data_version", "never_cache", "log_volume"}


@pytest.fixture(scope="module")
def daily_package(tmp_path_factory):
    from feedrank.config import load
    from feedrank.runners.kubeflow import compile_pipeline
    from feedrank.runners.kubeflow_config import load_kubeflow_config
    from pipeline import create_pipeline

    out = str(tmp_path_factory.mktemp("kfp") / "daily.yaml")
    assert compile_pipeline(create_pipeline, load(DEMO), load_kubeflow_config(KF_DAILY), out) == out
    with open(out) as f:
        return out, [d for d in yaml.safe_load_all(f) if d]


def _executor(spec, task):
    return spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]["executorLabel"]


def test_daily_config_differs_from_the_cluster_config_only_in_the_daily_keys():
    from feedrank.runners.kubeflow_config import load_kubeflow_config

    base, daily = (dataclasses.asdict(load_kubeflow_config(p)) for p in (KF, KF_DAILY))
    assert {k for k in base if base[k] != daily[k]} == DAILY_KEYS
    assert daily["input_base"].startswith(daily["log_volume"]["mount_path"])


def test_daily_package_loads_with_kfp_and_reads_the_log_volume_uncached(daily_package):
    from google.protobuf import json_format
    from kfp import components
    from kfp.client.client import _extract_pipeline_yaml
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    path, (spec_doc, platform_doc) = daily_package
    spec = json_format.ParseDict(spec_doc, pipeline_spec_pb2.PipelineSpec())   # strict: no unknown fields
    platform = json_format.ParseDict(platform_doc, pipeline_spec_pb2.PlatformSpec())
    executors = platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor in executors.values():
        json_format.ParseDict(executor, k8s_pb2.KubernetesExecutorConfig())
    doc = _extract_pipeline_yaml(path)   # what kfp.Client uploads
    assert doc.pipeline_spec == spec and doc.platform_spec == platform
    assert set(components.load_component_from_file(path).component_spec.inputs) == {
        "input_base", "data_version", "trainer_config", "mlflow_tracking_uri"}
    params = spec_doc["root"]["inputDefinitions"]["parameters"]
    assert params["input_base"]["defaultValue"] == "/data/log"
    tasks = spec_doc["root"]["dag"]["tasks"]
    mounted = {t for t in tasks if "pvcMount" in executors.get(_executor(spec_doc, t), {})}
    assert mounted == {"BehaviorExampleGen"}   # demo.yaml has no Word2VecGen
    assert executors[_executor(spec_doc, "BehaviorExampleGen")]["pvcMount"] == [{
        "constant": "feedrank-event-log", "mountPath": "/data/log",
        "pvcNameParameter": {"runtimeValue": {"constant": "feedrank-event-log"}}}]
    for task in ("BehaviorExampleGen", "LatestBlessedModel", "Pusher", "MlflowLogger"):
        assert tasks[task]["cachingOptions"] == {}, task   # re-read the log; side effects
    assert tasks["Trainer"]["cachingOptions"] == {"enableCache": True}
    # the run registers a blessed, pushed model as `challenger`: the logger sees the blessing and the push
    logger = tasks["MlflowLogger"]["inputs"]["artifacts"]
    assert {"blessing", "pushed_model"} <= set(logger)


def test_log_volume_has_kfp_kubernetes_form(tmp_path):
    """Our pvcMount entry equals what kfp-kubernetes' mount_pvc writes."""
    from kfp import compiler, dsl, kubernetes

    from feedrank.runners.kubeflow import postprocess
    from feedrank.runners.kubeflow_config import KubeflowConfig

    @dsl.component(base_image="python:3.11")
    def read_log() -> int:
        return 1

    @dsl.pipeline(name="tiny")
    def tiny():
        kubernetes.mount_pvc(read_log(), pvc_name="feedrank-event-log", mount_path="/data/log")

    path = str(tmp_path / "tiny.yaml")
    compiler.Compiler().compile(tiny, path)
    with open(path) as f:
        _, kplat = list(yaml.safe_load_all(f))
    spec = {"components": {"c": {"executorLabel": "exec-read-log"}},
            "deploymentSpec": {"executors": {"exec-read-log": {"container": {"image": "x"}}}},
            "root": {"dag": {"tasks": {"BehaviorExampleGen": {"componentRef": {"name": "c"}}}}}}
    kf = KubeflowConfig(input_base="/data/log", log_volume={"pvc_name": "feedrank-event-log",
                                                            "mount_path": "/data/log"})
    _, platform = postprocess(spec, kf)
    assert platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-read-log"] == \
        kplat["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-read-log"]


@pytest.mark.parametrize("extra,match", [
    ("log_volume: {pvc_name: log}\n", "needs exactly"),
    ("log_volume: {pvc_name: log, mount_path: data}\ninput_base: data\n", "absolute path"),
    ("log_volume: {pvc_name: log, mount_path: /data/log}\ninput_base: /data/other\n", "must lie under"),
])
def test_log_volume_errors(tmp_path, extra, match):
    from feedrank.config import ConfigError
    from feedrank.runners.kubeflow_config import load_kubeflow_config

    bad = tmp_path / "kf.yaml"
    bad.write_text(extra)
    with pytest.raises(ConfigError, match=match):
        load_kubeflow_config(str(bad))


def test_schedule_the_daily_package(daily_package, fake_kfp, capsys):  # noqa: F811
    import pipeline

    host, requests = fake_kfp
    path, _ = daily_package
    rc = pipeline.main(["schedule", "--package", path, "--host", host, "--cron", "0 0 3 * * *",
                        "--name", "feedrank-daily", "--service-account", "feedrank-pipeline"])
    assert rc == 0 and "recurring run rr-7 created (0 0 3 * * *)" in capsys.readouterr().out
    job = _posted(requests, "/apis/v2beta1/recurringruns")
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *" and job["no_catchup"] is True
    assert job["display_name"] == "feedrank-daily" and job["service_account"] == "feedrank-pipeline"
    assert job["max_concurrency"] in ("1", 1)   # one day's run at a time
    sent = job["pipeline_spec"]
    assert sent["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]["input_base"]["defaultValue"] == \
        "/data/log"
    executors = sent["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert any("pvcMount" in e for e in executors.values())


# ---- A/B go-live: two InferenceServices, one transformer ---------------------------------------

def _transformer_args(isvc):
    return isvc["spec"]["transformer"]["containers"][0]["args"]


def _flag(args, name):
    return args[args.index(name) + 1]


@pytest.mark.parametrize("mode", ["serverless", "standard"])
def test_ab_plan_renders_valid_inference_services(mode):
    plan = render.ab_plan(mode, "feedrank", examples.CHAMPION, examples.CHALLENGER, 0.2)
    (main,), (other,) = plan.stages, plan.companions
    assert_valid_isvcs([main, other])
    assert main["metadata"]["name"] == "feedrank-ranker" and other["metadata"]["name"] == "feedrank-ranker-challenger"
    assert _uri(main["spec"]["predictor"]) == examples.CHAMPION.storage_uri
    assert _uri(other["spec"]["predictor"]) == examples.CHALLENGER.storage_uri
    assert "transformer" not in other["spec"]          # one transformer, in front of both predictors
    assert "canaryTrafficPercent" not in main["spec"]["predictor"] and "canary" not in main["spec"]
    args = _transformer_args(main)
    assert _flag(args, "--predictor_host") == "feedrank-ranker-predictor.feedrank"
    assert _flag(args, "--challenger-url") == "http://feedrank-ranker-challenger-predictor.feedrank"
    assert float(_flag(args, "--challenger-share")) == 0.2
    assert _flag(args, "--ab-salt") == plan.summary["ab_salt"] == "feedrank-demo-ranker:v3-vs-v4"
    assert main["metadata"]["annotations"]["feedrank.io/ab-share"] == "0.2"


@pytest.mark.usefixtures("serving_venv")
def test_the_transformer_accepts_the_rendered_arguments():
    """The rendered transformer arguments parse with the transformer's own parser (serving venv)."""
    import subprocess

    from tests.serving.test_serving_manifests import SERVING_PY

    args = _transformer_args(render.ab_plan("standard", "feedrank", examples.CHAMPION, examples.CHALLENGER,
                                            0.25).stages[0])
    code = ("import json, sys; from serving.transformer.__main__ import parse_args; "
            "a = parse_args(json.loads(sys.argv[1])); "
            "print(json.dumps([a.challenger_url, a.challenger_share, a.ab_salt, a.predictor_host]))")
    proc = subprocess.run([SERVING_PY, "-c", code, json.dumps(args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == ["http://feedrank-ranker-challenger-predictor.feedrank", 0.25,
                                       "feedrank-demo-ranker:v3-vs-v4", "feedrank-ranker-predictor.feedrank"]


@pytest.mark.parametrize("share,runtime,match", [(0.0, "feedrank", "strictly between 0 and 1"),
                                                 (1.0, "feedrank", "strictly between 0 and 1"),
                                                 (0.5, "tfserving", "needs the transformer")])
def test_ab_plan_refuses_what_cannot_be_an_ab_test(share, runtime, match):
    with pytest.raises(DeployError, match=match):
        render.ab_plan("serverless", runtime, examples.CHAMPION, examples.CHALLENGER, share)


@pytest.fixture()
def ab_config(config_file, tmp_path):  # noqa: F811
    """The deploy test's config with an ab section: 10 % of the users, this experiment's salt."""
    with open(config_file) as f:
        raw = yaml.safe_load(f)
    raw["ab"] = {"share": 0.1, "salt": "exp-2024-06-v2"}
    path = tmp_path / "ab.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_deploy_ab_share_renders_both_and_rollback_removes_the_challenger(registry, ab_config, tmp_path,  # noqa: F811
                                                                         capsys):
    _aliases(registry, 1, 2)
    rc, _, errors = _run(capsys, "deploy", "--config", ab_config, "--ab-share", "0.3", "--out",
                         str(tmp_path / "other-share"))
    assert rc == 2 and len(errors) == 1 and "differs from ab.share 0.1" in errors[0]
    out = tmp_path / "ab"
    rc, text, errors = _run(capsys, "deploy", "--config", ab_config, "--ab-share", "--out", str(out))
    assert rc == 0 and not errors, errors
    assert "A/B champion v1 + challenger v2 for 10% of the users, salt 'exp-2024-06-v2'" in text
    main, other = _load(out / "inferenceservice.yaml"), _load(out / "feedrank-ranker-challenger.yaml")
    assert _load(out / "kustomization.yaml")["resources"] == ["feedrank-ranker-challenger.yaml",
                                                              "inferenceservice.yaml"]
    assert not (out / "00-champion.yaml").exists()   # no KServe canary stage: the split is per user
    assert _uri(main["spec"]["predictor"]) == "gs://feedrank-ml/model_store/din/100"
    assert _uri(other["spec"]["predictor"]) == "gs://feedrank-ml/model_store/din/200"
    assert float(_flag(_transformer_args(main), "--challenger-share")) == 0.1
    assert _flag(_transformer_args(main), "--ab-salt") == "exp-2024-06-v2"
    for d in (main, other):
        d["metadata"]["namespace"] = "feedrank"
    assert_valid_isvcs([main, other])

    _aliases(registry, 3, 2)     # an unblessed champion: refused, nothing rendered
    rc, _, errors = _run(capsys, "deploy", "--config", ab_config, "--ab-share", "0.1", "--out",
                         str(tmp_path / "refused"))
    assert rc == 2 and len(errors) == 1 and "not blessed" in errors[0] and not (tmp_path / "refused").exists()

    _aliases(registry, 1, 2)
    rc, _, errors = _run(capsys, "rollback", "--config", ab_config, "--out", str(out))
    assert rc == 0 and not errors
    assert not (out / "feedrank-ranker-challenger.yaml").exists()
    assert _load(out / "kustomization.yaml")["resources"] == ["inferenceservice.yaml"]
    args = _transformer_args(_load(out / "inferenceservice.yaml"))
    assert "--challenger-url" not in args


# ---- applying: the kubernetes client against a loopback stand-in of the API server ------------

class _FakeKube(JsonApiHandler):
    """InferenceServices in memory; every object is Ready as soon as it is written.
    Records (method, name) per request: a contract test of what `apply` sends, in order."""

    objects: dict = {}
    requests: list = []
    PREFIX = "/apis/serving.kserve.io/v1beta1/namespaces/feedrank/inferenceservices"

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else None

    def _store(self, obj):
        obj = dict(obj, status={"conditions": [{"type": "Ready", "status": "True"}]})
        obj["metadata"] = dict(obj["metadata"], resourceVersion=str(len(self.requests)))
        self.objects[obj["metadata"]["name"]] = obj
        return obj

    def do_GET(self):
        name = self._name()
        self.requests.append(("GET", name))
        if name in self.objects:
            return self._send(self.objects[name])
        self._send({"kind": "Status", "code": 404, "reason": "NotFound"}, 404)

    def do_POST(self):
        obj = self._body()
        self.requests.append(("POST", obj["metadata"]["name"]))
        self._send(self._store(obj), 201)

    def do_PUT(self):
        name, obj = self._name(), self._body()
        self.requests.append(("PUT", name))
        self._send(self._store(obj))

    def do_DELETE(self):
        name = self._name()
        self.requests.append(("DELETE", name))
        if self.objects.pop(name, None) is None:
            return self._send({"kind": "Status", "code": 404, "reason": "NotFound"}, 404)
        self._send({"kind": "Status", "status": "Success"})


@pytest.fixture()
def fake_kube(tmp_path):
    _FakeKube.objects, _FakeKube.requests = {}, []
    with loopback_kube(_FakeKube, tmp_path) as kubeconfig:
        yield kubeconfig, _FakeKube


def test_apply_starts_the_challenger_first_and_rollback_deletes_it(fake_kube):
    from feedrank.deploy import apply as apply_lib

    kubeconfig, kube = fake_kube
    ab = render.ab_plan("standard", "feedrank", examples.CHAMPION, examples.CHALLENGER, 0.1)
    account = apply_lib.apply(ab, kubeconfig, wait_s=5)
    assert account == ("applied InferenceService feedrank/feedrank-ranker (ab), "
                       "applied feedrank-ranker-challenger")
    writes = [r for r in kube.requests if r[0] != "GET"]
    assert writes == [("POST", "feedrank-ranker-challenger"), ("POST", "feedrank-ranker")]
    # the challenger was Ready (read back) before the transformer that calls it was written
    first_main = kube.requests.index(("POST", "feedrank-ranker"))
    assert ("GET", "feedrank-ranker-challenger") in kube.requests[1:first_main]
    main = kube.objects["feedrank-ranker"]
    assert "--challenger-url" in main["spec"]["transformer"]["containers"][0]["args"]

    kube.requests.clear()
    back = render.rollback_plan("standard", "feedrank", examples.CHAMPION)
    assert apply_lib.apply(back, kubeconfig, wait_s=5) == (
        "applied InferenceService feedrank/feedrank-ranker (rollback), deleted feedrank-ranker-challenger")
    assert [r for r in kube.requests if r[0] != "GET"] == [("PUT", "feedrank-ranker"),
                                                          ("DELETE", "feedrank-ranker-challenger")]
    assert set(kube.objects) == {"feedrank-ranker"}
    assert "--challenger-url" not in kube.objects["feedrank-ranker"]["spec"]["transformer"]["containers"][0]["args"]
    kube.requests.clear()   # a second rollback: nothing left to delete, and that is no error
    assert apply_lib.apply(back, kubeconfig, wait_s=5).endswith("(rollback)")
    # an A/B test followed by a canary: the canary's apply deletes the A/B challenger too
    apply_lib.apply(ab, kubeconfig, wait_s=5)
    canary = render.deploy_plan("standard", "feedrank", examples.CHAMPION, examples.CHALLENGER, 10)
    assert apply_lib.apply(canary, kubeconfig, wait_s=5).endswith("deleted feedrank-ranker-challenger")
    assert set(kube.objects) == {"feedrank-ranker"} and kube.objects["feedrank-ranker"]["spec"]["canary"]


def test_the_documented_volume_and_append_job_validate_and_agree_with_the_daily_config():
    import re
    import textwrap

    import kubernetes_validate

    from feedrank.runners.kubeflow_config import load_kubeflow_config
    from tests.unit.test_manifests import K8S_VERSION

    with open(os.path.join(ROOT, "docs", "kubeflow.md")) as f:
        blocks = [textwrap.dedent(b) for b in re.findall(r"```yaml\n(.*?)```", f.read(), flags=re.S)]
    (block,) = [b for b in blocks if "kind: CronJob" in b]
    objs = {o["kind"]: o for o in yaml.safe_load_all(block)}
    assert set(objs) == {"PersistentVolumeClaim", "CronJob"}
    for obj in objs.values():
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    kf = load_kubeflow_config(KF_DAILY)
    pvc, job = objs["PersistentVolumeClaim"], objs["CronJob"]
    assert pvc["metadata"]["name"] == kf.log_volume["pvc_name"] and "ReadWriteMany" in pvc["spec"]["accessModes"]
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (volume,) = pod["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == kf.log_volume["pvc_name"]
    assert container["volumeMounts"] == [{"name": volume["name"], "mountPath": kf.log_volume["mount_path"]}]
    cmd = container["command"]
    assert cmd[:3] == ["python", "-m", "feedrank.events.append"] and _flag(cmd, "--log") == kf.input_base
    assert _flag(cmd, "--served").startswith(kf.input_base + "/")
    assert container["image"] == kf.image
