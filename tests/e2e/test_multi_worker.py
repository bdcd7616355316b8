"""Multi-worker training for real: two worker processes on loopback, each with the
``TF_CONFIG`` of a two-worker cluster, run the Trainers' run_fns under
MultiWorkerMirroredStrategy (`feedrank.train.local_cluster`), once for a small DIN
(the ranking Trainer) and once for a small DRNN (the session Trainer).

For each: both workers exit 0; their records (``workers/*.json``) show disjoint shards
that together are the train split, epoch by epoch (counts and order-free fingerprints
add up to the split's, computed here from the files), and identical metrics every
epoch (so early stopping agrees); the chief's export loads and the other worker left
nothing in the export location, nor in its temporary directory; and the exported model
scores held-out examples like a one-worker run of the same Trainer on the same data:

* DIN, one train file: the ``data`` shard policy.  Every worker shuffles the split alike
  and keeps every second record, so the workers' step batches together are the
  one-worker run's, except that each epoch's last, partial batch is taken in two steps
  (ReLU, not Dice, whose batch statistics would be each replica's).
  The bound: mean |p2 - p1| under a fifth of the one-worker scores' standard deviation
  and AUCs within 0.01 (measured: 5 % and 0.002; a one-worker run with another seed is
  at 65 % and 0.016, so the bound tells "the same training" from "a training").
* DRNN, two train files: the ``file`` policy.  Each worker reads its own file, so the
  batches differ from the one-worker run's as a reseeded run's would.  The bound: the
  top-10 accuracies on the same n eval rows within three binomial standard errors,
  3 * sqrt(p (1 - p) / n) (about 0.03 here; a reseeded one-worker run differs by ~0.02).

A hung collective cannot hang the test: each cluster has a deadline, after which every
worker is killed and the failure shows each worker's stderr tail.  To fit two shared
cores, one fixture overlaps the work: the DIN cluster trains while the session data is
made, the DRNN cluster while this process runs both one-worker references.
"""
import glob
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

from feedrank import features as F
from feedrank.train import distribute
from feedrank.train.local_cluster import ClusterError, WorkerArgs, run_cluster
from feedrank.train.settings import EXAMPLES_ARTIFACT_KEY
from tests.helpers.config import ROOT
from tests.helpers.multi_worker import ranking_data, session_data

pytestmark = pytest.mark.e2e

DEADLINE_S = 420   # per cluster; a healthy two-worker run takes a fraction of it
DIN = {"model": "din", "epochs": 2, "batch_size": 256, "learning_rate": 0.005, "mlp_units": [16],
       "activation": "relu", "attention_units": [8], "calibration": "none", "code_version": "test",
       "match_features": False, "embedding_dims": {"item": 8, "category": 4, "region": 4, "token": 4}}
DRNN = {"model": "drnn", "epochs": 5, "batch_size": 128, "patience": 0,
        "drnn": {"width": 3, "length": 2, "height": 1, "units": 16, "cell": "gru", "page_dim": 8, "fnn_dim": 8,
                 "fnn_units": [16], "learning_rate": 0.01}}


def records(pattern):
    return [r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(pattern)), compression_type="GZIP")]


def cluster(run_fn, args, tmp):
    """Two workers of ``run_fn``; their temporary directories under ``tmp/worker_tmp``."""
    worker_tmp = tmp / "worker_tmp"
    worker_tmp.mkdir()
    results = run_cluster(run_fn, args, 2, timeout_s=DEADLINE_S, log_dir=str(tmp / "logs"),
                          env={**os.environ, "TMPDIR": str(worker_tmp), "TF_CPP_MIN_LOG_LEVEL": "2"})
    worker_records = [json.load(open(os.path.join(args.model_run_dir, distribute.RECORDS_DIR, f"worker-{i}.json")))
                      for i in range(2)]
    return {"results": results, "records": worker_records, "args": args, "worker_tmp": worker_tmp, "tmp": tmp}


def din_args(data, tmp):
    t = data["transformed"]
    config = {**DIN, EXAMPLES_ARTIFACT_KEY: {"uri": data["raw"], "negative_sampling_rate": 1.0}}
    return WorkerArgs(train_files=[os.path.join(t, "Split-train", "*")],
                      eval_files=[os.path.join(t, "Split-valid", "*")], transform_output=data["graph"],
                      serving_model_dir=str(tmp / "model"), model_run_dir=str(tmp / "model_run"), custom_config=config)


def drnn_args(data, tmp):
    t = data["transformed"]
    return WorkerArgs(train_files=[os.path.join(t, "Split-train", "*")],
                      eval_files=[os.path.join(t, "Split-eval", "*")], transform_output=data["graph"],
                      serving_model_dir=str(tmp / "model"), model_run_dir=str(tmp / "model_run"),
                      custom_config={**DRNN, "top_k": 20})


