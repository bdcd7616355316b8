"""The local runner: LocalDagRunner, Beam's DirectRunner and a SQLite MLMD store.

`local_target(cfg)` is the `PipelineTarget` of a local run; `run_local(cfg, build)`
builds the pipeline with it, runs it (with a heartbeat for long components), and
writes and prints the run summary.

SIGTERM or Ctrl-C (SIGINT) stops the run: the summary is written and printed
with the status ``interrupted``, the signal and the component that was
running, and the process exits with status 128 + the signal's number (143, 130).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Any, Dict, Iterator, Optional

from feedrank.config import Config
from feedrank.runners.target import PipelineBuilder, PipelineTarget

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(BaseException):
    """Raised in the main thread by a stop signal; a BaseException, so that no
    ``except Exception`` of the orchestrator or Beam takes it for a component's failure."""


class RunStopped(SystemExit):
    """Ends the process after an interrupted run's summary: exit status 128 + signal number."""


@contextlib.contextmanager
def stop_signals(received: Dict[str, Any]) -> Iterator[None]:
    """While open, SIGTERM and SIGINT record the signal in ``received`` (``signal``,
    ``signum``) and raise `RunInterrupted` in the main thread; a second one ends the
    process at once (the signal's default action).  The previous handlers come back
    on leaving.  Outside the main thread signals cannot be handled: no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: Any) -> None:
        if received:  # a second signal: stop now, without a summary
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        received.update(signal=signal.Signals(signum).name, signum=signum)
        raise RunInterrupted(f"stopped by {received['signal']}")

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def local_target(cfg: Config) -> PipelineTarget:
    """Absolute local paths, the schema written under the run's directory, the data's
    content hash plus the code's as the data version, and SQLite MLMD."""
    from tfx import v1 as tfx

    from feedrank.examples.tfdv_schema import write_schema
    from feedrank.fingerprint import code_fingerprint, data_fingerprint

    return PipelineTarget(
        pipeline_root=os.path.abspath(os.path.join(cfg.pipeline_dir, "tfx")),
        push_dir=os.path.abspath(cfg.push_dir),
        # the schema lists the run's declared columns
        schema_file=os.path.abspath(write_schema(os.path.join(cfg.pipeline_dir, "schema"), cfg.features_spec)),
        input_base=os.path.abspath(cfg.input_base),
        input_fingerprint=f"{data_fingerprint(cfg.input_base)}-{code_fingerprint()}",
        beam_pipeline_args=list(cfg.beam_pipeline_args),
        enable_cache=cfg.enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.abspath(cfg.metadata_path)))


def run_local(cfg: Config, build: PipelineBuilder) -> dict:
    """Runs ``build(cfg, local_target(cfg))`` locally; returns the summary (also written as JSON).

    Raises:
      RunStopped: after writing the summary of a run stopped by SIGTERM or SIGINT.
    """
    from feedrank.evaluate import mlmd_reader
    from feedrank.evaluate.summary import build_summary, pipeline_failure, print_summary, write_summary
    from feedrank.runners.console import Heartbeat

    received: Dict[str, Any] = {}
    error: Optional[BaseException] = None
    component: Optional[str] = None
    previous = None
    with stop_signals(received):
        try:
            previous = mlmd_reader.latest_run(cfg.metadata_path)
            cfg = _prepare(cfg)
            pipeline = build(cfg, local_target(cfg))
            log.info("running pipeline %s (root %s)", cfg.pipeline_name, cfg.pipeline_dir)
            with Heartbeat() as heartbeat:
                try:
                    _run_dag(pipeline)
                except Exception as e:  # reported as a readable failure in the summary
                    error = e
                finally:
                    component = heartbeat.current
        except RunInterrupted:
            pass
        if received:  # also when a library turned the signal's exception into another error
            log.warning("run stopped by %s while %s was running", received["signal"], component or "no component")
            error = None
    interrupted = {"signal": received["signal"], "component": component} if received else None
    summary = build_summary(cfg, failure=pipeline_failure(error) if error else None, interrupted=interrupted,
                            previous_run_id=previous.run_id if previous else None)
    path = write_summary(cfg, summary)
    print_summary(summary, path)
    if received:
        raise RunStopped(128 + received["signum"])
    return summary


def _prepare(cfg: Config) -> Config:
    """The run's directory made, and the local MLflow server up (or the remote one reachable)."""
    from feedrank.tracking.server import ensure_tracking

    os.makedirs(cfg.pipeline_dir, exist_ok=True)
    return ensure_tracking(cfg)


def _run_dag(pipeline: Any) -> None:
    from tfx import v1 as tfx

    tfx.orchestration.LocalDagRunner().run(pipeline)
