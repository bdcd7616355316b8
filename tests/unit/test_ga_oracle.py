"""The genetic-algorithm tuner: the GA operators keep genes in range, fitness is monotone in
accuracy, selection prefers the fitter, the early-termination rule, a real search with tf_keras
DRNNs on session samples from the e-commerce simulator, and `tuner_fn` run by TFX's Tuner executor."""
from __future__ import annotations

import json
import os
import types

import numpy as np
import pytest

from feedrank.tune import fitness as FIT
from feedrank.tune import genes
from feedrank.tune.ga_oracle import GeneticOracle, crossover, in_range, mutate, tournament

TINY_DRNN = {"page_dim": 6, "fnn_dim": 4, "fnn_units": [8], "cell": "simple"}
TINY_GENES = {"width": ("int", (1, 4)), "length": ("int", (1, 2)), "height": ("int", (0, 1)),
              "units": ("choice", (4, 8)), "learning_rate": ("log", (1e-3, 3e-2)),
              "batch_size": ("choice", (32, 64))}


def _random_chromosome(hps, rng):
    return {hp.name: hp.prob_to_value(float(rng.random()) * (1 - 1e-9)) for hp in hps}


@pytest.mark.parametrize("mode", genes.MODES)
def test_crossover_and_mutation_keep_genes_in_range(mode):
    hps = genes.space(mode).space
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(2000):
        a, b = _random_chromosome(hps, rng), _random_chromosome(hps, rng)
        child = crossover(a, b, rng, rate=0.9)
        assert all(child[k] in (a[k], b[k]) for k in a)
        mutant = mutate(child, hps, rng, rate=0.5, scale=0.5)
        changed += mutant != child
        if mode == genes.SESSION:
            mutant = genes.repair(mutant)
            assert mutant["height"] < mutant["length"]
        assert set(mutant) == set(a)
        for hp in hps:
            assert in_range(hp, mutant[hp.name]), (hp.name, mutant[hp.name])
    assert changed > 1500   # rate 0.5 over 5-6 genes: nearly every chromosome changes


def test_mutation_rate_zero_and_one():
    hps = genes.space(genes.SESSION).space
    rng = np.random.default_rng(1)
    x = _random_chromosome(hps, rng)
    assert mutate(x, hps, rng, rate=0.0) == x
    for _ in range(200):    # rate 1: every discrete gene takes another value
        y = mutate(x, hps, rng, rate=1.0, scale=0.05)
        assert all(y[k] != x[k] for k in ("width", "length", "units", "batch_size"))


def test_fitness_is_monotone_in_accuracy_and_falls_with_loss():
    accs = np.linspace(0.0, 1.0, 21)
    for loss in (0.0, 0.5, 3.0, 9.0):
        f = [FIT.session_fitness(a, loss) for a in accs]
        assert np.all(np.diff(f) > 0)
    assert FIT.session_fitness(0.3, 1.0) == pytest.approx(0.3 + 0.5)
    assert FIT.session_fitness(0.3, 1.0) > FIT.session_fitness(0.3, 2.0)
    assert FIT.session_fitness(0.2, float("inf")) == pytest.approx(0.2)
    assert FIT.session_fitness_from_logs({"val_cart_top10": 0.4, "val_loss": 3.0}) == pytest.approx(0.65)
    with pytest.raises(ValueError, match="accuracy must be in"):
        FIT.session_fitness(1.5, 1.0)
    with pytest.raises(ValueError, match="lack 'val_cart_top1'"):
        FIT.session_fitness_from_logs({"top1": 0.1}, "top1")


def test_tournament_selection_prefers_fitter_chromosomes():
    rng = np.random.default_rng(2)
    pop = [({"id": i}, float(i)) for i in range(6)]
    wins = np.bincount([tournament(pop, rng, size=2)["id"] for _ in range(6000)], minlength=6)
    assert np.all(np.diff(wins) > 0)            # fitter -> chosen more often
    assert wins[5] / 6000 == pytest.approx(11 / 36, abs=0.03)   # P(max of 2 draws = best)
    assert tournament(pop, rng, size=50)["id"] == 5
    with pytest.raises(ValueError, match="non-empty population"):
        tournament([], rng)


def test_early_termination_rule():
    finished = [[0.50, 0.60], [0.40, 0.70]]
    assert FIT.should_terminate([0.40], finished, 2, 0.9)          # 0.40 < 0.9 * 0.50
    assert not FIT.should_terminate([0.46], finished, 2, 0.9)
    assert not FIT.should_terminate([0.10, 0.20], finished, 2, 0.9)   # the last epoch is never cut
    assert not FIT.should_terminate([0.10], [], 2, 0.9)               # nobody to compare with
    assert not FIT.should_terminate([0.10], finished, 2, 0.0)         # off


