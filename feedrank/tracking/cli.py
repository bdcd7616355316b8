"""`pipeline.py promote | compare | mlflow`: the MLflow commands of the CLI.

``promote --from-ab DIR`` promotes the challenger only when the A/B test in
DIR says so (`feedrank.ab.cli.gate`, docs/ab.md).

Every failure the user can act on (config, unreachable server, unknown or
unblessed version) is one ``error: ...`` line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from feedrank.config import add_config_arguments
from feedrank.tracking import TrackingError

COMMANDS = ("promote", "alias", "compare", "mlflow")


def add_commands(sub) -> None:
    """Adds the MLflow subcommands to pipeline.py's subparsers."""
    def config_arg(p):
        add_config_arguments(p)

    p = sub.add_parser("promote", help="move the registry alias 'champion' to a blessed version")
    config_arg(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=int, help="registered model version number")
    which.add_argument("--alias", help="a registry alias, e.g. challenger")
    which.add_argument("--from-ab", metavar="DIR",
                       help="the challenger, if the A/B test in DIR (an A/B run directory) promotes it: CTR "
                            "lift's lower bound > ab.min_lift, guardrails and sample ratio hold (docs/ab.md)")
    p = sub.add_parser("alias", help="show the registry's aliases, or set or clear 'champion' / 'challenger' "
                                     "by hand (set: blessed versions only)")
    config_arg(p)
    p.add_argument("action", choices=["show", "set", "clear"])
    p.add_argument("name", nargs="?", choices=["champion", "challenger"], help="the alias (set and clear)")
    p.add_argument("--version", type=int, help="the version to point it at (set)")
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


def _alias(args: argparse.Namespace, client, model: str) -> int:
    from feedrank.tracking import registry

    if args.action == "show":
        current = registry.aliases(client, model)
        print("\n".join(f"{model}: {name} -> version {current[name]}" if name in current else
                        f"{model}: {name} is not set" for name in ("champion", "challenger")))
        return 0
    if args.name is None:
        raise TrackingError(f"alias {args.action} needs the alias: champion or challenger")
    if args.action == "clear":
        print(registry.clear_alias(client, model, args.name))
        return 0
    if args.version is None:
        raise TrackingError(f"alias set {args.name} needs --version N")
    if args.name == "champion":
        print(registry.promote(client, model, version=args.version))
    else:
        print(registry.set_challenger(client, model, args.version))
    return 0


def _run(args: argparse.Namespace) -> int:
    from feedrank.config import load_args
    from feedrank.tracking import experiment_name, local_server_dir, note_legacy_registry, registered_model_name
    from feedrank.tracking.server import stop_server, tracking_uri

    cfg = load_args(args)
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
    note_legacy_registry(client, cfg, model)
    if args.command == "promote":
        from feedrank.tracking.registry import promote

        if getattr(args, "from_ab", None):
            from feedrank.ab.cli import gate

            version = gate(cfg, client, model, args.from_ab)  # TrackingError with the reasons
            print(promote(client, model, version=int(version)))
            return 0
        print(promote(client, model, version=args.version, alias=args.alias))
        return 0
    if args.command == "alias":
        return _alias(args, client, model)
    from feedrank.tracking import compare

    rows, champion = compare.gather(client, experiment_name(cfg), model, last=args.last)
    if not rows:
        raise TrackingError(f"experiment {experiment_name(cfg)!r} has no finished candidate runs")
    print(f"experiment {experiment_name(cfg)!r} at {uri}; registered model {model!r}")
    print(compare.format_table(rows, champion))
    print(f"plot: {compare.plot(rows, champion, args.output)}")
    from feedrank.tracking.candidate import review_url

    exp = client.get_experiment_by_name(experiment_name(cfg))
    print(f"in the MLflow UI (AUC, GAUC, log loss, calibration and family first): "
          f"{review_url(uri, exp.experiment_id)}")
    return 0


def main(args: argparse.Namespace) -> int:
    """Runs one MLflow command; exit code 0, or 2 with a one-line error."""
    from feedrank.tracking.server import fail_fast

    fail_fast()  # about 10 s, not minutes, when the server goes away
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
