"""`pipeline.py promote | compare | mlflow`: the MLflow commands of the CLI.

``promote --from-ab DIR`` promotes the challenger only when the A/B test in
DIR says so (`feedrank.ab.cli.gate`, docs/ab.md).

Every failure the user can act on (config, unreachable server, unknown or
unblessed version) is one ``error: ...`` line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from feedrank.tracking import TrackingError

COMMANDS = ("promote", "compare", "mlflow")


def add_commands(sub) -> None:
    """Adds the MLflow subcommands to pipeline.py's subparsers."""
    def config_arg(p):
        p.add_argument("--config", default="configs/demo.yaml", help="YAML run config (default: %(default)s)")

    p = sub.add_parser("promote", help="move the registry alias 'champion' to a blessed version")
    config_arg(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=int, help="registered model version number")
    which.add_argument("--alias", help="a registry alias, e.g. challenger")
    which.add_argument("--from-ab", metavar="DIR",
                       help="the challenger, if the A/B test in DIR (an A/B run directory) promotes it: CTR "
                            "lift's lower bound > ab.min_lift, guardrails and sample ratio hold (docs/ab.md)")
    p = sub.add_parser("compare", help="candidates of the experiment side by side, deltas vs champion")
    config_arg(p)
    p.add_argument("--output", default="compare.png", help="PNG to write (default: %(default)s)")
    p.add_argument("--last", type=int, default=10, help="newest N candidates (default: %(default)s)")
    p = sub.add_parser("mlflow", help="start (or reuse) the local MLflow server and print its URL")
    config_arg(p)
    p.add_argument("--stop", action="store_true", help="stop the local server instead")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _run(args: argparse.Namespace) -> int:
    from feedrank.config import load
    from feedrank.tracking import experiment_name, local_server_dir, registered_model_name
    from feedrank.tracking.server import stop_server, tracking_uri

    cfg = load(args.config)
    if args.command == "mlflow":
        if args.stop:
            stopped = stop_server(local_server_dir(cfg))
            print("stopped the local MLflow server" if stopped else "no local MLflow server was running")
            return 0
        uri = tracking_uri(cfg)
        print(uri)
        return 0

    from feedrank.tracking.candidate import client_for

    uri = tracking_uri(cfg)
    client = client_for(uri)
    model = registered_model_name(cfg)
    if args.command == "promote":
        from feedrank.tracking.registry import promote

        if getattr(args, "from_ab", None):
            from feedrank.ab.cli import gate

            version = gate(cfg, client, model, args.from_ab)  # TrackingError with the reasons
            print(promote(client, model, version=int(version)))
            return 0
        print(promote(client, model, version=args.version, alias=args.alias))
        return 0
    from feedrank.tracking import compare

    rows, champion = compare.gather(client, experiment_name(cfg), model, last=args.last)
    if not rows:
        raise TrackingError(f"experiment {experiment_name(cfg)!r} has no finished candidate runs")
    print(f"experiment {experiment_name(cfg)!r} at {uri}; registered model {model!r}")
    print(compare.format_table(rows, champion))
    print(f"plot: {compare.plot(rows, champion, args.output)}")
    return 0


def main(args: argparse.Namespace) -> int:
    """Runs one MLflow command; exit code 0, or 2 with a one-line error."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # fail fast when the server goes away
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from feedrank.config import ConfigError

    try:
        return _run(args)
    except (TrackingError, ConfigError) as e:
        msg: Optional[str] = _one_line(e)
    except Exception as e:  # noqa: BLE001 - MlflowException, connection errors: one line, no trace
        name = type(e).__name__
        msg = f"{name}: {_one_line(e)}"
        if "Connection" in name or "Max retries" in str(e) or "ConnectionError" in str(e):
            msg = f"MLflow tracking server not reachable ({_one_line(e)[:200]})"
    print(f"error: {msg}", file=sys.stderr)
    return 2
