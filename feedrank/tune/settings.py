"""The ``tuner:`` section of a config: `TunerSettings`, typed and checked (docs/tuning.md)."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

from feedrank.train.settings import setting
from feedrank.typed import ConfigError, build_typed

log = logging.getLogger(__name__)

ALGORITHMS = ("genetic", "random")


@dataclasses.dataclass
class TunerSettings:
    """How the Tuner searches; ``enabled`` is the pipeline's switch (the Tuner itself ignores it)."""
    enabled: bool = False
    mode: str = setting("auto", choices=("auto", "session", "ctr"))   # auto: from the config's model
    algorithm: str = setting("genetic", choices=ALGORITHMS)
    max_trials: int = setting(12, min=1)
    epochs: int = setting(2, min=1)                      # R: the most epochs a trial trains
    population_size: int = setting(6, min=2)
    crossover_rate: float = setting(0.8, min=0.0, max=1.0)
    mutation_rate: float = setting(0.2, min=0.0, max=1.0)
    mutation_scale: float = setting(0.2, above=0.0, max=1.0)
    tournament_size: int = setting(2, min=1)
    termination_fraction: float = setting(0.9, min=0.0, max=1.0)   # 0: no early termination
    fitness_accuracy: str = setting("top10", choices=("top1", "top10"))   # session fitness's accuracy
    valid_fraction: float = setting(0.2, above=0.0, below=1.0)     # session: the latest sessions validate
    max_samples: int = setting(0, min=0)                 # session: > 0 keeps the latest samples
    batch_size: int = setting(128, min=1)                # session: the batch size when it is not tuned
    seed: int = setting(0, min=0)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, where: str = "tuner") -> "TunerSettings":
        """The settings from a mapping (None: the defaults); a bad key or value is a ConfigError."""
        if values is None:
            return cls()
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
        return build_typed(cls, values, where)
