"""The gbdt family (TF-DF gradient boosted trees): settings, the in-graph aggregates, and a
real simulated log -> example generator -> tf.Transform -> Trainer -> calibration -> export whose
SavedModel, loaded in a fresh process that registers only TF-DF's inference ops, gives through
both signatures the in-memory model's sampling-corrected scores, calibrated."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from typing import Dict, List, Tuple

import numpy as np
import pytest
import tensorflow as tf

from feedrank import config as config_lib
from feedrank import features as F
from feedrank.examples.build import crosses
from feedrank.train.settings import TrainerSettings
from feedrank.typed import ConfigError
from tests.helpers import examplegen as H
from tests.helpers.config import ROOT

TINY_GBDT = {"model": "gbdt", "batch_size": 256, "num_trees": 40, "max_depth": 4, "min_examples": 5,
             "early_stopping_num_trees_look_ahead": 10}
RATE = 0.5   # the export's negative-sampling correction


def serving_request(records: List[bytes], spec: F.FeatureSpec) -> Tuple[Dict[str, tf.Tensor], List[bytes]]:
    """``serving_default``'s request of the feature contract ``spec`` (the first example's user
    side once, every example a candidate) and the same user x candidate pairs as serialized
    raw tf.Examples."""
    exs = [H.to_dict(r) for r in records]
    matrices = {s.name for s in spec.seq_features} | {b.name for b in spec.bag_features}
    floats = {d.name for d in spec.dense_features}

    def column(rows, name):
        if name in matrices:
            width = max(1, max(len(r) for r in rows))
            return tf.constant([r + [""] * (width - len(r)) for r in rows])
        return tf.constant([r[0] for r in rows], tf.float32 if name in floats else tf.string)

    req = {n: column([exs[0][n]], n) for n in spec.features_of_side("user")}
    req.update({n: column([e[n] for e in exs], n) for n in spec.features_of_side("candidate")})
    paired = []
    user = tf.train.Example.FromString(records[0])
    for rec, e in zip(records, exs):   # the user's side copied, the in-graph crosses as the generator writes them
        ex = tf.train.Example.FromString(rec)
        for name in spec.features_of_side("user"):
            ex.features.feature[name].CopyFrom(user.features.feature[name])
        match, share = crosses(exs[0]["user_region_id"][0], e["region_id"][0], exs[0]["click_category_ids"],
                               e["category_id"][0])
        ex.features.feature[F.REGION_MATCH.name].float_list.value[:] = [match]
        ex.features.feature[F.INTEREST_CATEGORY_SHARE.name].float_list.value[:] = [share]
        paired.append(ex.SerializeToString())
    return req, paired


def score_saved_model(model_dir: str, records_file: str) -> Dict[str, list]:
    """What a serving process does (tests/unit/test_gbdt_family.py runs it in a fresh one): register
    TF-DF's ops for the model, load it, score the request through both signatures, and the
    user's side sent once per candidate (the broadcast path)."""
    from feedrank.train import tfdf_ops

    assert tfdf_ops.ensure_for(model_dir), "a gbdt SavedModel must be recognised as a TF-DF model"
    loaded = tf.saved_model.load(model_dir)
    records = [r.numpy() for r in tf.data.TFRecordDataset(records_file)]
    spec = F.FeatureSpec.read(model_dir)   # the contract the model was exported with
    req, paired = serving_request(records, spec)
    n = len(records)
    user = spec.features_of_side("user")
    per_row = {k: (tf.repeat(v, n, axis=0) if k in user else v) for k, v in req.items()}
    return {"default": loaded.signatures["serving_default"](**req)["probabilities"].numpy().tolist(),
            "broadcast": loaded.signatures["serving_default"](**per_row)["probabilities"].numpy().tolist(),
            "tf_example": loaded.signatures["serving_tf_example"](
                examples=tf.constant(paired))["probabilities"].numpy().tolist(),
            "tfdf_imported": "tensorflow_decision_forests" in sys.modules}


def evaluator_scores(model_dir: str, records_file: str) -> list:
    """What the Evaluator does (in a fresh process): load the candidate through its
    ``module_path`` hook (`feedrank.evaluate.models`) and TFMA's model loader, then score."""
    from feedrank.evaluate.eval_config import make_eval_config
    from feedrank.evaluate.models import custom_eval_shared_model

    shared = custom_eval_shared_model(model_dir, "", make_eval_config(0.5, 0.01, [], [0.5, 2.0]))
    loaded = shared.model_loader.construct_fn()
    records = [r.numpy() for r in tf.data.TFRecordDataset(records_file)]
    return loaded.signatures["serving_tf_example"](examples=tf.constant(records))["probabilities"].numpy().tolist()


