"""One candidate as one MLflow run, and its registry version when it earned one.

`log_candidate` only uses `MlflowClient` (no fluent "active run" state), so
threads and processes can log to the same server at once; creating the
experiment and the registered model tolerates losing a race to another logger.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import random
import re
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from feedrank.tracking import BLESSED_TAG, CHALLENGER, TrackingError, error_code, pyfunc_model

log = logging.getLogger(__name__)

PUSHED_MODEL_ARTIFACT = "pushed_model"
# The experiment's kind: model training, not GenAI. MLflow 3.17's UI still opens a plain experiment
# link on its per-browser GenAI/Model training switch; `review_url` sets that switch.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# A saved runs-table view (an experiment tag) that the MLflow UI (3.15+) lists under *Views* and
# opens from ``#/experiments/<id>/runs?viewStateShareKey=<key>``: the review columns first, best
# AUC on top (`review_view`, `review_url`).
SHARED_VIEW_PREFIX, REVIEW_VIEW = "mlflow.sharedViewState.", "feedrank-review"
REVIEW_COLUMNS = (("metrics", "auc"), ("metrics", "gauc"), ("metrics", "logloss"), ("metrics", "tfma_calibration"),
                  ("params", "model_family"), ("attributes", "Dataset"))
# Content hash of the exported model (`feedrank.push.fingerprint`): on runs and registry versions.
FINGERPRINT_TAG = "model_fingerprint"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def safe_name(*parts: Any) -> str:
    """An MLflow-safe metric/param name: ``("auc", "category_id", "jobs/sales")`` ->
    ``auc.category_id.jobs-sales`` ('/' -> '-', anything else outside [A-Za-z0-9_.-] -> '_')."""
    name = ".".join(_UNSAFE.sub("_", str(p).replace("/", "-")).strip("._") or "_" for p in parts)
    return re.sub(r"\.{2,}", ".", name)[:250]


def flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, str]:
    """Nested dicts -> dotted keys; lists and scalars -> strings (MLflow params)."""
    out: Dict[str, str] = {}
    for k, v in sorted(d.items()):
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[safe_name(key)] = str(v)[:6000]
    return out


@dataclasses.dataclass
class Candidate:
    """Everything logged for one candidate."""

    run_name: str
    params: Dict[str, str]
    metrics: Dict[str, float]
    tags: Dict[str, str]
    blessed: bool
    pushed: bool
    # [{"epoch": 1, "train_loss": ..., "valid_auc": ...}, ...] logged with step=epoch.
    curves: List[Dict[str, float]] = dataclasses.field(default_factory=list)
    # local file -> artifact directory inside the run ("" for the root).
    artifacts: Dict[str, str] = dataclasses.field(default_factory=dict)
    pushed_dir: Optional[str] = None
    pushed_version: Optional[str] = None
    description: str = ""
    # The eval split's exact metrics (`feedrank.evaluate.scoring.metrics_from_scores`), None if not scored.
    exact_metrics: Optional[Dict[str, Any]] = None
    # Content hash of the exported model; a registered model never gets a second version with it.
    model_fingerprint: Optional[str] = None
    # The Pusher found the same model already pushed and pushed nothing.
    push_reused: bool = False
    # (start, end) of the Trainer's fit and export, unix ms: the MLflow run's duration.
    training_ms: Optional[Tuple[int, int]] = None
    # The event log as the run's dataset input: {"name", "digest", "source", "profile"}.
    dataset: Optional[Dict[str, str]] = None


def client_for(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _already_exists(e: Exception) -> bool:
    return error_code(e) == "RESOURCE_ALREADY_EXISTS"


def get_or_create_experiment(client, name: str) -> str:
    """The experiment id; creates it (race-safe). For a bare ``sqlite:///`` store the
    artifacts go next to the database, not to ``./mlruns`` in the working directory."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        tags = exp.tags or {}
        if EXPERIMENT_KIND_TAG not in tags:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        if SHARED_VIEW_PREFIX + REVIEW_VIEW not in tags:
            client.set_experiment_tag(exp.experiment_id, SHARED_VIEW_PREFIX + REVIEW_VIEW, review_view())
        return exp.experiment_id
    location = None
    uri = client.tracking_uri
    if uri.startswith("sqlite:///"):
        db = os.path.abspath(uri[len("sqlite:///"):])  # sqlite:////abs/path or sqlite:///rel/path
        location = pathlib.Path(os.path.dirname(db), "artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
                                              SHARED_VIEW_PREFIX + REVIEW_VIEW: review_view()})
    except Exception as e:  # noqa: BLE001 - another logger created it first
        if not _already_exists(e):
            raise
        return client.get_experiment_by_name(name).experiment_id


