"""The MlflowLogger executor: collects the candidate, logs it as one MLflow run.

The logic lives in `feedrank.tracking`: `collect` reads the artifacts and
checks the blessing, `candidate.log_candidate` writes the run and registers
a blessed, pushed model (alias ``challenger``) unless a version with the
same model fingerprint exists already.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

from feedrank.tracking import candidate as cand_lib
from feedrank.tracking.collect import collect, write_exact_metrics
from feedrank.tracking.server import answering, check_reachable, fail_fast

log = logging.getLogger(__name__)


class Executor(base_executor.BaseExecutor):
    """Logs the candidate; registers it (alias ``challenger``) iff blessed and pushed."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        out = artifact_utils.get_single_instance(output_dict["mlflow_run"])
        uri = exec_properties["tracking_uri"]
        fail_fast()
        check_reachable(uri)
        run_id = self._context.pipeline_run_id if self._context else None
        # Plots and the model card are written locally, then uploaded to MLflow.
        work_dir = tempfile.mkdtemp(prefix="mlflow_logger_") if "://" in out.uri else out.uri
        cand = collect(input_dict, exec_properties, work_dir, pipeline_run_id=run_id)
        write_exact_metrics(out.uri, cand)
        registered = exec_properties.get("registered_model_name") or None
        log.info("MlflowLogger: logging the candidate to %s (experiment %s)", uri,
                 exec_properties["experiment_name"])
        with answering(uri, "logging the candidate run"):
            result = cand_lib.log_candidate(cand_lib.client_for(uri), exec_properties["experiment_name"],
                                            cand, registered_model=registered)
        if not cand.blessed or not cand.pushed:
            log.info("MlflowLogger: run %s logged, not registered (blessed=%s pushed=%s: %s)",
                     result["run_id"], cand.blessed, cand.pushed, cand.tags.get("blessing_reason"))
        elif result["existing_version"]:
            log.info("MlflowLogger: run %s logged; the model is already %s version %s (same fingerprint), "
                     "nothing registered", result["run_id"], registered, result["existing_version"])
        else:
            log.info("MlflowLogger: run %s registered as %s version %s (alias challenger)",
                     result["run_id"], registered, result["registered_version"])
        out.set_string_custom_property("run_id", result["run_id"])
        out.set_string_custom_property("experiment_id", result["experiment_id"])
        out.set_string_custom_property("tracking_uri", uri)
        out.set_string_custom_property("registered_version", result["registered_version"] or "")
        out.set_string_custom_property("existing_version", result["existing_version"] or "")
        out.set_string_custom_property("model_fingerprint", cand.model_fingerprint or "")
        out.set_int_custom_property("blessed", int(cand.blessed))
        with fileio.open(os.path.join(out.uri, "mlflow_run.json"), "w") as f:
            f.write(json.dumps({**result, "tracking_uri": uri, "experiment": exec_properties["experiment_name"],
                                "registered_model": registered, "blessed": cand.blessed,
                                "pushed": cand.pushed, "model_fingerprint": cand.model_fingerprint,
                                "push_reused": cand.push_reused}, indent=1))
