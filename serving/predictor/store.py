"""Where the predictor's SavedModel comes from, and loading it warm.

* a model directory ``model_store/<model>/``: the newest version directory
  (numeric names, the Pusher's layout) is served, and newer ones are found
  by :func:`newest_version` when polled;
* a version directory ``model_store/<model>/<version>/`` served as is;
* ``models:/<name>@<alias>`` resolved through the MLflow tracking server's
  REST API (the serving environment has no MLflow client): the version's
  ``pushed_dir`` tag when that directory is here, else its ``source``
  artifacts downloaded from the server (an MLflow model's inner SavedModel).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from feedrank import features as F

log = logging.getLogger(__name__)

SIGNATURE = "serving_default"


class ModelSourceError(RuntimeError):
    """The model location cannot be resolved or loaded."""


def _is_version_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def newest_version(model_dir: str) -> Optional[Tuple[str, str]]:
    """(version, path) of the newest complete version under ``model_dir``."""
    if not os.path.isdir(model_dir):
        return None
    versions = [d for d in os.listdir(model_dir) if d.isdigit() and _is_version_dir(os.path.join(model_dir, d))]
    if not versions:
        return None
    v = max(versions, key=int)
    return v, os.path.join(model_dir, v)


def _http_json(url: str, timeout_s: float = 10.0) -> Dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise ModelSourceError(f"MLflow answered {e.code} for {url}: {e.read()[:300]!r}") from None
    except urllib.error.URLError as e:
        raise ModelSourceError(f"cannot reach MLflow at {url}: {e.reason}") from None


def _download_run_artifacts(tracking_uri: str, run_id: str, path: str, dest: str) -> None:
    base = tracking_uri.rstrip("/")
    q = urllib.parse.urlencode({"run_id": run_id, "path": path})
    listing = _http_json(f"{base}/api/2.0/mlflow/artifacts/list?{q}")
    for f in listing.get("files", []):
        if f.get("is_dir"):
            _download_run_artifacts(tracking_uri, run_id, f["path"], dest)
            continue
        rel = os.path.relpath(f["path"], path.split("/")[0])
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        q = urllib.parse.urlencode({"run_uuid": run_id, "path": f["path"]})
        with urllib.request.urlopen(f"{base}/get-artifact?{q}", timeout=60) as r, open(target, "wb") as out:
            out.write(r.read())


def resolve_mlflow(uri: str, tracking_uri: str, cache_dir: str) -> Tuple[str, str]:
    """(version, local path) for ``models:/<name>@<alias>`` (or ``models:/<name>/<version>``)."""
    spec = uri[len("models:/"):]
    base = tracking_uri.rstrip("/")
    if "@" in spec:
        name, alias = spec.split("@", 1)
        q = urllib.parse.urlencode({"name": name, "alias": alias})
        mv = _http_json(f"{base}/api/2.0/mlflow/registered-models/alias?{q}")["model_version"]
    else:
        name, version = spec.rsplit("/", 1)
        q = urllib.parse.urlencode({"name": name, "version": version})
        mv = _http_json(f"{base}/api/2.0/mlflow/model-versions/get?{q}")["model_version"]
    tags = {t["key"]: t["value"] for t in mv.get("tags", [])}
    version = str(mv["version"])
    if tags.get("blessed", "true").lower() != "true":
        raise ModelSourceError(f"{uri} resolves to version {version}, which is not blessed")
    pushed = tags.get("pushed_dir", "")
    if pushed and _is_version_dir(pushed):
        return version, pushed
    source = mv.get("source", "")
    if _is_version_dir(source):
        return version, source
    if source.startswith("runs:/"):
        run_id, _, path = source[len("runs:/"):].partition("/")
        dest = os.path.join(cache_dir, name, version)
        if not _is_version_dir(dest) and _in_mlflow_model(dest) is None:
            _download_run_artifacts(tracking_uri, run_id, path, dest)
        found = dest if _is_version_dir(dest) else _in_mlflow_model(dest)
        if found is not None:
            return version, found
    raise ModelSourceError(f"{uri}: version {version} has no SavedModel reachable from here "
                           f"(pushed_dir={pushed!r}, source={source!r})")


def _in_mlflow_model(path: str) -> Optional[str]:
    """The SavedModel inside an MLflow model directory (``MLmodel`` beside ``artifacts/<dir>/``,
    as `feedrank.tracking.pyfunc_model` logs a registered version), or None."""
    artifacts = os.path.join(path, "artifacts")
    if not os.path.isfile(os.path.join(path, "MLmodel")) or not os.path.isdir(artifacts):
        return None
    found = [os.path.join(artifacts, d) for d in sorted(os.listdir(artifacts))
             if _is_version_dir(os.path.join(artifacts, d))]
    return found[0] if len(found) == 1 else None


@dataclasses.dataclass
class Loaded:
    """One loaded, warmed-up model version."""

    version: str
    path: str
    fn: Callable[..., Dict[str, tf.Tensor]]
    input_specs: Dict[str, tf.TensorSpec]
    loaded_at: float
    saved: Any = None   # the loaded object: keeps the function's variables alive
    spec: F.FeatureSpec = F.BUILTIN   # the version's feature contract (its declaration file)
    flat_call: Optional[Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]] = None   # `flat_caller`

    def probabilities(self, feed: Dict[str, tf.Tensor]) -> np.ndarray:
        """``serving_default``'s probabilities [N] for the input tensors ``feed`` (by name)."""
        out = self.flat_call(feed) if self.flat_call is not None else self.fn(**feed)
        return out["probabilities"].numpy()


