"""MLflow tracking against a REAL `mlflow server` process (SQLite backend, proxied artifacts).

One module-scoped server on a free port in a tmp dir; two pipeline runs on a
tiny simulated log (the first with AUC floor 0, so it is blessed whatever the
tiny model learns; the second with an impossible floor, so it is not; the
upstream components normally come from the cache); then the registry, the
promote/compare CLIs and concurrent logging; then push and registration
dedupe: an identical rerun registers nothing new, and a registry outage after
the push (a second real server, stopped as soon as the Pusher's version
appears) followed by a rerun leaves exactly one push and one version.
"""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
import yaml

import pipeline
from feedrank import config as config_lib
from feedrank.events.simulator import simulate
from feedrank.tracking import TrackingError, compare, registry, server
from feedrank.tracking import candidate as cand_lib
from tests.helpers.config import ROOT

EXPERIMENT, MODEL = "feedrank-mlflow-test", "feedrank-mlflow-test-din"


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, mlflow_url):
    base = config_lib.load(os.path.join(ROOT, "configs", "tiny.yaml"))
    tmp = tmp_path_factory.mktemp("mlflow_e2e")
    data = tmp / "data"
    s = base.simulate
    simulate(str(data), users=s.users, items=s.items, days=s.days, seed=s.seed)
    return dataclasses.replace(
        base, pipeline_name="feedrank-mlflow", input_base=str(data), run_root=str(tmp / "runs"),
        push_root=str(tmp / "model_store"),
        # Floor 0 and a wide calibration band: the first candidate is blessed whatever the tiny
        # model learns (no baseline yet).
        evaluator=dataclasses.replace(base.evaluator, auc_floor=0.0, calibration_band=[0.01, 100.0]),
        mlflow=dataclasses.replace(base.mlflow, tracking_uri=mlflow_url, experiment=EXPERIMENT,
                                   registered_model=MODEL))


@pytest.fixture(scope="module")
def config_file(cfg, tmp_path_factory):
    """The same config as YAML, for the CLI."""
    raw = yaml.safe_load(open(os.path.join(ROOT, "configs", "tiny.yaml")))
    raw.update(pipeline_name=cfg.pipeline_name, input_base=cfg.input_base, run_root=cfg.run_root,
               push_root=cfg.push_root, mlflow=dataclasses.asdict(cfg.mlflow))
    path = tmp_path_factory.mktemp("cfg") / "mlflow.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _runs(client):
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.fixture(scope="module")
def blessed_run(cfg, client):
    summary = pipeline.run(cfg)
    assert summary["status"] == "succeeded", summary.get("failure")
    assert summary["blessing"]["blessed"] is True
    runs = _runs(client)
    assert len(runs) == 1
    return summary, runs[0]


@pytest.fixture(scope="module")
def unblessed_run(cfg, client, blessed_run):
    strict = dataclasses.replace(cfg, evaluator=dataclasses.replace(cfg.evaluator, auc_floor=0.999))
    summary = pipeline.run(strict)
    assert summary["status"] == "succeeded", summary.get("failure")
    assert summary["blessing"]["blessed"] is False
    assert summary["components"]["MlflowLogger"]["state"] == "COMPLETE"
    runs = _runs(client)
    assert len(runs) == 2
    return summary, runs[1]


