"""`pipeline.py ab-report`: the A/B report of a run directory, logged to the challenger's MLflow run.

  python pipeline.py ab-report --config configs/demo.yaml --ab-dir runs/ab [--no-mlflow]

Writes ``ab_report.json``, ``ab_report.txt`` and ``ab_lift.png`` into the
directory and prints the table. The challenger's run is found through the
registry: alias ``challenger`` -> version -> run_id. `gate` is the check
`pipeline.py promote --from-ab DIR` runs before it moves ``champion``.
Errors the user can act on are one ``error: ...`` line and exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Dict, List

from feedrank.ab import CHALLENGER_ARM, ABError
from feedrank.config import add_config_arguments

log = logging.getLogger(__name__)

COMMANDS = ("ab-report",)


def add_commands(sub) -> None:
    """Adds ab-report to pipeline.py's subparsers."""
    p = sub.add_parser("ab-report", help="the A/B test's report: lifts with user-clustered intervals, SRM, "
                                         "guardrails, the promotion decision")
    add_config_arguments(p)
    p.add_argument("--ab-dir", required=True, help="A/B run directory (events/, requests/, ab_run.json)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the report to the challenger's run")


def evaluate(cfg, ab_dir: str) -> Dict[str, Any]:
    """The report of ``ab_dir`` under the config's ``ab`` section (nothing written)."""
    from feedrank.ab import load, report

    return report.build(load.load(ab_dir), cfg.ab)


def served_versions(mv) -> List[str]:
    """The names a registry version can carry in the served log: its number, its push version."""
    tags = mv.tags or {}
    names = {str(mv.version), tags.get("pushed_version", "")}
    if tags.get("pushed_dir"):
        names.add(os.path.basename(os.path.normpath(tags["pushed_dir"])))
    return sorted(n for n in names if n)


def version_mismatch(rep: Dict[str, Any], mv) -> str:
    """Why the report is not about registry version ``mv`` ("" when it is, or cannot tell)."""
    logged = [v for v in rep["arms"][CHALLENGER_ARM]["model_versions"] if v and v != "unknown"]
    if not logged:
        log.warning("the served log names no challenger model version: cannot check it is version %s", mv.version)
        return ""
    names = served_versions(mv)
    if any(v not in names for v in logged):
        return (f"the A/B run's challenger served model version(s) {logged}, but the registry's challenger is "
                f"version {mv.version} (served as {names})")
    return ""


def gate(cfg, client, model: str, ab_dir: str) -> str:
    """The challenger's version number if the A/B test promotes it; TrackingError with the reasons if not."""
    from feedrank.tracking import CHALLENGER, CHAMPION, TrackingError
    from feedrank.tracking.registry import resolve_version

    try:
        rep = evaluate(cfg, ab_dir)
    except ABError as e:
        raise TrackingError(f"cannot evaluate the A/B run: {e}") from None
    mv = resolve_version(client, model, alias=CHALLENGER)
    reasons = list(rep["decision"]["reasons"])
    mismatch = version_mismatch(rep, mv)
    if mismatch:
        reasons.insert(0, mismatch)
    try:
        champion = client.get_model_version_by_alias(model, CHAMPION).version
    except Exception:  # noqa: BLE001 - no champion yet: nothing to compare with
        champion = None
    if champion is not None and str(champion) == str(mv.version):
        reasons.insert(0, f"the challenger (version {mv.version}) already is the champion")
    if reasons:
        raise TrackingError(f"refusing to promote {model!r} version {mv.version} from the A/B test in {ab_dir}: "
                            + "; ".join(reasons))
    return str(mv.version)


def log_to_mlflow(cfg, rep: Dict[str, Any], paths: Dict[str, str], ab_dir: str) -> str:
    """Logs the report's files (under ``ab/``) and key metrics to the challenger's run; returns its id."""
    from feedrank.tracking import CHALLENGER, TrackingError, registered_model_name
    from feedrank.tracking.candidate import client_for
    from feedrank.tracking.registry import resolve_version
    from feedrank.tracking.server import tracking_uri

    client = client_for(tracking_uri(cfg))
    model = registered_model_name(cfg)
    mv = resolve_version(client, model, alias=CHALLENGER)
    if not mv.run_id:
        raise TrackingError(f"{model!r} challenger version {mv.version} has no run to log the A/B report to")
    mismatch = version_mismatch(rep, mv)
    if mismatch:
        raise TrackingError(f"not logging the report to version {mv.version}'s run: {mismatch}")
    for path in paths.values():
        client.log_artifact(mv.run_id, path, "ab")
    metrics = {"ab.srm_p": rep["srm"]["p_value"]}
    for metric in ("ctr", "cvr"):
        for key in ("estimate", "lo", "hi"):
            value = rep["lift"][metric][key]
            if value is not None:
                metrics[f"ab.lift_{metric}" + ("" if key == "estimate" else f"_{key}")] = value
    for arm, row in rep["arms"].items():
        for key in ("users", "impressions", "ctr", "cvr"):
            if row[key] is not None:
                metrics[f"ab.{arm}.{key}"] = row[key]
    for arm, row in rep["guardrails"].items():
        for key in ("p99_latency_ms", "error_rate"):
            if row.get(key) is not None:
                metrics[f"ab.{arm}.{key}"] = row[key]
    for key, value in metrics.items():
        client.log_metric(mv.run_id, key, float(value))
    client.set_tag(mv.run_id, "ab.decision", "promote" if rep["decision"]["promote"] else "hold")
    client.set_tag(mv.run_id, "ab.dir", os.path.abspath(ab_dir))
    client.set_model_version_tag(model, mv.version, "ab_lift_ctr", f"{rep['lift']['ctr']['estimate']:.6f}")
    return mv.run_id


def main(args: argparse.Namespace) -> int:
    """Runs ab-report; exit code 0 (whatever the decision), or 2 with a one-line error."""
    from feedrank.tracking.server import fail_fast

    fail_fast()  # about 10 s, not minutes, when the server goes away
    from feedrank.ab import report
    from feedrank.config import ConfigError, load_args
    from feedrank.tracking import TrackingError

    try:
        cfg = load_args(args)
        rep = evaluate(cfg, args.ab_dir)
        paths = report.write(rep, args.ab_dir)
        print(report.format_text(rep))
        print(f"report: {paths['json']}\nplot: {paths['png']}")
        if not args.no_mlflow:
            run_id = log_to_mlflow(cfg, rep, paths, args.ab_dir)
            print(f"logged to the challenger's MLflow run {run_id} (artifacts under ab/)")
        return 0
    except (ABError, ConfigError, TrackingError) as e:
        lines = str(e).strip().splitlines()
        msg = lines[0] if lines else type(e).__name__
    except Exception as e:  # noqa: BLE001 - MLflow client errors: one line, no trace
        lines = str(e).strip().splitlines()
        msg = f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
    print(f"error: {msg}", file=sys.stderr)
    return 2
