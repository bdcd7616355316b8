"""The Trainer component (components/trainer) run for real on generated examples:
it fits on train and early-stops on valid without ever reading the eval split,
takes the negative sampling rate from the Examples artifact (never from the
trainer config), keeps its on-disk input cache in its own run directory, and
exports a SavedModel whose signatures serve the sampling-corrected scores
calibrated on valid (calibration.json)."""
import json
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from tfx.proto import trainer_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from components.trainer import component as C
from feedrank import features as F
from feedrank.train import calibration, trainer
from feedrank.train import export as export_lib
from feedrank.train.settings import EXAMPLES_ARTIFACT_KEY
from feedrank.typed import ConfigError
from tests.helpers import examplegen as eg
from tests.helpers.transform import analyze_and_transform
from tests.unit.test_gbdt_family import serving_request

SPLITS = ("train", "valid", "eval")
TINY = {"model": "dnn", "epochs": 2, "batch_size": 128, "mlp_units": [8], "activation": "relu",
        "embedding_dims": {"item": 4, "category": 2, "region": 2, "token": 2}, "input_cache": "disk",
        "raw_examples": True, "code_version": "test"}


def _examples(uri: str, rate: float) -> standard_artifacts.Examples:
    art = standard_artifacts.Examples()
    art.uri = uri
    art.split_names = artifact_utils.encode_split_names(list(SPLITS))
    art.set_float_custom_property(C.SAMPLING_RATE_PROPERTY, rate)
    return art


