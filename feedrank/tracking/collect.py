"""What the MlflowLogger logs for one candidate, read from its TFX artifacts.

`collect` builds the `Candidate` (params, metrics, tags, plots, model card)
that `candidate.log_candidate` writes as one MLflow run.  The blessing is
checked here, not trusted from the wiring: a model version is registered
only if the Evaluator's blessing says ``blessed=1``, has its ``BLESSED``
marker file, names *this* candidate's model as ``current_model``, and the
Pusher reports ``pushed=1`` with a destination.  Otherwise the run is still
logged, tagged ``blessed=false`` (and/or ``pushed=false``).  Every run is
tagged with the model's content fingerprint (``model_fingerprint``, the
Pusher's or hashed here), by which registration is deduplicated.

The eval split's exact metrics (AUC, GAUC, logloss, and the oracle's AUC when
the log has the simulator's truth) are computed here once per candidate:
they are logged to MLflow and written as ``exact_metrics.json`` into the
logger's output artifact, where the run summary reads them.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import types as pytypes
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf
from tfx import types
from tfx.dsl.io import fileio

from feedrank.evaluate import scoring
from feedrank.push.blessing import blessed_for
from feedrank.push.fingerprint import model_fingerprint
from feedrank.tracking import candidate as cand_lib
from feedrank.tracking import report

log = logging.getLogger(__name__)
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The exact metrics of the eval split logged as MLflow metrics (feedrank.evaluate.scoring).
EXACT_METRICS = ("auc", "logloss", "gauc", "oracle_auc")
SESSION_METRICS_FILE = "session_metrics.json"   # feedrank.sessions.evaluate.METRICS_FILE


def git_commit(root: str = _ROOT) -> Tuple[str, Optional[bool]]:
    """(commit, dirty) of the checkout, else ``$GIT_COMMIT`` (set in images), else 'unknown'."""
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=20).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("GIT_COMMIT") or os.environ.get("SOURCE_COMMIT") or "unknown", None


def kfp_run_id() -> Optional[str]:
    """The Kubeflow Pipelines run id: from the environment, else the pod's labels (downward API)."""
    for key in ("KFP_RUN_ID", "KFP_PIPELINE_RUN_ID", "PIPELINE_RUN_ID"):
        if os.environ.get(key):
            return os.environ[key]
    try:
        with open("/etc/podinfo/labels") as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                if k in ("pipeline/runid", "pipelines.kubeflow.org/run_id"):
                    return v.strip('"')
    except OSError:
        pass
    return None


def _single(input_dict: Dict[str, List[types.Artifact]], key: str) -> Optional[types.Artifact]:
    arts = input_dict.get(key) or []
    return arts[0] if arts else None


def _read_json(path: str) -> Any:
    if not fileio.exists(path):
        return None
    with fileio.open(path, "r") as f:
        return json.load(f)


def check_blessing(model: types.Artifact, blessing: Optional[types.Artifact],
                   pushed: Optional[types.Artifact]) -> Tuple[bool, bool, str]:
    """(blessed, pushed, reason) for this candidate, from the artifacts themselves."""
    if blessing is None:
        return False, False, "no blessing artifact"
    blessed, reason = blessed_for(model, blessing)
    was_pushed = bool(pushed is not None and pushed.get_int_custom_property("pushed") == 1
                      and pushed.get_string_custom_property("pushed_destination"))
    if blessed and not was_pushed:
        reason += ", but not pushed"
    return blessed, was_pushed, reason


def candidate_fingerprint(model: types.Artifact, pushed: Optional[types.Artifact]) -> Optional[str]:
    """The model's content fingerprint: the Pusher's, else hashed here from ``Format-Serving``
    (None when the model directory cannot be read)."""
    fp = pushed.get_string_custom_property("model_fingerprint") if pushed is not None else ""
    if fp:
        return fp
    try:
        return model_fingerprint(os.path.join(model.uri, scoring.SERVING_SUBDIR))
    except (OSError, tf.errors.OpError) as e:
        log.warning("no fingerprint for %s: %s", model.uri, e)
        return None


def slice_metrics(slices: Dict[str, Dict[str, float]]) -> Tuple[Dict[str, float], Dict[str, Tuple]]:
    """TFMA per-slice metrics -> (MLflow metrics ``auc.<col>.<value>``/``n.<col>.<value>``,
    {slice: (AUC, examples)} for the model card)."""
    metrics, table = {}, {}
    for key, m in slices.items():
        parts = [p for kv in key.split(",") for p in kv.split("=", 1)]
        if "auc" in m:
            metrics[cand_lib.safe_name("auc", *parts)] = m["auc"]
        if "example_count" in m:
            metrics[cand_lib.safe_name("n", *parts)] = m["example_count"]
        if "auc" in m:
            table[key] = (m["auc"], m.get("example_count"))
    return metrics, table


