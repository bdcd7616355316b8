"""`Word2VecGen`: trains post and query-token vectors with gensim (docs/word2vec.md).

Reads the event log at ``input_base`` with the example generator's reader and
row checks, takes the per-user click sequences and the search queries of the
``window_days`` days that end where the ranker's train split starts, trains
skip-gram Word2Vec (`feedrank.vectors`) and writes a `WordVectors` artifact
(``item_vectors.npy``, ``item_ids.txt``, ``token_vectors.npy``, ``tokens.txt``,
``meta.json``).

The window's end is the example generator's own ``train_start_ts`` (the end
of its ``examples.warmup_days`` history-only days) when its ``examples`` are
given, so every example, train ones included, is later than every event the
vectors saw; without them it is recomputed with the same rule.

Usage::

    w2v = Word2VecGen(input_base="data/demo", examples=example_gen.outputs["examples"],
                      warmup_days=4, window_days=4, vector_size=32)
    trainer = VectorTrainer(..., word_vectors=w2v.outputs["word_vectors"])
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from feedrank.vectors import artifact as vectors_artifact
from feedrank.vectors.corpus import load_corpus
from feedrank.vectors.train import Word2VecParams, train_vectors

log = logging.getLogger(__name__)

EXAMPLES_KEY = "examples"
WORD_VECTORS_KEY = "word_vectors"
TRAIN_START_KEY = "train_start_ts"
PARAM_KEYS = ("vector_size", "token_vector_size", "window", "min_count", "epochs", "negative", "sample", "seed")


class WordVectors(types.Artifact):
    """Post and query-token vectors (`feedrank.vectors.artifact`); custom properties
    ``item_vectors``, ``token_vectors``, ``window_start_ts``, ``window_end_ts``."""

    TYPE_NAME = "feedrank.WordVectors"  # namespace.Name: what the KFP v2 compiler accepts


class Word2VecGenSpec(ComponentSpec):
    """Parameters, inputs and outputs of `Word2VecGen`."""

    PARAMETERS = {
        "input_base": ExecutionParameter(type=str),
        # A content hash of the log and the code: the cache key follows both.
        "input_fingerprint": ExecutionParameter(type=str),
        "warmup_days": ExecutionParameter(type=int),
        "window_days": ExecutionParameter(type=int),
        "vector_size": ExecutionParameter(type=int),
        "token_vector_size": ExecutionParameter(type=int),
        "window": ExecutionParameter(type=int),
        "min_count": ExecutionParameter(type=int),
        "epochs": ExecutionParameter(type=int),
        "negative": ExecutionParameter(type=int),
        "sample": ExecutionParameter(type=float),
        "seed": ExecutionParameter(type=int),
    }
    INPUTS = {EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True)}
    OUTPUTS = {WORD_VECTORS_KEY: ChannelParameter(type=WordVectors)}


def train_start_of(examples: Optional[types.Artifact]) -> Optional[int]:
    """The example generator's ``train_start_ts`` (None when unknown): its custom
    property, else the field of its ``summary`` property."""
    if examples is None:
        return None
    if examples.has_custom_property(TRAIN_START_KEY):
        return int(examples.get_int_custom_property(TRAIN_START_KEY))
    if not examples.has_custom_property("summary"):
        return None
    summary = json.loads(examples.get_string_custom_property("summary") or "{}")
    return int(summary[TRAIN_START_KEY]) if summary.get(TRAIN_START_KEY) is not None else None


class Executor(base_executor.BaseExecutor):
    """Builds the corpus, trains the vectors, writes the artifact."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        out = artifact_utils.get_single_instance(output_dict[WORD_VECTORS_KEY])
        examples = input_dict.get(EXAMPLES_KEY) or []
        end = train_start_of(examples[0] if examples else None)
        params = Word2VecParams(**{k: exec_properties[k] for k in PARAM_KEYS})
        input_base = exec_properties["input_base"]
        log.info("Word2VecGen: %s, the %d day(s) before the train split (start %s), %s -> %s", input_base,
                 exec_properties["window_days"], "from the examples" if end is not None else "recomputed",
                 params, out.uri)
        corpus = load_corpus(input_base, int(exec_properties["window_days"]),
                             int(exec_properties["warmup_days"]), end)
        vectors = train_vectors(corpus, params)
        vectors.meta["input_base"] = input_base
        vectors_artifact.save(vectors, out.uri)
        for key in ("window_start_ts", "window_end_ts"):
            out.set_int_custom_property(key, int(vectors.meta[key]))
        for key, value in vectors.meta["counts"].items():
            out.set_int_custom_property(key, int(value))
        log.info("Word2VecGen done: %d post vectors, %d token vectors in %s",
                 len(vectors.item_ids), len(vectors.tokens), os.path.basename(out.uri.rstrip("/")))


class Word2VecGen(base_component.BaseComponent):
    """Offline Word2Vec post and query-token vectors from the behaviour before the train split."""

    SPEC_CLASS = Word2VecGenSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, input_base: str, examples: Optional[types.BaseChannel] = None,
                 input_fingerprint: str = "", warmup_days: int = 7, window_days: int = 7,
                 vector_size: int = 32, token_vector_size: int = 16, window: int = 5,
                 min_count: int = 1, epochs: int = 10, negative: int = 5, sample: float = 1e-3,
                 seed: int = 0):
        """Args mirror `feedrank.vectors.train.Word2VecParams` and the corpus window;
        ``examples`` (the example generator's output) supplies the exact start of the
        train split; ``warmup_days`` recomputes it without them."""
        params = Word2VecParams(vector_size, token_vector_size, window, min_count, epochs, negative,
                                float(sample), seed)  # validates the ranges now, not in the executor
        if window_days < 1 or warmup_days < window_days:
            raise ValueError(f"window_days must be >= 1 and warmup_days >= window_days (the window ends "
                             f"where the train split starts), got {window_days}, {warmup_days}")
        super().__init__(spec=Word2VecGenSpec(
            input_base=os.fspath(input_base), input_fingerprint=str(input_fingerprint),
            warmup_days=int(warmup_days), window_days=int(window_days),
            **{k: getattr(params, k) for k in PARAM_KEYS},
            examples=examples, word_vectors=types.Channel(type=WordVectors)))
