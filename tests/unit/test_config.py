"""Config files: typed, validated trainer settings, inheritance (``base:``), the
custom_config round trip, and the run summary's failure message."""
import dataclasses
import glob
import json
import os
import subprocess
import sys

import pytest

from feedrank import config as config_lib
from feedrank.config import ConfigError
from feedrank.evaluate.summary import pipeline_failure
from feedrank.train.settings import FAMILY_NAMES, TrainerSettings
from tests.helpers.config import ROOT

CONFIGS = os.path.join(ROOT, "configs")
DEMO = os.path.join(CONFIGS, "demo.yaml")
RUN_CONFIGS = sorted(p for p in glob.glob(os.path.join(CONFIGS, "*.yaml"))
                     if not os.path.basename(p).startswith("kubeflow"))   # Kubeflow settings, not run configs


def on_demo(tmp_path, text: str, name: str = "run.yaml") -> str:
    """A config file that inherits demo.yaml and adds ``text``."""
    path = tmp_path / name
    path.write_text(f"base: {DEMO}\n{text}")
    return str(path)


# --- what a new user tries -----------------------------------------------------------------------
@pytest.mark.parametrize("trainer, names", [
    ("{epochs: -2}", ["trainer.epochs", "an integer >= 1", "-2"]),
    ("{epochs: three}", ["trainer.epochs", "an integer >= 1", "'three'"]),
    ("{model: dinn}", ["trainer.model", "'dinn'", *FAMILY_NAMES]),
])
def test_new_user_mistakes_fail_at_load_naming_the_key_and_the_allowed_values(tmp_path, trainer, names):
    with pytest.raises(ConfigError) as err:
        config_lib.load(on_demo(tmp_path, f"trainer: {trainer}\n"))
    for name in names:
        assert name in str(err.value)


def test_a_misspelt_trainer_key_names_it_and_the_allowed_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer: unknown key\(s\) \['epoch'\]; allowed: \[.*'epochs'"):
        config_lib.load(on_demo(tmp_path, "trainer: {epoch: 3}\n"))
    with pytest.raises(ConfigError, match=r"trainer.embedding_dims: unknown key\(s\) \['items'\]"):
        config_lib.load(on_demo(tmp_path, "trainer: {embedding_dims: {items: 8}}\n"))


@pytest.mark.parametrize("setting, message", [
    ("mlp_units: [200, '80']", "trainer.mlp_units must be a list of integers >= 1"),
    ("learning_rate: fast", "trainer.learning_rate must be a number > 0.0"),
    ("learning_rate: 0", "trainer.learning_rate must be a number > 0.0"),
    ("mixed_precision: 'yes'", "trainer.mixed_precision must be true or false"),
    ("batch_size: 512.0", "trainer.batch_size must be an integer >= 1"),
    ("bst_pooling: max", "trainer.bst_pooling must be one of ['candidate', 'mean']"),
    ("activation: Dice", "trainer.activation must be one of ['dice', 'prelu'"),
    ("word2vec: {init: 1}", "trainer.word2vec.init must be true or false"),
    ("negative_sampling_rate: 0.5", "trainer.negative_sampling_rate is set by examples.negative_sampling_rate"),
])
def test_a_wrong_type_or_value_names_the_key(tmp_path, setting, message):
    with pytest.raises(ConfigError) as err:
        config_lib.load(on_demo(tmp_path, f"trainer:\n  {setting}\n"))
    assert message in str(err.value)


def test_input_cache_is_memory_disk_or_off(tmp_path):
    for bad in ("Memory", "/tmp/feedrank/cache", "./cache/run"):
        with pytest.raises(ConfigError, match="input_cache must be 'memory', 'disk' or '' \\(off\\)"):
            config_lib.load(on_demo(tmp_path, f"trainer: {{input_cache: {bad}}}\n"))
    for value, expected in (('""', ""), ("memory", "memory"), ("disk", "disk")):
        cfg = config_lib.load(on_demo(tmp_path, f"trainer: {{input_cache: {value}}}\n"))
        assert cfg.trainer.input_cache == expected


def test_the_cli_reports_a_bad_model_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "pipeline.py"), "run", "--config",
                          on_demo(tmp_path, "trainer: {model: dinn}\n")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "trainer.model must be one of" in out.stderr and "'dinn'" in out.stderr


