"""Whether a ModelBlessing artifact blesses this very model.

Side-effecting components (the Pusher, the MlflowLogger's registration) check
the blessing themselves instead of trusting the wiring: the blessing must say
``blessed=1``, carry the Evaluator's ``BLESSED`` marker file, and name this
model as its ``current_model`` (when it names one).
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import tensorflow as tf
from tfx import types


def _same_uri(a: str, b: str) -> bool:
    return os.path.normpath(a.rstrip("/")) == os.path.normpath(b.rstrip("/"))


def blessed_for(model: types.Artifact, blessing: Optional[types.Artifact]) -> Tuple[bool, str]:
    """(blessed, reason) of ``model`` by ``blessing``."""
    if blessing is None:
        return False, "no blessing artifact"
    prop = blessing.get_int_custom_property("blessed") == 1
    marker = tf.io.gfile.exists(os.path.join(blessing.uri, "BLESSED"))
    target = blessing.get_string_custom_property("current_model")
    if not (prop and marker):
        return False, "the Evaluator did not bless it"
    if target and not _same_uri(target, model.uri):
        return False, f"the blessing is for another model ({target})"
    return True, "blessed by the Evaluator"
