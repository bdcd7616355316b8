"""The run summary: what a run did, read back from MLMD and the artifacts.

It gives the model's exact AUC beside the oracle AUC (from the simulator's
ground truth, when the log has one), the blessing verdict and its reason, the
push path (for a run that was not blessed, the candidate model's path instead), the
event accounting and the wall time of every component.  The
exact metrics are the ones the MlflowLogger computed (``exact_metrics.json``
in its output); a run that stopped before the logger shows them as n/a.
The status is ``succeeded``, ``failed`` (with the failure's cause on one line
and the component it failed in) or ``interrupted`` (with the signal and the
component that was running).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any, Dict, List, Optional

from feedrank.config import Config
from feedrank.evaluate import gates, mlmd_reader, scoring

log = logging.getLogger(__name__)


def pipeline_failure(error: BaseException) -> Dict[str, str]:
    """The innermost readable cause of a failed run (no stack trace).

    The chain follows ``raise ... from cause`` and the implicit context, except
    where ``raise ... from None`` suppressed it: that error's message is the
    one meant for the user (e.g. "unknown model family ...", not the KeyError
    it was raised from)."""
    chain: List[BaseException] = []
    e: Optional[BaseException] = error
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ if (e.__cause__ is not None or e.__suppress_context__) else e.__context__
    ours = [x for x in chain if type(x).__module__.startswith(("components.", "feedrank."))]
    chosen = ours[0] if ours else chain[-1]
    return {"error": type(chosen).__name__, "message": one_line(str(chosen))}


def one_line(message: str) -> str:
    """A message on one line: its lines joined with '; ', blanks and indentation dropped."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def running_component(run: Optional[mlmd_reader.Run]) -> Optional[str]:
    """The component of ``run`` that started and never ended (None when there is none)."""
    if run is None:
        return None
    return next((n for n, c in run.components.items() if c["state"] in ("RUNNING", "NEW")), None)


def build_summary(cfg: Config, failure: Optional[Dict[str, str]] = None,
                  interrupted: Optional[Dict[str, Any]] = None,
                  previous_run_id: Optional[str] = None) -> Dict[str, Any]:
    """Collects the summary of the newest run of ``cfg``'s pipeline.

    ``interrupted`` (``signal`` and ``component``, when a signal stopped the run)
    gives the status ``interrupted``; a component it does not name is the one
    MLMD shows as started and never ended.  ``previous_run_id`` is the newest
    run before this one: when it is still the newest, this run never started one.
    """
    run = mlmd_reader.latest_run(cfg.metadata_path)
    if run is not None and previous_run_id is not None and run.run_id == previous_run_id:
        run = None
    return run_summary(cfg, run, failure, interrupted)


def candidate_model(run: mlmd_reader.Run) -> Optional[str]:
    """The path of the run's candidate model: the serving SavedModel inside the Trainer's
    model artifact (``<uri>/Format-Serving``, the folder the Pusher pushes); None without one."""
    model = run.artifact("Trainer", "model")
    return os.path.join(model.uri, scoring.SERVING_SUBDIR) if model is not None else None


