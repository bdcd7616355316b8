"""The ``tuner:`` section of a config: `TunerSettings`, typed and checked (docs/tuning.md)."""
from __future__ import annotations

import dataclasses
import logging

from feedrank.typed import Section, setting

log = logging.getLogger(__name__)

ALGORITHMS = ("genetic", "random")


@dataclasses.dataclass
class TunerSettings(Section):
    """How the Tuner searches; ``enabled`` is the pipeline's switch (the Tuner itself ignores it).
    `Section.from_mapping` builds it from a mapping (None: the defaults)."""
    SECTION = "tuner"
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