# --- inheritance -----------------------------------------------------------------------------
def test_a_child_merges_mappings_key_by_key_and_replaces_lists(tmp_path):
    (tmp_path / "parent.yaml").write_text(
        f"base: {DEMO}\npipeline_name: parent\n"
        "trainer: {epochs: 2, mlp_units: [64, 32, 16], embedding_dims: {item: 8, token: 8}}\n"
        "evaluator: {slice_features: [category_id, region_id]}\n")
    (tmp_path / "child.yaml").write_text(
        "base: parent.yaml\n"
        "trainer: {model: bst, mlp_units: [16], embedding_dims: {item: 4}}\n"
        "evaluator: {slice_features: [region_id]}\n")
    demo = config_lib.load(DEMO)
    cfg = config_lib.load(str(tmp_path / "child.yaml"))
    assert cfg.pipeline_name == "parent"                           # from the parent
    assert cfg.trainer.model == "bst" and cfg.trainer.epochs == 2   # child, parent
    assert cfg.trainer.batch_size == demo.trainer.batch_size and cfg.examples == demo.examples  # grandparent
    assert cfg.trainer.mlp_units == [16]                           # a list replaces
    assert dataclasses.asdict(cfg.trainer.embedding_dims) == {"item": 4, "category": 16, "region": 8, "token": 8}
    assert cfg.evaluator.slice_features == ["region_id"]
    assert cfg.evaluator.auc_floor == demo.evaluator.auc_floor


