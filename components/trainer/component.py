"""`Trainer`: the TFX Trainer whose run function gets what the artifacts say.

The stock Trainer passes ``custom_config`` through unchanged; on Kubeflow that
config is an overridable run parameter.  What must agree with the data is
therefore read from the input artifacts at execution time and put into the run
function's ``custom_config`` before the stock `GenericExecutor` runs it:

* the Examples artifact's ``negative_sampling_rate`` custom property (written
  by BehaviorExampleGen), under ``custom_config['examples_artifact']``
  (`feedrank.train.settings.EXAMPLES_ARTIFACT_KEY`) with the artifact's URI.
  When ``examples`` are Transform's materialised output (which carries no such
  property), ``source_examples`` is the example generator's artifact to read
  it from;
* the optional ``word_vectors`` input's URI (`components.word2vec.component.WordVectors`)
  as ``custom_config['word_vectors_uri']``.

The executor also refuses ``eval_args`` naming the ``eval`` split: the Trainer
early-stops and selects on ``valid``; ``eval`` is the Evaluator's alone.
Everything else - run_fn, the Model/ModelRun outputs, TrainArgs/EvalArgs, a
RuntimeParameter custom_config on Kubeflow - is the stock Trainer's.

Usage (the pipeline gives it the id ``Trainer``, so configs keyed by the
component id - Kubeflow GPU pool and resources - keep applying)::

    Trainer(run_fn=..., examples=..., transform_graph=..., schema=...,
            train_args=TrainArgs(splits=["train"]), eval_args=EvalArgs(splits=["valid"]),
            custom_config={...}, source_examples=example_gen.outputs["examples"],
            word_vectors=word2vec.outputs["word_vectors"]).with_id("Trainer")
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Union

from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.orchestration import data_types
from tfx.proto import trainer_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import json_utils, proto_utils

from components.word2vec.component import WordVectors
from feedrank.train.settings import EXAMPLES_ARTIFACT_KEY
from feedrank.train.word_vectors import URI_KEY

log = logging.getLogger(__name__)

WORD_VECTORS_KEY = "word_vectors"
SOURCE_EXAMPLES_KEY = "source_examples"
SAMPLING_RATE_PROPERTY = "negative_sampling_rate"
EVAL_SPLIT = "eval"   # the Evaluator's split; never the Trainer's
_CUSTOM_CONFIG = standard_component_specs.CUSTOM_CONFIG_KEY
_EXAMPLES = standard_component_specs.EXAMPLES_KEY


class TrainerSpec(standard_component_specs.TrainerSpec):
    """TrainerSpec plus the optional ``source_examples`` and ``word_vectors`` inputs."""

    INPUTS = {
        **standard_component_specs.TrainerSpec.INPUTS,
        SOURCE_EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
        WORD_VECTORS_KEY: ChannelParameter(type=WordVectors, optional=True),
    }


def _with_config(exec_properties: Dict[str, Any], **entries: Any) -> Dict[str, Any]:
    """``exec_properties`` with ``entries`` set in custom_config (a JSON string, as TFX keeps it)."""
    config = json_utils.loads(exec_properties.get(_CUSTOM_CONFIG) or "null") or {}
    config.update(entries)
    return {**exec_properties, _CUSTOM_CONFIG: json_utils.dumps(config)}


def with_vectors_uri(exec_properties: Dict[str, Any], uri: str) -> Dict[str, Any]:
    """``exec_properties`` with ``custom_config[word_vectors_uri] = uri``."""
    return _with_config(exec_properties, **{URI_KEY: uri})


def sampling_rate(examples: types.Artifact) -> float:
    """The ``negative_sampling_rate`` custom property of an Examples artifact, checked."""
    value = examples.get_custom_property(SAMPLING_RATE_PROPERTY)
    if value is None:
        raise ValueError(f"the Examples artifact {examples.uri} has no {SAMPLING_RATE_PROPERTY} property: "
                         f"give the Trainer BehaviorExampleGen's examples as `examples` or `{SOURCE_EXAMPLES_KEY}`")
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the Examples artifact {examples.uri} has {SAMPLING_RATE_PROPERTY}={value!r}, "
                         "not a number") from None
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"the Examples artifact {examples.uri} has {SAMPLING_RATE_PROPERTY}={rate}, "
                         "outside (0, 1]")
    return rate


def with_examples_properties(exec_properties: Dict[str, Any], examples: types.Artifact) -> Dict[str, Any]:
    """``exec_properties`` with ``custom_config[examples_artifact]`` = the artifact's URI and sampling rate."""
    props = {"uri": examples.uri, SAMPLING_RATE_PROPERTY: sampling_rate(examples)}
    return _with_config(exec_properties, **{EXAMPLES_ARTIFACT_KEY: props})