def _exec_properties(custom_config, eval_splits=("valid",)):
    return {"train_args": proto_utils.proto_to_json(trainer_pb2.TrainArgs(splits=["train"])),
            "eval_args": proto_utils.proto_to_json(trainer_pb2.EvalArgs(splits=list(eval_splits))),
            "run_fn": "feedrank.train.trainer.run_fn", "custom_config": json.dumps(custom_config)}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Raw examples with train/valid/eval splits (valid: a copy of train where the
    generator writes no valid split) and the transform graph analysed on train."""
    tmp = tmp_path_factory.mktemp("trainer_component")
    out = eg.run(eg.make_log(str(tmp / "log")), str(tmp / "gen"), num_shards=1)["output_dir"]
    if not os.path.isdir(os.path.join(out, "Split-valid")):
        shutil.copytree(os.path.join(out, "Split-train"), os.path.join(out, "Split-valid"))
    raw_train = sorted(tf.io.gfile.glob(os.path.join(out, "Split-train", "*")))
    analyze_and_transform(raw_train, str(tmp / "tft"))
    return out, str(tmp / "tft" / "transform_graph")


def test_trainer_fits_on_train_stops_on_valid_reads_the_rate_from_the_artifact(generated, tmp_path,
                                                                               monkeypatch, caplog):
    out, graph_uri = generated
    examples_dir = str(tmp_path / "examples")
    shutil.copytree(out, examples_dir)
    for name in os.listdir(os.path.join(examples_dir, "Split-eval")):   # any read of eval would fail
        with open(os.path.join(examples_dir, "Split-eval", name), "wb") as f:
            f.write(b"not a TFRecord: the Trainer must never read the eval split")
    graph = standard_artifacts.TransformGraph()
    graph.uri = graph_uri
    model, model_run = standard_artifacts.Model(), standard_artifacts.ModelRun()
    model.uri, model_run.uri = str(tmp_path / "model"), str(tmp_path / "model_run")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    exported = []   # the in-memory model run_fn exports
    export = export_lib.export

    def keep(model, *args, **kwargs):
        exported.append(model)
        return export(model, *args, **kwargs)

    monkeypatch.setattr(export_lib, "export", keep)

    with caplog.at_level(logging.INFO, logger="feedrank.train.data"):
        C.Executor().Do({"examples": [_examples(examples_dir, 0.5)], "transform_graph": [graph]},
                        {"model": [model], "model_run": [model_run]}, _exec_properties(TINY))

    with open(os.path.join(model_run.uri, "training.json")) as f:
        record = json.load(f)
    assert record["negative_sampling_rate"] == 0.5 and record["examples_uri"] == examples_dir
    assert all("/Split-train" in p for p in record["train_files"])
    assert all("/Split-valid" in p for p in record["valid_files"])
    with open(os.path.join(model_run.uri, "curves.json")) as f:
        curves = json.load(f)
    assert [c["epoch"] for c in curves] == [1, 2] and all({"auc", "val_auc", "val_loss"} <= set(c) for c in curves)
    assert os.path.isfile(os.path.join(model_run.uri, "curves.png"))
    with open(os.path.join(model_run.uri, "valid_scores.json")) as f:
        scores = json.load(f)
    assert len(scores) > 50 and all(0.0 < p < 1.0 for p in scores.values())
    assert os.path.isdir(os.path.join(model.uri, "Format-Serving"))
    cached = [r.getMessage().split(": ", 1)[1] for r in caplog.records if r.getMessage().startswith("input cache")]
    assert len(cached) == 2 and all(p.startswith(os.path.join(model_run.uri, "input_cache", "records-"))
                                    for p in cached)                # train and valid, in the run's directory
    assert os.listdir(cwd) == []                                    # never in the working directory
    assert not os.path.exists(os.path.join(model_run.uri, "input_cache"))   # removed after training

    # calibrated on valid: the two-epoch model's probabilities are far above the click rate
    with open(os.path.join(model_run.uri, calibration.FILE)) as f:
        fit = json.load(f)
    calibrator = calibration.Calibrator.from_dict(fit["params"])
    assert fit["setting"] == "auto" and fit["method"] == calibrator.method != "identity"
    assert fit["rows"] >= calibration.MIN_ROWS and set(fit["methods"]) == set(calibration.METHODS)
    assert all(len(fit["methods"][m]["fold_logloss"]) == calibration.FOLDS for m in ("identity", fit["method"]))
    after, before = fit["methods"][fit["method"]], fit["methods"]["identity"]
    assert after["logloss"] < before["logloss"] and abs(after["calibration"] - 1) < abs(before["calibration"] - 1)
    # valid_scores.json = the calibrator on the in-memory model's sampling-corrected scores = the SavedModel's
    corrected = trainer.trainer_scores(exported[0], record["valid_files"], tft.TFTransformOutput(graph_uri), 0.5,
                                       raw_examples=True, spec=F.BUILTIN)
    assert corrected.keys() == scores.keys()
    ids = sorted(scores)
    np.testing.assert_allclose([scores[i] for i in ids], calibrator.predict(np.array([corrected[i] for i in ids])),
                               rtol=1e-6, atol=1e-7)
    loaded = tf.saved_model.load(os.path.join(model.uri, "Format-Serving"))
    valid = sorted(tf.io.gfile.glob(os.path.join(examples_dir, "Split-valid", "*")))
    records = list(tf.data.TFRecordDataset(valid, compression_type="GZIP").take(512))
    served = loaded.signatures["serving_tf_example"](examples=tf.stack(records))["probabilities"].numpy()
    served_ids = tf.io.parse_example(tf.stack(records), {F.IMPRESSION_ID: tf.io.FixedLenFeature([], tf.string)})
    np.testing.assert_allclose(served, [scores[i.decode()] for i in served_ids[F.IMPRESSION_ID].numpy()],
                               rtol=1e-5, atol=1e-6)
    req, paired = serving_request([r.numpy() for r in records[:40]], F.BUILTIN)   # the online path
    np.testing.assert_allclose(loaded.signatures["serving_default"](**req)["probabilities"].numpy(),
                               loaded.signatures["serving_tf_example"](examples=tf.constant(paired))["probabilities"],
                               rtol=1e-5, atol=1e-6)


def test_the_rate_comes_from_source_examples_when_the_examples_are_transformed(monkeypatch):
    """With materialised Transform output as ``examples`` (no rate on it), the rate is read from
    ``source_examples``; the stock executor then gets it in custom_config."""
    seen = {}
    monkeypatch.setattr(C.trainer_executor.GenericExecutor, "Do",
                        lambda self, inputs, outputs, props: seen.update(inputs=inputs, props=props))
    transformed = standard_artifacts.Examples()
    transformed.uri = "/transformed"
    C.Executor().Do({"examples": [transformed], "source_examples": [_examples("/raw", 0.25)]},
                    {}, _exec_properties({"model": "din"}))
    config = json.loads(seen["props"]["custom_config"])
    assert config[EXAMPLES_ARTIFACT_KEY] == {"uri": "/raw", "negative_sampling_rate": 0.25}
    assert config["model"] == "din" and set(seen["inputs"]) == {"examples"}
    with pytest.raises(ValueError, match="/transformed has no negative_sampling_rate property"):
        C.Executor().Do({"examples": [transformed]}, {}, _exec_properties({"model": "din"}))


@pytest.mark.parametrize("rate", [0.0, 1.5])
def test_a_rate_outside_0_1_on_the_artifact_is_refused(rate):
    with pytest.raises(ValueError, match="negative_sampling_rate=.*outside \\(0, 1\\]"):
        C.sampling_rate(_examples("/raw", rate))


def test_the_eval_split_is_refused_as_the_trainers_validation_split():
    for splits in (("eval",), ("valid", "eval"), ()):
        with pytest.raises(ValueError, match="'eval' is the Evaluator's alone"):
            C.check_eval_args(_exec_properties({}, eval_splits=splits))
    C.check_eval_args(_exec_properties({}))


def test_the_trainer_config_cannot_carry_the_sampling_rate():
    """An overridden trainer config (a Kubeflow run parameter) cannot set the rate."""
    injected = {"model": "din", "negative_sampling_rate": 0.9,
                EXAMPLES_ARTIFACT_KEY: {"uri": "/raw", "negative_sampling_rate": 0.5}}
    settings, props = trainer.examples_properties(injected)
    assert props["negative_sampling_rate"] == 0.5
    with pytest.raises(ConfigError, match="negative_sampling_rate is not a trainer setting"):
        trainer.TrainerSettings.from_dict(settings, "Trainer custom_config")
    with pytest.raises(ValueError, match="lacks the Examples artifact's negative_sampling_rate"):
        trainer.examples_properties({"model": "din"})
