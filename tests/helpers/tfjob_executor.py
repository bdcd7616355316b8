"""A TFX executor for the TFJob tests: records which worker ran it, with its TF_CONFIG.

Each worker writes ``<model uri>/worker-<index>.json`` and marks the ``model`` artifact
``written_by: worker-<index>``, so a test can tell whose executor output became the step's.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils


class Executor(base_executor.BaseExecutor):
    """Writes what this worker saw into the ``model`` output."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        tf_config = os.environ.get("TF_CONFIG", "")
        index = json.loads(tf_config)["task"]["index"] if tf_config else 0
        model = artifact_utils.get_single_instance(output_dict["model"])
        fileio.makedirs(model.uri)
        with fileio.open(os.path.join(model.uri, f"worker-{index}.json"), "w") as f:
            f.write(json.dumps({"tf_config": tf_config, "exec_properties": exec_properties}))
        model.set_string_custom_property("written_by", f"worker-{index}")