def din_reference(data, args):
    """(epochs run, scores by impression id on the raw eval split) of the one-worker Trainer."""
    import tensorflow_transform as tft

    from feedrank.train import trainer
    from feedrank.train.settings import TrainerSettings

    tft_output = tft.TFTransformOutput(data["graph"])
    one, curves = trainer.train(args.train_files, args.eval_files, tft_output,   # this process: no TF_CONFIG
                                TrainerSettings.from_dict(DIN, "test"), spec=F.BUILTIN)
    raw_eval = sorted(glob.glob(os.path.join(data["raw"], "Split-eval", "*")))
    return len(curves), trainer.trainer_scores(one, raw_eval, tft_output, 1.0, n=10 ** 6, raw_examples=True,
                                               spec=F.BUILTIN)


def drnn_reference(data, args, out_dir):
    """The one-worker session Trainer's model, exported to ``out_dir``."""
    import tensorflow_transform as tft

    from feedrank.sessions import trainer as session_trainer
    from feedrank.sessions.settings import SessionTrainerSettings

    tft_output = tft.TFTransformOutput(data["graph"])
    one, _ = session_trainer.train(SessionTrainerSettings.from_mapping(DRNN, "test"), args.train_files, tft_output)
    return session_trainer.export(one, tft_output, out_dir, 20)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both clusters and both one-worker references, overlapped (module docstring)."""
    tmp = {k: tmp_path_factory.mktemp(f"mw_{k}") for k in ("din", "drnn")}
    with ThreadPoolExecutor(2) as pool:
        din_data = ranking_data(str(tmp["din"] / "data"), users=1000, items=1000, days=6, splits=("train", "valid"))
        din_run = pool.submit(cluster, "feedrank.train.trainer.run_fn", din_args(din_data, tmp["din"]), tmp["din"])
        drnn_data = session_data(str(tmp["drnn"] / "data"), train_shards=2)
        drnn_run = pool.submit(cluster, "feedrank.sessions.trainer.run_fn", drnn_args(drnn_data, tmp["drnn"]),
                               tmp["drnn"])
        din_one = din_reference(din_data, din_args(din_data, tmp["din"]))
        drnn_one = drnn_reference(drnn_data, drnn_args(drnn_data, tmp["drnn"]), str(tmp["drnn"] / "one_worker"))
        return {"din": {**din_run.result(), "data": din_data, "one_worker": din_one},
                "drnn": {**drnn_run.result(), "data": drnn_data, "one_worker": drnn_one}}


@pytest.fixture
def din(runs):
    return runs["din"]


@pytest.fixture
def drnn(runs):
    return runs["drnn"]


def check_shards(run, policy):
    """Disjoint shards covering the train split in every epoch; the same metrics on both workers."""
    split = records(run["args"].train_files[0])
    total, fingerprint = len(split), distribute.fingerprint(split)
    w0, w1 = run["records"]
    assert [w0["task_index"], w1["task_index"]] == [0, 1] and w0["is_chief"] and not w1["is_chief"]
    assert w0["num_workers"] == w1["num_workers"] == 2 and w0["shard_policy"] == w1["shard_policy"] == policy
    assert len(w0["epochs"]) == len(w1["epochs"]) >= 1
    for e0, e1 in zip(w0["epochs"], w1["epochs"]):
        assert e0["records"] > 0 and e1["records"] > 0
        assert e0["records"] + e1["records"] == total                      # together: the split, once
        assert e0["fingerprint"] + e1["fingerprint"] == fingerprint
        assert e0["fingerprint"] != e1["fingerprint"]                      # and the shards differ
        assert e0["logs"] == e1["logs"] and e0["logs"]                     # one loss/metric per epoch
    if policy == "file":   # each worker read exactly its own file, every epoch
        files = sorted(glob.glob(run["args"].train_files[0]))
        assert [w0["train_files"], w1["train_files"]] == [[files[0]], [files[1]]]
        for w, f in zip((w0, w1), files):
            own = records(f)
            assert {e["records"] for e in w["epochs"]} == {len(own)}
            assert {e["fingerprint"] for e in w["epochs"]} == {distribute.fingerprint(own)}
    else:                  # every worker read the whole file and kept every second record
        assert all(abs(e0["records"] - e1["records"]) <= 1 for e0, e1 in zip(w0["epochs"], w1["epochs"]))


def check_outputs(run, exported):
    """Only the chief wrote to the artifacts' locations; the other worker's temporary dir is gone."""
    args = run["args"]
    assert sorted(os.listdir(args.serving_model_dir)) == sorted(exported)
    assert sorted(os.listdir(os.path.join(args.model_run_dir, distribute.RECORDS_DIR))) == ["worker-0.json",
                                                                                            "worker-1.json"]
    assert not [p for p in glob.glob(os.path.join(args.model_run_dir, "**"), recursive=True) if "workertemp" in p]
    assert os.listdir(run["worker_tmp"]) == []                         # removed after the export
    err = [open(run["tmp"] / "logs" / f"worker-{i}.err").read() for i in range(2)]
    assert f"to {args.serving_model_dir}" in err[0]                     # the chief exported here,
    assert f"to {run['worker_tmp']}{os.sep}feedrank-worker-1-" in err[1]  # the other into its temp dir
    assert all(r.returncode == 0 for r in run["results"])


def test_din_workers_read_disjoint_shards_of_one_file_that_cover_it(din):
    check_shards(din, "data")


def test_din_chief_exports_and_the_other_worker_leaves_nothing(din):
    check_outputs(din, ["assets", "declared_features.json", "fingerprint.pb", "saved_model.pb", "variables"])
    for name in ("curves.json", "training.json", "valid_scores.json", "calibration.json"):
        assert os.path.isfile(os.path.join(din["args"].model_run_dir, name)), name


def test_din_two_worker_export_scores_like_a_one_worker_run(din):
    from sklearn.metrics import roc_auc_score

    epochs, p1_by_id = din["one_worker"]
    assert epochs == len(din["records"][0]["epochs"])                        # early stopping agrees
    held_out = tf.stack(records(os.path.join(din["data"]["raw"], "Split-eval", "*")))
    parsed = tf.io.parse_example(held_out, {F.IMPRESSION_ID: tf.io.FixedLenFeature([], tf.string),
                                            F.LABEL: tf.io.FixedLenFeature([], tf.int64)})
    served = tf.saved_model.load(din["args"].serving_model_dir).signatures["serving_tf_example"]
    p2 = served(examples=held_out)["probabilities"].numpy()
    p1 = np.array([p1_by_id[i.decode()] for i in parsed[F.IMPRESSION_ID].numpy()])
    labels = parsed[F.LABEL].numpy()
    assert len(p1) > 1000 and 0 < labels.sum() < len(labels)
    assert np.abs(p2 - p1).mean() < 0.2 * p1.std(), (np.abs(p2 - p1).mean(), p1.std())
    assert abs(roc_auc_score(labels, p2) - roc_auc_score(labels, p1)) < 0.01


def test_drnn_workers_read_their_own_files(drnn):
    check_shards(drnn, "file")


def test_drnn_chief_exports_and_the_other_worker_leaves_nothing(drnn):
    check_outputs(drnn, ["assets", "fingerprint.pb", "saved_model.pb", "session_model.json", "variables"])
    assert os.path.isfile(os.path.join(drnn["args"].model_run_dir, "curves.json"))


def test_drnn_two_worker_export_scores_like_a_one_worker_run(drnn):
    from feedrank.sessions import evaluate

    samples = [{**s, "full_path": 1} for s in evaluate.read_split(drnn["data"]["samples"], "eval")]   # all of them
    rows, targets = evaluate.eval_rows(samples)
    top10 = [float((evaluate.served_ranks(evaluate.load_served(d)[0](rows), targets) <= 10).mean())
             for d in (drnn["one_worker"], drnn["args"].serving_model_dir)]
    n = len(rows)
    assert n > 1000 and 0.2 < top10[0] < 0.95
    assert abs(top10[1] - top10[0]) <= 3 * np.sqrt(top10[0] * (1 - top10[0]) / n), (top10, n)


def test_a_failing_worker_ends_the_cluster_with_every_workers_stderr(tmp_path):
    args = WorkerArgs(train_files=[], eval_files=[], transform_output="", serving_model_dir=str(tmp_path / "m"),
                      model_run_dir=str(tmp_path / "r"), custom_config={"model": "din"})   # no sampling rate
    with pytest.raises(ClusterError) as e:
        run_cluster("feedrank.train.trainer.run_fn", args, 2, timeout_s=120)
    text = str(e.value)
    assert "worker(s) [0, 1] failed" in text and "--- worker 0: exit 1" in text and "--- worker 1: exit 1" in text
    assert all("lacks the Examples artifact's negative_sampling_rate" in r.stderr_tail and r.stderr_tail in text
               for r in e.value.results)                                  # both workers' stderr tails
    assert [r.returncode for r in e.value.results] == [1, 1]


def test_a_malformed_tf_config_is_a_one_line_error():
    env = {**os.environ, "TF_CONFIG": '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker"',
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-m", "feedrank.train.local_cluster", "--run-fn",
                          "feedrank.train.trainer.run_fn", "--fn-args", "unused.json"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: TF_CONFIG is not valid JSON")
    assert "Traceback" not in out.stderr
