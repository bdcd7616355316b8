"""The session pipeline (mode: session) end to end, under LocalDagRunner on a tiny simulated shop.

One module-scoped run of configs/session_tiny.yaml blesses and pushes a DRNN; a second run on
the same data with a top-10 floor no model reaches refuses to bless it and pushes nothing; the
raw export, loaded in a fresh process, gives the in-memory model's top k on the same prefixes.
"""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pipeline
from feedrank import config as config_lib
from tests.helpers.config import ROOT

pytestmark = pytest.mark.e2e

SESSION_TINY = os.path.join(ROOT, "configs", "session_tiny.yaml")


def session_config(tmp, data_dir, **evaluator):
    """configs/session_tiny.yaml with every output in ``tmp`` and MLflow straight into SQLite."""
    cfg = config_lib.load(SESSION_TINY)
    mlflow = dataclasses.replace(cfg.mlflow, tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    return dataclasses.replace(cfg, input_base=str(data_dir), run_root=str(tmp / "runs"),
                               push_root=str(tmp / "model_store"), mlflow=mlflow,
                               evaluator=dataclasses.replace(cfg.evaluator, **evaluator))


def versions(push_dir):
    return sorted(os.listdir(push_dir)) if os.path.isdir(push_dir) else []


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    from feedrank.events.simulator.ecommerce_io import simulate_ecommerce

    out = tmp_path_factory.mktemp("shop") / "shop"
    simulate_ecommerce(str(out), **config_lib.load(SESSION_TINY).simulate.ecommerce_kwargs())
    return out


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, shop):
    tmp = tmp_path_factory.mktemp("session_e2e")
    cfg = session_config(tmp, shop)
    return tmp, cfg, pipeline.run(cfg)


def test_session_run_blesses_and_pushes_a_drnn(first_run):
    _, cfg, summary = first_run
    assert summary["status"] == "succeeded", summary.get("failure")
    assert all(c["state"] == "COMPLETE" for c in summary["components"].values()), summary["components"]
    for name in ("SessionSampleGen", "AnomaliesGate", "Transform", "Trainer", "SessionEvaluator", "Pusher",
                 "MlflowLogger"):
        assert name in summary["components"], name
    assert summary["blessing"]["blessed"] is True, summary["blessing"]
    assert "floor" in summary["blessing"]["reason"]
    m = summary["session_metrics"]["candidate"]
    assert m["top10"] >= cfg.evaluator.top10_floor and 0 <= m["top1"] <= m["top10"] <= 1
    assert 0 < m["mrr@20"] <= m["recall@20"] <= 1 and 0 < m["path_compression"] <= 1
    push = summary["push"]
    assert push["pushed"] and push["path"].startswith(os.path.abspath(cfg.push_dir))
    assert os.path.exists(os.path.join(push["path"], "saved_model.pb"))
    info = json.load(open(os.path.join(push["path"], "session_model.json")))
    assert info["model"] == "drnn" and info["k"] == cfg.sessions.top_k and info["raw"] is True
    assert info["gap_s"] == cfg.sessions.gap_s and info["k_pages"] == cfg.sessions.k
    assert set(info["inputs"]) == {"pages", "dwell", "purchases", "user_id"}

    from feedrank.evaluate.mlmd_reader import latest_run

    run = latest_run(cfg.metadata_path)
    logged = run.read_json("MlflowLogger", "mlflow_run", "mlflow_run.json")
    assert logged["blessed"] and logged["pushed"] and logged["registered_version"] == "1"


def test_a_floor_too_high_refuses_to_bless_and_nothing_is_pushed(first_run, shop):
    tmp, cfg, first = first_run
    before = versions(cfg.push_dir)
    assert len(before) == 1
    strict = dataclasses.replace(cfg, evaluator=dataclasses.replace(cfg.evaluator, top10_floor=0.999))
    summary = pipeline.run(strict)
    assert summary["status"] == "succeeded", summary.get("failure")
    b = summary["blessing"]
    assert b["blessed"] is False
    assert "< floor 0.9990: FAIL" in b["reason"], b["reason"]
    # The first run's push is the baseline now: compared against, and nothing new in the store.
    assert summary["session_metrics"]["baseline"] is not None and b["baseline"]
    assert summary["push"]["pushed"] is False
    assert versions(cfg.push_dir) == before


