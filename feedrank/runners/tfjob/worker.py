"""One TFJob worker of the Trainer: its own executor output file, then TFX's entry point.

  python -m feedrank.runners.tfjob.worker --exchange_dir <dir> -- <the Trainer step's TFX arguments>

Every worker runs the Trainer executor on the same executor input (same inputs, same
output artifact URIs); ``TF_CONFIG``, set by the Training Operator, names the cluster
and this worker's index, from which the run function's distribution strategy and the
chief (worker 0) follow. Only the executor output file differs: TFX writes it to the
executor input's ``outputs.outputFile``, a path inside the launching pod that a worker
cannot reach, so each worker writes ``<exchange_dir>/worker-<index>/executor_output.json``
instead, and the launcher copies worker 0's into the step.

The process then becomes TFX's ``kubeflow_v2_run_executor`` (``exec``), so its exit
status is the executor's: the operator's ``ExitCode`` restart policy reads it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import List, Optional, Sequence, Tuple

from feedrank.runners.tfjob.render import EXCHANGE_FLAG, with_output_file, worker_output_file

log = logging.getLogger(__name__)

TFX_ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
WORKER_TASK = "worker"


def task_index(tf_config: Optional[str]) -> int:
    """This worker's index from ``TF_CONFIG`` (0 without one: a one-worker job has none)."""
    if not tf_config:
        return 0
    try:
        task = json.loads(tf_config)["task"]
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TF_CONFIG has no task type and index: {tf_config!r}") from e
    if kind != WORKER_TASK:
        raise ValueError(f"TF_CONFIG names a {kind!r} task; the Trainer's TFJob has {WORKER_TASK!r} replicas only")
    return index


def worker_argv(argv: Sequence[str], tf_config: Optional[str]) -> Tuple[int, List[str]]:
    """(index, TFX's arguments with this worker's output file) from the worker's own arguments."""
    parser = argparse.ArgumentParser(prog="python -m feedrank.runners.tfjob.worker")
    parser.add_argument(EXCHANGE_FLAG, required=True, help="where the workers write their executor outputs")
    parser.add_argument("tfx_args", nargs=argparse.REMAINDER, help="-- then the Trainer step's TFX arguments")
    args = parser.parse_args(list(argv))
    tfx_args = args.tfx_args[1:] if args.tfx_args[:1] == ["--"] else args.tfx_args
    index = task_index(tf_config)
    return index, with_output_file(tfx_args, worker_output_file(args.exchange_dir, index))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Runs TFX's executor entry point in this process with this worker's output file."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tf_config = os.environ.get("TF_CONFIG")
    index, tfx_args = worker_argv(sys.argv[1:] if argv is None else argv, tf_config)
    workers = len((json.loads(tf_config).get("cluster") or {}).get(WORKER_TASK, [])) if tf_config else 1
    log.info("Trainer worker %d of %d%s", index, workers, " (the chief)" if index == 0 else "")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", TFX_ENTRYPOINT, *tfx_args])


if __name__ == "__main__":
    main()