def review_view(created_ms: Optional[int] = None) -> str:
    """The saved runs-table view of `REVIEW_COLUMNS` as the MLflow UI stores one (an envelope
    with its name and times around the JSON view state): those columns selected and first, runs
    ordered by AUC, best first.  The UI lists it under *Views* and opens it from `review_url`."""
    columns = [f"{kind}.`{name}`" for kind, name in REVIEW_COLUMNS]
    state = json.dumps({"selectedColumns": columns, "columnOrder": columns,
                        "orderByKey": "metrics.`auc`", "orderByAsc": False}, separators=(",", ":"))
    created = int(time.time() * 1000) if created_ms is None else int(created_ms)
    return json.dumps({"name": "feedrank review", "createdAt": created, "updatedAt": created, "state": state},
                      separators=(",", ":"))


def review_url(tracking_uri: str, experiment_id: str) -> str:
    """The MLflow UI address of an experiment's runs in the `review_view`."""
    return (f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={REVIEW_VIEW}")


def _log_dataset(client, run_id: str, dataset: Dict[str, str]) -> None:
    """The event log as the run's training dataset input (the run page's *Datasets used*)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    ds = Dataset(name=dataset["name"], digest=dataset["digest"][:36], source_type="local",
                 source=json.dumps({"uri": dataset["source"]}), profile=dataset.get("profile"))
    client.log_inputs(run_id, datasets=[DatasetInput(ds, tags=[InputTag("mlflow.data.context", "training")])])


def _chunks(items: List, n: int) -> Iterable[List]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


@dataclasses.dataclass(frozen=True)
class Registration:
    version: str
    created: bool  # False: the model was already this version (same fingerprint)


def version_with_fingerprint(client, model_name: str, fingerprint: Optional[str]) -> Optional[str]:
    """The oldest version of ``model_name`` tagged with ``fingerprint``, or None."""
    if not fingerprint:
        return None
    try:
        found = client.search_model_versions(
            f"name = '{model_name}' and tags.{FINGERPRINT_TAG} = '{fingerprint}'")
    except Exception as e:  # noqa: BLE001 - no registered model yet
        if error_code(e) != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None
    versions = sorted(int(v.version) for v in found)
    return str(versions[0]) if versions else None


def register(client, model_name: str, run_id: str, cand: Candidate) -> Registration:
    """A new version of ``model_name`` for the pushed model; alias ``challenger`` moves to it.

    A model whose fingerprint a version already carries is not registered
    again: that version is returned (``created=False``) and ``challenger``
    moves to it, even when newer versions exist (a cached re-run of an older
    model, e.g. the demo's DIN after a GBDT was registered, is the candidate).
    Two loggers registering the same model at once both create a version; the
    newer one then sees the older and deletes its own.

    The version's source is the pushed SavedModel: its remote URI as is
    (gs://, s3://), or, for a local push directory, the copy logged under the
    run's ``pushed_model/`` (an MLflow server refuses local paths outside the
    run's artifacts); the ``pushed_dir`` tag always names the serving path.
    """
    from mlflow.entities.model_registry.model_version_status import ModelVersionStatus

    if not (cand.blessed and cand.pushed and cand.pushed_dir):
        raise TrackingError(f"refusing to register run {run_id}: blessed={cand.blessed} "
                            f"pushed={cand.pushed}; only a blessed, pushed model becomes a version")
    existing = version_with_fingerprint(client, model_name, cand.model_fingerprint)
    if existing is not None:
        move_challenger(client, model_name, int(existing), exact=True)
        return Registration(existing, created=False)
    try:
        client.create_registered_model(
            model_name, description="Blessed, pushed feedrank rankers. Aliases: champion (serving), "
                                    "challenger (newest blessed candidate).")
    except Exception as e:  # noqa: BLE001
        if not _already_exists(e):
            raise
    # a local push becomes an MLflow model in the run; a remote one (gs://, s3://) is the source as it is
    source = (cand.pushed_dir if _is_remote(cand.pushed_dir)
              else pyfunc_model.version_source(client, run_id, cand.pushed_dir, PUSHED_MODEL_ARTIFACT))
    tags = {BLESSED_TAG: "true", "pushed_dir": cand.pushed_dir,
            "pushed_version": cand.pushed_version or "",
            **{k: v for k, v in cand.tags.items() if k in ("model_family", "tfx.run_id", "kfp.run_id",
                                                              "git.commit", "code_version")}}
    if "auc" in cand.metrics:
        tags["auc"] = f"{cand.metrics['auc']:.6f}"
    if cand.model_fingerprint:
        tags[FINGERPRINT_TAG] = cand.model_fingerprint
        tags["push_reused"] = str(cand.push_reused).lower()
    mv = client.create_model_version(model_name, source, run_id=run_id, tags=tags,
                                     description=f"Pushed to {cand.pushed_dir}")
    deadline = time.monotonic() + 60
    while mv.status == ModelVersionStatus.to_string(ModelVersionStatus.PENDING_REGISTRATION):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
        mv = client.get_model_version(model_name, mv.version)
    first = version_with_fingerprint(client, model_name, cand.model_fingerprint)
    if first is not None and int(first) < int(mv.version):  # lost a race to a logger of the same model
        client.delete_model_version(model_name, mv.version)
        move_challenger(client, model_name, int(first))
        return Registration(first, created=False)
    move_challenger(client, model_name, int(mv.version))
    return Registration(str(mv.version), created=True)


# How the registry answers the loser of two concurrent alias writes: the SQL
# store turns the alias row's unique-constraint violation into BAD_REQUEST and a
# locked database into TEMPORARILY_UNAVAILABLE.
_ALIAS_RACE_CODES = ("BAD_REQUEST", "TEMPORARILY_UNAVAILABLE", "RESOURCE_ALREADY_EXISTS")


def _alias_race(e: Exception) -> bool:
    return error_code(e) in _ALIAS_RACE_CODES


def _newest_version(client, model_name: str) -> int:
    return max(int(v.version) for v in client.search_model_versions(f"name = '{model_name}'"))


def _challenger(client, model_name: str) -> Optional[int]:
    try:
        return int(client.get_model_version_by_alias(model_name, CHALLENGER).version)
    except Exception as e:  # noqa: BLE001 - no alias yet is the normal first case
        if error_code(e) != "INVALID_PARAMETER_VALUE":  # what the registry answers for a missing alias
            raise
        return None


def move_challenger(client, model_name: str, version: int, attempts: int = 10,
                    exact: bool = False) -> None:
    """Points ``challenger`` at the model's newest version (ours or a later one),
    or at ``version`` itself with ``exact``.

    Two loggers finishing together race on the alias row: the registry answers
    the loser with BAD_REQUEST (a unique-constraint violation), and a slow
    writer can land an older version last. Each logger therefore sets,
    re-reads and repeats until the alias holds the newest version; the last
    writer's check settles it.
    """
    last_error = ""
    for attempt in range(attempts):
        target = version if exact else max(version, _newest_version(client, model_name))
        if _challenger(client, model_name) == target:
            return
        try:
            client.set_registered_model_alias(model_name, CHALLENGER, str(target))
        except Exception as e:  # noqa: BLE001
            if not _alias_race(e):
                raise
            last_error = f" last error: {error_code(e)}"
        time.sleep(0.1 * (attempt + 1) + random.random() * 0.2)
    raise TrackingError(f"could not point alias {CHALLENGER!r} of {model_name} at version {version} "
                        f"after {attempts} attempts (concurrent writers?{last_error})")


def log_candidate(client, experiment: str, cand: Candidate,
                  registered_model: Optional[str] = None) -> Dict[str, Optional[str]]:
    """Logs ``cand`` as one finished run; registers it iff blessed, pushed and not yet registered.

    Returns ``{"run_id", "experiment_id", "registered_version", "existing_version"}``: the
    version this run created, or the version that already held the same model (by fingerprint).
    """
    from mlflow.entities import Metric, Param, RunTag

    exp_id = get_or_create_experiment(client, experiment)
    tags = {**cand.tags, BLESSED_TAG: str(cand.blessed).lower(), "pushed": str(cand.pushed).lower()}
    if cand.description:
        tags["mlflow.note.content"] = cand.description
    # The run lasts as long as the Trainer's fit and export (a cached Trainer's too) and ends
    # when it is logged, so runs still sort by when they were logged.
    end_ms = int(time.time() * 1000)
    start_ms = end_ms - max(0, cand.training_ms[1] - cand.training_ms[0]) if cand.training_ms else None
    run = client.create_run(exp_id, run_name=cand.run_name, tags=tags, start_time=start_ms)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in sorted(cand.params.items())]
        metrics = [Metric(k, float(v), now, 0) for k, v in sorted(cand.metrics.items()) if v is not None]
        for row in cand.curves:
            step = int(row["epoch"])
            metrics += [Metric(k, float(v), now, step) for k, v in sorted(row.items())
                        if k != "epoch" and v is not None]
        for chunk in _chunks(params, 100):
            client.log_batch(run_id, params=chunk)
        if cand.dataset:
            _log_dataset(client, run_id, cand.dataset)
        for chunk in _chunks(metrics, 1000):
            client.log_batch(run_id, metrics=chunk)
        for local, artifact_path in cand.artifacts.items():
            if os.path.isdir(local):
                client.log_artifacts(run_id, local, artifact_path or None)
            elif os.path.exists(local):
                client.log_artifact(run_id, local, artifact_path or None)
        version = existing = None
        if registered_model and cand.blessed and cand.pushed:
            reg = register(client, registered_model, run_id, cand)
            if reg.created:
                version = reg.version
                client.log_batch(run_id, tags=[RunTag("registered_model", registered_model),
                                               RunTag("registered_version", version)])
            else:
                existing = reg.version
                note = (f"This model (fingerprint {cand.model_fingerprint}) is already version {existing} "
                        f"of {registered_model}: no new version was registered.")
                client.log_batch(run_id, tags=[
                    RunTag("registered_model", registered_model), RunTag("existing_version", existing),
                    RunTag("mlflow.note.content", f"{cand.description}\n\n{note}".strip())])
        client.set_terminated(run_id, "FINISHED", end_time=end_ms if start_ms is not None else None)
    except BaseException:
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        raise
    return {"run_id": run_id, "experiment_id": exp_id, "registered_version": version,
            "existing_version": existing}
