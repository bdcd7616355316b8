"""End to end: the real TFX pipeline under LocalDagRunner on a tiny simulated log.

One session-scoped run (`first_run` in conftest.py) is shared by the
blessing, model-contract, serving-contract and caching tests; the anomaly
test runs its own pipeline on data with a planted anomaly.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

import pipeline
from tests.helpers.config import e2e_config

pytestmark = pytest.mark.e2e

UPSTREAM = ["BehaviorExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
            "AnomaliesGate", "Transform", "Trainer"]


def test_run_blesses_and_pushes_a_model(first_run):
    cfg, summary = first_run
    assert summary["status"] == "succeeded", summary.get("failure")
    assert summary["blessing"]["blessed"] is True, summary["blessing"]
    push_path = summary["push"]["path"]
    assert summary["push"]["pushed"] and push_path.startswith(os.path.abspath(cfg.push_dir))
    assert os.path.exists(os.path.join(push_path, "saved_model.pb"))
    ev = summary["events"]
    assert ev["events_read"] == ev["events_used"] + ev["quarantined"]
    auc = summary["auc"]
    assert 0.5 < auc["auc"] <= 1.0 and 0.5 < auc["oracle_auc"] <= 1.0
    written = glob.glob(os.path.join(cfg.run_root, "*", "summary.json"))
    assert written and json.load(open(written[0]))["run_id"] == summary["run_id"]
    assert all(c["state"] == "COMPLETE" for c in summary["components"].values()), summary["components"]


def test_exact_metrics_are_the_loggers_and_match_a_fresh_scoring(first_run):
    """The eval split is scored once, by the MlflowLogger; the summary shows its
    ``exact_metrics.json``, and scoring the split again gives the same numbers."""
    cfg, summary = first_run
    from feedrank.evaluate import scoring
    from feedrank.evaluate.mlmd_reader import latest_run

    run = latest_run(cfg.metadata_path)
    written = run.read_json("MlflowLogger", "mlflow_run", "exact_metrics.json")
    assert written == summary["auc"]
    model, examples = run.artifact("Trainer", "model"), run.artifact("BehaviorExampleGen", "examples")
    fresh = scoring.metrics_from_scores(
        scoring.score_split(os.path.join(model.uri, scoring.SERVING_SUBDIR), examples.uri), cfg.input_base)
    assert set(fresh) == set(written)
    for key, value in fresh.items():
        assert written[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_pushed_model_scores_equal_trainers_in_a_fresh_process(first_run):
    """The pushed SavedModel (tf.Transform attached) reproduces the Keras model's scores."""
    cfg, summary = first_run
    from feedrank.evaluate.mlmd_reader import latest_run

    run = latest_run(cfg.metadata_path)
    trainer_scores = run.read_json("Trainer", "model_run", "valid_scores.json")
    valid_dir = os.path.join(run.artifact("BehaviorExampleGen", "examples").uri, "Split-valid")
    assert len(trainer_scores) > 50
    script = textwrap.dedent(f"""
        import glob, json, sys
        import tensorflow as tf
        model = tf.saved_model.load({summary['push']['path']!r})
        files = sorted(glob.glob({valid_dir!r} + '/*'))
        records = tf.stack(list(tf.data.TFRecordDataset(files, compression_type='GZIP')))
        ids = tf.io.parse_example(records, {{'impression_id': tf.io.FixedLenFeature([], tf.string)}})
        probs = model.signatures['serving_tf_example'](examples=records)['probabilities']
        json.dump({{i.decode(): float(p) for i, p in zip(ids['impression_id'].numpy(), probs.numpy())}}, sys.stdout)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    pushed = json.loads(out.stdout)
    for impression_id, score in trainer_scores.items():
        assert pushed[impression_id] == pytest.approx(score, rel=1e-5, abs=1e-6)


def test_second_run_reuses_cached_components(first_run):
    cfg, _ = first_run
    summary = pipeline.run(cfg)
    assert summary["status"] == "succeeded", summary.get("failure")
    states = {name: c["state"] for name, c in summary["components"].items()}
    for name in UPSTREAM:
        assert states[name] == "CACHED", states


def test_planted_anomaly_stops_the_run_before_the_trainer(tmp_path, tiny_data, capsys):
    data = tmp_path / "anomalous"
    shutil.copytree(tiny_data, data)
    items = pd.read_parquet(data / "items.parquet")
    items.loc[items.index[::3], "price"] = -items["price"].abs().iloc[::3] - 1.0  # prices can't be negative
    items.to_parquet(data / "items.parquet", index=False)
    cfg = e2e_config(tmp_path, data, name="feedrank-anomaly")
    summary = pipeline.run(cfg)
    assert summary["status"] == "failed"
    assert summary["failure"]["component"] == "AnomaliesGate"
    assert "price" in summary["failure"]["message"]
    assert "Trainer" not in summary["components"] and "Transform" not in summary["components"]
    assert not os.path.exists(cfg.push_dir) or not os.listdir(cfg.push_dir)
    assert "auc" not in summary  # nothing scored the eval split...
    assert "eval AUC  n/a" in capsys.readouterr().out  # ...and the printed summary says so