def check_eval_args(exec_properties: Dict[str, Any]) -> None:
    """The Trainer validates on its own split: ``eval_args`` may not name the eval split."""
    text = exec_properties.get(standard_component_specs.EVAL_ARGS_KEY)
    args = proto_utils.json_to_proto(text, trainer_pb2.EvalArgs()) if text else trainer_pb2.EvalArgs()
    if not args.splits or EVAL_SPLIT in args.splits:
        raise ValueError(f"Trainer eval_args.splits={list(args.splits)}: the Trainer early-stops on the "
                         f"validation split (EvalArgs(splits=['valid'])); '{EVAL_SPLIT}' is the Evaluator's alone")


class Executor(trainer_executor.GenericExecutor):
    """Puts the artifacts' sampling rate and word vectors into custom_config, then runs the stock executor."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        check_eval_args(exec_properties)
        source = artifact_utils.get_single_instance(input_dict.get(SOURCE_EXAMPLES_KEY) or input_dict[_EXAMPLES])
        exec_properties = with_examples_properties(exec_properties, source)
        log.info("Trainer: negative sampling rate %s from %s",
                 source.get_custom_property(SAMPLING_RATE_PROPERTY), source.uri)
        vectors = input_dict.get(WORD_VECTORS_KEY) or []
        if vectors:
            uri = artifact_utils.get_single_uri(vectors)
            log.info("Trainer: word vectors from %s", uri)
            exec_properties = with_vectors_uri(exec_properties, uri)
        inputs = {k: v for k, v in input_dict.items() if k not in (WORD_VECTORS_KEY, SOURCE_EXAMPLES_KEY)}
        super().Do(inputs, output_dict, exec_properties)


class Trainer(base_component.BaseComponent):
    """The stock Trainer (run_fn, GenericExecutor) reading the sampling rate from the
    Examples artifact, with optional ``source_examples`` and ``word_vectors`` inputs."""

    SPEC_CLASS = TrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, *, run_fn: Union[str, data_types.RuntimeParameter],
                 examples: types.BaseChannel,
                 transform_graph: Optional[types.BaseChannel] = None,
                 schema: Optional[types.BaseChannel] = None,
                 train_args: Optional[trainer_pb2.TrainArgs] = None,
                 eval_args: Optional[trainer_pb2.EvalArgs] = None,
                 custom_config: Optional[Union[Dict[str, Any], data_types.RuntimeParameter]] = None,
                 source_examples: Optional[types.BaseChannel] = None,
                 word_vectors: Optional[types.BaseChannel] = None):
        super().__init__(spec=TrainerSpec(
            examples=examples, transform_graph=transform_graph, schema=schema,
            base_model=None, hyperparameters=None,
            train_args=train_args or trainer_pb2.TrainArgs(),
            eval_args=eval_args or trainer_pb2.EvalArgs(),
            module_file=None, run_fn=run_fn,
            custom_config=(custom_config if isinstance(custom_config, data_types.RuntimeParameter)
                           else json_utils.dumps(custom_config)),
            source_examples=source_examples, word_vectors=word_vectors,
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun)))


# The same component, by the name docs/word2vec.md gives its word-vector use.
VectorTrainer = Trainer
