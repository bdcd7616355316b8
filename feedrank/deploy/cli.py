"""`pipeline.py deploy | rollback`: the ranker's InferenceService from the registry's aliases.

  python pipeline.py deploy --canary 10 [--mode standard] [--kubeconfig FILE]
  python pipeline.py rollback [--previous] [--kubeconfig FILE]

``rollback`` serves the champion alone; ``rollback --previous`` also moves the
registry's ``champion`` alias back to the version the champion replaced (its
``previous_champion`` tag, set by `promote`) and serves that one; without such a
tag it refuses. Both render into ``--out`` and apply only with ``--kubeconfig``.
With ``--local`` (no cluster, a local model store) they check the versions and
move the alias as above, render nothing, and print the ``make serve`` /
``serving.stack`` command that serves the result.
An unblessed version, a missing alias or an unusable storage path is one
``error: ...`` line and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from feedrank.config import add_config_arguments
from feedrank.deploy import FEEDRANK_RUNTIME, MODES, RUNTIMES, SERVERLESS, DeployError

log = logging.getLogger(__name__)

COMMANDS = ("deploy", "rollback")


def _common(p: argparse.ArgumentParser) -> None:
    from feedrank.deploy.render import Settings

    d = Settings()
    add_config_arguments(p)
    p.add_argument("--mode", choices=MODES, default=SERVERLESS,
                   help="serverless: Knative, predictor.canaryTrafficPercent; standard: kserve >= 0.20 "
                        "Standard mode, spec.canary[] (default: %(default)s)")
    p.add_argument("--runtime", choices=RUNTIMES, default=FEEDRANK_RUNTIME,
                   help="feedrank: the serving image's predictor (v1+v2) and transformer; "
                        "tfserving: KServe's TensorFlow Serving runtime (v1, no canary) (default: %(default)s)")
    p.add_argument("--out", default="", help="directory to render into (default: <run_root>/deploy/<command>)")
    p.add_argument("--kubeconfig", default="", help="apply to this cluster (without it: render only)")
    p.add_argument("--model-store-uri", default="",
                   help="gs:// or s3:// URI the local push root is synced to (for a local pushed_dir)")
    p.add_argument("--local", action="store_true",
                   help="no cluster: check the versions against the registry (and, with rollback --previous, "
                        "move the champion alias back), render nothing, and print the make serve command "
                        "that serves the result from the local model store")
    p.add_argument("--name", default=d.name, help="InferenceService name (default: %(default)s)")
    p.add_argument("--namespace", default=d.namespace, help="(default: %(default)s)")
    p.add_argument("--image", default=d.image, help="the serving image (default: %(default)s)")
    p.add_argument("--service-account", default=d.service_account,
                   help="its identity reads the model bucket (default: %(default)s)")
    p.add_argument("--wait-s", type=float, default=600.0, help="how long to wait for the champion stage")


def add_commands(sub) -> None:
    """Adds deploy and rollback to pipeline.py's subparsers."""
    p = sub.add_parser("deploy", help="render (and apply) the champion with the challenger as a canary")
    _common(p)
    p.add_argument("--canary", type=int, default=10, metavar="PERCENT",
                   help="challenger's share of the traffic, 0..100 (default: %(default)s)")
    p.add_argument("--ab-share", type=float, nargs="?", default=None, const=-1.0, metavar="FRACTION",
                   help="an A/B test instead of a canary: the config's ab.share of the users (by a stable hash "
                        "of ab.salt and the user id, in the transformer) is served by the challenger's own "
                        "InferenceService; a FRACTION given must equal ab.share (ab-report tests against it)")
    p = sub.add_parser("rollback", help="render (and apply) 100%% to the champion, the challenger out")
    _common(p)
    p.add_argument("--previous", action="store_true",
                   help="roll back to the version the current champion replaced (its previous_champion tag): "
                        "the registry's champion alias moves back to it and it gets 100%%")