def _error_lines(stderr):
    """The CLI's own error lines (MLflow's loggers may also write to stderr)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _artifact_paths(client, run_id, path=None):
    out = []
    for f in client.list_artifacts(run_id, path):
        out += _artifact_paths(client, run_id, f.path) if f.is_dir else [f.path]
    return out


@pytest.mark.e2e
def test_blessed_candidate_is_logged_and_registered_as_challenger(blessed_run, client, cfg):
    summary, run = blessed_run
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    assert run.info.status == "FINISHED"
    for key in ("auc", "gauc", "logloss", "tfma_auc", "tfma_logloss"):
        assert key in m, sorted(m)
    assert m["auc"] == pytest.approx(summary["auc"]["auc"], abs=1e-6)
    slices = [k for k in m if k.startswith("auc.category_id.")]
    assert slices and all(0.0 <= m[k] <= 1.0 for k in slices)
    for curve in ("train_loss", "valid_loss", "valid_auc"):
        hist = client.get_metric_history(run.info.run_id, curve)
        assert [h.step for h in sorted(hist, key=lambda h: h.step)] == \
            [r["epoch"] for r in summary["curves"]], curve
    assert p["model_family"] == "din" and p["learning_rate"] == str(cfg.trainer.learning_rate)
    assert p["mlp_units"] == "[32, 16]" and p["embedding_dims.item"] == "8"
    assert p["data.input_base"] == os.path.abspath(cfg.input_base) and p["data.fingerprint"]
    assert "data.max_ts" in p and p["code_version"] not in ("", "unknown")
    assert t["blessed"] == "true" and t["pushed"] == "true"
    assert t["calibration"] in ("platt", "isotonic", "identity")   # the step inside the exported graph
    assert t["tfx.run_id"] == summary["run_id"] and t["model_family"] == "din"
    assert len(t["git.commit"]) >= 7
    arts = _artifact_paths(client, run.info.run_id)
    for expected in ("plots/roc.png", "plots/calibration.png", "schema/schema.pbtxt",
                     "evaluation/eval_config.json", "model_card.md", "training/curves.png",
                     "training/calibration.json", "training/training.json",
                     "model/MLmodel", "model/input_example.json"):
        assert expected in arts, arts
    assert any(a.startswith("model/artifacts/") and a.endswith("/saved_model.pb") for a in arts), arts
    card = open(client.download_artifacts(run.info.run_id, "model_card.md")).read()
    assert "BLESSED" in card and "auc" in card
    mv = client.get_model_version_by_alias(MODEL, "challenger")
    assert mv.run_id == run.info.run_id and mv.tags["blessed"] == "true"
    assert mv.tags["pushed_dir"] == summary["push"]["path"]
    assert t["registered_version"] == mv.version
    # the event log is the run's dataset input; the run lasts as long as the Trainer's fit and export
    [ds] = run.inputs.dataset_inputs
    assert ds.dataset.name == os.path.basename(cfg.input_base) and ds.dataset.digest
    assert [(tag.key, tag.value) for tag in ds.tags] == [("mlflow.data.context", "training")]
    assert 0 < run.info.end_time - run.info.start_time < 3_600_000
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.e2e
def test_unblessed_candidate_is_logged_but_not_registered(unblessed_run, blessed_run, client):
    _, run = unblessed_run
    assert run.data.tags["blessed"] == "false"
    assert "registered_version" not in run.data.tags
    assert "auc" in run.data.metrics and "plots/roc.png" in _artifact_paths(client, run.info.run_id)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert [v.run_id for v in versions] == [blessed_run[1].info.run_id]
    assert client.get_model_version_by_alias(MODEL, "challenger").run_id == blessed_run[1].info.run_id


@pytest.mark.e2e
def test_promote_refuses_unblessed_and_promotes_blessed(unblessed_run, client, config_file, capsys):
    _, run = unblessed_run
    bad = client.create_model_version(MODEL, f"runs:/{run.info.run_id}/plots", run_id=run.info.run_id,
                                      tags={"blessed": "false"})
    with pytest.raises(TrackingError, match="not blessed"):
        registry.promote(client, MODEL, version=int(bad.version))
    assert pipeline.main(["promote", "--config", config_file, "--version", bad.version]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and errors[0].startswith("error: refusing to promote"), errors
    assert pipeline.main(["promote", "--config", config_file, "--version", "99"]) == 2
    assert "has no version 99" in capsys.readouterr().err
    assert pipeline.main(["promote", "--config", config_file, "--alias", "challenger"]) == 0
    out = capsys.readouterr().out
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == challenger.version and f"version {champion.version}" in out


@pytest.mark.e2e
def test_compare_prints_both_candidates_and_writes_png(unblessed_run, blessed_run, config_file,
                                                      client, tmp_path, capsys):
    # After the promote test the blessed run is champion; order-independent either way.
    out_png = tmp_path / "compare.png"
    assert pipeline.main(["compare", "--config", config_file, "--output", str(out_png)]) == 0
    out = capsys.readouterr().out
    for _, run in (blessed_run, unblessed_run):
        assert f"{run.info.run_id[:7]} din " in out   # the family beside the run
    assert "AUC" in out and "GAUC" in out and "logloss" in out
    assert out_png.stat().st_size > 10_000
    rows, _ = compare.gather(client, EXPERIMENT, MODEL)
    assert {r.blessed for r in rows} == {True, False}
    # the experiment holds the review view the printed link opens (the UI's shared view state)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert (f"/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey=feedrank-review") in out
    envelope = json.loads(exp.tags["mlflow.sharedViewState.feedrank-review"])
    assert envelope["name"] == "feedrank review" and isinstance(envelope["createdAt"], int)
    view = json.loads(envelope["state"])
    assert view["columnOrder"][:5] == ["metrics.`auc`", "metrics.`gauc`", "metrics.`logloss`",
                                       "metrics.`tfma_calibration`", "params.`model_family`"]
    assert view["orderByKey"] == "metrics.`auc`" and view["orderByAsc"] is False


@pytest.mark.e2e
def test_cli_reports_an_unreachable_server_in_one_line(config_file, tmp_path, capsys):
    raw = yaml.safe_load(open(config_file))
    raw["mlflow"]["tracking_uri"] = f"http://127.0.0.1:{server.free_port()}"
    path = tmp_path / "down.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert pipeline.main(["compare", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    errors = _error_lines(err)
    assert len(errors) == 1 and "not reachable" in errors[0] and "Traceback" not in err, err


@pytest.mark.e2e
def test_concurrent_loggers_lose_nothing(client, tmp_path):
    """Two threads log to one server at once; both create the experiment and the registered model."""
    model_dir = tmp_path / "pushed"
    (model_dir / "variables").mkdir(parents=True)
    (model_dir / "saved_model.pb").write_bytes(b"pb")
    (model_dir / "variables" / "variables.index").write_bytes(b"ix")
    n_metrics, n_epochs = 300, 15

    def candidate(i):
        return cand_lib.Candidate(
            run_name=f"concurrent-{i}", params={f"p{j}": str(j * i) for j in range(120)},
            metrics={f"auc.slice.s{j}": (i + j) / 1000 for j in range(n_metrics)},
            curves=[{"epoch": e, "train_loss": 1.0 / e, "eval_auc": 0.5 + e / 100} for e in range(1, n_epochs + 1)],
            tags={"tfx.run_id": f"t{i}"}, blessed=True, pushed=True, pushed_dir=str(model_dir),
            pushed_version=str(i))

    results, errors = {}, []
    barrier = threading.Barrier(2)

    def log(i):
        try:
            barrier.wait()
            results[i] = cand_lib.log_candidate(cand_lib.client_for(client.tracking_uri), "concurrent",
                                                candidate(i), registered_model="concurrent-model")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=log, args=(i,)) for i in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    for i in (1, 2):
        run = client.get_run(results[i]["run_id"])
        assert len(run.data.params) >= 120 and run.data.params["p7"] == str(7 * i)
        assert sum(k.startswith("auc.slice.") for k in run.data.metrics) == n_metrics
        assert len(client.get_metric_history(run.info.run_id, "eval_auc")) == n_epochs
        assert run.info.status == "FINISHED"
    versions = client.search_model_versions("name = 'concurrent-model'")
    assert sorted(v.run_id for v in versions) == sorted(r["run_id"] for r in results.values())
    assert len({r["experiment_id"] for r in results.values()}) == 1
    newest = max(int(v.version) for v in versions)
    assert int(client.get_model_version_by_alias("concurrent-model", "challenger").version) == newest


@pytest.mark.e2e
def test_challenger_ends_on_the_newest_version_under_racing_writers(client):
    """Six writers move the alias at once, one of them for an old version: no error, newest wins."""
    name = "alias-race-model"
    client.create_registered_model(name)
    run = client.create_run(cand_lib.get_or_create_experiment(client, "alias-race"))
    versions = [int(client.create_model_version(name, f"runs:/{run.info.run_id}/m", run_id=run.info.run_id).version)
                for _ in range(6)]
    errors, barrier = [], threading.Barrier(len(versions))

    def move(v):
        try:
            barrier.wait()
            cand_lib.move_challenger(client, name, v)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=move, args=(v,)) for v in versions]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    assert int(client.get_model_version_by_alias(name, "challenger").version) == max(versions)
    # A slow writer that lands an older version last is corrected by the next move.
    client.set_registered_model_alias(name, "challenger", str(versions[0]))
    cand_lib.move_challenger(client, name, versions[0])
    assert int(client.get_model_version_by_alias(name, "challenger").version) == max(versions)



def _push_versions(push_dir):
    from feedrank.push import store

    assert not [e for e in os.listdir(push_dir) if e.startswith(store.STAGING_PREFIX)]
    return store.complete_versions(push_dir)


@pytest.mark.e2e
def test_identical_rerun_pushes_and_registers_nothing_new(unblessed_run, blessed_run, cfg, client):
    """After a blessed and an unblessed run of the same Trainer output, a third, identical run
    reuses the pushed version and the registered one; the unblessed run pushed nothing."""
    first, first_run = blessed_run
    versions_before = client.search_model_versions(f"name = '{MODEL}'")
    assert _push_versions(cfg.push_dir) == [first["push"]["path"].rsplit("/", 1)[-1]]  # unblessed: no push
    summary = pipeline.run(cfg)
    assert summary["status"] == "succeeded", summary.get("failure")
    assert summary["blessing"]["blessed"] is True, summary["blessing"]
    assert summary["push"] == first["push"]
    assert _push_versions(cfg.push_dir) == [first["push"]["path"].rsplit("/", 1)[-1]]
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert sorted(v.version for v in versions) == sorted(v.version for v in versions_before)
    rerun = _runs(client)[-1]
    registered = client.get_model_version(MODEL, first_run.data.tags["registered_version"])
    fingerprint = registered.tags[cand_lib.FINGERPRINT_TAG]
    assert fingerprint.startswith("sha256:") and rerun.info.run_id != first_run.info.run_id
    assert rerun.data.tags[cand_lib.FINGERPRINT_TAG] == fingerprint
    assert rerun.data.tags["existing_version"] == registered.version
    assert rerun.data.tags["push_reused"] == "true" and "registered_version" not in rerun.data.tags
    assert f"already version {registered.version}" in rerun.data.tags["mlflow.note.content"]


@pytest.mark.e2e
def test_registry_outage_after_the_push_then_rerun_gives_one_push_one_version(
        cfg, blessed_run, tmp_path, monkeypatch):
    """The registry's server dies right after the Pusher: the run fails in the MlflowLogger with
    the model pushed.  The rerun registers that push (reused), not a new copy."""
    from feedrank.push import store

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    root, model = str(tmp_path / "registry"), MODEL + "-outage"
    outage = dataclasses.replace(cfg, push_root=str(tmp_path / "model_store"), mlflow=dataclasses.replace(
        cfg.mlflow, tracking_uri=server.ensure_server(root, port=0), registered_model=model))
    pushed, stop = [], threading.Event()

    def stop_registry_when_pushed():
        while not stop.is_set():
            if os.path.isdir(outage.push_dir) and store.complete_versions(outage.push_dir):
                pushed.extend(store.complete_versions(outage.push_dir))
                server.stop_server(root)
                return
            stop.wait(0.05)

    watcher = threading.Thread(target=stop_registry_when_pushed, daemon=True)
    watcher.start()
    try:
        failed = pipeline.run(outage)
    finally:
        stop.set()
        watcher.join(30)
    assert pushed, "the Pusher never pushed"
    assert failed["status"] == "failed" and failed["failure"]["component"] == "MlflowLogger", failed
    assert failed["push"]["pushed"] and failed["push"]["path"].endswith("/" + pushed[0])

    url = server.ensure_server(root, port=0)  # the registry is back (same store, another port)
    try:
        again = pipeline.run(dataclasses.replace(
            outage, mlflow=dataclasses.replace(outage.mlflow, tracking_uri=url)))
        assert again["status"] == "succeeded", again.get("failure")
        assert again["push"] == failed["push"]
        assert _push_versions(outage.push_dir) == pushed
        registry_client = cand_lib.client_for(url)
        versions = registry_client.search_model_versions(f"name = '{model}'")
        assert len(versions) == 1, [(v.version, v.tags) for v in versions]
        mv = versions[0]
        assert mv.tags["pushed_version"] == pushed[0] and mv.tags["push_reused"] == "true"
        assert mv.tags["pushed_dir"] == failed["push"]["path"]
        assert registry_client.get_model_version_by_alias(model, "challenger").version == mv.version
    finally:
        server.stop_server(root)



@pytest.mark.e2e
def test_a_fingerprint_is_registered_once_and_reruns_say_which_version(client, tmp_path):
    model_dir = tmp_path / "pushed"
    model_dir.mkdir()
    (model_dir / "saved_model.pb").write_bytes(b"pb")
    name = "fingerprint-model"

    def log(i, fingerprint):
        cand = cand_lib.Candidate(run_name=f"fp-{i}", params={}, metrics={"auc": 0.7}, tags={}, blessed=True,
                                  pushed=True, pushed_dir=str(model_dir), pushed_version="1",
                                  model_fingerprint=fingerprint, description=f"candidate {i}")
        return cand_lib.log_candidate(client, "fingerprints", cand, registered_model=name)

    first, again, other = log(1, "sha256:aa"), log(2, "sha256:aa"), log(3, "sha256:bb")
    assert first["registered_version"] == "1" and first["existing_version"] is None
    assert again["registered_version"] is None and again["existing_version"] == "1"
    assert other["registered_version"] == "2"
    assert sorted(v.tags[cand_lib.FINGERPRINT_TAG] for v in client.search_model_versions(f"name = '{name}'")) \
        == ["sha256:aa", "sha256:bb"]
    tags = client.get_run(again["run_id"]).data.tags
    assert tags["existing_version"] == "1" and "registered_version" not in tags
    assert tags["mlflow.note.content"].startswith("candidate 2") and "already version 1" in tags["mlflow.note.content"]
    assert client.get_run(again["run_id"]).info.status == "FINISHED"
    assert cand_lib.version_with_fingerprint(client, name, "sha256:bb") == "2"
    assert cand_lib.version_with_fingerprint(client, "no-such-model", "sha256:aa") is None


# Fast checks, no server.

def test_metric_names_are_mlflow_safe():
    from mlflow.utils.validation import _validate_metric_name

    assert cand_lib.safe_name("auc", "category_id", "jobs/sales") == "auc.category_id.jobs-sales"
    for raw in ("a b/c", "x:y..z", "../etc", "ü@#"):
        _validate_metric_name(cand_lib.safe_name("auc", "f", raw))


def test_the_executor_checks_the_blessing_itself(tmp_path):
    from tfx.types import standard_artifacts

    from feedrank.tracking.collect import check_blessing

    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    os.makedirs(blessing.uri)
    pushed = standard_artifacts.PushedModel()
    pushed.set_int_custom_property("pushed", 1)
    pushed.set_string_custom_property("pushed_destination", str(tmp_path / "model_store" / "1"))

    blessing.set_int_custom_property("blessed", 1)
    assert check_blessing(model, blessing, pushed)[:2] == (False, True)  # no BLESSED marker file
    open(os.path.join(blessing.uri, "BLESSED"), "w").close()
    blessing.set_string_custom_property("current_model", str(tmp_path / "other_model"))
    blessed, _, reason = check_blessing(model, blessing, pushed)
    assert not blessed and "another model" in reason
    blessing.set_string_custom_property("current_model", model.uri)
    assert check_blessing(model, blessing, pushed)[:2] == (True, True)
    pushed.set_int_custom_property("pushed", 0)
    assert check_blessing(model, blessing, pushed)[:2] == (True, False)
    assert check_blessing(model, None, pushed)[:2] == (False, False)


def test_the_logger_is_never_served_from_the_cache(tmp_path):
    """Each pipeline build gives the logger a fresh run_nonce, part of its cache key."""
    cfg = config_lib.load(os.path.join(ROOT, "configs", "tiny.yaml"))
    cfg = dataclasses.replace(cfg, input_base=str(tmp_path), run_root=str(tmp_path / "runs"),
                              mlflow=dataclasses.replace(cfg.mlflow, tracking_uri="http://127.0.0.1:1"))

    def nonce():
        logger = next(c for c in pipeline.create_pipeline(cfg).components if c.id == "MlflowLogger")
        return logger.exec_properties["run_nonce"]

    assert nonce() != nonce()


def test_register_refuses_an_unblessed_candidate():
    cand = cand_lib.Candidate(run_name="x", params={}, metrics={}, tags={}, blessed=False, pushed=True,
                              pushed_dir="/tmp/x")
    with pytest.raises(TrackingError, match="refusing to register"):
        cand_lib.register(object(), "m", "run", cand)


@pytest.mark.e2e
def test_a_cached_rerun_of_an_older_model_is_the_challenger_again(client, tmp_path):
    """demo (DIN, v1) -> a GBDT run (v2) -> the DIN run again from the cache: no new version,
    and ``challenger`` names the DIN's v1, not the newest version (the GBDT)."""
    name = "rerun-model"

    def candidate(tag: str):
        pushed = tmp_path / tag
        (pushed / "variables").mkdir(parents=True, exist_ok=True)
        (pushed / "saved_model.pb").write_bytes(tag.encode())
        return cand_lib.Candidate(run_name=tag, params={"family": tag}, metrics={"auc": 0.7}, curves=[],
                                  tags={"model_family": tag}, blessed=True, pushed=True,
                                  pushed_dir=str(pushed), pushed_version="1", model_fingerprint=f"fp-{tag}")

    first = cand_lib.log_candidate(client, "rerun", candidate("din"), registered_model=name)
    second = cand_lib.log_candidate(client, "rerun", candidate("gbdt"), registered_model=name)
    assert (first["registered_version"], second["registered_version"]) == ("1", "2")
    assert client.get_model_version_by_alias(name, "challenger").version == "2"
    again = cand_lib.log_candidate(client, "rerun", candidate("din"), registered_model=name)
    assert (again["registered_version"], again["existing_version"]) == (None, "1")
    assert len(client.search_model_versions(f"name = '{name}'")) == 2
    assert client.get_model_version_by_alias(name, "challenger").version == "1"


