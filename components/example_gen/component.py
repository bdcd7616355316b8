"""`BehaviorExampleGen`: a Beam-based TFX component for the behaviour log.

Reads the event log at ``input_base`` (see `feedrank.events.contract`),
quarantines bad rows, and writes ``train``/``eval`` GZIP TFRecords of
`tf.train.Example` with exactly the raw features of `feedrank.features`.
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

from feedrank.events import contract
from feedrank.examples import beam_pipeline
from feedrank.examples.settings import DEFAULTS

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
    }
    INPUTS: Dict[str, ChannelParameter] = {}
    OUTPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        QUARANTINE_KEY: ChannelParameter(type=Quarantine),
    }


def _set_counts(artifact: types.Artifact, summary: Dict[str, Any]) -> None:
    """Copies the accounting of ``summary`` into custom properties."""
    for key in ("events_read", "events_used", "quarantined", "impressions", "negatives_dropped"):
        artifact.set_int_custom_property(key, int(summary[key]))
    for reason in contract.REASONS:
        artifact.set_int_custom_property(f"quarantined_{reason}",
                                         int(summary["quarantined_by_reason"][reason]))
    for split, n in summary["examples"].items():
        artifact.set_int_custom_property(f"examples_{split}", int(n))
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
                                                     quarantine.uri, config)
        summary = beam_pipeline.finalize(examples.uri, quarantine.uri, effective)
        _set_counts(examples, summary)
        _set_counts(quarantine, summary)
        log.info("BehaviorExampleGen done: %s",
                 {k: summary[k] for k in ("events_read", "quarantined", "examples")})


class BehaviorExampleGen(base_beam_component.BaseBeamComponent):
    """Validates the behaviour log and writes train/eval tf.Examples.

    Outputs ``examples`` (`standard_artifacts.Examples`, splits train/eval,
    GZIP TFRecords) and ``quarantine`` (`Quarantine`).  Fails with
    `feedrank.examples.beam_pipeline.TooManyBadRowsError` when more than
    ``max_bad_fraction`` of the events are quarantined.
    """

    SPEC_CLASS = BehaviorExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, input_base: str, input_fingerprint: str = "",
                 label_window_s: int = DEFAULTS.label_window_s, eval_days: int = DEFAULTS.eval_days,
                 negative_sampling_rate: float = DEFAULTS.negative_sampling_rate,
                 max_bad_fraction: float = DEFAULTS.max_bad_fraction,
                 seed: int = DEFAULTS.seed, num_shards: int = DEFAULTS.num_shards):
        """Args are `feedrank.examples.settings.ExampleSettings` (defaults declared there);
        ``input_fingerprint`` (a content hash of the log) only serves caching;
        ``num_shards=0`` picks one shard per `settings.EVENTS_PER_SHARD` events."""
        if not 0.0 < negative_sampling_rate <= 1.0:
            raise ValueError(f"negative_sampling_rate must be in (0, 1], got {negative_sampling_rate}")
        if eval_days < 0 or label_window_s < 0 or num_shards < 0:
            raise ValueError("eval_days, label_window_s and num_shards must be >= 0")
        spec = BehaviorExampleGenSpec(
            input_base=os.fspath(input_base), input_fingerprint=str(input_fingerprint),
            label_window_s=int(label_window_s), eval_days=int(eval_days),
            negative_sampling_rate=float(negative_sampling_rate),
            max_bad_fraction=float(max_bad_fraction), seed=int(seed), num_shards=int(num_shards),
            examples=types.Channel(type=standard_artifacts.Examples),
            quarantine=types.Channel(type=Quarantine))
        super().__init__(spec=spec)