def test_raw_export_in_a_fresh_process_gives_the_in_memory_top_k(first_run, tmp_path):
    import tensorflow_transform as tft

    from feedrank.evaluate.mlmd_reader import latest_run
    from feedrank.sessions import drnn, evaluate, export, trainer

    _, cfg, _ = first_run
    run = latest_run(cfg.metadata_path)
    tft_output = tft.TFTransformOutput(run.artifact("Transform", "transform_graph").uri)
    train_files = [os.path.join(run.artifact("Transform", "transformed_examples").uri, "Split-train", "*")]
    settings = dataclasses.replace(cfg.trainer, epochs=1)
    model, _ = trainer.train(settings, train_files, tft_output)
    path = trainer.export(model, tft_output, str(tmp_path / "served"), cfg.sessions.top_k)

    # In memory: the samples encoded in Python (drnn.from_samples) with the Transform's catalogue ids.
    catalogue = [v.decode() for v in tft_output.vocabulary_by_name("pages")]
    ids = {v: i + 1 for i, v in enumerate(catalogue)}
    samples = evaluate.read_split(run.artifact("SessionSampleGen", "examples").uri, "eval")
    known = [s for s in samples if len(s["label_items"]) <= 1][:150]
    assert len(known) > 50
    known[0] = {**known[0], "recent_pages": known[0]["recent_pages"][:-1] + ["not-in-the-catalogue"]}   # OOV
    inputs, _, _, rows = drnn.from_samples(known, ids, cfg.sessions.max_pages, cfg.sessions.max_purchases,
                                           trainer.item_mask(tft_output))
    assert list(rows) == list(range(len(known)))
    out = export.top_k(model, {k: v for k, v in inputs.items()}, cfg.sessions.top_k)
    want_items = np.asarray([""] + catalogue + [""])[out["items"].numpy()]
    want_scores = out["scores"].numpy()

    # Served, in a fresh process: raw string ids, the vocabulary lookup in the graph.
    requests = [{"pages": s["history_pages"] + s["recent_pages"], "dwell": s["history_dwell_s"] + s["recent_dwell_s"],
                 "purchases": s["purchase_history"], "user_id": s["user_id"]} for s in known]
    req_file = tmp_path / "requests.json"
    req_file.write_text(json.dumps(requests))
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import tensorflow as tf
        reqs = json.load(open({str(req_file)!r}))
        def pad(rows, fill, dtype):
            out = np.full((len(rows), max(1, max(len(r) for r in rows))), fill, dtype=dtype)
            for i, r in enumerate(rows):
                out[i, len(out[i]) - len(r):] = r    # left padding: the graph compacts it
            return out
        fn = tf.saved_model.load({path!r}).signatures['serving_default']
        res = fn(pages=tf.constant(pad([r['pages'] for r in reqs], '', object)),
                 dwell=tf.constant(pad([r['dwell'] for r in reqs], 0.0, np.float32)),
                 purchases=tf.constant(pad([r['purchases'] for r in reqs], '', object)),
                 user_id=tf.constant([r['user_id'] for r in reqs]))
        every = tf.saved_model.load({path!r}).signatures['catalogue_scores'](
            pages=tf.constant(pad([r['pages'] for r in reqs], '', object)),
            dwell=tf.constant(pad([r['dwell'] for r in reqs], 0.0, np.float32)),
            purchases=tf.constant(pad([r['purchases'] for r in reqs], '', object)),
            user_id=tf.constant([r['user_id'] for r in reqs]))
        best = every['ids'].numpy().astype(str)[every['scores'].numpy().argmax(axis=1)]
        json.dump({{'items': res['items'].numpy().astype(str).tolist(),
                   'scores': res['scores'].numpy().tolist(), 'best': best.tolist(),
                   'sums': every['scores'].numpy().sum(axis=1).tolist()}}, sys.stdout)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout)
    assert np.asarray(served["items"]).shape == (len(known), cfg.sessions.top_k)
    np.testing.assert_array_equal(np.asarray(served["items"]), want_items)
    np.testing.assert_allclose(np.asarray(served["scores"]), want_scores, rtol=1e-4, atol=1e-6)
    assert served["best"] == [row[0] for row in served["items"]]          # the whole catalogue's best is the top 1
    np.testing.assert_allclose(served["sums"], 1.0, atol=1e-4)


