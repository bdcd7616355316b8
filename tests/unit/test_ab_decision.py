"""`ab-report`, `promote --from-ab` and `rollback --previous` against a REAL `mlflow server`.

Registry: version 1 (blessed, the champion), 2 (blessed, the challenger), 3
(unblessed), each with its own run and a gs:// push dir. A/B run directories
are simulated from a synthetic truth pool (feedrank.ab.simulate.write_run),
with the served log naming the versions the arms served.
"""
import os

import pytest
import yaml

import pipeline
from feedrank.ab import CHALLENGER_ARM, CHAMPION_ARM, pool, simulate
from feedrank.tracking import candidate as cand_lib
from tests.helpers.config import ROOT

MODEL = "feedrank-ab-test"


@pytest.fixture(scope="module")
def registry(mlflow_url):  # noqa: F811
    client = cand_lib.client_for(mlflow_url)
    client.create_registered_model(MODEL)
    exp = client.create_experiment("ab-test")
    runs = {}
    for v, blessed in ((1, "true"), (2, "true"), (3, "false")):
        run_id = client.create_run(exp, tags={"blessed": blessed}).info.run_id
        client.set_terminated(run_id)
        client.create_model_version(MODEL, f"runs:/{run_id}/pushed_model", run_id=run_id,
                                    tags={"blessed": blessed, "pushed_dir": f"gs://feedrank-ml/model_store/din/{v}",
                                          "pushed_version": str(v)})
        runs[v] = run_id
    return client, runs


@pytest.fixture(scope="module")
def config_file(mlflow_url, tmp_path_factory):  # noqa: F811
    raw = yaml.safe_load(open(os.path.join(ROOT, "configs", "tiny.yaml")))
    tmp = tmp_path_factory.mktemp("ab")
    raw.update(run_root=str(tmp / "runs"), ab={"min_lift": 0.0, "max_p99_ms": 100.0, "max_error_rate": 0.01},
               mlflow={**(raw.get("mlflow") or {}), "tracking_uri": mlflow_url, "registered_model": MODEL})
    path = tmp / "ab.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="module")
def ab_pool():
    return pool.synthetic(users=1500, lift=0.25, seed=11)


def _ab_dir(tmp_path, ab_pool, name, challenger="2", **kw):
    out = str(tmp_path / name)
    simulate.write_run(ab_pool, out, seed=4, versions={CHAMPION_ARM: "1", CHALLENGER_ARM: challenger}, **kw)
    return out


def _aliases(client, champion, challenger):
    client.set_registered_model_alias(MODEL, "champion", str(champion))
    client.set_registered_model_alias(MODEL, "challenger", str(challenger))
    if "previous_champion" in (client.get_model_version(MODEL, str(challenger)).tags or {}):
        client.delete_model_version_tag(MODEL, str(challenger), "previous_champion")


def _cli(capsys, *argv):
    rc = pipeline.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, [line for line in err.splitlines() if line.startswith("error:")]


def _champion(client):
    return client.get_model_version_by_alias(MODEL, "champion").version


def test_ab_report_logs_to_the_challengers_run(registry, config_file, ab_pool, tmp_path, capsys):
    client, runs = registry
    _aliases(client, 1, 2)
    ab_dir = _ab_dir(tmp_path, ab_pool, "good")
    rc, out, errors = _cli(capsys, "ab-report", "--config", config_file, "--ab-dir", ab_dir)
    assert rc == 0 and not errors, errors
    assert "decision: PROMOTE" in out and f"logged to the challenger's MLflow run {runs[2]}" in out
    arts = {f.path for f in client.list_artifacts(runs[2], "ab")}
    assert {"ab/ab_report.json", "ab/ab_lift.png", "ab/ab_report.txt"} <= arts, arts
    run = client.get_run(runs[2])
    assert run.data.tags["ab.decision"] == "promote"
    m = run.data.metrics
    assert 0.0 < m["ab.lift_ctr_lo"] < m["ab.lift_ctr"] < m["ab.lift_ctr_hi"]
    assert "ab.challenger.p99_latency_ms" in m and not client.list_artifacts(runs[1], "ab")