def run_summary(cfg: Config, run: Optional[mlmd_reader.Run], failure: Optional[Dict[str, str]] = None,
                interrupted: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The summary of ``run`` (None: no run started), as `build_summary` describes.

    A run whose evaluator did not bless carries ``candidate_model``, the path of the
    Trainer's model (`candidate_model`), so the model can be found without MLMD.
    """
    status = "failed" if failure or (run and run.failed) else "succeeded"
    summary: Dict[str, Any] = {
        "pipeline": cfg.pipeline_name, "run_id": run.run_id if run else None,
        "model_family": cfg.model_name, "input_base": cfg.input_base,
        "status": "interrupted" if interrupted else status,
        "components": run.components if run else {},
    }
    if interrupted:
        summary["interrupted"] = {**interrupted,
                                  "component": interrupted.get("component") or running_component(run)}
    if failure:
        summary["failure"] = {**failure, "component": run.failed_component if run else None}
    if run is None:
        return summary
    accounting = run.read_json("BehaviorExampleGen", "quarantine", "summary.json")
    if accounting:
        summary["events"] = accounting
    blessing = run.artifact("Evaluator", "blessing")
    evaluation = run.artifact("Evaluator", "evaluation")
    if blessing is not None and evaluation is not None:
        overall, slices, validation = scoring.tfma_results(evaluation.uri)
        summary["tfma"] = {"overall": overall, "slices": slices}
        blessed = bool(blessing.get_int_custom_property("blessed"))
        # The reason names every gate with its value; baseline: the model the change gate compared
        # against (source champion | latest_push, version, family, registered_model, path), None for none.
        summary["blessing"] = {"blessed": blessed,
                               "reason": scoring.blessing_reason(blessed, validation, cfg.evaluator,
                                                                 eval_uri=evaluation.uri),
                               "baseline": gates.baseline_record(evaluation.uri)}
    session_eval = run.artifact("SessionEvaluator", "evaluation")   # mode: session (components/session_evaluator)
    if session_eval is not None:
        result = run.read_json("SessionEvaluator", "evaluation", "session_metrics.json") or {}
        summary["session_metrics"] = {"candidate": result.get("candidate"), "baseline": result.get("baseline")}
        summary["blessing"] = {"blessed": bool(result.get("blessed")), "reason": result.get("reason"),
                               "baseline": result.get("baseline_name")}
    if run.artifact("Trainer", "model") is not None and session_eval is None:
        # None when the MlflowLogger did not complete: printed as n/a.
        summary["auc"] = run.read_json("MlflowLogger", "mlflow_run", scoring.EXACT_METRICS_FILE)
        summary["curves"] = run.read_json("Trainer", "model_run", "curves.json")
    pushed = run.artifact("Pusher", "pushed_model")
    if pushed is not None:
        summary["push"] = {"pushed": bool(pushed.get_int_custom_property("pushed")),
                           "path": pushed.get_string_custom_property("pushed_destination") or None}
    if "blessing" in summary and not summary["blessing"]["blessed"]:
        summary["candidate_model"] = candidate_model(run)
        log.info("run %s not blessed; candidate model: %s", run.run_id, summary["candidate_model"])
    return summary


def write_summary(cfg: Config, summary: Dict[str, Any]) -> str:
    """Writes ``<run_root>/<run-id>/summary.json`` and returns the path."""
    run_id = summary.get("run_id") or datetime.datetime.now().isoformat()
    safe = run_id.replace(":", "-")
    out_dir = os.path.join(cfg.run_root, safe)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "summary.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True, default=str)
    return path


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def print_summary(summary: Dict[str, Any], path: str) -> None:
    """The human-readable run summary."""
    p = print
    p("\n" + "=" * 72)
    p(f"feedrank run {summary.get('run_id')}  [{summary['status'].upper()}]  model={summary['model_family']}")
    if "interrupted" in summary:
        i = summary["interrupted"]
        p(f"  INTERRUPTED by {i.get('signal')} while {i.get('component') or 'no component'} was running")
    if "failure" in summary:
        f = summary["failure"]
        p(f"  FAILED in {f.get('component') or '?'}: {f['error']}: {f['message']}")
    ev = summary.get("events")
    if ev:
        q = ev.get("quarantined", 0)
        p(f"  events read {ev.get('events_read')} = used {ev.get('events_used')} + quarantined {q}"
          f"  {ev.get('quarantined_by_reason') or ''}")
        p(f"  examples: {ev.get('examples') or ev.get('examples_by_split')}")
    auc = summary.get("auc")
    sm = (summary.get("session_metrics") or {}).get("candidate")
    if sm:
        p("  eval (sessions)  " + "   ".join(f"{k} {_fmt(sm.get(k))}" for k in
                                          ("top1", "top10", "recall@20", "mrr@20", "path_compression"))
          + f"   ({int(sm.get('sessions', 0))} sessions, {int(sm.get('prefixes', 0))} prefixes)")
    elif not auc:
        p("  eval AUC  n/a (no exact metrics: the run stopped before the MlflowLogger scored the eval split)")
    else:
        lift = auc.get("oracle_lift_recovered")
        p(f"  eval AUC  model {_fmt(auc.get('auc'))}   oracle {_fmt(auc.get('oracle_auc'))}"
          f"   lift recovered {('%.1f%%' % (100 * lift)) if lift is not None else 'n/a'}"
          f"   GAUC {_fmt(auc.get('gauc'))}   logloss {_fmt(auc.get('logloss'))}"
          f"   ({auc.get('n')} eval impressions)")
    b = summary.get("blessing")
    if b:
        p(f"  blessing: {'BLESSED' if b['blessed'] else 'NOT BLESSED'} - {b['reason']}")
    push = summary.get("push")
    if push:
        p(f"  pushed: {push['path'] if push['pushed'] else 'no (not blessed)'}")
    if b and not b["blessed"]:
        p(f"  not blessed; candidate model: {summary.get('candidate_model') or 'n/a (no Trainer model)'}")
    comps = summary.get("components") or {}
    if comps:
        p("  wall time per component:")
        for name, c in comps.items():
            p(f"    {name:<22} {c['seconds']:8.1f} s  {c['state']}")
    p(f"  summary: {path}")
    p("=" * 72)
