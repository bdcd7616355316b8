"""Each registered version as a stock MLflow model: a pyfunc over the pushed SavedModel.

  source = version_source(client, run_id, "model_store/din/1796535852", "pushed_model")
  mlflow models serve -m models:/feedrank-demo@champion --env-manager local -p 5002
  curl -d '{"dataframe_records": [...]}' -H 'Content-Type: application/json' localhost:5002/invocations

The logged model holds the SavedModel unchanged (``artifacts/<version>/``, the
pushed version directory as the servers read it) and `RankerModel`, which scores a DataFrame with
**one row per candidate**: a column per input of the model's ``serving_default``
signature, the user's side repeated on every row (sequence and token-bag
columns hold lists of strings), one ``probability`` per row out.  That is
the stock shape MLflow's tools expect (``mlflow models serve``,
``mlflow.pyfunc.load_model``, ``predict`` in a notebook); the ranking endpoint
(`serving`) stays the low-latency path with the user's side sent once.

The version's signature and input example are logged with it; the input
example is two candidates with empty ids and histories (out-of-vocabulary,
so it runs on any model of the same contract).
"""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Dict, Optional

import numpy as np
import pandas as pd

try:  # pyfunc's base class; the module still imports where mlflow is absent (the serving image)
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - the pipeline environment always has mlflow
    PythonModel = object  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

ARTIFACT = "model"                 # where the logged model sits in the run
SAVED_MODEL_KEY = "saved_model"    # the pyfunc's artifact holding the SavedModel
SIGNATURE = "serving_default"
SCORE_COLUMN = "probability"
OUTPUT = "probabilities"           # the ranker's one output (feedrank.train.export.OUTPUT_KEY)


def _inputs(fn) -> Dict[str, Any]:
    return dict(fn.structured_input_signature[1])


def _matrix(values: pd.Series, name: str) -> np.ndarray:
    """A column of lists of strings as a 2-D string array padded with "" (at least 1 wide)."""
    rows = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            v = []
        if isinstance(v, str) or not hasattr(v, "__iter__"):
            raise ValueError(f"column {name!r} holds lists of strings; row {i} holds {v!r}")
        rows.append([str(x) for x in v])
    width = max([1] + [len(r) for r in rows])
    return np.array([r + [""] * (width - len(r)) for r in rows], dtype=object)


