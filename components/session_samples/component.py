"""`SessionSampleGen`: a Beam-based TFX component turning shop sessions into training samples.

Reads the event log at ``input_base`` (an external input, like `BehaviorExampleGen`),
cuts the page views and add-to-carts into sessions and writes the DRNN's samples
(every page transition and the add-to-cart paths) as an ``Examples`` artifact with
``train``/``val``/``eval`` splits of
GZIP TFRecords.  The Beam graph is `feedrank.sessions.beam_samples` (docs/sessions.md);
this module only wires it into TFX so that the pipeline's ``beam_pipeline_args`` apply.

Usage::

    gen = SessionSampleGen(input_base="data/shop", input_fingerprint=fp)
    gen.outputs["examples"]
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

from feedrank.sessions import beam_samples, samples

log = logging.getLogger(__name__)

EXAMPLES_KEY = "examples"
FILE_FORMAT = "tfrecords_gzip"
PAYLOAD_FORMAT = "FORMAT_TF_EXAMPLE"
_DEFAULTS = beam_samples.SampleSettings()


class SessionSampleGenSpec(ComponentSpec):
    """Parameters and outputs of `SessionSampleGen`."""

    PARAMETERS = {
        "input_base": ExecutionParameter(type=str),
        "input_fingerprint": ExecutionParameter(type=str),
        "gap_s": ExecutionParameter(type=int),
        "k": ExecutionParameter(type=int),
        "eval_days": ExecutionParameter(type=int),
        "eval_start_ts": ExecutionParameter(type=int),
        "max_purchase_history": ExecutionParameter(type=int),
        "shortened": ExecutionParameter(type=int),
        "val_days": ExecutionParameter(type=int),
        "next_pages": ExecutionParameter(type=int),
        "num_shards": ExecutionParameter(type=int),
    }
    INPUTS: Dict[str, ChannelParameter] = {}
    OUTPUTS = {EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}


class Executor(base_beam_executor.BaseBeamExecutor):
    """Runs `feedrank.sessions.beam_samples` with the pipeline's Beam args."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        del input_dict
        self._log_startup({}, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
        settings = beam_samples.SampleSettings(
            gap_s=int(exec_properties["gap_s"]), k=int(exec_properties["k"]),
            eval_days=int(exec_properties["eval_days"]), eval_start_ts=int(exec_properties["eval_start_ts"]),
            max_purchase_history=int(exec_properties["max_purchase_history"]),
            shortened=bool(exec_properties["shortened"]), num_shards=int(exec_properties["num_shards"]),
            val_days=int(exec_properties.get("val_days") or 0), next_pages=bool(exec_properties.get("next_pages", 1)))
        input_base = exec_properties["input_base"]
        log.info("SessionSampleGen: %s -> %s (%s)", input_base, examples.uri, settings)
        examples.split_names = artifact_utils.encode_split_names(list(samples.SPLITS))
        examples.span = 0
        examples.version = 0
        examples.set_string_custom_property(example_gen_utils.FINGERPRINT_PROPERTY_NAME,
                                            exec_properties.get("input_fingerprint") or "")
        examples.set_string_custom_property(example_gen_utils.FILE_FORMAT_PROPERTY_NAME, FILE_FORMAT)
        examples.set_string_custom_property(example_gen_utils.PAYLOAD_FORMAT_PROPERTY_NAME, PAYLOAD_FORMAT)
        with self._make_beam_pipeline() as pipeline:
            beam_samples.build_pipeline(pipeline, input_base, examples.uri, settings)
        summary = beam_samples.finalize(examples.uri)
        for name in beam_samples.COUNTERS + ("log_end_ts", "eval_start_ts"):
            examples.set_int_custom_property(name, int(summary[name]))
        examples.set_string_custom_property("summary", json.dumps(summary, sort_keys=True))


class SessionSampleGen(base_beam_component.BaseBeamComponent):
    """Session samples of the shop's log as ``examples`` (splits train/val/eval).

    Custom properties of ``examples``: the exact counts of
    `feedrank.sessions.beam_samples.COUNTERS` (e.g. ``samples_train``,
    ``shortened_samples_eval``), ``eval_start_ts``, ``log_end_ts`` and ``summary`` (JSON).
    Fails with `feedrank.sessions.beam_samples.NoSamplesError` when the train split is
    empty and with `feedrank.events.io.ContractError` when the events table is missing.
    """

    SPEC_CLASS = SessionSampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, input_base: str, input_fingerprint: str = "", gap_s: int = _DEFAULTS.gap_s,
                 k: int = _DEFAULTS.k, eval_days: int = _DEFAULTS.eval_days,
                 eval_start_ts: int = _DEFAULTS.eval_start_ts,
                 max_purchase_history: int = _DEFAULTS.max_purchase_history,
                 shortened: bool = _DEFAULTS.shortened, num_shards: int = _DEFAULTS.num_shards,
                 val_days: int = _DEFAULTS.val_days, next_pages: bool = _DEFAULTS.next_pages):
        """Args are the fields of `feedrank.sessions.beam_samples.SampleSettings` (checked here);
        ``input_fingerprint`` (a content hash of the log) only serves caching."""
        beam_samples.SampleSettings(gap_s=gap_s, k=k, eval_days=eval_days, eval_start_ts=eval_start_ts,
                                    max_purchase_history=max_purchase_history, shortened=bool(shortened),
                                    num_shards=num_shards, val_days=val_days, next_pages=bool(next_pages))
        spec = SessionSampleGenSpec(
            input_base=os.fspath(input_base), input_fingerprint=str(input_fingerprint), gap_s=int(gap_s),
            k=int(k), eval_days=int(eval_days), eval_start_ts=int(eval_start_ts),
            max_purchase_history=int(max_purchase_history), shortened=int(bool(shortened)),
            num_shards=int(num_shards), val_days=int(val_days), next_pages=int(bool(next_pages)),
            examples=types.Channel(type=standard_artifacts.Examples))
        super().__init__(spec=spec)
