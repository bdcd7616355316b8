"""The example-generation settings and their defaults, declared once.

The run config's ``examples:`` section (`feedrank.config.ExamplesConfig`),
the Beam graph's `feedrank.examples.beam_pipeline.ExampleGenConfig`, the
builder's `feedrank.examples.build.BuildConfig` and the `BehaviorExampleGen`
component all take their defaults from `ExampleSettings`.  This module
imports neither Beam nor TensorFlow, so the config loads without them.
"""
from __future__ import annotations

import dataclasses

EVENTS_PER_SHARD = 500_000  # ``num_shards: 0`` picks one shard per this many events


@dataclasses.dataclass
class ExampleSettings:
    """How events become labelled, split examples."""

    label_window_s: int = 1800            # a click/conversion within this many seconds labels the impression
    eval_days: int = 1                    # the log's last days that form the eval split
    negative_sampling_rate: float = 1.0   # share of train negatives kept (eval keeps all)
    max_bad_fraction: float = 0.01        # fail when a larger share of the events is quarantined
    seed: int = 0                         # seed of the negative sampling
    num_shards: int = 0                   # 0: automatic, one shard per EVENTS_PER_SHARD events
    # Model selection: the validation split, carved out of the train period (never the eval split).
    valid_split: str = "last_days"        # "last_days": the train period's last valid_days days;
                                          # "user_hash": a stable share of the train period's users
    valid_days: int = 1                   # with valid_split: last_days
    valid_user_share: float = 0.1         # with valid_split: user_hash
    warmup_days: int = 0                  # the log's first days give behaviour history (and the
                                          # Word2Vec corpus) but no examples
    # Implausible timestamps are quarantined with a reason.
    min_ts: int = 946_684_800             # floor (2000-01-01 UTC); negative ts are always implausible
    max_future_skew_s: int = 86_400       # later than the newest plausible impression + this
    # Feature staleness: the behaviour features (sequences, user counters, session share,
    # category recency) see only events with ts < impression ts - feature_delay_s, as if the
    # online feature updater lagged this many seconds.  0: every event strictly before.
    feature_delay_s: int = 0


VALID_SPLITS = ("last_days", "user_hash")


DEFAULTS = ExampleSettings()