def tensors_of(frame: pd.DataFrame, inputs: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """The signature's inputs from a frame with one row per candidate; a ValueError names a
    missing column or a value of the wrong kind."""
    missing = sorted(set(inputs) - set(frame.columns))
    if missing:
        raise ValueError(f"missing input column(s) {missing}; the model reads {sorted(inputs)}")
    out: Dict[str, np.ndarray] = {}
    for name, spec in inputs.items():
        col = frame[name]
        if spec.shape.rank == 2:
            out[name] = _matrix(col, name)
        elif spec.dtype.name == "string":
            out[name] = col.fillna("").astype(str).to_numpy(dtype=object)
        else:
            try:
                out[name] = col.astype(np.float32).to_numpy()
            except (TypeError, ValueError):
                raise ValueError(f"column {name!r} holds numbers; got e.g. {col.iloc[0]!r}") from None
    return out


class RankerModel(PythonModel):
    """pyfunc: one probability per candidate row (see the module docstring)."""

    def load_context(self, context) -> None:
        import tensorflow as tf

        self._model = tf.saved_model.load(context.artifacts[SAVED_MODEL_KEY])
        self._fn = self._model.signatures[SIGNATURE]
        self._inputs = _inputs(self._fn)

    def predict(self, context, model_input: pd.DataFrame, params: Optional[Dict[str, Any]] = None) -> pd.DataFrame:
        import tensorflow as tf
        from mlflow.exceptions import MlflowException

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        try:
            tensors = tensors_of(frame, self._inputs)
        except ValueError as e:
            raise MlflowException.invalid_parameter_value(str(e)) from None
        scores = self._fn(**{k: tf.constant(v) for k, v in tensors.items()})[OUTPUT].numpy().reshape(-1)
        return pd.DataFrame({SCORE_COLUMN: scores.astype(np.float64)})


def input_example(inputs: Dict[str, Any], rows: int = 2) -> pd.DataFrame:
    """``rows`` candidates with empty ids and histories and zero numbers."""
    data: Dict[str, list] = {}
    for name, spec in inputs.items():
        if spec.shape.rank == 2:
            data[name] = [[""] for _ in range(rows)]
        elif spec.dtype.name == "string":
            data[name] = [""] * rows
        else:
            data[name] = [0.0] * rows
    return pd.DataFrame(data)


def ranking_signature(saved_model_dir: str):
    """The SavedModel's ``serving_default`` function; a ValueError says why there is none."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(saved_model_dir)
    except Exception as e:  # noqa: BLE001 - any unreadable SavedModel is reported the same way
        raise ValueError(f"{saved_model_dir} is not a readable SavedModel ({type(e).__name__})") from None
    if SIGNATURE not in loaded.signatures:
        raise ValueError(f"{saved_model_dir} has no {SIGNATURE!r} signature (it has {sorted(loaded.signatures)})")
    fn = loaded.signatures[SIGNATURE]
    outputs = sorted(fn.structured_outputs)
    if outputs != [OUTPUT]:
        raise ValueError(f"{saved_model_dir}'s {SIGNATURE!r} answers {outputs}, not one {OUTPUT!r} per "
                         f"candidate (not a ranker)")
    kinds = {n: (s.shape.rank, s.dtype.name) for n, s in _inputs(fn).items()}
    odd = sorted(n for n, (rank, dtype) in kinds.items() if rank not in (1, 2) or (rank == 2 and dtype != "string"))
    if odd:
        raise ValueError(f"{saved_model_dir}'s {SIGNATURE!r} has inputs a candidate row cannot hold: {odd}")
    return fn


def save(path: str, saved_model_dir: str, fn=None) -> str:
    """Saves the SavedModel as a pyfunc model into the new directory ``path`` (signature,
    input example, the SavedModel copied inside); ``fn``: its `ranking_signature`, when
    already loaded.  Returns ``path``; the caller logs it into a run with the client."""
    import mlflow
    import tensorflow as tf
    from mlflow.models import infer_signature

    fn = fn if fn is not None else ranking_signature(saved_model_dir)
    inputs = _inputs(fn)
    example = input_example(inputs)
    scores = fn(**{k: tf.constant(v) for k, v in tensors_of(example, inputs).items()})[OUTPUT]
    signature = infer_signature(example, pd.DataFrame({SCORE_COLUMN: scores.numpy().reshape(-1).astype(float)}))
    mlflow.pyfunc.save_model(
        path, python_model=RankerModel(), artifacts={SAVED_MODEL_KEY: saved_model_dir},
        signature=signature, input_example=example,
        pip_requirements=[f"tensorflow=={tf.__version__}", f"mlflow=={mlflow.__version__}",
                          f"pandas=={pd.__version__}"])
    return path


def version_source(client, run_id: str, pushed_dir: str, raw_artifact: str) -> str:
    """The source of a new registry version for a local push: the push logged into the run
    as an MLflow model (``runs:/<run>/model``: signature, input example, the SavedModel
    inside), so ``mlflow models serve -m models:/<name>@champion`` and
    ``mlflow.pyfunc.load_model`` work on the version.  A SavedModel that is not a
    ranker of this shape (no ``serving_default``, other outputs - the session
    recommender's top-k - or inputs a candidate row cannot hold), or one the
    wrapper fails on, is logged as it is under ``raw_artifact`` (a warning says
    why), and that is the source."""
    try:
        fn = ranking_signature(pushed_dir)
        with tempfile.TemporaryDirectory(prefix="mlflow_model_") as tmp:
            path = save(os.path.join(tmp, ARTIFACT), pushed_dir, fn=fn)
            client.log_artifacts(run_id, path, ARTIFACT)
    except Exception as e:  # noqa: BLE001 - the raw SavedModel is always registered
        log.warning("registering the raw SavedModel, not an MLflow model: %s", e)
        client.log_artifacts(run_id, pushed_dir, raw_artifact)
        return f"runs:/{run_id}/{raw_artifact}"
    log.info("logged the pushed model %s as the MLflow model runs:/%s/%s", pushed_dir, run_id, ARTIFACT)
    return f"runs:/{run_id}/{ARTIFACT}"