def test_session_pipeline_compiles_for_kubeflow_and_loads_with_kfp(tmp_path):
    import yaml
    from google.protobuf import json_format
    from kfp import components
    from kfp.client.client import _extract_pipeline_yaml
    from kfp.pipeline_spec import pipeline_spec_pb2

    from feedrank.examples.tfdv_schema import write_config_schemas
    from feedrank.runners.kubeflow import compile_pipeline
    from feedrank.runners.kubeflow_config import load_kubeflow_config
    from feedrank.sessions.tfdv_schema import schema_path

    kf = load_kubeflow_config(os.path.join(ROOT, "configs", "kubeflow.yaml"))
    out = str(tmp_path / "session_pipeline.yaml")
    cfg = config_lib.load(os.path.join(ROOT, "configs", "session.yaml"))
    assert compile_pipeline(pipeline.create_pipeline, cfg, kf, out) == out
    with open(out) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())   # strict: no unknown fields
    assert spec.schema_version == "2.1.0"
    tasks = set(docs[0]["root"]["dag"]["tasks"])
    assert {"SessionSampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "AnomaliesGate",
            "Transform", "Trainer", "LatestBlessedModel", "SessionEvaluator", "Pusher", "MlflowLogger"} <= tasks
    assert _extract_pipeline_yaml(out).pipeline_spec == spec          # what kfp.Client uploads
    comp = components.load_component_from_file(out)                   # as a reusable graph component
    assert set(comp.component_spec.inputs) == {"input_base", "data_version", "trainer_config", "mlflow_tracking_uri"}
    params = docs[0]["root"]["inputDefinitions"]["parameters"]
    assert json.loads(params["trainer_config"]["defaultValue"])["model"] == "drnn"
    # The schema the package names is the one the image's write_config_schemas writes.
    assert schema_path(kf.schema_dir_in_image) in json.dumps(docs[0])
    local = write_config_schemas(str(tmp_path / "schema"), os.path.join(ROOT, "configs"))
    assert schema_path(str(tmp_path / "schema")) in local


@pytest.mark.parametrize("text, message", [
    ("mode: sessions\n", r"mode must be one of \['ranking', 'session'\], got 'sessions'"),
    ("sessions: {gap_s: 60}\n", "the sessions section applies only to mode: session"),
    ("mode: session\nsimulate: {mode: ecommerce}\nsessions: {gap: 60}\n", r"sessions: unknown key\(s\) \['gap'\]"),
    ("mode: session\nsimulate: {mode: ecommerce}\nsessions: {top_k: 10}\n", "sessions.top_k must be an integer >= 20"),
    ("mode: session\nsimulate: {mode: ecommerce}\nsessions: {eval_days: 0}\n", "sessions.eval_days must be"),
    ("mode: session\n", "set simulate.mode: ecommerce"),
    ("mode: session\nsimulate: {mode: ecommerce}\ntrainer: {model: din}\n", "trainer.model must be one of"),
    ("mode: session\nsimulate: {mode: ecommerce}\ntrainer: {drnn: {widht: 3}}\n", r"trainer.drnn: unknown key\(s\)"),
    ("mode: session\nsimulate: {mode: ecommerce}\ntrainer: {drnn: {num_items: 9}}\n",
     "trainer.drnn.num_items is set by the Transform's vocabularies"),
    ("mode: session\nsimulate: {mode: ecommerce}\nevaluator: {top10_floor: 2}\n",
     r"evaluator.top10_floor must be a number in \[0, 1\]"),
    ("mode: session\nsimulate: {mode: ecommerce}\nevaluator: {auc_floor: 0.6}\n",
     r"evaluator: unknown key\(s\) \['auc_floor'\]"),
])
def test_session_config_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.load(str(path))


def test_the_tuner_hook_puts_a_tuner_between_transform_and_the_trainer(tmp_path):
    pytest.importorskip("feedrank.tune.tuner")
    from feedrank.tune.settings import TunerSettings

    cfg = session_config(tmp_path, tmp_path / "shop")
    ids = [c.id for c in pipeline.create_pipeline(cfg).components]
    assert "Tuner" not in ids   # off by default
    cfg.tuner = TunerSettings(enabled=True, max_trials=2)
    components = {c.id: c for c in pipeline.create_pipeline(cfg).components}
    order = list(components)
    assert order.index("Transform") < order.index("Tuner") < order.index("Trainer")
    tuner, trainer = components["Tuner"], components["Trainer"]
    assert tuner.exec_properties["tuner_fn"] == "feedrank.tune.tuner.tuner_fn"
    assert trainer.inputs["hyperparameters"].producer_component_id == "Tuner"
    assert json.loads(tuner.exec_properties["custom_config"])["drnn"] == cfg.trainer.drnn
