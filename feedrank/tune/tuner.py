"""The TFX Tuner's entry point: `tuner_fn(fn_args)` -> `TunerFnResult` (docs/tuning.md).

TFX 1.16's Tuner component calls ``tuner_fn(fn_args)``, then
``result.tuner.search(**result.fit_kwargs)``, and writes the best trial's
hyperparameters, which the Trainer reads as ``fn_args.hyperparameters``.

``fn_args.custom_config`` holds:

* ``tuner``: `feedrank.tune.settings.TunerSettings` (algorithm, trial budget,
  R epochs, GA rates, early termination, ...);
* session mode: ``drnn``, the base `DrnnSettings` mapping (the tuned genes
  replace its keys; the vocabulary sizes come from the data), and optionally
  ``sessions`` with ``max_pages``/``max_purchases`` (default 50).  The examples
  are the session samples (SessionSampleGen), the train split only
  (`feedrank.tune.data`);
* CTR mode: the ranking Trainer's flat ``custom_config`` keys
  (`TrainerSettings.to_dict`); the examples and ``transform_graph`` are the
  ranking Trainer's, train on ``train`` and fitness on ``valid``.

The mode is ``tuner.mode``; ``auto`` is ``session`` when the config has a
``drnn`` section or ``model`` is ``drnn``, else ``ctr``.

`FitnessTuner` runs a trial: builds the model from the chromosome, fits at
most R epochs with `fitness.FitnessCallback` (fitness per epoch, early
termination) and reports the best fitness.  Its oracle is a
`GeneticOracle` (``algorithm: genetic``) or KerasTuner's RandomSearch oracle
(``random``) over the same space (`genes.space`).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import keras_tuner as kt  # noqa: E402
import tf_keras as keras  # noqa: E402
from tfx.components.tuner.component import TunerFnResult  # noqa: E402

from feedrank.tune import fitness as FIT  # noqa: E402
from feedrank.tune import genes  # noqa: E402
from feedrank.tune.ga_oracle import GeneticOracle  # noqa: E402
from feedrank.tune.settings import TunerSettings  # noqa: E402

log = logging.getLogger(__name__)

# trial values -> (fit kwargs, callbacks) -> None: trains one trial, calling the callbacks per epoch
TrialFit = Callable[[Dict[str, Any], List[keras.callbacks.Callback]], None]


class FitnessTuner(kt.Tuner):
    """A Tuner whose trial is ``trial_fit(values, callbacks)`` scored by ``fitness_fn``.

    ``trials_log`` records each trial's values, per-epoch fitness, whether it
    was terminated early, and its seconds (for benchmarks and reports)."""

    def __init__(self, oracle: kt.Oracle, trial_fit: TrialFit,
                 fitness_fn: Callable[[Mapping[str, float]], float], max_epochs: int,
                 termination_fraction: float, **kwargs: Any):
        super().__init__(oracle=oracle, hypermodel=None, **kwargs)
        self.trial_fit, self.fitness_fn = trial_fit, fitness_fn
        self.max_epochs, self.termination_fraction = int(max_epochs), float(termination_fraction)
        self.trials_log: List[Dict[str, Any]] = []

    def finished_curves(self) -> List[List[float]]:
        return [t["curve"] for t in self.trials_log]

    def run_trial(self, trial, *args: Any, **kwargs: Any) -> Dict[str, float]:
        values = dict(trial.hyperparameters.values)
        cb = FIT.FitnessCallback(self.fitness_fn, self.max_epochs, self.termination_fraction,
                                 self.finished_curves)
        t0 = time.time()
        self.trial_fit(values, [cb])
        if not cb.curve:
            raise RuntimeError(f"trial {trial.trial_id} trained no epoch")
        best = max(cb.curve)
        self.trials_log.append({"trial_id": trial.trial_id, "values": values, "curve": cb.curve,
                                "fitness": best, "terminated_after": cb.terminated_after,
                                "seconds": round(time.time() - t0, 2)})
        log.info("trial %s: fitness %.4f after %d epoch(s)%s", trial.trial_id, best, len(cb.curve),
                 " (terminated early)" if cb.terminated_after else "")
        return {FIT.FITNESS: best}


class RepairedRandomSearchOracle(kt.oracles.RandomSearchOracle):
    """KerasTuner's random search whose chromosomes pass through ``repair`` (a value the
    Trainer would refuse, such as the DRNN's height >= length, is never proposed)."""

    def __init__(self, repair: Callable[[Dict[str, Any]], Dict[str, Any]], **kwargs: Any):
        super().__init__(**kwargs)
        self.repair = repair

    def populate_space(self, trial_id: str) -> Dict[str, Any]:
        for _ in range(self._max_collisions):
            values = self._random_values()
            if values is None:
                break
            values = self.repair(values)
            if not self._duplicate(values):
                return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}
        return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}


