"""The search every learned row of the session Table II gets (`benchmarks.session_rows`): the
same number of configurations, proposed by the GA tuner's operators or at random.

``ga`` (the default) is the steady-state genetic algorithm of `feedrank.tune.ga_oracle` run as
a plain ask/tell loop, so a non-Keras row (ALS, item-kNN, the recently-viewed heuristic) is
tuned by exactly the search the neural rows get:

1. the first configuration is the row's defaults, then random draws until the population
   (``population`` configurations) is full;
2. every later configuration is a child of the fittest ``population`` configurations so far:
   two tournament-selected parents (`ga_oracle.tournament`), uniform crossover
   (`ga_oracle.crossover`), mutation in each gene's cumulative-probability space
   (`ga_oracle.mutate`); a child equal to an earlier configuration is mutated again, then
   replaced by a random draw.

``random``: the defaults, then distinct random draws.  Both are seeded and never propose a
configuration twice where the space allows.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")   # keras_tuner on tf_keras, as the Tuner component runs it

import keras_tuner as kt  # noqa: E402
import numpy as np  # noqa: E402

from feedrank.tune import ga_oracle as GA  # noqa: E402

Config = Dict[str, Any]
SEARCHES = ("ga", "random")


class Search:
    """Proposes ``trials`` configurations of one row: ``ask()`` the next, ``tell(config, fitness)``."""

    def __init__(self, defaults: Mapping[str, Any], space: Mapping[str, Sequence[Any]], trials: int,
                 seed: int, kind: str = "ga", population: Optional[int] = None,
                 crossover_rate: float = 0.8, mutation_rate: float = 0.2, mutation_scale: float = 0.2,
                 tournament_size: int = 2):
        if kind not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {kind!r}")
        if trials < 1:
            raise ValueError(f"trials must be >= 1, got {trials}")
        missing = sorted(set(space) - set(defaults))
        if missing:
            raise ValueError(f"the defaults have no value for the searched gene(s) {missing}")
        self.defaults, self.space, self.trials, self.kind = dict(defaults), dict(space), int(trials), kind
        self.population = max(2, int(population) if population else (self.trials + 1) // 2)
        self.rates = (crossover_rate, mutation_rate, mutation_scale, tournament_size)
        self.rng = np.random.default_rng(seed)
        hps = kt.HyperParameters()
        for name, values in self.space.items():
            hps.Choice(name, list(values), ordered=_ordered(values))
        self.hps = list(hps.space)
        self.done: List[Tuple[Config, float]] = []
        self.proposed: List[Config] = []

    def _random(self) -> Config:
        for _ in range(50):
            draw = {**self.defaults, **{k: v[int(self.rng.integers(len(v)))] for k, v in self.space.items()}}
            if draw not in self.proposed:
                return draw
        return draw

    def _child(self) -> Config:
        cross, rate, scale, size = self.rates
        pool = sorted(self.done, key=lambda d: d[1], reverse=True)[:self.population]
        genes = [({k: c[k] for k in self.space}, f) for c, f in pool]
        child = GA.mutate(GA.crossover(GA.tournament(genes, self.rng, size), GA.tournament(genes, self.rng, size),
                                       self.rng, cross), self.hps, self.rng, rate, scale)
        for _ in range(20):
            if {**self.defaults, **child} not in self.proposed:
                return {**self.defaults, **child}
            child = GA.mutate(child, self.hps, self.rng, max(rate, 1.0 / max(1, len(self.hps))), scale)
        return self._random()

    def ask(self) -> Optional[Config]:
        """The next configuration, None once ``trials`` were proposed."""
        n = len(self.proposed)
        if n >= self.trials:
            return None
        if n == 0:
            config = dict(self.defaults)
        elif self.kind == "random" or n < self.population or len(self.done) < 2:
            config = self._random()
        else:
            config = self._child()
        self.proposed.append(config)
        return config

    def tell(self, config: Config, fitness: float) -> None:
        """Records a proposed configuration's validation fitness (higher is better)."""
        self.done.append((dict(config), float(fitness)))

    def best(self) -> Tuple[Config, float]:
        """The fittest configuration so far and its fitness (the earliest on a tie)."""
        if not self.done:
            raise ValueError("no configuration was evaluated")
        return max(self.done, key=lambda d: d[1])


def _ordered(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and \
        list(values) == sorted(values)