def flat_caller(fn: Callable[..., Dict[str, tf.Tensor]],
                specs: Dict[str, tf.TensorSpec]) -> Optional[Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]]:
    """``feed -> fn(**feed)`` through the concrete function's flat entry point, with the
    inputs in its flat order (the sorted names): this skips binding ~30 keyword
    arguments to the signature and checking them on every call (about 0.6 ms of
    CPU per request).  None when ``fn`` has no such entry point; `load` keeps it
    only if it answers exactly as ``fn(**feed)`` does."""
    call_flat, captured = getattr(fn, "_call_flat", None), getattr(fn, "captured_inputs", None)
    if call_flat is None or captured is None:
        return None
    names = sorted(specs)

    def call(feed: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        return call_flat([feed[name] for name in names], captured)

    return call


def load(version: str, path: str, warmup_candidates: int, warmup_runs: int = 3) -> Loaded:
    """Loads ``path``'s ``serving_default`` and its feature contract, and runs it
    on a synthetic request until the first-call tracing is done (so the first
    real request is fast)."""
    t0 = time.perf_counter()
    from feedrank.train import tfdf_ops
    try:
        tfdf_ops.ensure_for(path)   # a gbdt model's trees need TF-DF's inference ops registered first
        saved = tf.saved_model.load(path)
    except tfdf_ops.MissingDecisionForests as e:
        raise ModelSourceError(f"cannot load {path}: {e}") from None
    except (OSError, ValueError) as e:
        raise ModelSourceError(f"cannot load a SavedModel from {path}: {e}") from None
    if SIGNATURE not in saved.signatures:
        raise ModelSourceError(f"{path} has no {SIGNATURE!r} signature ({sorted(saved.signatures)})")
    fn = saved.signatures[SIGNATURE]
    specs = dict(fn.structured_input_signature[1])
    from serving.features import declared
    try:
        spec = declared.spec_from_model(path)   # the version's declared columns (the request contract)
    except ValueError as e:
        raise ModelSourceError(f"cannot load {path}: {e}") from None
    candidate_bags = {b.name for b in spec.bag_features if b.side == "candidate"}
    warm = {}
    for name, tensor_spec in specs.items():
        if len(tensor_spec.shape) == 2 and name in candidate_bags:
            warm[name] = tf.constant([["w1", ""]] * warmup_candidates)
        elif len(tensor_spec.shape) == 2:
            warm[name] = tf.constant([["w1", "w2", ""]])
        elif tensor_spec.dtype == tf.string:
            warm[name] = tf.constant(["w"] * warmup_candidates)
        else:
            warm[name] = tf.constant(np.zeros(warmup_candidates, np.float32))
    for name in spec.features_of_side("user"):
        if name in warm and len(specs[name].shape) == 1:
            warm[name] = tf.constant(["w"] if specs[name].dtype == tf.string else [0.0])
    for _ in range(max(1, warmup_runs)):
        want = fn(**warm)["probabilities"].numpy()
    call = flat_caller(fn, specs)
    try:
        if call is not None and not np.array_equal(call(warm)["probabilities"].numpy(), want):
            call = None
    except (TypeError, ValueError, tf.errors.OpError) as e:
        log.warning("the flat call of %s failed (%s): keyword calls", path, e)
        call = None
    loaded = Loaded(version, path, fn, specs, time.time(), saved, spec, call)
    log.info("loaded version %s from %s in %.1f s (warm-up included)", version, path, time.perf_counter() - t0)
    return loaded
