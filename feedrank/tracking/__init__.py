"""MLflow tracking: the local server, the registry's aliases and candidate comparison.

Every pipeline candidate is one MLflow run (logged by `components/mlflow_logger`);
blessed and pushed candidates become versions of the registered model with the
alias ``challenger``; `registry.promote` moves ``champion`` to a blessed version.
"""
from __future__ import annotations

import os
from typing import Optional

CHAMPION = "champion"
CHALLENGER = "challenger"
BLESSED_TAG = "blessed"


class TrackingError(RuntimeError):
    """A tracking operation failed for a reason the user can act on (one line)."""


def error_code(e: BaseException) -> str:
    """The MLflow error code of ``e`` (``MlflowException.error_code``, e.g.
    ``RESOURCE_DOES_NOT_EXIST``), or "" when ``e`` is not an MLflow error.
    The same codes come from a local store and, over REST, from a server."""
    from mlflow.exceptions import MlflowException

    return str(e.error_code) if isinstance(e, MlflowException) else ""


def experiment_name(cfg) -> str:
    """The MLflow experiment of a config: ``mlflow.experiment`` or the pipeline name."""
    return cfg.mlflow.experiment or cfg.pipeline_name


def registered_model_name(cfg) -> str:
    """The registered model of a config: ``mlflow.registered_model`` or ``<pipeline>-<model>``."""
    return cfg.mlflow.registered_model or f"{cfg.pipeline_name}-{cfg.model_name}"


def local_server_dir(cfg) -> str:
    """Where the embedded server keeps its SQLite store and artifacts: ``<run_root>/mlflow``."""
    return os.path.abspath(os.path.join(cfg.run_root, "mlflow"))


def configured_uri(cfg) -> Optional[str]:
    """The explicit tracking URI (config, else ``$MLFLOW_TRACKING_URI``), or None for the embedded server."""
    return cfg.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