def test_oracle_checks_its_rates():
    with pytest.raises(ValueError, match="mutation_rate must be in"):
        GeneticOracle(max_trials=3, mutation_rate=1.5)
    with pytest.raises(ValueError, match="population_size must be >= 2"):
        GeneticOracle(max_trials=3, population_size=1)


@pytest.fixture(scope="module")
def session_samples(tmp_path_factory):
    """SessionSampleGen's Beam graph on a tiny simulated shop log: Split-train/ and Split-eval/."""
    from feedrank.events.simulator import ecommerce_io as EIO
    from feedrank.sessions import beam_samples as B

    root = tmp_path_factory.mktemp("shop")
    EIO.simulate_ecommerce(str(root / "log"), users=80, items=40, categories=5, days=4, seed=3)
    B.run(str(root / "log"), str(root / "samples"), B.SampleSettings(k=3, eval_days=1))
    return str(root / "samples")


def _fn_args(samples_dir, work, custom):
    return types.SimpleNamespace(train_files=[os.path.join(samples_dir, "Split-train", "*")],
                                 eval_files=[os.path.join(samples_dir, "Split-eval", "*")],
                                 working_dir=str(work), custom_config=custom, transform_graph_path=None)


def test_oracle_runs_a_real_search_end_to_end(session_samples, tmp_path, monkeypatch):
    """6 trials of tiny DRNNs (R = 2 epochs): the first 3 random, then children of the population."""
    from feedrank.tune import tuner as T

    monkeypatch.setattr(genes, "SESSION_GENES", TINY_GENES)
    monkeypatch.setitem(genes.GENES, genes.SESSION, TINY_GENES)
    custom = {"tuner": {"max_trials": 6, "epochs": 2, "population_size": 3, "seed": 1,
                        "termination_fraction": 0.95}, "drnn": TINY_DRNN}
    result = T.tuner_fn(_fn_args(session_samples, tmp_path, custom))
    tuner = result.tuner
    assert isinstance(tuner.oracle, GeneticOracle)
    tuner.search(**result.fit_kwargs)
    log = tuner.trials_log
    assert len(log) == 6
    for t in log:
        assert 1 <= len(t["curve"]) <= 2 and t["fitness"] == max(t["curve"])
        assert 0.0 < t["fitness"] < 2.0
        assert t["values"]["height"] < t["values"]["length"]
        for hp in tuner.oracle.hyperparameters.space:
            assert in_range(hp, t["values"][hp.name])
    for i, t in enumerate(log):   # cut after epoch 1 exactly when the rule says so
        earlier = [u["curve"][0] for u in log[:i]]
        cut = bool(earlier) and t["curve"][0] < 0.95 * max(earlier)
        assert (t["terminated_after"] == 1) == cut and len(t["curve"]) == (1 if cut else 2)
    best = tuner.get_best_hyperparameters()[0].values
    assert tuner.oracle.get_best_trials()[0].score == pytest.approx(max(t["fitness"] for t in log))
    drnn_keys, batch = genes.drnn_overrides(best)
    assert batch in (32, 64) and drnn_keys["height"] < drnn_keys["length"]
    hashes = {json.dumps(t["values"], sort_keys=True) for t in log}
    assert len(hashes) == 6                       # no trial spent twice


