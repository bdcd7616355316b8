"""The Pusher executor: checks the blessing itself, then pushes through `feedrank.push.store`.

Output ``pushed_model`` custom properties (what the MlflowLogger and the run
summary read): ``pushed`` (1/0), ``pushed_destination`` and ``pushed_version``
(the version directory, new or reused), ``model_fingerprint``, ``push_reused``
(1 when an identical model was already pushed and nothing was copied) and
``push_reason``.  The artifact's directory holds ``push.json`` with the same
facts; the model itself is not copied there.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from feedrank.push import store
from feedrank.push.blessing import blessed_for

log = logging.getLogger(__name__)

MODEL_KEY, BLESSING_KEY, PUSHED_MODEL_KEY = "model", "model_blessing", "pushed_model"


def _single(input_dict: Dict[str, List[types.Artifact]], key: str) -> Optional[types.Artifact]:
    arts = input_dict.get(key) or []
    return arts[0] if arts else None


def _write_record(out: types.Artifact, record: Dict[str, Any]) -> None:
    tf.io.gfile.makedirs(out.uri)
    with tf.io.gfile.GFile(os.path.join(out.uri, "push.json"), "w") as f:
        f.write(json.dumps(record, indent=1, sort_keys=True))


class Executor(base_executor.BaseExecutor):
    """Pushes a blessed model (or reuses its earlier push); refuses an unblessed one."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        out = artifact_utils.get_single_instance(output_dict[PUSHED_MODEL_KEY])
        model = _single(input_dict, MODEL_KEY)
        if model is None:
            raise ValueError("the Pusher has no model input: nothing to push")
        blessed, reason = blessed_for(model, _single(input_dict, BLESSING_KEY))
        if not blessed:
            log.info("Pusher: not pushing %s: %s", model.uri, reason)
            out.set_int_custom_property("pushed", 0)
            out.set_string_custom_property("push_reason", f"not pushed: {reason}")
            _write_record(out, {"pushed": False, "reason": reason, "model": model.uri})
            return
        model_dir = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
        result = store.push(model_dir, exec_properties["push_dir"],
                            stale_after_s=int(exec_properties.get("stale_after_s") or store.DEFAULT_STALE_AFTER_S),
                            source_uri=model.uri)
        why = (f"identical model already pushed as version {result.version}" if result.reused
               else f"pushed as version {result.version}")
        out.set_int_custom_property("pushed", 1)
        out.set_string_custom_property("pushed_destination", result.path)
        out.set_string_custom_property("pushed_version", result.version)
        out.set_string_custom_property("model_fingerprint", result.fingerprint)
        out.set_int_custom_property("push_reused", int(result.reused))
        out.set_string_custom_property("push_reason", why)
        _write_record(out, {"pushed": True, "reused": result.reused, "version": result.version,
                            "destination": result.path, "fingerprint": result.fingerprint,
                            "model": model.uri, "reason": why})
        log.info("Pusher: %s (%s)", why, result.path)
