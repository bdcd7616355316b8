"""`BehaviorExampleGen`: a Beam-based TFX component for the behaviour log.

Reads the event log at ``input_base`` (see `feedrank.events.contract`),
quarantines bad rows, and writes ``train``/``valid``/``eval`` GZIP TFRecords
of `tf.train.Example` with exactly the raw features of `feedrank.features`
(the rules: docs/examples.md).
The Beam graph is `feedrank.examples.beam_pipeline`; this module only wires it
into TFX so that the pipeline's ``beam_pipeline_args`` apply.

Usage::

    gen = BehaviorExampleGen(input_base="data/demo", input_fingerprint=fp)
    gen.outputs["examples"], gen.outputs["quarantine"]
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List

from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from feedrank import features as F
from feedrank.events import contract
from feedrank.examples import accounting, beam_pipeline
from feedrank.examples.settings import DEFAULTS, ExampleSettings

log = logging.getLogger(__name__)

EXAMPLES_KEY = "examples"
QUARANTINE_KEY = "quarantine"
FILE_FORMAT = "tfrecords_gzip"
PAYLOAD_FORMAT = "FORMAT_TF_EXAMPLE"


class Quarantine(types.Artifact):
    """Quarantined event rows (``quarantine.parquet``, column ``reason``) and
    the accounting ``summary.json`` of one example-generation run."""

    TYPE_NAME = "feedrank.Quarantine"  # namespace.Name: what the KFP v2 compiler accepts


class BehaviorExampleGenSpec(ComponentSpec):
    """Parameters and outputs of `BehaviorExampleGen`."""

    PARAMETERS = {
        "input_base": ExecutionParameter(type=str),
        "input_fingerprint": ExecutionParameter(type=str),
        "label_window_s": ExecutionParameter(type=int),
        "eval_days": ExecutionParameter(type=int),
        "negative_sampling_rate": ExecutionParameter(type=float),
        "max_bad_fraction": ExecutionParameter(type=float),
        "seed": ExecutionParameter(type=int),
        "num_shards": ExecutionParameter(type=int),
        "valid_split": ExecutionParameter(type=str),
        "valid_days": ExecutionParameter(type=int),
        "valid_user_share": ExecutionParameter(type=float),
        "warmup_days": ExecutionParameter(type=int),
        "min_ts": ExecutionParameter(type=int),
        "max_future_skew_s": ExecutionParameter(type=int),
        # set only when > 0 (feature staleness; absent: 0, so default runs keep their spec)
        "feature_delay_s": ExecutionParameter(type=int, optional=True),
        # the run's feature contract (`feedrank.features.FeatureSpec.to_json`)
        "declared_features": ExecutionParameter(type=str, optional=True),
    }
    INPUTS: Dict[str, ChannelParameter] = {}
    OUTPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        QUARANTINE_KEY: ChannelParameter(type=Quarantine),
    }


def _set_counts(artifact: types.Artifact, summary: Dict[str, Any]) -> None:
    """Copies the accounting of ``summary`` into custom properties."""
    for key in ("events_read", "events_used", "quarantined", "impressions", "negatives_dropped",
                "censored_eval", "impressions_warmup") + accounting.BOUNDS:
        if key in summary:
            artifact.set_int_custom_property(key, int(summary[key]))
    for reason in contract.REASONS:
        artifact.set_int_custom_property(f"quarantined_{reason}",
                                         int(summary["quarantined_by_reason"][reason]))
    for split, n in summary["examples"].items():
        artifact.set_int_custom_property(f"examples_{split}", int(n))
        artifact.set_int_custom_property(f"positives_{split}", int(summary["positives"][split]))
    artifact.set_float_custom_property("bad_fraction", float(summary["bad_fraction"]))
    artifact.set_float_custom_property("negative_sampling_rate",
                                       float(summary["negative_sampling_rate"]))
    artifact.set_string_custom_property("summary", json.dumps(summary, sort_keys=True))


class Executor(base_beam_executor.BaseBeamExecutor):
    """Runs `feedrank.examples.beam_pipeline` with the pipeline's Beam args."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        del input_dict
        self._log_startup({}, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
        quarantine = artifact_utils.get_single_instance(output_dict[QUARANTINE_KEY])
        config = beam_pipeline.ExampleGenConfig.of(
            {k: v for k, v in exec_properties.items() if v is not None})
        spec = F.FeatureSpec.from_json(exec_properties.get("declared_features") or "")
        input_base = exec_properties["input_base"]
        log.info("BehaviorExampleGen: %s -> %s (config %s)", input_base, examples.uri, config)
        examples.split_names = artifact_utils.encode_split_names(list(beam_pipeline.SPLITS))
        examples.span = 0
        examples.version = 0
        examples.set_string_custom_property(example_gen_utils.FINGERPRINT_PROPERTY_NAME,
                                            exec_properties.get("input_fingerprint") or "")
        examples.set_string_custom_property(example_gen_utils.FILE_FORMAT_PROPERTY_NAME, FILE_FORMAT)
        examples.set_string_custom_property(example_gen_utils.PAYLOAD_FORMAT_PROPERTY_NAME,
                                            PAYLOAD_FORMAT)
        with self._make_beam_pipeline() as pipeline:
            effective = beam_pipeline.build_pipeline(pipeline, input_base, examples.uri,
                                                     quarantine.uri, config, spec=spec)
        summary = beam_pipeline.finalize(examples.uri, quarantine.uri, effective)
        _set_counts(examples, summary)
        _set_counts(quarantine, summary)
        log.info("BehaviorExampleGen done: %s",
                 {k: summary.get(k) for k in ("events_read", "quarantined", "examples", "positives",
                                              "censored_eval") + accounting.BOUNDS})


class BehaviorExampleGen(base_beam_component.BaseBeamComponent):
    """Validates the behaviour log and writes train/valid/eval tf.Examples.

    Outputs ``examples`` (`standard_artifacts.Examples`, splits train/valid/eval,
    GZIP TFRecords; custom properties: counts per split, the split bounds
    ``train_start_ts``/``valid_start_ts``/``eval_start_ts``/``log_end_ts``,
    ``censored_eval``, ``negative_sampling_rate``) and ``quarantine``
    (`Quarantine`).  Fails with a one-line `feedrank.events.io.ContractError`
    (`TooManyBadRowsError`, `NoImpressionsError`, `LogTooShortError`,
    `NoPositiveLabelsError` of `feedrank.examples.accounting`) when more than
    ``max_bad_fraction`` of the events are quarantined, when the log has no
    impression, when its days cannot hold the splits, or when a split has no
    positive label.
    """

    SPEC_CLASS = BehaviorExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, input_base: str, input_fingerprint: str = "",
                 label_window_s: int = DEFAULTS.label_window_s, eval_days: int = DEFAULTS.eval_days,
                 negative_sampling_rate: float = DEFAULTS.negative_sampling_rate,
                 max_bad_fraction: float = DEFAULTS.max_bad_fraction,
                 seed: int = DEFAULTS.seed, num_shards: int = DEFAULTS.num_shards,
                 valid_split: str = DEFAULTS.valid_split, valid_days: int = DEFAULTS.valid_days,
                 valid_user_share: float = DEFAULTS.valid_user_share,
                 warmup_days: int = DEFAULTS.warmup_days, min_ts: int = DEFAULTS.min_ts,
                 max_future_skew_s: int = DEFAULTS.max_future_skew_s, declared_features: str = "",
                 feature_delay_s: int = DEFAULTS.feature_delay_s):
        """Args are `feedrank.examples.settings.ExampleSettings` (defaults declared there);
        ``input_fingerprint`` (a content hash of the log) only serves caching;
        ``num_shards=0`` picks one shard per `settings.EVENTS_PER_SHARD` events;
        ``declared_features``: the run's feature contract (`feedrank.features.FeatureSpec.to_json`;
        "" for the built-in features)."""
        ExampleSettings.from_mapping(   # the config's checks, for a component built in Python (ConfigError)
            dict(label_window_s=label_window_s, eval_days=eval_days, negative_sampling_rate=negative_sampling_rate,
                 max_bad_fraction=max_bad_fraction, seed=seed, num_shards=num_shards, valid_split=valid_split,
                 valid_days=valid_days, valid_user_share=valid_user_share, warmup_days=warmup_days,
                 min_ts=min_ts, max_future_skew_s=max_future_skew_s, feature_delay_s=feature_delay_s),
            "BehaviorExampleGen")
        spec = BehaviorExampleGenSpec(
            input_base=os.fspath(input_base), input_fingerprint=str(input_fingerprint),
            label_window_s=int(label_window_s), eval_days=int(eval_days),
            negative_sampling_rate=float(negative_sampling_rate),
            max_bad_fraction=float(max_bad_fraction), seed=int(seed), num_shards=int(num_shards),
            valid_split=str(valid_split), valid_days=int(valid_days),
            valid_user_share=float(valid_user_share), warmup_days=int(warmup_days),
            min_ts=int(min_ts), max_future_skew_s=int(max_future_skew_s),
            declared_features=str(declared_features),
            **({"feature_delay_s": int(feature_delay_s)} if feature_delay_s else {}),
            examples=types.Channel(type=standard_artifacts.Examples),
            quarantine=types.Channel(type=Quarantine))
        super().__init__(spec=spec)