def make_oracle(settings: TunerSettings, mode: str) -> kt.Oracle:
    """The configured oracle over ``mode``'s genes, maximising fitness."""
    objective = kt.Objective(FIT.FITNESS, "max")
    space = genes.space(mode)
    if settings.algorithm == "random":
        return RepairedRandomSearchOracle(repair=genes.repair, objective=objective, max_trials=settings.max_trials,
                                          hyperparameters=space, seed=settings.seed + 1)
    return GeneticOracle(objective=objective, max_trials=settings.max_trials, hyperparameters=space,
                         population_size=settings.population_size, crossover_rate=settings.crossover_rate,
                         mutation_rate=settings.mutation_rate, mutation_scale=settings.mutation_scale,
                         tournament_size=settings.tournament_size,
                         repair=genes.repair if mode == genes.SESSION else None, seed=settings.seed + 1)


def session_trial_fit(data, base_drnn: Mapping[str, Any], settings: TunerSettings,
                      seed: Optional[int] = None) -> TrialFit:
    """A `TrialFit` training the DRNN on `feedrank.tune.data.SessionData` for at most R epochs."""
    from feedrank.sessions import drnn

    def fit(values: Dict[str, Any], callbacks: List[keras.callbacks.Callback]) -> None:
        overrides, batch = genes.drnn_overrides(values)
        keras.utils.set_random_seed(settings.seed if seed is None else seed)
        model = drnn.build({**base_drnn, **overrides, "num_pages": data.num_pages, "num_items": data.num_items},
                           data.item_mask or None)
        model.fit(data.train[0], data.train[1], sample_weight=data.train[2], batch_size=batch or settings.batch_size,
                  epochs=settings.epochs, validation_data=data.valid, callbacks=callbacks, verbose=0)
    return fit


def ctr_trial_fit(fn_args, base: Mapping[str, Any], settings: TunerSettings) -> TrialFit:
    """A `TrialFit` training the ranking family of ``base`` (flat trainer settings) for at most R
    epochs on the train files, validated on ``fn_args.eval_files`` (the ``valid`` split)."""
    import tensorflow_transform as tft

    from feedrank.train import trainer

    tft_output = tft.TFTransformOutput(fn_args.transform_graph_path)

    def fit(values: Dict[str, Any], callbacks: List[keras.callbacks.Callback]) -> None:
        config = {**genes.apply_trainer_hyperparameters(dict(base), values), "epochs": settings.epochs}
        trainer.train(fn_args.train_files, fn_args.eval_files, tft_output, config, callbacks=callbacks)
    return fit


def resolve_mode(settings: TunerSettings, custom_config: Mapping[str, Any]) -> str:
    """``tuner.mode``, with ``auto`` resolved from the config (module doc)."""
    if settings.mode != "auto":
        return settings.mode
    return genes.SESSION if ("drnn" in custom_config or custom_config.get("model") == "drnn") else genes.CTR


def tuner_fn(fn_args) -> TunerFnResult:
    """TFX Tuner entry point: the configured `FitnessTuner` and its (empty) fit kwargs."""
    from feedrank.typed import ConfigError

    custom = dict(fn_args.custom_config or {})
    settings = TunerSettings.from_mapping(custom.pop("tuner", None), "Tuner custom_config.tuner")
    mode = resolve_mode(settings, custom)
    oracle = make_oracle(settings, mode)
    if mode == genes.SESSION:
        from feedrank.tune import data as tune_data

        base = custom.get("drnn") or {}
        if not isinstance(base, Mapping):
            raise ConfigError(f"Tuner custom_config.drnn must be a mapping, got {type(base).__name__}")
        shapes = custom.get("sessions") or {}   # the model's input widths, as the Transform pads them
        samples = tune_data.read_samples(fn_args.train_files)
        data = tune_data.session_data(samples, settings.valid_fraction, settings.max_samples,
                                      int(shapes.get("max_pages", 50)), int(shapes.get("max_purchases", 50)))
        trial_fit = session_trial_fit(data, base, settings)

        def fitness_fn(logs):
            return FIT.session_fitness_from_logs(logs, settings.fitness_accuracy)
    else:
        base = {k: v for k, v in custom.items() if k not in ("drnn", "sessions")}
        if base.get("model") == "gbdt":
            raise ConfigError("the Tuner tunes the Keras ranking families; gbdt grows trees in one pass "
                              "without epochs: tune it with its own settings (docs/gbdt.md)")
        trial_fit = ctr_trial_fit(fn_args, base, settings)
        fitness_fn = FIT.auc_fitness_from_logs
    tuner = FitnessTuner(oracle, trial_fit, fitness_fn, settings.epochs, settings.termination_fraction,
                         directory=fn_args.working_dir, project_name=f"{mode}_{settings.algorithm}",
                         overwrite=True)
    log.info("Tuner: %s search over the %s genes, %d trials of at most %d epoch(s)", settings.algorithm, mode,
             settings.max_trials, settings.epochs)
    return TunerFnResult(tuner=tuner, fit_kwargs={})