def test_inheritance_cycles_and_missing_bases_are_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle: a.yaml -> b.yaml -> a.yaml"):
        config_lib.load(str(tmp_path / "a.yaml"))
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        config_lib.load(str(tmp_path / "self.yaml"))
    (tmp_path / "orphan.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="base config file .*nowhere.yaml' does not exist"):
        config_lib.load(str(tmp_path / "orphan.yaml"))
    (tmp_path / "typo.yaml").write_text(f"base: {DEMO}\ntrainer: {{epohcs: 2}}\n")
    with pytest.raises(ConfigError, match="epohcs"):
        config_lib.load(str(tmp_path / "typo.yaml"))


def test_family_configs_inherit_the_demo_and_state_their_model():
    demo = config_lib.load(DEMO)
    for name in ("bst", "deepfm", "dien", "dnn", "double_channel", "multi_channel", "wide_deep"):
        path = os.path.join(CONFIGS, f"{name}.yaml")
        with open(path) as f:
            assert "base: demo.yaml" in f.read()
        cfg = config_lib.load(path)
        assert cfg.model_name == name and cfg.input_base == demo.input_base and cfg.examples == demo.examples
        assert cfg.trainer.learning_rate == demo.trainer.learning_rate and cfg.evaluator == demo.evaluator


# --- custom_config round trip ------------------------------------------------------------------
@pytest.mark.parametrize("path", RUN_CONFIGS, ids=os.path.basename)
def test_settings_survive_the_custom_config_round_trip(path):
    cfg = config_lib.load(path)
    settings = cfg.trainer
    if cfg.mode == "session":   # the session Trainer's settings (feedrank/sessions/settings.py)
        from feedrank.sessions.settings import SessionTrainerSettings

        as_json = json.loads(json.dumps(settings.to_dict(), sort_keys=True))
        assert SessionTrainerSettings.from_mapping(as_json, "custom_config") == settings
        return
    as_json = json.loads(json.dumps(settings.to_dict(), sort_keys=True))   # as TFX / Kubeflow carry it
    assert TrainerSettings.from_dict(as_json) == settings
    added = {**as_json, "code_version": "abc", "word_vectors_uri": "/v"}
    back = TrainerSettings.from_dict(added)
    assert (back.code_version, back.word_vectors_uri) == ("abc", "/v")


def test_custom_config_holds_the_shared_settings_and_the_familys_groups():
    din = TrainerSettings.from_yaml({"model": "din", "attention_units": [16], "transformer_heads": 2})
    flat = din.to_dict()
    assert flat["attention_units"] == [16] and flat["epochs"] == din.epochs
    assert "transformer_heads" not in flat and "wide_buckets" not in flat   # other families' settings
    assert din.to_dict(every_group=True)["transformer_heads"] == 2
    multi = dataclasses.replace(din, model="multi_channel").to_dict()   # DIN attention and the BST encoder
    assert multi["attention_units"] == [16] and multi["transformer_heads"] == 2 and "fusion" in multi
    assert "gru_units" not in multi


def test_the_trainer_refuses_a_bad_custom_config():
    with pytest.raises(ConfigError, match="custom_config.model must be one of"):
        TrainerSettings.from_dict({"model": "dinn"}, "Trainer custom_config")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epoch'\]"):
        TrainerSettings.from_dict({"epoch": 2})
    with pytest.raises(ConfigError, match="negative_sampling_rate is not a trainer setting: it is set by "
                                          "examples.negative_sampling_rate"):
        TrainerSettings.from_dict({"negative_sampling_rate": 0.5})


# --- the run summary's failure message -----------------------------------------------------------
def test_pipeline_failure_shows_the_projects_message_not_the_suppressed_key_error():
    from feedrank import features as F
    from feedrank.train.families import build_model

    try:
        try:
            build_model("dinn", {}, {}, spec=F.BUILTIN)
        except ValueError as e:   # the orchestrator wraps a component's error
            raise RuntimeError("component Trainer failed") from e
    except RuntimeError as wrapped:
        failure = pipeline_failure(wrapped)
    assert failure["error"] == "ValueError"
    assert failure["message"].startswith("unknown model family 'dinn'; known: [") and "'din'" in failure["message"]


def test_pipeline_failure_still_follows_an_implicit_context():
    try:
        try:
            {}["missing"]
        except KeyError:
            raise RuntimeError("wrapper")  # noqa: B904 - the implicit context is what is tested
    except RuntimeError as e:
        failure = pipeline_failure(e)
    assert failure == {"error": "KeyError", "message": "'missing'"}


def test_every_allowed_activation_is_one_the_mlp_can_build():
    import tf_keras as keras

    from feedrank.train.settings import ACTIVATIONS

    assert ACTIVATIONS[:2] == ("dice", "prelu")   # the MLP's own layers
    for name in ACTIVATIONS[2:]:
        assert callable(keras.activations.get(name)), name


def test_the_tuner_section_is_typed_and_only_for_the_session_drnn():
    cfg = config_lib.load(os.path.join(CONFIGS, "session_tiny.yaml"), {"tuner": {"enabled": True, "max_trials": 3}})
    assert cfg.tuner.enabled and cfg.tuner.max_trials == 3 and cfg.tuner.algorithm == "genetic"
    with pytest.raises(ConfigError, match="tunes the session DRNN"):
        config_lib.load(DEMO, {"tuner": {"enabled": True}})
    with pytest.raises(ConfigError, match="unknown key"):
        config_lib.load(DEMO, {"tuner": {"enabeld": True}})


def test_set_overrides_one_key_validated_like_the_file():
    demo = os.path.join(ROOT, "configs", "demo.yaml")
    cfg = config_lib.load(demo, sets=["trainer.epochs=2", "trainer.mlp_units=[8, 4]", "examples.min_ts=5",
                                      "mlflow.tracking_uri=http://127.0.0.1:5999"])
    assert (cfg.trainer.epochs, list(cfg.trainer.mlp_units), cfg.examples.min_ts) == (2, [8, 4], 5)
    assert cfg.mlflow.tracking_uri == "http://127.0.0.1:5999"
    base = config_lib.load(demo)
    assert cfg.trainer.learning_rate == base.trainer.learning_rate   # the rest of the section stays
    with pytest.raises(ConfigError, match=r"demo.yaml: .*epochz"):
        config_lib.load(demo, sets=["trainer.epochz=2"])
    with pytest.raises(ConfigError, match=r"label_window_s"):
        config_lib.load(demo, sets=["examples.label_window_s=-5"])
    with pytest.raises(ConfigError, match=r"--set 'trainer': expected KEY=VALUE"):
        config_lib.load(demo, sets=["trainer"])
    with pytest.raises(ConfigError, match=r"--set 'pipeline_name.x=1': pipeline_name is a value, not a section"):
        config_lib.load(demo, sets=["pipeline_name.x=1"])


def test_every_subcommand_takes_set_and_tracking_uri():
    from feedrank.cli import build_parser

    parser = build_parser()
    for argv in (["run"], ["promote", "--version", "1"], ["alias", "show"], ["compare"], ["mlflow"],
                 ["compile"], ["deploy"], ["rollback"], ["ab-report", "--ab-dir", "x"]):
        args = parser.parse_args(argv + ["--set", "trainer.epochs=2", "--tracking-uri", "http://127.0.0.1:1"])
        cfg = config_lib.load_args(args)
        assert cfg.trainer.epochs == 2 and cfg.mlflow.tracking_uri == "http://127.0.0.1:1", argv


def test_no_registered_model_name_claims_one_family():
    """The default name says what the model does (``-ranker``, ``-recommender``) for every family,
    and no shipped config names its registered model after one family."""
    from feedrank.tracking import legacy_registered_model_names, registered_model_name

    unnamed = ["mlflow.registered_model="]
    for family in ("din", "gbdt"):
        cfg = config_lib.load(DEMO, sets=unnamed + [f"trainer.model={family}"])
        assert registered_model_name(cfg) == "feedrank-demo-ranker"
        assert legacy_registered_model_names(cfg) == list(dict.fromkeys([f"feedrank-demo-{family}",
                                                                          "feedrank-demo-din"]))
    session = config_lib.load(os.path.join(CONFIGS, "session.yaml"), sets=unnamed)
    assert registered_model_name(session) == "feedrank-session-recommender"
    families = set(FAMILY_NAMES) | {"drnn"}
    for path in RUN_CONFIGS:
        name = registered_model_name(config_lib.load(path))
        assert name.rsplit("-", 1)[-1] not in families, (path, name)
