"""The command line of ``pipeline.py``: argument parsing and dispatch to the subcommands.

  python pipeline.py run --config configs/demo.yaml [--input DIR] [--simulate-if-missing] [--no-cache] [-v]

``run`` runs the pipeline locally (`feedrank.runners.local.run_local`). The other
subcommands come from their packages' ``cli`` modules: ``promote``/``compare``/``mlflow``
(`feedrank.tracking.cli`), ``compile``/``submit``/``schedule`` (`feedrank.runners.cli`),
``deploy``/``rollback`` (`feedrank.deploy.cli`) and ``ab-report`` (`feedrank.ab.cli`).
The pipeline arrives as ``build`` (``pipeline.create_pipeline``): the library never
imports ``pipeline.py``.

While a subcommand runs, ``sys.argv`` holds only the program's name: TFX's Beam
executors parse ``sys.argv`` with absl, whose ``-v`` is its own ``--verbosity``, and its
Python executors receive ``sys.argv`` as extra flags, so the CLI's own flags stay with it.

Errors the user can fix print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Iterator, List, Optional

from feedrank.ab import cli as ab_cli
from feedrank.config import Config, ConfigError, add_config_arguments, load_args
from feedrank.deploy import cli as deploy_cli
from feedrank.runners import cli as kubeflow_cli
from feedrank.runners import tensorboard as tensorboard_cli
from feedrank.runners.console import configure_logging, quiet_native_logs
from feedrank.runners.target import PipelineBuilder
from feedrank.tracking import TrackingError
from feedrank.tracking import cli as tracking_cli

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """``pipeline.py``'s parser: ``run`` and every package's subcommands."""
    parser = argparse.ArgumentParser(
        prog="pipeline.py", description="feedrank: behaviour-sequence ranking pipeline (TFX).")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the pipeline locally (LocalDagRunner, DirectRunner, SQLite MLMD)")
    add_config_arguments(p_run)
    p_run.add_argument("--input", help="override the config's input_base (a directory with events/items/users)")
    p_run.add_argument("--simulate-if-missing", action="store_true",
                       help="if input_base does not exist, simulate it with the config's `simulate` section")
    p_run.add_argument("--no-cache", action="store_true", help="disable component caching for this run")
    p_run.add_argument("-v", "--verbose", action="store_true", help="show TFX and Beam logs")
    tracking_cli.add_commands(sub)  # promote, compare, mlflow
    kubeflow_cli.add_commands(sub)  # compile, submit, schedule (Kubeflow Pipelines)
    deploy_cli.add_commands(sub)  # deploy, rollback (KServe)
    ab_cli.add_commands(sub)  # ab-report (the A/B test)
    tensorboard_cli.add_commands(sub)  # tensorboard (the Trainer's logs)
    return parser


@contextlib.contextmanager
def program_name_only() -> Iterator[None]:
    """``sys.argv`` reduced to the program's name while open, so that absl (TFX's executors)
    never parses the CLI's flags; restored on leaving."""
    saved = sys.argv
    sys.argv = saved[:1] or ["pipeline.py"]
    try:
        yield
    finally:
        sys.argv = saved


def main(argv: Optional[List[str]], build: PipelineBuilder) -> int:
    """Parses ``argv`` (default: ``sys.argv[1:]``) and runs the subcommand; its exit status.

    ``build`` makes the pipeline from a config and a target (``pipeline.create_pipeline``).
    """
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    quiet_native_logs(verbose)  # before anything imports TensorFlow
    with program_name_only():
        if args.command in tracking_cli.COMMANDS:
            return tracking_cli.main(args)
        if args.command in deploy_cli.COMMANDS:
            return deploy_cli.main(args)
        if args.command in ab_cli.COMMANDS:
            return ab_cli.main(args)
        if args.command in tensorboard_cli.COMMANDS:
            return tensorboard_cli.main(args)
        configure_logging(verbose)
        if args.command in kubeflow_cli.COMMANDS:
            return kubeflow_cli.run(args, build)
        return run_command(args, build)


def run_command(args: argparse.Namespace, build: PipelineBuilder) -> int:
    """``run``: loads the config, simulates a missing input when asked, runs the pipeline locally.

    0 when the run succeeded, 1 when it failed, 2 with a one-line error for bad input.
    """
    from feedrank.runners.local import run_local

    overrides = {}
    if args.input:
        overrides["input_base"] = args.input
    if args.no_cache:
        overrides["enable_cache"] = False
    try:
        cfg = load_args(args, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.simulate_if_missing:
        simulate_if_missing(cfg)
    if not os.path.isdir(cfg.input_base):
        print(f"error: input directory {cfg.input_base!r} does not exist; create demo data with "
              f"`python -m feedrank.events.simulator --out {cfg.input_base}` or pass --input DIR", file=sys.stderr)
        return 2
    try:
        summary = run_local(cfg, build)
    except TrackingError as e:  # the MLflow server could not be started or reached
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if summary.get("status") == "succeeded" else 1


def simulate_if_missing(cfg: Config) -> None:
    """Simulates ``cfg.input_base`` with the config's ``simulate`` section when it does not exist
    (the shop for ``mode: ecommerce``, else the feed); warns when an existing simulated feed
    was made with other settings (it is used as it is)."""
    sim = cfg.simulate
    if os.path.isdir(cfg.input_base) and sim.mode == "feed":
        from feedrank.events.simulator.generate import settings_differ

        differ = settings_differ(cfg.input_base, **sim.kwargs())
        if differ:
            log.warning("%s was simulated with other settings than the config's simulate section (%s); "
                        "it is used as it is: delete it to simulate it again", cfg.input_base, "; ".join(differ))
    if not os.path.isdir(cfg.input_base) and sim.mode == "ecommerce":
        from feedrank.events.simulator.ecommerce_io import simulate_ecommerce

        log.info("simulating the shop %s (%s)", cfg.input_base, sim.ecommerce_kwargs())
        simulate_ecommerce(cfg.input_base, **sim.ecommerce_kwargs())
    if not os.path.isdir(cfg.input_base):
        from feedrank.events.simulator import simulate

        log.info("simulating %s (users=%d items=%d days=%d seed=%d)", cfg.input_base,
                 sim.users, sim.items, sim.days, sim.seed)
        simulate(cfg.input_base, **sim.kwargs())
