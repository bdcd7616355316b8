"""`GeneticOracle`: a KerasTuner Oracle that proposes trials by a genetic algorithm.

A chromosome is one trial's hyperparameter values, one gene per
hyperparameter of the search space (`feedrank.tune.genes`).  The search is a
steady-state GA with elitism:

1. The first ``population_size`` trials are random chromosomes (KerasTuner's
   own sampler, so the first generation is a random search).
2. After that, the **population** is the ``population_size`` fittest
   completed trials so far (the best are never lost).  Each new trial is a
   child:
   - two parents by **tournament selection**: the fitter of ``tournament_size``
     chromosomes drawn at random from the population;
   - **uniform crossover** with probability ``crossover_rate`` (each gene from
     either parent with probability 1/2), else a copy of the first parent;
   - **mutation**: each gene with probability ``mutation_rate`` moves by a
     Gaussian step of ``mutation_scale`` in the gene's cumulative-probability
     space (KerasTuner's ``value_to_prob``/``prob_to_value``: log scale for a
     log-sampled float, one bucket per choice or integer).  A discrete gene
     whose step lands on its old value takes another value uniformly.  The
     step is clipped to [0, 1), so a gene is always a value of its range;
   - ``repair`` (optional) fixes genes that constrain each other;
   - a child equal to an earlier trial is mutated again (then replaced by a
     random chromosome), so no trial is spent twice.

The objective is maximised (``fitness``).  The operators are plain functions
(`tournament`, `crossover`, `mutate`) over ``{name: value}`` dicts and
KerasTuner hyperparameter objects, so they are tested on their own.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import keras_tuner as kt
import numpy as np
from keras_tuner.src.engine import trial as trial_module

log = logging.getLogger(__name__)

Values = Dict[str, Any]
_TOP = 1.0 - 1e-9   # prob_to_value's domain is [0, 1)


def _discrete(hp: Any) -> Optional[List[Any]]:
    """The values of a discrete hyperparameter (Choice, Boolean, Fixed, stepped Int), else None."""
    if isinstance(hp, kt.engine.hyperparameters.Choice):
        return list(hp.values)
    if isinstance(hp, kt.engine.hyperparameters.Boolean):
        return [False, True]
    if isinstance(hp, kt.engine.hyperparameters.Fixed):
        return [hp.value]
    if isinstance(hp, kt.engine.hyperparameters.Int):
        step = hp.step or 1
        return list(range(hp.min_value, hp.max_value + 1, step)) if hp.sampling == "linear" else None
    return None


def in_range(hp: Any, value: Any) -> bool:
    """Whether ``value`` is a legal value of the hyperparameter ``hp``."""
    values = _discrete(hp)
    if values is not None:
        return value in values
    if isinstance(hp, (kt.engine.hyperparameters.Int, kt.engine.hyperparameters.Float)):
        return hp.min_value <= value <= hp.max_value
    return True


def tournament(population: Sequence[Tuple[Values, float]], rng: np.random.Generator, size: int = 2) -> Values:
    """The fittest of ``size`` chromosomes drawn (with replacement) from ``population`` ((values, fitness) pairs)."""
    if not population:
        raise ValueError("tournament selection needs a non-empty population")
    picks = rng.integers(0, len(population), size=max(1, size))
    best = max(picks, key=lambda i: population[i][1])
    return dict(population[best][0])


def crossover(a: Values, b: Values, rng: np.random.Generator, rate: float = 1.0) -> Values:
    """Uniform crossover with probability ``rate`` (each gene from ``a`` or ``b``), else a copy of ``a``."""
    if rng.random() >= rate:
        return dict(a)
    return {k: (a[k] if rng.random() < 0.5 or k not in b else b[k]) for k in a}


def mutate(values: Values, hps: Sequence[Any], rng: np.random.Generator, rate: float,
           scale: float = 0.2) -> Values:
    """Each gene of ``values`` (hyperparameters ``hps``) mutated with probability ``rate``; see the module doc."""
    out = dict(values)
    for hp in hps:
        if hp.name not in out or rng.random() >= rate:
            continue
        choices = _discrete(hp)
        if choices is not None and len(choices) < 2:
            continue
        old = out[hp.name]
        p = float(np.clip(hp.value_to_prob(old) + rng.normal(0.0, scale), 0.0, _TOP))
        new = hp.prob_to_value(p)
        if choices is not None and new == old:
            others = [c for c in choices if c != old]
            new = others[int(rng.integers(0, len(others)))]
        out[hp.name] = new
    return out


class GeneticOracle(kt.Oracle):
    """A steady-state genetic algorithm over the search space (module doc); maximises ``objective``.

    Args:
        objective: the fitness to maximise (default ``kt.Objective("fitness", "max")``).
        max_trials: the trial budget.
        population_size: chromosomes in the population (and random trials first).
        crossover_rate, mutation_rate: the GA's rates, in [0, 1].
        mutation_scale: the mutation step's std in cumulative-probability space, > 0.
        tournament_size: chromosomes per tournament, >= 1.
        repair: maps a chromosome to a valid one (genes that constrain each other).
    """

    def __init__(self, objective: Any = None, max_trials: int = 12, population_size: int = 6,
                 crossover_rate: float = 0.8, mutation_rate: float = 0.2, mutation_scale: float = 0.2,
                 tournament_size: int = 2, repair: Optional[Callable[[Values], Values]] = None,
                 seed: Optional[int] = None, **kwargs: Any):
        for name, value in (("crossover_rate", crossover_rate), ("mutation_rate", mutation_rate)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"GeneticOracle {name} must be in [0, 1], got {value}")
        if population_size < 2:
            raise ValueError(f"GeneticOracle population_size must be >= 2, got {population_size}")
        if tournament_size < 1 or mutation_scale <= 0:
            raise ValueError(f"GeneticOracle needs tournament_size >= 1 and mutation_scale > 0, "
                             f"got {tournament_size}, {mutation_scale}")
        if max_trials is None or max_trials < 1:
            raise ValueError(f"GeneticOracle max_trials must be >= 1, got {max_trials}")
        super().__init__(objective=objective or kt.Objective("fitness", "max"), max_trials=max_trials,
                         seed=seed, **kwargs)
        if self.objective.direction != "max":
            raise ValueError("GeneticOracle maximises its objective: give a direction='max' objective")
        self.population_size, self.tournament_size = int(population_size), int(tournament_size)
        self.crossover_rate, self.mutation_rate = float(crossover_rate), float(mutation_rate)
        self.mutation_scale = float(mutation_scale)
        self.repair = repair
        self._rng = np.random.default_rng(self.seed)

    def population(self) -> List[Tuple[Values, float]]:
        """The ``population_size`` fittest completed trials, as (values, fitness), fittest first."""
        done = [t for t in self.trials.values()
                if t.status == trial_module.TrialStatus.COMPLETED and t.score is not None
                and np.isfinite(t.score)]
        done.sort(key=lambda t: t.score, reverse=True)
        return [(dict(t.hyperparameters.values), float(t.score)) for t in done[:self.population_size]]

    def _fix(self, values: Values) -> Values:
        return self.repair(values) if self.repair else values

    def _child(self) -> Optional[Values]:
        pool = self.population()
        hps = self.hyperparameters.space
        a = tournament(pool, self._rng, self.tournament_size)
        b = tournament(pool, self._rng, self.tournament_size)
        child = self._fix(mutate(crossover(a, b, self._rng, self.crossover_rate), hps, self._rng,
                                 self.mutation_rate, self.mutation_scale))
        for _ in range(self._max_collisions):
            if not self._duplicate(child):
                return child
            child = self._fix(mutate(child, hps, self._rng, max(self.mutation_rate, 1.0 / max(1, len(hps))),
                                     self.mutation_scale))
        return None

    def populate_space(self, trial_id: str) -> Dict[str, Any]:
        """A random chromosome for the first ``population_size`` trials, a child afterwards."""
        values = None
        if len(self.population()) >= min(self.population_size, 2) and len(self.trials) >= self.population_size:
            values = self._child()
            origin = "child"
        if values is None:
            values = self._random_values()
            values = self._fix(values) if values is not None else None
            origin = "random"
        if values is None:
            return {"status": trial_module.TrialStatus.STOPPED, "values": None}
        log.info("GA trial %s (%s): %s", trial_id, origin, values)
        return {"status": trial_module.TrialStatus.RUNNING, "values": values}

    def get_state(self) -> Dict[str, Any]:
        state = super().get_state()
        state.update(population_size=self.population_size, crossover_rate=self.crossover_rate,
                     mutation_rate=self.mutation_rate, mutation_scale=self.mutation_scale,
                     tournament_size=self.tournament_size)
        return state

    def set_state(self, state: Dict[str, Any]) -> None:
        super().set_state(state)
        for key in ("population_size", "crossover_rate", "mutation_rate", "mutation_scale", "tournament_size"):
            if key in state:
                setattr(self, key, state[key])
