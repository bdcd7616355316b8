"""TensorFlow Decision Forests' inference ops, registered before a SavedModel is loaded.

A SavedModel of the ``gbdt`` family (`feedrank.train.families.gbdt`) holds the
trees as assets and scores them with TF-DF's custom ops
(``SimpleMLCreateModelResource``, ``SimpleMLInferenceOpWithHandle``, ...);
a process that loads it must register those ops first, or the load fails
with ``Op type not registered``.  `ensure_for` does so only when the model
needs them and costs a few milliseconds: it loads the package's inference op
library (``tensorflow/ops/inference/inference.so``) with
``tf.load_op_library``, without importing ``tensorflow_decision_forests``
itself (whose import pulls in tf_keras, ydf and the training ops, seconds, and
which the serving environment does not need).  Loading the same library
again, or importing the package afterwards, is harmless (the library is
opened once per process).

This module imports TensorFlow only, so the serving environment (kserve,
without tf_keras) and TFMA's workers can use it.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from typing import Optional

log = logging.getLogger(__name__)

PACKAGE = "tensorflow_decision_forests"
INFERENCE_LIBRARY = os.path.join("tensorflow", "ops", "inference", "inference.so")
OP_PREFIX = b"SimpleML"   # every TF-DF op's name starts with it
_loaded: Optional[str] = None


class MissingDecisionForests(RuntimeError):
    """A SavedModel needs TF-DF's ops and the package is not installed."""


def uses_decision_forests(export_dir: str) -> bool:
    """True when the SavedModel in ``export_dir`` calls TF-DF ops (its graph names them)."""
    import tensorflow as tf

    path = os.path.join(export_dir, "saved_model.pb")
    if not tf.io.gfile.exists(path):
        return False
    with tf.io.gfile.GFile(path, "rb") as f:
        return OP_PREFIX in f.read()


def load_ops() -> str:
    """Registers TF-DF's inference ops in this process (once); returns the library's path.

    Raises `MissingDecisionForests` when the package is not installed."""
    global _loaded
    if _loaded:
        return _loaded
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDecisionForests(
            f"this model is a TensorFlow Decision Forests model (gbdt family): install {PACKAGE} "
            "(pinned in requirements.txt and requirements-serving.txt) to load it")
    import tensorflow as tf

    path = os.path.join(list(spec.submodule_search_locations)[0], INFERENCE_LIBRARY)
    tf.load_op_library(path)
    _loaded = path
    log.info("registered TF-DF inference ops from %s", path)
    return path


def ensure_for(export_dir: str) -> bool:
    """Registers TF-DF's ops if the SavedModel in ``export_dir`` needs them; True if it does."""
    if not uses_decision_forests(export_dir):
        return False
    load_ops()
    return True