def curve_rows(curves: Optional[List[Dict[str, float]]]) -> List[Dict[str, float]]:
    """Keras history rows -> ``train_<m>`` / ``valid_<m>`` (the validation split) per epoch."""
    rows = []
    for row in curves or []:
        out = {"epoch": int(row["epoch"])}
        for k, v in row.items():
            if k == "epoch" or not isinstance(v, (int, float)):
                continue
            out[cand_lib.safe_name(f"valid_{k[4:]}" if k.startswith("val_") else f"train_{k}")] = float(v)
        rows.append(out)
    return rows


def collect(input_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any],
            work_dir: str, pipeline_run_id: Optional[str] = None) -> cand_lib.Candidate:
    """Builds the Candidate (params, metrics, tags, plots, model card) from the artifacts."""
    model = _single(input_dict, "model")
    if model is None:
        raise ValueError("MlflowLogger needs the Trainer's model")
    model_run = _single(input_dict, "model_run")
    evaluation = _single(input_dict, "evaluation")
    blessing = _single(input_dict, "blessing")
    pushed_art = _single(input_dict, "pushed_model")
    schema = _single(input_dict, "schema")
    examples = _single(input_dict, "examples")
    hp = json.loads(exec_properties.get("custom_config") or "{}")
    ctx = json.loads(exec_properties.get("run_context") or "{}")
    family = str(hp.get("model", "unknown"))
    run_id = pipeline_run_id or exec_properties.get("run_nonce") or "unknown"
    os.makedirs(work_dir, exist_ok=True)

    blessed, pushed, reason = check_blessing(model, blessing, pushed_art)
    metrics: Dict[str, float] = {}
    slice_aucs: Dict[str, Tuple] = {}
    session_result = _read_json(os.path.join(evaluation.uri, SESSION_METRICS_FILE)) if evaluation else None
    if session_result is not None:   # the session Evaluator (components/session_evaluator): no TFMA
        metrics.update({cand_lib.safe_name(k): float(v) for k, v in session_result["candidate"].items()})
        reason = f"{reason}: {session_result['reason']}"
    elif evaluation is not None:
        overall, slices, validation = scoring.tfma_results(evaluation.uri)
        metrics.update({cand_lib.safe_name(f"tfma_{k}"): v for k, v in overall.items()})
        m, slice_aucs = slice_metrics(slices)
        metrics.update(m)
        ev = ctx.get("evaluator") or {}
        if validation is not None and {"auc_floor", "max_auc_regression"} <= set(ev):
            gates = scoring.blessing_reason(blessed, validation, pytypes.SimpleNamespace(**ev), evaluation.uri)
            reason = f"{reason}: {' '.join(gates.split())}"
    artifacts: Dict[str, str] = {}
    exact: Optional[Dict[str, Any]] = None
    if examples is not None and session_result is None:   # session samples have no CTR labels to score
        s = scoring.score_split(os.path.join(model.uri, scoring.SERVING_SUBDIR), examples.uri, "eval")
        y, p = s["label"].astype(float), s["score"].astype(float)
        exact = scoring.metrics_from_scores(s, ctx.get("input_base"))
        metrics["eval_examples"] = float(len(y))
        metrics.update({k: float(exact[k]) for k in EXACT_METRICS if exact.get(k) is not None})
        plots = os.path.join(work_dir, "plots")
        os.makedirs(plots, exist_ok=True)
        title = f"{family} {run_id}"
        report.roc_plot(y, p, os.path.join(plots, "roc.png"), title)
        report.calibration_plot(y, p, os.path.join(plots, "calibration.png"), title=title)
        artifacts[plots] = "plots"

    # Params: the family, the Trainer's custom_config, the data span, the code version.
    params = {"model_family": family, **cand_lib.flatten(hp, "")}
    data: Dict[str, Any] = {"input_base": ctx.get("input_base", "n/a")}
    if examples is not None:
        data["fingerprint"] = examples.get_string_custom_property("input_fingerprint") or "n/a"
        try:
            summary = json.loads(examples.get_string_custom_property("summary") or "{}")
        except ValueError:
            summary = {}
        for key in ("max_ts", "eval_start_ts", "events_read", "events_used"):
            if key in summary:
                data[key] = summary[key]
        for ts in ("max_ts", "eval_start_ts"):
            if summary.get(ts):
                data[f"{ts}_utc"] = datetime.datetime.fromtimestamp(
                    int(summary[ts]), datetime.timezone.utc).isoformat()
        for split, n in (summary.get("examples") or {}).items():
            data[f"examples_{split}"] = n
    params.update(cand_lib.flatten(data, "data."))
    dataset = None
    if data.get("fingerprint", "n/a") != "n/a":
        dataset = {"name": os.path.basename(str(data["input_base"]).rstrip("/")) or "events",
                   "digest": str(data["fingerprint"]), "source": str(data["input_base"]),
                   "profile": json.dumps({k: data[k] for k in ("events_read", "events_used", "max_ts_utc")
                                          if k in data})}
    params.update(cand_lib.flatten(ctx.get("evaluator") or {}, "evaluator."))
    params["code_version"] = str(hp.get("code_version", "unknown"))

    commit, dirty = git_commit()
    tags = {"tfx.run_id": run_id, "tfx.pipeline": str(ctx.get("pipeline_name", "")),
            "model_family": family, "git.commit": commit, "mlflow.source.git.commit": commit,
            "code_version": params["code_version"], "candidate.model_uri": model.uri,
            "blessing_reason": reason[:5000], "mlflow.source.name": "components/mlflow_logger"}
    if dirty is not None:
        tags["git.dirty"] = str(dirty).lower()
    kfp = kfp_run_id()
    if kfp:
        tags["kfp.run_id"] = kfp
    pushed_dir = pushed_art.get_string_custom_property("pushed_destination") if pushed else None
    pushed_version = pushed_art.get_string_custom_property("pushed_version") if pushed else None
    if pushed_dir:
        tags["pushed_dir"] = pushed_dir
    fingerprint = candidate_fingerprint(model, pushed_art)
    if fingerprint:
        tags[cand_lib.FINGERPRINT_TAG] = fingerprint
    reused = bool(pushed and pushed_art.get_int_custom_property("push_reused") == 1)
    if pushed:
        tags["push_reused"] = str(reused).lower()

    span: Optional[Tuple[int, int]] = None
    if model_run is not None:
        curves = _read_json(os.path.join(model_run.uri, "curves.json"))
        training = _read_json(os.path.join(model_run.uri, "training.json")) or {}
        if "started_at" in training and "finished_at" in training:
            span = (int(float(training["started_at"]) * 1000), int(float(training["finished_at"]) * 1000))
        calib = _read_json(os.path.join(model_run.uri, "calibration.json")) or {}
        if calib.get("method"):
            tags["calibration"] = str(calib["method"])   # the step inside the exported graph
        for name in ("curves.json", "curves.png", "calibration.json", "training.json"):
            path = os.path.join(model_run.uri, name)
            if fileio.exists(path):
                artifacts[path] = "training"
    else:
        curves = None
    if schema is not None:
        for name in fileio.listdir(schema.uri) if fileio.isdir(schema.uri) else []:
            artifacts[os.path.join(schema.uri, name)] = "schema"
    if evaluation is not None:
        for name in ("eval_config.json",):
            path = os.path.join(evaluation.uri, name)
            if fileio.exists(path):
                artifacts[path] = "evaluation"
    if blessing is not None and blessing.get_string_custom_property("blessing_message"):
        tags["blessing_message"] = blessing.get_string_custom_property("blessing_message")[:5000]

    card = report.model_card(name=f"{ctx.get('pipeline_name', 'feedrank')} / {family} / {run_id}",
                             family=family, blessed=blessed, blessing_reason=reason,
                             pushed_dir=pushed_dir, metrics=metrics, slices=slice_aucs,
                             params={k: v for k, v in params.items()}, tags=tags, data=data)
    card_path = os.path.join(work_dir, "model_card.md")
    with open(card_path, "w") as f:
        f.write(card)
    artifacts[card_path] = ""
    return cand_lib.Candidate(
        run_name=f"{family}-{run_id}".replace(":", "-"), params=params, metrics=metrics, tags=tags,
        blessed=blessed, pushed=pushed, curves=curve_rows(curves), artifacts=artifacts,
        training_ms=span, dataset=dataset,
        pushed_dir=pushed_dir, pushed_version=pushed_version, exact_metrics=exact,
        model_fingerprint=fingerprint, push_reused=reused,
        description=f"{family} candidate of TFX run {run_id}: "
                    f"{'BLESSED' if blessed else 'NOT BLESSED'} ({reason}); "
                    f"AUC {metrics.get('auc', float('nan')):.4f}, GAUC {metrics.get('gauc', float('nan')):.4f}, "
                    f"logloss {metrics.get('logloss', float('nan')):.4f}.")


def write_exact_metrics(out_dir: str, cand: cand_lib.Candidate) -> Optional[str]:
    """Writes the candidate's exact eval metrics as ``<out_dir>/exact_metrics.json``
    (nothing when the logger had no examples to score); returns the path."""
    if cand.exact_metrics is None:
        return None
    path = os.path.join(out_dir, scoring.EXACT_METRICS_FILE)
    with fileio.open(path, "w") as f:
        f.write(json.dumps(cand.exact_metrics, indent=1, sort_keys=True))
    return path
