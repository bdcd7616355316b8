"""The baseline component against a REAL `mlflow server` (tests/helpers/mlflow_server.py's fixtures).

Registry versions are logged and promoted the way the pipeline and
`pipeline.py promote` do it; the pushed models are small real SavedModels
(tests/helpers/gates.py) told apart by the factor they predict with.
"""
import logging
import os
import shutil

import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

from components.baseline.champion import champion_key
from components.baseline.component import (
    BASELINE_FILE,
    SERVING_SUBDIR,
    Executor,
    LatestBlessedModel,
    foreign_columns,
)
from feedrank import features as F
from feedrank.evaluate import gates
from feedrank.tracking import candidate as cand_lib
from feedrank.tracking import registry, server
from tests.helpers import gates as H

EXPERIMENT = "feedrank-baseline-test"
MODEL, MODEL_NO_CHAMPION, MODEL_REMOTE = "baseline-test-shared", "baseline-test-no-champion", "baseline-test-src"


def _register(client, model, family, pushed_dir):
    cand = cand_lib.Candidate(run_name=f"{family}-{os.path.basename(pushed_dir)}", params={}, metrics={},
                              tags={"model_family": family}, blessed=True, pushed=True, pushed_dir=pushed_dir,
                              pushed_version=os.path.basename(pushed_dir))
    return cand_lib.log_candidate(client, EXPERIMENT, cand, registered_model=model)["registered_version"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, client):
    """din pushes 100 (x1.0) and 300 (x1.2, the newest); a dien push 200 (x1.5), the champion of MODEL."""
    root = tmp_path_factory.mktemp("baseline") / "model_store"
    for family, version, scale in (("din", "100", 1.0), ("din", "300", 1.2), ("dien", "200", 1.5)):
        H.save_scaled_model(str(root / family / version), scale)
    assert _register(client, MODEL, "din", str(root / "din" / "100")) == "1"
    assert _register(client, MODEL, "dien", str(root / "dien" / "200")) == "2"
    registry.promote(client, MODEL, version=2)
    _register(client, MODEL_NO_CHAMPION, "din", str(root / "din" / "100"))  # challenger only
    return root


def _run(tmp_path, push_dir, uri, model, declared: str = ""):
    art = standard_artifacts.Model()
    art.uri = str(tmp_path / "baseline_model")
    os.makedirs(art.uri, exist_ok=True)
    out = {"model": [art]}
    Executor().Do({}, out, {"push_dir": str(push_dir), "tracking_uri": uri, "registered_model": model,
                            "declared_features": declared})
    return out["model"]


def _props(art):
    return {k: art.get_string_custom_property(k) for k in ("source", "version", "registered_model", "family", "path")}


def _scale(art):
    return float(tf.saved_model.load(os.path.join(art.uri, SERVING_SUBDIR)).scale.numpy())


def test_the_champion_of_another_family_is_the_baseline(store, mlflow_url, tmp_path):
    [art] = _run(tmp_path, store / "din", mlflow_url, MODEL)
    assert _props(art) == {"source": "champion", "version": "2", "registered_model": MODEL, "family": "dien",
                           "path": str(store / "dien" / "200")}
    assert _scale(art) == pytest.approx(1.5)  # dien's model, not the newest din push
    record = gates._read_json(os.path.join(art.uri, BASELINE_FILE))
    assert gates.baseline_label(record) == "champion v2 (dien)"


def test_a_champion_whose_push_is_not_readable_is_downloaded_from_its_source(store, client, mlflow_url,
                                                                              tmp_path):
    elsewhere = tmp_path / "other_machine" / "dien" / "400"
    H.save_scaled_model(str(elsewhere), 0.7)
    version = _register(client, MODEL_REMOTE, "dien", str(elsewhere))  # logs a copy under the run
    registry.promote(client, MODEL_REMOTE, version=int(version))
    shutil.rmtree(tmp_path / "other_machine")
    [art] = _run(tmp_path, store / "din", mlflow_url, MODEL_REMOTE)
    props = _props(art)
    assert props["source"] == "champion" and props["version"] == version
    assert props["path"].startswith("runs:/") and props["path"].endswith("/pushed_model")
    assert _scale(art) == pytest.approx(0.7)


