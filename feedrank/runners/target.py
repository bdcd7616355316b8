"""`PipelineTarget`: what differs between the places the pipeline runs.

``pipeline.create_pipeline(cfg, target)`` builds the same components in the
same order for every orchestrator; the target supplies what an orchestrator
decides: where artifacts and pushed models go, where the data and the schema
are read from, the data version that keys the example generator's cache,
Beam's arguments, caching, the MLMD store, and how the Trainer receives its
settings. Two factories build one:

* `feedrank.runners.local.local_target(cfg)`: LocalDagRunner on this machine
  (absolute local paths, a content hash of the data, SQLite MLMD);
* `feedrank.runners.kubeflow_config.kubeflow_target(cfg, kf)`: Kubeflow
  Pipelines (object-storage paths, the schema inside the image, the
  orchestrator's own MLMD, the trainer settings as a run parameter).

The library never imports ``pipeline.py``: runners receive the function that
builds the pipeline and call it with their target.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional

from feedrank.config import Config


def _unchanged(config: Dict[str, Any]) -> Any:
    return config


@dataclasses.dataclass(frozen=True)
class PipelineTarget:
    """Where and how one build of the pipeline runs."""

    pipeline_root: str                # TFX artifacts
    push_dir: str                     # blessed models: <push_dir>/<version>/
    schema_file: str                  # the schema derived from feedrank/features.py
    input_base: str                   # the event log directory
    input_fingerprint: str            # the data version in the example generator's cache key
    beam_pipeline_args: List[str]
    enable_cache: bool
    metadata_connection_config: Optional[Any] = None  # MLMD; None: the orchestrator provides it
    # The Trainer's custom_config as the orchestrator passes it (as is, or a run parameter).
    wrap_trainer_config: Callable[[Dict[str, Any]], Any] = _unchanged


# What runners call to build a pipeline: ``pipeline.create_pipeline`` is one.
PipelineBuilder = Callable[[Config, PipelineTarget], Any]
