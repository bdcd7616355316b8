"""The local runner: LocalDagRunner, Beam's DirectRunner and a SQLite MLMD store.

`local_target(cfg)` is the `PipelineTarget` of a local run; `run_local(cfg, build)`
builds the pipeline with it, runs it (with a heartbeat for long components), and
writes and prints the run summary.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

from feedrank.config import Config
from feedrank.runners.target import PipelineBuilder, PipelineTarget

log = logging.getLogger(__name__)


def local_target(cfg: Config) -> PipelineTarget:
    """Absolute local paths, the schema written under the run's directory, the data's
    content hash plus the code's as the data version, and SQLite MLMD."""
    from tfx import v1 as tfx

    from feedrank.fingerprint import code_fingerprint, data_fingerprint
    from feedrank.schema import write_schema

    return PipelineTarget(
        pipeline_root=os.path.abspath(os.path.join(cfg.pipeline_dir, "tfx")),
        push_dir=os.path.abspath(cfg.push_dir),
        schema_file=os.path.abspath(write_schema(os.path.join(cfg.pipeline_dir, "schema"))),
        input_base=os.path.abspath(cfg.input_base),
        input_fingerprint=f"{data_fingerprint(cfg.input_base)}-{code_fingerprint()}",
        beam_pipeline_args=list(cfg.beam_pipeline_args),
        enable_cache=cfg.enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.abspath(cfg.metadata_path)))


def run_local(cfg: Config, build: PipelineBuilder) -> dict:
    """Runs ``build(cfg, local_target(cfg))`` locally; returns the summary (also written as JSON)."""
    from tfx import v1 as tfx

    from feedrank.evaluate.summary import build_summary, pipeline_failure, print_summary, write_summary
    from feedrank.runners.console import Heartbeat
    from feedrank.tracking.server import ensure_tracking

    os.makedirs(cfg.pipeline_dir, exist_ok=True)
    cfg = ensure_tracking(cfg)  # the local MLflow server up (or the remote one reachable) before the run
    pipeline = build(cfg, local_target(cfg))
    log.info("running pipeline %s (root %s)", cfg.pipeline_name, cfg.pipeline_dir)
    error: Optional[BaseException] = None
    try:
        with Heartbeat():
            tfx.orchestration.LocalDagRunner().run(pipeline)
    except Exception as e:  # reported as a readable failure in the summary
        error = e
    summary = build_summary(cfg, failure=pipeline_failure(error) if error else None)
    path = write_summary(cfg, summary)
    print_summary(summary, path)
    return summary