@pytest.mark.e2e
def test_a_server_that_goes_away_mid_logging_is_one_line_naming_mlflow_and_its_url(tmp_path, monkeypatch):
    """The logger's path: the server answers the reachability check, then stops; the logging
    fails within the bounded retries with a TrackingError naming MLflow and the URL."""
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, "0")   # recorded, so the test's own setting is undone after it
        monkeypatch.delenv(name)
    root = str(tmp_path / "mlflow")
    url = server.ensure_server(root)
    server.check_reachable(url)
    client = cand_lib.client_for(url)
    cand_lib.get_or_create_experiment(client, "outage")
    assert server.stop_server(root)
    server.fail_fast()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    cand = cand_lib.Candidate(run_name="r", params={}, metrics={"auc": 0.7}, tags={}, blessed=False,
                              pushed=False)
    with pytest.raises(TrackingError) as err:
        with server.answering(url, "logging the candidate run"):
            cand_lib.log_candidate(client, "outage", cand)
    message = str(err.value)
    assert message.startswith(f"MLflow tracking server {url} stopped answering while logging the candidate run")
    assert "\n" not in message
    # An error of a server that still answers passes through unchanged.
    with pytest.raises(KeyError):
        with server.answering("sqlite:///nowhere.db", "reading"):
            raise KeyError("x")


