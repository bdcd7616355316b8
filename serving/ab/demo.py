"""`make ab-demo`: the whole loop on one machine, from the event log to the decision.

    python -m serving.ab.demo [--champion-config configs/gbdt.yaml] \\
        [--challenger-config configs/ab_challenger.yaml] [--users 400] [--requests 4000] [--out runs/ab/demo]

1. trains the GBDT (``--champion-config``) with the pipeline and makes its
   blessed version ``champion`` (skipped when the registry's champion is
   already a blessed version of that family);
2. trains the DIN challenger (``--challenger-config``): a blessed run moves
   the registry's ``challenger`` alias to it;
3. serves both behind one transformer (`serving.stack`: Redis, the
   feature updater, two predictors, the log sink), users split by hash;
4. runs the simulator's online mode against it: simulated users ask for
   rankings, click and convert by the hidden truth; the true lift is computed
   from both arms' rankings of every request;
5. waits until the sink has written every served event, stops the stack;
6. prints `pipeline.py ab-report` (lift with its user-clustered interval,
   next to the true lift) and applies `pipeline.py promote --from-ab`, which
   promotes the challenger or refuses with the reason.

Each step is the documented command, run as a subprocess; its output is
streamed.  A failing step stops the demo with its exit code.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from typing import List, Optional

from serving.ab.stack import StackError, serving_stack

log = logging.getLogger(__name__)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def _run(cmd: List[str], ok_codes=(0,)) -> int:
    print("$ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=REPO)
    if rc not in ok_codes:
        raise SystemExit(rc)
    return rc


def _py(*args: str) -> List[str]:
    return [sys.executable, *args]


def champion_family(cfg) -> str:
    """The trainer family of the registry's champion ("" if there is none or it cannot tell)."""
    from feedrank.tracking import registered_model_name
    from feedrank.tracking.candidate import client_for
    from feedrank.tracking.server import tracking_uri

    client = client_for(tracking_uri(cfg))
    try:
        mv = client.get_model_version_by_alias(registered_model_name(cfg), "champion")
    except Exception:  # noqa: BLE001 - no registered model or no champion yet
        return ""
    try:
        tags = client.get_run(mv.run_id).data.tags if mv.run_id else {}
    except Exception:  # noqa: BLE001 - the run was deleted
        return ""
    return tags.get("model_family", "")