def test_tuner_executor_writes_best_hyperparameters_the_trainer_reads(session_samples, tmp_path, monkeypatch):
    """TFX's Tuner executor (the component's Do) runs tuner_fn; its output is what the Trainer gets."""
    from tfx.components.tuner import executor as tuner_executor
    from tfx.proto import trainer_pb2
    from tfx.types import standard_artifacts
    from tfx.types import standard_component_specs as specs
    from tfx.utils import json_utils, proto_utils

    monkeypatch.setitem(genes.GENES, genes.SESSION, TINY_GENES)
    examples = standard_artifacts.Examples()
    examples.uri = session_samples
    examples.split_names = '["train", "eval"]'
    best, results = standard_artifacts.HyperParameters(), standard_artifacts.TunerResults()
    best.uri, results.uri = str(tmp_path / "best"), str(tmp_path / "results")
    os.makedirs(best.uri)
    os.makedirs(results.uri)
    custom = {"tuner": {"max_trials": 3, "epochs": 1, "population_size": 2}, "drnn": TINY_DRNN}
    props = {specs.TUNER_FN_KEY: "feedrank.tune.tuner.tuner_fn",
             specs.TRAIN_ARGS_KEY: proto_utils.proto_to_json(trainer_pb2.TrainArgs(splits=["train"])),
             specs.EVAL_ARGS_KEY: proto_utils.proto_to_json(trainer_pb2.EvalArgs(splits=["train"])),
             specs.CUSTOM_CONFIG_KEY: json_utils.dumps(custom)}
    executor = tuner_executor.Executor(tuner_executor.base_executor.BaseExecutor.Context(
        tmp_dir=str(tmp_path / "tmp"), unique_id="1"))
    executor.Do({specs.EXAMPLES_KEY: [examples]},
                {specs.BEST_HYPERPARAMETERS_KEY: [best], specs.TUNER_RESULTS_KEY: [results]}, props)
    with open(os.path.join(best.uri, "best_hyperparameters.txt")) as f:
        config = json.load(f)
    assert set(config["values"]) == set(TINY_GENES)
    drnn_keys, batch = genes.drnn_overrides(config)     # what the session Trainer applies
    assert set(drnn_keys) == {"width", "length", "height", "units", "learning_rate"} and batch in (32, 64)
    with open(os.path.join(results.uri, "tuner_results.json")) as f:
        assert len(json.load(f)) == 3


def test_ranking_trainer_applies_tuned_hyperparameters():
    from feedrank.train.settings import TrainerSettings
    from feedrank.train.trainer import apply_trainer_hyperparameters

    config = {"model": "din", "learning_rate": 0.001, "batch_size": 1024, "mlp_units": [200, 80]}
    tuned = {"space": [], "values": {"learning_rate": 0.004, "batch_size": 512, "mlp_width": 64,
                                     "mlp_depth": 3, "dropout": 0.2}}
    s = TrainerSettings.from_dict(apply_trainer_hyperparameters(config, tuned))
    assert (s.learning_rate, s.batch_size, s.mlp_units, s.dropout) == (0.004, 512, [64, 64, 64], 0.2)
    assert apply_trainer_hyperparameters(config, None) == config
    with pytest.raises(ValueError, match=r"not ranking genes \["):
        apply_trainer_hyperparameters(config, {"values": {"width": 3}})


def test_ctr_mode_tunes_a_ranking_family_on_auc(tmp_path):
    """CTR mode: tuner_fn on real generated ranking examples and their transform graph; the fitness
    is the validation AUC and the ranking Trainer's settings take the best values."""
    import glob
    import shutil

    from feedrank.train.settings import TrainerSettings
    from feedrank.tune import tuner as T
    from tests.helpers import examplegen as eg
    from tests.helpers.transform import analyze_and_transform

    out = eg.run(eg.make_log(str(tmp_path / "log")), str(tmp_path / "gen"), num_shards=1)["output_dir"]
    if not os.path.isdir(os.path.join(out, "Split-valid")):
        shutil.copytree(os.path.join(out, "Split-train"), os.path.join(out, "Split-valid"))
    analyze_and_transform(sorted(glob.glob(os.path.join(out, "Split-train", "*"))), str(tmp_path / "tft"))
    base = {"model": "dnn", "epochs": 5, "batch_size": 128, "mlp_units": [8], "activation": "relu",
            "embedding_dims": {"item": 4, "category": 2, "region": 2, "token": 2}, "raw_examples": True}
    fn_args = types.SimpleNamespace(
        train_files=[os.path.join(out, "Split-train", "*")], eval_files=[os.path.join(out, "Split-valid", "*")],
        transform_graph_path=str(tmp_path / "tft" / "transform_graph"), working_dir=str(tmp_path / "work"),
        custom_config={**base, "tuner": {"max_trials": 3, "epochs": 1, "population_size": 2}})
    result = T.tuner_fn(fn_args)
    result.tuner.search(**result.fit_kwargs)
    log = result.tuner.trials_log
    assert len(log) == 3 and all(len(t["curve"]) == 1 and 0.0 < t["fitness"] <= 1.0 for t in log)
    best = result.tuner.get_best_hyperparameters()[0].values
    assert set(best) == set(genes.CTR_GENES)
    s = TrainerSettings.from_dict(genes.apply_trainer_hyperparameters(base, best))
    assert s.mlp_units == [best["mlp_width"]] * best["mlp_depth"] and s.batch_size == best["batch_size"]
    with pytest.raises(Exception, match="gbdt grows trees in one pass"):
        T.tuner_fn(types.SimpleNamespace(**{**vars(fn_args), "custom_config": {"model": "gbdt"}}))