@pytest.mark.e2e
def test_a_registered_version_is_an_mlflow_model_that_mlflow_models_serve_answers(blessed_run, client, mlflow_url,
                                                                                   tmp_path):
    """``mlflow models serve -m models:/<name>@champion`` (stock MLflow, this environment; the blessed
    challenger promoted first) answers the version's own input example with the scores of the pushed
    SavedModel's ``serving_default``, and a request missing a column with a 4xx naming it."""
    import mlflow
    import tensorflow as tf

    from feedrank.tracking import pyfunc_model

    registry.promote(client, MODEL, alias="challenger")
    mv = client.get_model_version_by_alias(MODEL, "champion")
    local = mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(tmp_path / "m"),
                                                tracking_uri=mlflow_url)
    model = mlflow.pyfunc.load_model(local)
    example = model.input_example
    assert list(model.metadata.get_input_schema().input_names()) == list(example.columns)
    expected = pyfunc_model.ranking_signature(mv.tags["pushed_dir"])(
        **{k: tf.constant(v) for k, v in pyfunc_model.tensors_of(
            example, dict(pyfunc_model.ranking_signature(mv.tags["pushed_dir"]).structured_input_signature[1])
        ).items()})
    expected = next(iter(expected.values())).numpy().reshape(-1)
    assert model.predict(example)["probability"].tolist() == pytest.approx(expected.tolist(), abs=1e-6)

    port = server.free_port()
    # mlflow models serve execs `uvicorn` from PATH: the environment's bin directory, as an activated venv has it
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_url,
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    log_file = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, open(tmp_path / "serve.log").read()[-3000:]
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, open(tmp_path / "serve.log").read()[-3000:]
            time.sleep(1)
        records = json.loads(example.to_json(orient="records"))
        r = requests.post(f"{url}/invocations", json={"dataframe_records": records}, timeout=30)
        assert r.status_code == 200, r.text
        got = [row["probability"] if isinstance(row, dict) else row for row in r.json()["predictions"]]
        assert got == pytest.approx(expected.tolist(), abs=1e-6)
        broken = [{k: v for k, v in row.items() if k != "item_id"} for row in records]
        r = requests.post(f"{url}/invocations", json={"dataframe_records": broken}, timeout=30)
        assert 400 <= r.status_code < 500 and "item_id" in r.text, (r.status_code, r.text[:500])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log_file.close()


