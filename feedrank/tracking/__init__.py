"""MLflow tracking: the local server, the registry's aliases and candidate comparison.

Every pipeline candidate is one MLflow run (logged by `components/mlflow_logger`);
blessed and pushed candidates become versions of the registered model with the
alias ``challenger``; `registry.promote` moves ``champion`` to a blessed version.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

logger = logging.getLogger(__name__)

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


def not_found(e: BaseException) -> bool:
    """Whether ``e`` is the registry's answer to a missing model or version."""
    return error_code(e) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def experiment_name(cfg) -> str:
    """The MLflow experiment of a config: ``mlflow.experiment`` or the pipeline name."""
    return cfg.mlflow.experiment or cfg.pipeline_name


# What a pipeline's registered model holds, by ``mode``: the name says what it does, not
# which family a version is (the families of its versions change from run to run; each
# version's ``family`` tag names its own).
REGISTERED_SUFFIX = {"ranking": "ranker", "session": "recommender"}


def registered_model_name(cfg) -> str:
    """The registered model of a config: ``mlflow.registered_model``, else
    ``<pipeline>-ranker`` (mode ranking) or ``<pipeline>-recommender`` (mode session)."""
    return cfg.mlflow.registered_model or f"{cfg.pipeline_name}-{REGISTERED_SUFFIX[cfg.mode]}"


def legacy_registered_model_names(cfg) -> list:
    """The names configs gave before the registered model named what it does, not one family:
    ``<pipeline>-<model>`` and ``<pipeline>-<the mode's default family>`` (demo.yaml's
    ``feedrank-demo-din`` held the GBDT's versions too)."""
    default = {"ranking": "din", "session": "drnn"}[cfg.mode]
    return list(dict.fromkeys([f"{cfg.pipeline_name}-{cfg.model_name}", f"{cfg.pipeline_name}-{default}"]))


def note_legacy_registry(client, cfg, model: str) -> Optional[str]:
    """Warns, and returns the old name, when ``model`` is not registered but a name of
    `legacy_registered_model_names` is: the registry's versions sit under the old name, and
    the line says how to keep using it (``--set mlflow.registered_model=<old>``)."""
    if _registered(client, model):
        return None
    for legacy in legacy_registered_model_names(cfg):
        if legacy != model and _registered(client, legacy):
            logger.warning("registered model %r does not exist, but %r does (the name older configs "
                           "gave, after one family); to keep its versions, set mlflow.registered_model: "
                           "%s (or --set mlflow.registered_model=%s)", model, legacy, legacy, legacy)
            return legacy
    return None


def _registered(client, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except Exception as e:  # noqa: BLE001 - the registry's not-found is an MlflowException
        if not_found(e):
            return False
        raise
    return True


def local_server_dir(cfg) -> str:
    """Where the embedded server keeps its SQLite store and artifacts: ``<run_root>/mlflow``."""
    return os.path.abspath(os.path.join(cfg.run_root, "mlflow"))


def configured_uri(cfg) -> Optional[str]:
    """The explicit tracking URI (config, else ``$MLFLOW_TRACKING_URI``), or None for the embedded server."""
    return cfg.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