# --- settings -----------------------------------------------------------------------------------

def test_gbdt_settings_are_typed_and_checked_at_load():
    s = TrainerSettings.from_yaml({"model": "gbdt", "num_trees": 50, "shrinkage": 0.05})
    assert (s.gbdt.num_trees, s.gbdt.shrinkage, s.gbdt.max_depth) == (50, 0.05, 6)
    assert s.to_dict()["num_trees"] == 50 and "attention_units" not in s.to_dict()
    for bad, words in (({"num_trees": 0}, ["num_trees", ">= 1"]), ({"shrinkage": 0.0}, ["shrinkage", "in (0.0, 1.0]"]),
                       ({"growing_strategy": "deep"}, ["growing_strategy", "BEST_FIRST_GLOBAL"]),
                       ({"max_num_nodes": 63}, ["max_num_nodes", "BEST_FIRST_GLOBAL"])):
        with pytest.raises(ConfigError) as e:
            TrainerSettings.from_yaml({"model": "gbdt", **bad})
        assert all(w in str(e.value) for w in words), str(e.value)
    cfg = config_lib.load(os.path.join(ROOT, "configs", "gbdt.yaml"))
    demo = config_lib.load(os.path.join(ROOT, "configs", "demo.yaml"))
    assert cfg.trainer.model == "gbdt" and cfg.input_base == demo.input_base and cfg.simulate == demo.simulate


# --- the in-graph aggregates --------------------------------------------------------------------

def test_tree_features_count_matches_recency_and_the_funnel():
    from feedrank.train.families.gbdt_features import FUNNEL, TreeFeatures, column_names
    from tests.helpers.model_harness import random_batch

    batch = random_batch(3, seed=4)
    clicks = np.zeros_like(batch["click_category_ids_idx"])
    clicks[0, :12] = [5] + [2] * 11          # right-padded: 12 clicks, one of category 5, the oldest
    clicks[1, -3:] = [5, 1, 5]               # left-padded: 3 clicks, the newest of category 5
    batch["click_category_ids_idx"] = clicks
    batch["category_id_idx"] = np.array([5, 5, 5])
    conv = np.zeros_like(batch["conv_category_ids_idx"])
    conv[0, :2] = [3, 7]                     # last conversion: category 7
    batch["conv_category_ids_idx"] = conv
    layer = TreeFeatures(F.BUILTIN.to_json())
    out = {k: v.numpy() for k, v in layer({k: tf.constant(v) for k, v in batch.items()}).items()}
    numerical, categorical = column_names(F.BUILTIN)
    assert sorted(out) == sorted(numerical + categorical)
    np.testing.assert_allclose(out["n_click"], (batch["click_item_ids_idx"] != 0).sum(1))
    np.testing.assert_allclose(out["click_category_ids_match_share"], [1 / 12, 2 / 3, 0.0])
    np.testing.assert_allclose(out["click_category_ids_match_recent_share"], [0.0, 2 / 3, 0.0])
    np.testing.assert_allclose(out["click_category_ids_match_last"], [0.0, 1.0, 0.0])
    assert [v.decode() for v in out[FUNNEL]] == ["7|5", "0|5", "0|5"]
    assert out["category_id_idx"].dtype == object and out[F.dense(F.PRICE.name)].dtype == np.float32


def test_tree_features_match_a_declared_item_column_with_the_histories():
    """A declared categorical item column is a categorical column and, through `spec.matched`,
    compared with each item channel's history of it (share, recent share, last, recency)."""
    from feedrank.train import synthetic
    from feedrank.train.families.gbdt_features import TreeFeatures, column_names

    spec = F.FeatureSpec((F.Declared("items", "seller", "categorical"),))
    batch = synthetic.random_batch(2, {"item": 60, "category": 9, "region": 7, "token": 15, "age": 15,
                                       "attr_item_seller": 6}, spec, seed=4)
    sellers = np.zeros_like(batch["view_item_seller_idx"])
    sellers[0, :4] = [2, 3, 2, 4]            # 4 views, two of the candidate's seller, not the newest
    sellers[1, :1] = [2]
    ages = np.zeros_like(batch["view_ages_idx"])
    ages[0, :4] = [9, 7, 3, 1]               # age ids (bucket + 1): the matching views are buckets 8 and 2
    ages[1, :1] = [13]                       # bucket 12 of 13
    batch.update(view_item_seller_idx=sellers, view_ages_idx=ages, item_seller_idx=np.array([2, 5]))
    out = {k: v.numpy() for k, v in TreeFeatures(spec.to_json())({k: tf.constant(v) for k, v in batch.items()}).items()}
    numerical, categorical = column_names(spec)
    assert sorted(out) == sorted(numerical + categorical) and "item_seller_idx" in categorical
    assert {f"{s}_item_seller_match_share" for s in ("click", "view", "conv")} <= set(numerical)
    np.testing.assert_allclose(out["view_item_seller_match_share"], [0.5, 0.0])
    np.testing.assert_allclose(out["view_item_seller_match_last"], [0.0, 0.0])
    np.testing.assert_allclose(out["view_item_seller_match_recency"], [(13 - 2) / 13, 0.0])