@pytest.mark.e2e
def test_aliases_are_shown_set_and_cleared_by_hand(blessed_run, config_file, client, capsys):
    version = client.get_model_version_by_alias(MODEL, "challenger").version
    assert pipeline.main(["alias", "clear", "challenger", "--config", config_file]) == 0
    assert f"alias 'challenger' cleared (it named version {version})" in capsys.readouterr().out
    assert pipeline.main(["alias", "show", "--config", config_file]) == 0
    assert f"{MODEL}: challenger is not set" in capsys.readouterr().out
    assert pipeline.main(["alias", "set", "challenger", "--version", version, "--config", config_file]) == 0
    assert pipeline.main(["alias", "set", "champion", "--version", version, "--config", config_file]) == 0
    capsys.readouterr()
    assert pipeline.main(["alias", "show", "--config", config_file]) == 0
    out = capsys.readouterr().out
    assert f"champion -> version {version}" in out and f"challenger -> version {version}" in out
    assert pipeline.main(["alias", "set", "challenger", "--version", "99", "--config", config_file]) == 2
    assert pipeline.main(["alias", "set", "champion", "--config", config_file]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 2 and "version 99" in errors[0] and "needs --version N" in errors[1], errors


@pytest.mark.e2e
def test_the_default_registered_name_says_what_the_model_does_and_an_old_registry_is_named(
        config_file, client, tmp_path, capsys, caplog):
    """Without ``mlflow.registered_model`` the name is ``<pipeline>-ranker`` whatever the family;
    a registry whose versions sit under the old ``<pipeline>-din`` gets one warning naming both
    names and the ``--set`` that keeps using it, and that ``--set`` silences it."""
    raw = yaml.safe_load(open(config_file))
    raw["mlflow"]["registered_model"] = ""
    raw["trainer"] = {**raw.get("trainer", {}), "model": "gbdt"}
    unnamed = tmp_path / "unnamed.yaml"
    unnamed.write_text(yaml.safe_dump(raw))
    from feedrank.tracking import registered_model_name

    assert registered_model_name(config_lib.load(str(unnamed))) == "feedrank-mlflow-ranker"
    client.create_registered_model("feedrank-mlflow-din")
    with caplog.at_level("WARNING", logger="feedrank.tracking"):
        pipeline.main(["alias", "show", "--config", str(unnamed)])
    warnings = [r.getMessage() for r in caplog.records if r.name == "feedrank.tracking"]
    assert len(warnings) == 1, warnings
    assert ("'feedrank-mlflow-ranker' does not exist, but 'feedrank-mlflow-din' does" in warnings[0]
            and "--set mlflow.registered_model=feedrank-mlflow-din" in warnings[0])
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level("WARNING", logger="feedrank.tracking"):
        assert pipeline.main(["alias", "show", "--config", str(unnamed),
                              "--set", "mlflow.registered_model=feedrank-mlflow-din"]) == 0
    assert not [r for r in caplog.records if r.name == "feedrank.tracking"]
    assert "feedrank-mlflow-din: champion is not set" in capsys.readouterr().out
