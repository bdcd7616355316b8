"""``pipeline.py tensorboard``: TensorBoard on the Trainer's logs of a run.

The Trainer writes them into its ModelRun artifact (`feedrank.train.trainer.TENSORBOARD_DIR`):
per epoch the train and validation loss, AUC and logloss and the learning rate, and weight
histograms when ``trainer.tensorboard_histograms`` is set.  This command finds them in the
run's MLMD store (the newest Trainer run of the config's pipeline, or ``--all`` of them, each
its own TensorBoard run) and starts TensorBoard on them.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from typing import Dict, List

from feedrank.config import ConfigError, add_config_arguments, load_args

log = logging.getLogger(__name__)
COMMANDS = ("tensorboard",)


class NoLogsError(RuntimeError):
    """No Trainer run with TensorBoard logs (one line saying what to run)."""


def trainer_logdirs(metadata_path: str) -> List[str]:
    """The TensorBoard directories of every Trainer ModelRun in the MLMD store, oldest first."""
    from feedrank.evaluate.mlmd_reader import artifact_uris
    from feedrank.train.trainer import TENSORBOARD_DIR

    if not os.path.exists(metadata_path):
        raise NoLogsError(f"no MLMD store at {metadata_path}: run the pipeline first (pipeline.py run)")
    dirs = [os.path.join(uri, TENSORBOARD_DIR) for uri in artifact_uris(metadata_path, "ModelRun")]
    found = [d for d in dirs if os.path.isdir(d)]
    if not found:
        raise NoLogsError(f"no Trainer run in {metadata_path} has TensorBoard logs "
                          f"({len(dirs)} ModelRun artifact(s)); run the pipeline with this version")
    return found


def logdir_spec(dirs: List[str]) -> str:
    """TensorBoard's ``--logdir_spec``: one named run per Trainer run (its ModelRun id)."""
    named: Dict[str, str] = {}
    for d in dirs:
        named[f"trainer-{os.path.basename(os.path.dirname(d))}"] = d
    return ",".join(f"{name}:{path}" for name, path in named.items())


def add_commands(sub) -> None:
    p = sub.add_parser("tensorboard", help="TensorBoard on the Trainer's logs (loss, AUC, learning rate per epoch)")
    add_config_arguments(p)
    p.add_argument("--all", action="store_true", help="every Trainer run of the pipeline, not only the newest")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=6006, help="port (default: %(default)s)")
    p.add_argument("--print-logdir", action="store_true", help="print the log directories and exit")


def main(args: argparse.Namespace) -> int:
    """Runs ``tensorboard``; 0, or 2 with a one-line error."""
    try:
        cfg = load_args(args)
        dirs = trainer_logdirs(cfg.metadata_path)
    except (ConfigError, NoLogsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dirs = dirs if args.all else dirs[-1:]
    if args.print_logdir:
        print("\n".join(dirs))
        return 0
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir_spec", logdir_spec(dirs),
           "--host", args.host, "--port", str(args.port)]
    print(f"TensorBoard on {len(dirs)} Trainer run(s) at http://{args.host}:{args.port}/ (Ctrl-C stops it)")
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
