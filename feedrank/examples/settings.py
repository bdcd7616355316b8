"""The example-generation settings and their defaults, declared once.

The run config's ``examples:`` section (`feedrank.config.ExamplesConfig`),
the Beam graph's `feedrank.examples.beam_pipeline.ExampleGenConfig` and the
`BehaviorExampleGen` component all take their defaults from `ExampleSettings`.  This module
imports neither Beam nor TensorFlow, so the config loads without them.
"""
from __future__ import annotations

import dataclasses

from feedrank.typed import Section, setting

EVENTS_PER_SHARD = 500_000  # ``num_shards: 0`` picks one shard per this many events


VALID_SPLITS = ("last_days", "user_hash")


@dataclasses.dataclass
class ExampleSettings(Section):
    """How events become labelled, split examples; the allowed values are declared
    here (`feedrank.typed.setting`) and checked by `Section.from_mapping`."""

    SECTION = "examples"
    label_window_s: int = setting(1800, min=0, doc="a click or conversion within this many seconds labels "
                                                   "the impression")
    eval_days: int = setting(1, min=1, doc="the log's last days that form the eval split")
    negative_sampling_rate: float = setting(1.0, above=0, max=1, doc="the share of train negatives kept; "
                                                                     "eval keeps all")
    max_bad_fraction: float = setting(0.01, min=0, max=1, doc="fail when a larger share of the events is "
                                                              "quarantined")
    seed: int = setting(0, doc="the seed of the negative sampling")
    num_shards: int = setting(0, min=0, doc="0: one shard per EVENTS_PER_SHARD events")
    # Model selection: the validation split, carved out of the train period (never the eval split).
    valid_split: str = setting("last_days", choices=VALID_SPLITS,
                               doc="last_days: the train period's last valid_days days; "
                                   "user_hash: a stable share of the train period's users")
    valid_days: int = setting(1, min=1, doc="the validation days with valid_split: last_days")
    valid_user_share: float = setting(0.1, above=0, below=1, doc="the validation users' share with "
                                                                 "valid_split: user_hash")
    warmup_days: int = setting(0, min=0, doc="the log's first days give behaviour history (and the Word2Vec "
                                             "corpus) but no examples")
    # Implausible timestamps are quarantined with a reason.
    min_ts: int = setting(0, min=0, doc="the oldest plausible timestamp (default 0: only negative times "
                                          "are refused, so logs from before 2000 load as they are)")
    max_future_skew_s: int = setting(86_400, min=0, doc="events later than the newest plausible impression "
                                                        "plus this are implausible")
    # Feature staleness: the behaviour features (sequences, user counters, session share,
    # category recency) see only events with ts < impression ts - feature_delay_s, as if the
    # online feature updater lagged this many seconds.  0: every event strictly before.
    feature_delay_s: int = setting(0, min=0, doc="the behaviour features see only events this many seconds "
                                                 "before the impression")

DEFAULTS = ExampleSettings()