def aliases(uri: str, model: str) -> dict:
    """``{"champion": version, "challenger": version}`` of the registered model (missing ones left out)."""
    from feedrank.tracking.candidate import client_for

    client, out = client_for(uri), {}
    for alias in ("champion", "challenger"):
        try:
            out[alias] = str(client.get_model_version_by_alias(model, alias).version)
        except Exception:  # noqa: BLE001 - no such alias or model
            continue
    return out


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serving.ab.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--champion-config", default="configs/gbdt.yaml", help="the champion's run config (GBDT)")
    p.add_argument("--challenger-config", default="configs/ab_challenger.yaml",
                   help="the challenger's run config (DIN; default %(default)s)")
    p.add_argument("--out", default="runs/ab/demo", help="the A/B run directory (must not exist yet)")
    p.add_argument("--users", type=int, default=400, help="simulated users in the test")
    p.add_argument("--requests", type=int, default=4000, help="feed requests in all")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated traffic")
    p.add_argument("--redis-timeout-ms", type=float, default=200.0,
                   help="the transformer's Redis timeout; the production 20 ms is too tight for a 2-core machine "
                        "that also runs the simulator, and degraded responses rank without the user's behaviour "
                        "(default %(default)s)")
    p.add_argument("--updater-delay-s", type=float, default=0.0,
                   help="stale features: the updater applies an event this long after its ts (event time)")
    p.add_argument("--skip-training", action="store_true",
                   help="use the registry's champion and challenger as they are")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from feedrank.config import ConfigError, load
    from feedrank.tracking import registered_model_name
    from feedrank.tracking.server import tracking_uri

    try:
        champ_cfg, chall_cfg = load(args.champion_config), load(args.challenger_config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = registered_model_name(chall_cfg)
    if registered_model_name(champ_cfg) != model:
        print(f"error: the two configs register different models ({registered_model_name(champ_cfg)!r}, "
              f"{model!r}); set mlflow.registered_model alike", file=sys.stderr)
        return 2
    out = os.path.abspath(args.out)
    if os.path.exists(out):
        print(f"error: {args.out} exists; an A/B run directory holds one test: pass a new --out", file=sys.stderr)
        return 2
    if not args.skip_training:
        if champion_family(champ_cfg) != champ_cfg.trainer.model:
            _step(f"1. champion: train {champ_cfg.trainer.model} ({args.champion_config}) and promote it")
            _run(_py("pipeline.py", "run", "--config", args.champion_config, "--simulate-if-missing"))
            _run(_py("pipeline.py", "promote", "--config", args.champion_config, "--alias", "challenger"))
        else:
            _step(f"1. champion: the registry's champion is already a {champ_cfg.trainer.model}")
        _step(f"2. challenger: train {chall_cfg.trainer.model} ({args.challenger_config})")
        _run(_py("pipeline.py", "run", "--config", args.challenger_config, "--simulate-if-missing"))
    uri = tracking_uri(chall_cfg)
    pair = aliases(uri, model)
    if not pair.get("challenger") or pair.get("challenger") == pair.get("champion"):
        print(f"error: {model!r} has no challenger apart from its champion (aliases {pair}): the challenger run "
              "was not blessed (see its blessing line above), so there is nothing to test", file=sys.stderr)
        return 2
    _step("3. serve champion and challenger behind one transformer (users split by hash)")
    os.makedirs(out)
    extra = ["--tracking-uri", uri, "--model", f"models:/{model}@champion",
             "--challenger-model", f"models:/{model}@challenger", "--challenger-share", str(chall_cfg.ab.share),
             "--ab-salt", chall_cfg.ab.salt, "--redis-timeout-ms", str(args.redis_timeout_ms),
             "--updater-delay-s", str(args.updater_delay_s)]
    try:
        with serving_stack(chall_cfg.input_base, os.path.join(out, "serve"), extra, sink_dir=out) as (
                endpoint, redis_url):
            _step(f"4. the online A/B test: {args.users} simulated users, {args.requests} requests")
            _run(_py("-m", "feedrank.events.simulator.online", "--log", chall_cfg.input_base, "--out", out,
                     "--endpoint", endpoint, "--redis", redis_url, "--users", str(args.users),
                     "--requests", str(args.requests), "--share", str(chall_cfg.ab.share),
                     "--salt", chall_cfg.ab.salt, "--show", str(chall_cfg.ab.show), "--seed", str(args.seed),
                     "--staleness-s", str(args.updater_delay_s)))
            _step("5. wait for the log sink to write every served event, stop the stack")
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    _step("6. the A/B report and the decision")
    _run(_py("pipeline.py", "ab-report", "--config", args.challenger_config, "--ab-dir", out))
    rc = _run(_py("pipeline.py", "promote", "--config", args.challenger_config, "--from-ab", out), ok_codes=(0, 2))
    print("\ndecision: " + ("the challenger is the new champion" if rc == 0 else
                            "refused: the champion stays (the reason is above)"))
    print(f"A/B run directory: {args.out}  (report: ab_report.txt, ab_lift.png)")
    print("\n".join(["", "next:"] + next_commands(args.challenger_config, promoted=rc == 0,
                                                 previous=pair.get("champion"), model=model)))
    return 0


def next_commands(config: str, promoted: bool, previous: Optional[str], model: str) -> List[str]:
    """What a user may run after the decision, one command per line."""
    cfg = f"--config {config}"
    if promoted:
        lines = [f"  python pipeline.py alias show {cfg}    # the registry's aliases now",
                 f"  make serve MODEL=models:/{model}@champion    # serve the new champion"]
        if previous:
            lines.append(f"  python pipeline.py rollback --previous --local {cfg}    # back to version {previous}, "
                         f"the previous champion")
        return lines
    return [f"  python pipeline.py promote --alias challenger {cfg}    # promote anyway, overriding the A/B test",
            f"  python pipeline.py compare {cfg}    # the candidates' offline metrics",
            "  make ab-demo    # another test, in a new run directory"]


if __name__ == "__main__":
    sys.exit(main())