def test_no_champion_means_the_newest_push(store, mlflow_url, tmp_path, caplog):
    for model in (MODEL_NO_CHAMPION, "baseline-test-never-registered"):
        with caplog.at_level(logging.INFO, logger="components.baseline.component"):
            [art] = _run(tmp_path / model, store / "din", mlflow_url, model)
        assert _props(art) == {"source": "latest_push", "version": "300", "registered_model": "",
                               "family": "din", "path": str(store / "din" / "300")}
        assert _scale(art) == pytest.approx(1.2)
        assert f"{model} has no 'champion' alias" in caplog.text
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        caplog.clear()


def test_an_unreachable_registry_means_the_newest_push_with_a_warning(store, tmp_path, caplog):
    down = f"http://127.0.0.1:{server.free_port()}"
    with caplog.at_level(logging.INFO, logger="components.baseline.component"):
        [art] = _run(tmp_path, store / "din", down, MODEL)
    assert _props(art)["source"] == "latest_push" and _props(art)["version"] == "300"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "MLflow registry is unreachable" in warnings[0] and down in warnings[0]
    assert "newest blessed push" in warnings[0]
    assert champion_key(down, MODEL) == "unknown"


def test_nothing_served_and_nothing_pushed_means_no_baseline(mlflow_url, tmp_path):
    assert _run(tmp_path, tmp_path / "empty_store" / "din", mlflow_url, "baseline-test-never-registered") == []


def test_the_cache_key_follows_the_champion(store, client, mlflow_url):
    def props():
        return LatestBlessedModel(push_dir=str(store / "din"), tracking_uri=mlflow_url,
                                  registered_model=MODEL).exec_properties

    assert props()["champion"] == f"{MODEL}@champion=v2" and props()["expected_version"] == "300"
    registry.promote(client, MODEL, version=1)
    try:
        assert props()["champion"] == f"{MODEL}@champion=v1"
    finally:
        registry.promote(client, MODEL, version=2)
    assert LatestBlessedModel(push_dir=str(store / "din")).exec_properties["champion"] == "none"


def test_a_baseline_reading_columns_this_run_lacks_is_skipped_in_one_line(tmp_path, caplog):
    """A push that declared ``items.title`` (tokens) cannot score examples without it; one that
    reads a subset of this run's columns can."""
    title = F.Declared("items", "title", "tokens")
    area = F.Declared("items", "area_m2", "numeric")
    H.save_scaled_model(str(tmp_path / "store" / "din" / "7"), 1.0)
    F.FeatureSpec((title,)).write(str(tmp_path / "store" / "din" / "7"))
    with caplog.at_level(logging.INFO, logger="components.baseline.component"):
        assert _run(tmp_path / "a", tmp_path / "store" / "din", "", "", F.FeatureSpec((area,)).to_json()) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["baseline: latest_push v7 (din) reads declared column(s) items.title (tokens) that this "
                        "run's examples do not hold, so it cannot score them: the candidate is judged without a "
                        "baseline (no change threshold)"]
    [art] = _run(tmp_path / "b", tmp_path / "store" / "din", "", "", F.FeatureSpec((area, title)).to_json())
    assert _props(art)["version"] == "7"


def test_foreign_columns_compare_table_column_and_kind():
    spec = F.FeatureSpec((F.Declared("items", "a", "numeric"), F.Declared("users", "b", "categorical")))
    assert foreign_columns(spec, spec) == [] and foreign_columns(F.BUILTIN, spec) == []
    other = F.FeatureSpec((F.Declared("items", "a", "categorical"), F.Declared("items", "b", "categorical")))
    assert foreign_columns(other, spec) == ["items.a (categorical)", "items.b (categorical)"]
