"""The session pipeline's typed settings: the config's ``sessions:`` section and, in
``mode: session``, its ``trainer:`` and ``evaluator:`` sections (docs/session_pipeline.md).

Each is a `feedrank.typed.Section`, so an unknown key or a value out of range is a
`ConfigError` naming the key.  The model families' own
settings (``trainer.drnn``, ``trainer.gru4rec``, ``trainer.sasrec``) are checked against
`feedrank.sessions.drnn.DrnnSettings`, `feedrank.sessions.gru4rec.Gru4recSettings` and
`feedrank.sessions.sasrec.SasrecSettings`
at load; ``num_pages`` and ``num_items`` come from the Transform's vocabularies.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict

from feedrank.typed import Checked, ConfigError, Section, setting, to_plain

log = logging.getLogger(__name__)

FAMILIES = ("drnn", "gru4rec", "sasrec")
FROM_VOCABULARIES = ("num_pages", "num_items")   # set by the Trainer from the Transform's vocabularies
METRIC_K = 20                                     # recall@20 and MRR@20 read the served top k
CART_ROWS = ("last", "all")                      # prefixes that train the add-to-cart output (drnn.from_samples)


@dataclasses.dataclass
class SessionsConfig(Section):
    """The ``sessions:`` section: sessionization, samples, the served top k."""
    SECTION = "sessions"
    gap_s: int = setting(1800, min=1)               # a pause longer than this ends a session (30 minutes)
    k: int = setting(5, min=1)                      # recent page states per sample (the DRNN's width)
    shortened: bool = True                          # also the shortened-path samples p0 -> I, p0,p1 -> I, ...
    next_pages: bool = True                         # every page transition is a sample (the next page its target)
    eval_days: int = setting(2, min=1)              # the log's last UTC days are the eval split
    val_days: int = setting(1, min=0)               # the days before eval: the val split (early stopping; 0: none)
    eval_start_ts: int = setting(0, min=0)          # > 0: this split bound instead of eval_days
    max_purchase_history: int = setting(50, min=0)  # earlier add-to-carts kept per sample
    num_shards: int = setting(1, min=0)             # files per split (0: the runner decides)
    max_pages: int = setting(50, min=1)             # the model's page input: the last max_pages pages
    max_purchases: int = setting(50, min=1)         # the model's purchase input: the last max_purchases items
    max_labels: int = setting(4, min=1)             # label items per sample kept (one training row each)
    top_k: int = setting(20, min=METRIC_K)          # items the served signature returns (>= 20: recall@20)


@dataclasses.dataclass
class SessionEvaluatorConfig(Section):
    """The ``evaluator:`` section in ``mode: session`` (components/session_evaluator): top-10 accuracy on
    the eval split's sessions must reach the floor and lose at most ``max_top10_regression`` against
    the last blessed session model."""
    SECTION = "evaluator"
    top10_floor: float = setting(0.05, min=0, max=1)
    max_top10_regression: float = setting(0.01, min=0.0)


@dataclasses.dataclass
class SessionTrainerSettings(Checked):
    """The ``trainer:`` section in ``mode: session``: the family, the training loop, the family's settings
    (checked on construction too)."""
    SECTION = "trainer"
    model: str = setting("drnn", choices=FAMILIES)
    epochs: int = setting(3, min=1)
    batch_size: int = setting(256, min=1)
    shuffle_buffer: int = setting(10000, min=0)
    patience: int = setting(2, min=0)        # epochs without a val top-10 gain before stopping (0: run every epoch)
    next_weight: float = setting(1.0, min=0.0)   # the next-page loss's weight beside the add-to-cart's
    cart_rows: str = setting("last", choices=CART_ROWS)   # prefixes training the add-to-cart (drnn.from_samples)
    seed: int = 0
    drnn: Dict[str, Any] = setting({})       # feedrank.sessions.drnn.DrnnSettings but num_pages/num_items
    gru4rec: Dict[str, Any] = setting({})    # feedrank.sessions.gru4rec.Gru4recSettings likewise
    sasrec: Dict[str, Any] = setting({})     # feedrank.sessions.sasrec.SasrecSettings likewise

    def check(self, where: str) -> None:
        """Each family's settings are valid ones (the vocabulary sizes aside)."""
        for family in FAMILIES:
            self.family_settings(family, num_pages=10 ** 6, num_items=10 ** 6)

    def family_settings(self, family: str | None = None, *, num_pages: int, num_items: int):
        """The family's settings object with the vocabulary sizes; a ConfigError names a bad key."""
        from feedrank.sessions import drnn, gru4rec, sasrec

        family = family or self.model
        values = dict(getattr(self, family))
        fixed = sorted(set(values) & set(FROM_VOCABULARIES))
        if fixed:
            raise ConfigError(f"trainer.{family}.{fixed[0]} is set by the Transform's vocabularies, "
                              f"not in the config")
        cls = {"drnn": drnn.DrnnSettings, "gru4rec": gru4rec.Gru4recSettings, "sasrec": sasrec.SasrecSettings}[family]
        values.update(num_pages=int(num_pages), num_items=int(num_items))
        try:
            return cls.from_mapping(values)
        except ConfigError as e:
            raise ConfigError(f"trainer.{e}") from None

    def to_dict(self) -> Dict[str, Any]:
        return to_plain(self)