def test_promote_from_ab_refuses_with_the_reason(registry, config_file, ab_pool, tmp_path, capsys):
    client, _ = registry
    _aliases(client, 1, 2)
    for name, kw, reason in (("slow", {"latency_ms": {CHAMPION_ARM: 20.0, CHALLENGER_ARM: 300.0}}, "p99 latency"),
                             ("errors", {"error_rate": {CHALLENGER_ARM: 0.05}}, "error rate"),
                             ("srm", {"drop_challenger_users": 0.25}, "sample-ratio mismatch"),
                             ("other-version", {"challenger": "7"}, "served model version(s) ['7']")):
        ab_dir = _ab_dir(tmp_path, ab_pool, name, **kw)
        rc, _, errors = _cli(capsys, "promote", "--config", config_file, "--from-ab", ab_dir)
        assert rc == 2 and len(errors) == 1 and reason in errors[0], (name, errors)
        assert "refusing to promote" in errors[0] and _champion(client) == "1"
    # No lift: an A/A run (the challenger's slots are the champion's).
    aa = ab_pool.copy()
    aa.loc[aa["arm"] == CHALLENGER_ARM, "p_click"] = aa.loc[aa["arm"] == CHAMPION_ARM, "p_click"].to_numpy()
    rc, _, errors = _cli(capsys, "promote", "--config", config_file, "--from-ab", _ab_dir(tmp_path, aa, "aa"))
    assert rc == 2 and "is not above ab.min_lift" in errors[0] and _champion(client) == "1"
    # A winning test of an unblessed challenger: the registry refuses.
    _aliases(client, 1, 3)
    rc, _, errors = _cli(capsys, "promote", "--config", config_file, "--from-ab",
                         _ab_dir(tmp_path, ab_pool, "unblessed", challenger="3"))
    assert rc == 2 and "not blessed" in errors[0] and _champion(client) == "1"
    rc, _, errors = _cli(capsys, "promote", "--config", config_file, "--from-ab", str(tmp_path / "missing"))
    assert rc == 2 and "does not exist" in errors[0]


def test_promote_from_ab_then_rollback_restores_the_previous_champion(registry, config_file, ab_pool, tmp_path,
                                                                      capsys):
    client, _ = registry
    _aliases(client, 1, 2)
    rc, out, errors = _cli(capsys, "promote", "--config", config_file, "--from-ab", _ab_dir(tmp_path, ab_pool, "win"))
    assert rc == 0 and not errors, errors
    assert "alias 'champion' -> version 2 (was version 1)" in out and _champion(client) == "2"
    assert client.get_model_version(MODEL, "2").tags["previous_champion"] == "1"

    out_dir = tmp_path / "rollback"
    rc, out, errors = _cli(capsys, "rollback", "--config", config_file, "--previous", "--out", str(out_dir))
    assert rc == 0 and not errors, errors
    assert "version 1 100%, no challenger" in out and "moved back from version 2 to version 1" in out
    assert _champion(client) == "1"
    assert client.get_model_version(MODEL, "2").tags["rolled_back_to"] == "1"
    isvc = yaml.safe_load(open(out_dir / "inferenceservice.yaml"))
    env = isvc["spec"]["predictor"]["containers"][0]["env"]
    assert {"name": "STORAGE_URI", "value": "gs://feedrank-ml/model_store/din/1"} in env

    # Version 1 replaced nobody: a second rollback refuses, renders nothing and moves nothing.
    rc, _, errors = _cli(capsys, "rollback", "--config", config_file, "--previous", "--out", str(tmp_path / "again"))
    assert rc == 2 and len(errors) == 1 and "no previous champion" in errors[0]
    assert _champion(client) == "1" and not (tmp_path / "again").exists()
