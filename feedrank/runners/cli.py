"""The Kubeflow subcommands of ``pipeline.py``: compile, submit, schedule.

  python pipeline.py compile --config configs/demo.yaml \
      --kubeflow-config configs/kubeflow.yaml --output build/pipeline.yaml
  python pipeline.py submit --host http://localhost:8080 --param input_base=gs://b/data/2024-06-01
  python pipeline.py schedule --cron "0 0 3 * * *" --host http://localhost:8080

The daily loop compiles with ``--kubeflow-config configs/kubeflow_daily.yaml`` (the
event log with the served impressions on a mounted volume; docs/kubeflow.md).

Errors the user can fix print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

from feedrank.config import ConfigError, add_config_arguments
from feedrank.runners.kfp_client import DEFAULT_EXPERIMENT, DEFAULT_PACKAGE, HOST_ENV
from feedrank.runners.target import PipelineBuilder

COMMANDS = ("compile", "submit", "schedule")


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help=f"KFP API endpoint, e.g. http://localhost:8080 (default: ${HOST_ENV})")
    p.add_argument("--package", default=DEFAULT_PACKAGE, help="compiled package (default: %(default)s)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="pipeline parameter (repeatable): input_base, data_version, trainer_config, "
                        "or trainer.<key>=<json> to edit one trainer setting")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="KFP experiment (default: %(default)s)")
    p.add_argument("--service-account", help="Kubernetes service account of the run's pods, e.g. "
                                             "feedrank-pipeline (manifests/base/rbac.yaml); default: KFP's")
    # No --cache: KFP's run-level switch would override the package's per-task settings
    # and cache the side-effecting tasks (never_cache).
    p.add_argument("--no-cache", dest="enable_caching", action="store_false", default=None,
                   help="disable caching for every task of the run (default: the package's per-task settings)")


def add_commands(sub) -> None:
    """Adds the compile/submit/schedule parsers to ``pipeline.py``'s subparsers."""
    p = sub.add_parser("compile", help="compile the pipeline for Kubeflow Pipelines (a .yaml package)")
    add_config_arguments(p)
    p.add_argument("--kubeflow-config", default="configs/kubeflow.yaml",
                   help="Kubeflow settings: images, pipeline_root, GPU, resources (default: %(default)s)")
    p.add_argument("--output", default=DEFAULT_PACKAGE, help="package to write, .yaml (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="show TensorFlow's and TFX's native logs")

    p = sub.add_parser("submit", help="create a run of a compiled package on a KFP server")
    _client_args(p)
    p.add_argument("--run-name", help="run name (default: KFP's)")

    p = sub.add_parser("schedule", help="create a recurring run (cron, 6 fields, seconds first)")
    _client_args(p)
    p.add_argument("--cron", required=True, help="6-field cron, seconds first, e.g. '0 0 3 * * *' (03:00 daily)")
    p.add_argument("--name", default="feedrank-daily", help="recurring run name (default: %(default)s)")
    p.add_argument("--max-concurrency", type=int, default=1, help="runs at once (default: %(default)s)")
    p.add_argument("--catchup", action="store_true", help="backfill missed intervals (default: no catch-up)")


def run(args: argparse.Namespace, build: PipelineBuilder) -> Optional[int]:
    """Runs a Kubeflow subcommand; returns its exit status (None: not one of ours).

    ``build`` makes the pipeline from a config and a target (``pipeline.create_pipeline``).
    """
    if args.command not in COMMANDS:
        return None
    from feedrank.runners.kfp_client import KfpError

    try:
        if args.command == "compile":
            return _compile(args, build)
        from feedrank.runners import kfp_client

        params = kfp_client.parse_params(args.param, args.package)
        if args.command == "submit":
            run_id, url = kfp_client.submit(args.package, args.host, params, experiment=args.experiment,
                                            run_name=args.run_name, enable_caching=args.enable_caching,
                                            service_account=args.service_account)
            print(f"run {run_id} created: {url}")
        else:
            job_id, url = kfp_client.schedule(
                args.package, args.host, args.cron, params, experiment=args.experiment, name=args.name,
                max_concurrency=args.max_concurrency, no_catchup=not args.catchup,
                enable_caching=args.enable_caching, service_account=args.service_account)
            print(f"recurring run {job_id} created ({args.cron}): {url}")
        return 0
    except (KfpError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _compile(args: argparse.Namespace, build: PipelineBuilder) -> int:
    from feedrank.config import load_args
    from feedrank.runners.kubeflow import UnsupportedOnKubeflow, compile_pipeline
    from feedrank.runners.kubeflow_config import load_kubeflow_config

    cfg = load_args(args)
    kf = load_kubeflow_config(args.kubeflow_config)
    started = time.monotonic()
    print(f"compile: building the pipeline of {args.config} for Kubeflow with {args.kubeflow_config} "
          f"(TFX compiles every component's spec: 10-30 s)", file=sys.stderr, flush=True)
    try:
        path = compile_pipeline(build, cfg, kf, args.output)
    except UnsupportedOnKubeflow as e:
        raise ConfigError(str(e)) from None
    print(f"compile: done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print(f"wrote {path} (images: {kf.image}"
          + "".join(f", {k}: {v}" for k, v in sorted(kf.images.items()))
          + f"; pipeline_root {kf.pipeline_root}"
          + (f"; Trainer: a TFJob of {kf.trainer_job.workers} workers" if kf.trainer_job.enabled else "") + ")")
    return 0
