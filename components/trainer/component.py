"""`VectorTrainer`: the TFX Trainer plus an optional ``word_vectors`` input.

The stock Trainer has no input for extra artifacts, so this subclass's spec
adds one (`components.word2vec.component.WordVectors`) and its executor (the
stock `GenericExecutor`) puts the artifact's URI into the run function's
``custom_config['word_vectors_uri']`` before delegating.  Everything else -
run_fn, the Model/ModelRun outputs, TrainArgs/EvalArgs, a RuntimeParameter
custom_config on Kubeflow - is the stock Trainer's.

Usage (the pipeline gives it the id ``Trainer``, so configs keyed by the
component id - Kubeflow GPU pool and resources - keep applying)::

    VectorTrainer(run_fn=..., examples=..., transform_graph=..., schema=...,
                  train_args=..., eval_args=..., custom_config={...},
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
from tfx.utils import json_utils

from components.word2vec.component import WordVectors
from feedrank.train.word_vectors import URI_KEY

log = logging.getLogger(__name__)

WORD_VECTORS_KEY = "word_vectors"
_CUSTOM_CONFIG = standard_component_specs.CUSTOM_CONFIG_KEY


class VectorTrainerSpec(standard_component_specs.TrainerSpec):
    """TrainerSpec plus the optional ``word_vectors`` input."""

    INPUTS = {
        **standard_component_specs.TrainerSpec.INPUTS,
        WORD_VECTORS_KEY: ChannelParameter(type=WordVectors, optional=True),
    }


def with_vectors_uri(exec_properties: Dict[str, Any], uri: str) -> Dict[str, Any]:
    """``exec_properties`` with ``custom_config[word_vectors_uri] = uri`` (JSON string, as TFX keeps it)."""
    config = json_utils.loads(exec_properties.get(_CUSTOM_CONFIG) or "null") or {}
    config[URI_KEY] = uri
    return {**exec_properties, _CUSTOM_CONFIG: json_utils.dumps(config)}


class Executor(trainer_executor.GenericExecutor):
    """Injects the word vectors' URI into custom_config, then runs the stock executor."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        vectors = input_dict.get(WORD_VECTORS_KEY) or []
        if vectors:
            uri = artifact_utils.get_single_uri(vectors)
            log.info("VectorTrainer: word vectors from %s", uri)
            exec_properties = with_vectors_uri(exec_properties, uri)
        else:
            log.info("VectorTrainer: no word vectors; training as the stock Trainer")
        inputs = {k: v for k, v in input_dict.items() if k != WORD_VECTORS_KEY}
        super().Do(inputs, output_dict, exec_properties)


class VectorTrainer(base_component.BaseComponent):
    """The stock Trainer (run_fn, GenericExecutor) with an optional ``word_vectors`` input."""

    SPEC_CLASS = VectorTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, *, run_fn: Union[str, data_types.RuntimeParameter],
                 examples: types.BaseChannel,
                 transform_graph: Optional[types.BaseChannel] = None,
                 schema: Optional[types.BaseChannel] = None,
                 train_args: Optional[trainer_pb2.TrainArgs] = None,
                 eval_args: Optional[trainer_pb2.EvalArgs] = None,
                 custom_config: Optional[Union[Dict[str, Any], data_types.RuntimeParameter]] = None,
                 word_vectors: Optional[types.BaseChannel] = None):
        super().__init__(spec=VectorTrainerSpec(
            examples=examples, transform_graph=transform_graph, schema=schema,
            base_model=None, hyperparameters=None,
            train_args=train_args or trainer_pb2.TrainArgs(),
            eval_args=eval_args or trainer_pb2.EvalArgs(),
            module_file=None, run_fn=run_fn,
            custom_config=(custom_config if isinstance(custom_config, data_types.RuntimeParameter)
                           else json_utils.dumps(custom_config)),
            word_vectors=word_vectors,
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun)))