# --- a real run: train, export, serve from a fresh process --------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from feedrank.train import calibration, export, trainer
    from tests.helpers.transform import analyze_and_transform

    work = tmp_path_factory.mktemp("gbdt")
    run = H.run(H.make_log(str(work / "log")), str(work / "run"), num_shards=1)
    raw = sorted(glob.glob(os.path.join(run["output_dir"], "Split-train", "*")))
    transformed_file, tft_out = analyze_and_transform(raw, str(work / "tft"))
    model, curves = trainer.train([transformed_file], [transformed_file], tft_out, dict(TINY_GBDT), spec=F.BUILTIN)
    probs, labels = trainer.validation_probabilities(model, [transformed_file], tft_out,
                                                     TrainerSettings.from_dict(TINY_GBDT), RATE, spec=F.BUILTIN)
    calibrator, _ = calibration.choose(probs, labels, "platt")   # run_fn's path; platt is never the identity
    model_dir = export.export(model, tft_out, str(work / "model"), sampling_rate=RATE, spec=F.BUILTIN,
                              calibrator=calibrator)
    records = H.read_records(run["output_dir"], "eval")[:40]
    records_file = str(work / "records.tfrecord")
    with tf.io.TFRecordWriter(records_file) as w:
        for r in records:
            w.write(r)
    return {"model": model, "curves": curves, "tft": tft_out, "model_dir": model_dir, "calibrator": calibrator,
            "records": records, "records_file": records_file}


def test_the_forest_trains_in_one_pass_with_validation_curves(trained):
    curves = trained["curves"]
    assert curves and all(np.isfinite(c["val_loss"]) for c in curves)
    assert 1 <= curves[-1]["trees"] <= TINY_GBDT["num_trees"]
    assert trained["model"].name == "gbdt" and len(trained["model"].inputs) == len(F.BUILTIN.model_input_names())


def _in_fresh_process(function: str, trained):
    """``tests.unit.test_gbdt_family.<function>(model dir, records file)`` run by a new Python process."""
    code = ("import json, sys\n"
            f"from tests.unit.test_gbdt_family import {function}\n"
            f"print('RESULT ' + json.dumps({function}(sys.argv[1], sys.argv[2])))\n")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", code, trained["model_dir"], trained["records_file"]],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def test_export_in_a_fresh_process_scores_like_the_in_memory_model(trained):
    from feedrank.train.export import correct_for_sampling

    got = _in_fresh_process("score_saved_model", trained)
    assert got["tfdf_imported"] is False   # the inference ops alone serve it (the serving venv's case)
    n = len(trained["records"])
    _, paired = serving_request(trained["records"], F.BUILTIN)
    raw = tf.io.parse_example(tf.constant(paired),
                              F.BUILTIN.raw_feature_spec(include_labels=False, include_metadata=False))
    transformed = trained["tft"].transform_features_layer()(raw)
    q = trained["model"]({k: transformed[k] for k in F.BUILTIN.model_input_names()}, training=False)
    corrected = correct_for_sampling(q, RATE).numpy()
    want = trained["calibrator"].predict(corrected)
    assert trained["calibrator"].method == "platt" and not np.allclose(want, corrected, atol=1e-4)
    assert want.shape == (n,) and np.all((want > 0) & (want < 1)) and np.unique(want.round(6)).size > 1
    for name in ("default", "broadcast", "tf_example"):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_evaluator_loads_a_gbdt_model_in_a_fresh_process(trained):
    from feedrank.train.export import correct_for_sampling

    got = _in_fresh_process("evaluator_scores", trained)
    raw = tf.io.parse_example(tf.constant(trained["records"]),
                              F.BUILTIN.raw_feature_spec(include_labels=False, include_metadata=False))
    transformed = trained["tft"].transform_features_layer()(raw)
    want = trained["calibrator"].predict(correct_for_sampling(
        trained["model"]({k: transformed[k] for k in F.BUILTIN.model_input_names()}, training=False), RATE).numpy())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
