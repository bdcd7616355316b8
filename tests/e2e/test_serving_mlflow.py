"""The predictor resolves ``models:/<name>@champion`` from a real MLflow server.

The registered version's source is the pushed SavedModel logged to the run as
an MLflow model, as the tracking code registers a local push
(`feedrank.tracking.pyfunc_model.version_source`); its ``pushed_dir`` tag
points nowhere here, so the predictor has to download it over MLflow's REST
API, find the SavedModel inside, then serve it.
"""
import os

import numpy as np
import pytest
import requests

from feedrank.tracking import candidate as cand_lib
from feedrank.tracking import pyfunc_model, server
from serving.common import procs
from serving.predictor import payloads as P
from serving.predictor import store

pytestmark = pytest.mark.e2e

MODEL = "feedrank-serving-test"


@pytest.fixture(scope="module")
def registry(first_run, tmp_path_factory):
    """(MLflow URL, registered version, pushed dir) with the alias champion set."""
    _, summary = first_run
    pushed = summary["push"]["path"]
    root = tmp_path_factory.mktemp("mlflow_serving")
    url = server.ensure_server(str(root), port=0)
    client = cand_lib.client_for(url)
    exp = client.create_experiment("serving-test")
    run = client.create_run(exp)
    source = pyfunc_model.version_source(client, run.info.run_id, pushed, "pushed_model")
    assert source == f"runs:/{run.info.run_id}/model"
    client.create_registered_model(MODEL)
    mv = client.create_model_version(MODEL, source, run_id=run.info.run_id,
                                     tags={"blessed": "true", "pushed_dir": str(root / "not-here")})
    client.set_registered_model_alias(MODEL, "champion", mv.version)
    try:
        yield url, str(mv.version), pushed, run.info.run_id
    finally:
        server.stop_server(str(root))


def test_champion_alias_resolves_downloads_and_serves(registry, tmp_path):
    url, version, pushed, _ = registry
    got_version, path = store.resolve_mlflow(f"models:/{MODEL}@champion", url, str(tmp_path / "cache"))
    assert got_version == version and os.path.isfile(os.path.join(path, "saved_model.pb"))

    port = procs.free_port()
    log = str(tmp_path / "predictor.log")
    proc = procs.start_server("serving.predictor", [
        "--model-uri", f"models:/{MODEL}@champion", "--tracking-uri", url, "--model-name", "champ",
        "--http-port", str(port), "--cache-dir", str(tmp_path / "cache2")], log)
    try:
        procs.wait_ready(f"http://127.0.0.1:{port}/v2/models/champ/ready", 240, proc, log)
        user, cands = P.synthetic(7, 10)
        r = requests.post(f"http://127.0.0.1:{port}/v1/models/champ:predict", json=P.v1_body(user, cands))
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == version
        import tensorflow as tf

        fn = tf.saved_model.load(pushed).signatures["serving_default"]
        feed = {k: tf.constant([v] if isinstance(v, list) else [v]) for k, v in user.items()}
        feed.update({k: tf.constant(v, tf.string if isinstance(v[0], str) else tf.float32)
                     for k, v in cands.items()})
        want = fn(**feed)["probabilities"].numpy()
        np.testing.assert_allclose(r.json()["outputs"]["probabilities"], want, rtol=1e-5, atol=1e-6)
    finally:
        procs.stop(proc)


def test_an_unblessed_version_is_refused(registry, tmp_path):
    url, _, _, run_id = registry
    client = cand_lib.client_for(url)
    mv = client.create_model_version(MODEL, f"runs:/{run_id}/model", run_id=run_id,
                                     tags={"blessed": "false"})
    client.set_registered_model_alias(MODEL, "candidate", mv.version)
    with pytest.raises(store.ModelSourceError, match="not blessed"):
        store.resolve_mlflow(f"models:/{MODEL}@candidate", url, str(tmp_path))