def _run(args: argparse.Namespace) -> int:
    from feedrank.config import load_args
    from feedrank.deploy import apply as apply_lib
    from feedrank.deploy import render, versions
    from feedrank.tracking import note_legacy_registry, registered_model_name
    from feedrank.tracking.candidate import client_for
    from feedrank.tracking.server import tracking_uri

    cfg = load_args(args)
    client = client_for(tracking_uri(cfg))
    model = registered_model_name(cfg)
    note_legacy_registry(client, cfg, model)
    if args.local:
        if args.kubeconfig or args.model_store_uri:
            raise DeployError("--local acts on the registry and the local model store only: drop "
                              "--kubeconfig and --model-store-uri")
        return _local(args, cfg, client, model)
    settings = dataclasses.replace(render.Settings(), name=args.name, namespace=args.namespace, image=args.image,
                                   service_account=args.service_account)
    store = args.model_store_uri or None
    if args.command == "deploy":
        champion, challenger = versions.canary_pair(client, model, store)
        if getattr(args, "ab_share", None) is not None:
            share, salt = render.ab_settings(args.ab_share, cfg.ab, args.config)
            plan = render.ab_plan(args.mode, args.runtime, champion, challenger, share, settings, salt)
            what = (f"{model}: A/B champion v{champion.version} + challenger v{challenger.version} for "
                    f"{share:.0%} of the users, salt {salt!r} ({args.mode})")
        else:
            plan = render.deploy_plan(args.mode, args.runtime, champion, challenger, args.canary, settings)
            what = (f"{model}: champion v{champion.version} {100 - args.canary}% + challenger "
                    f"v{challenger.version} {args.canary}% ({args.mode})")
    else:
        target = versions.rollback_target(client, model, previous=args.previous, model_store_uri=store)
        plan = render.rollback_plan(args.mode, args.runtime, target, settings)
        what = f"{model}: version {target.version} 100%, no challenger ({args.mode})"
    out = args.out or os.path.join(cfg.run_root, "deploy", args.command)
    paths = apply_lib.write(plan, out)
    print(f"{what}; rendered {paths['inferenceservice']}")
    if args.command == "rollback" and args.previous:  # the registry follows what is served
        restored, replaced = versions.restore_previous(client, model, store)
        print(f"{model}: alias 'champion' moved back from version {replaced} to version {restored.version}")
    if args.kubeconfig:
        print(apply_lib.apply(plan, args.kubeconfig, args.wait_s))
    return 0


def _local(args: argparse.Namespace, cfg, client, model: str) -> int:
    """``--local``: the registry's checks and alias moves, and the local stack's command."""
    from feedrank.deploy import render, versions

    uri = f"models:/{model}@champion"
    if args.command == "deploy":
        champion, challenger = versions.canary_pair(client, model, versions.LOCAL)
        share = (render.ab_settings(args.ab_share, cfg.ab, args.config)[0] if args.ab_share is not None
                 else args.canary / 100.0)
        print(f"{model}: champion v{champion.version} ({champion.storage_uri}) and challenger "
              f"v{challenger.version} ({challenger.storage_uri}) are blessed and pushed; locally:")
        print(f"  .venv/bin/python -m serving.stack --log {cfg.input_base} --model {uri} "
              f"--challenger-model models:/{model}@challenger --challenger-share {share:g}")
        return 0
    if args.previous:
        restored, replaced = versions.restore_previous(client, model, versions.LOCAL)
        print(f"{model}: alias 'champion' moved back from version {replaced} to version {restored.version} "
              f"({restored.storage_uri})")
    else:
        restored = versions.rollback_target(client, model, previous=False, model_store_uri=versions.LOCAL)
        print(f"{model}: the champion is version {restored.version} ({restored.storage_uri})")
    print(f"serve it alone: make serve MODEL={uri}   (a make serve already running loads it when restarted)")
    return 0


def main(args: argparse.Namespace) -> int:
    """Runs deploy or rollback; exit code 0, or 2 with a one-line error."""
    from feedrank.tracking.server import fail_fast

    fail_fast()  # about 10 s, not minutes, when the server goes away
    from feedrank.config import ConfigError
    from feedrank.tracking import TrackingError

    try:
        return _run(args)
    except (DeployError, TrackingError, ConfigError) as e:
        lines = str(e).strip().splitlines()
        msg = lines[0] if lines else type(e).__name__
    except Exception as e:  # noqa: BLE001 - MLflow or Kubernetes client errors: one line, no trace
        lines = str(e).strip().splitlines()
        msg = f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
    print(f"error: {msg}", file=sys.stderr)
    return 2
