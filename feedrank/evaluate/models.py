"""The Evaluator's model loading (its ``module_path``): TFMA's default, plus TF-DF's ops for gbdt models.

TFX's Evaluator calls ``custom_eval_shared_model`` of its ``module_path``
module for the candidate and for the baseline.  Either may be a ``gbdt``
SavedModel (a GBDT champion is the baseline a deep challenger is compared
with), whose trees need TF-DF's inference ops registered before TFMA loads it
(`feedrank.train.tfdf_ops`).  They are registered here, in the Evaluator's
process, and again by the model loader's constructor, wherever Beam runs it.
Any other model costs one read of its ``saved_model.pb``.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable

from feedrank.train import tfdf_ops

log = logging.getLogger(__name__)

MODULE_PATH = __name__   # the Evaluator's module_path


def _construct_with_ops(construct_fn: Callable[[], Any], model_path: str) -> Any:
    tfdf_ops.ensure_for(model_path)
    return construct_fn()


def custom_eval_shared_model(eval_saved_model_path: str, model_name: str, eval_config, **kwargs):
    """`tfma.default_eval_shared_model` with TF-DF's ops registered for a gbdt model."""
    import tensorflow_model_analysis as tfma

    needs_ops = tfdf_ops.ensure_for(eval_saved_model_path)
    shared = tfma.default_eval_shared_model(eval_saved_model_path=eval_saved_model_path, model_name=model_name,
                                            eval_config=eval_config, **kwargs)
    if needs_ops:
        log.info("%s model %s is a TF-DF model: its loader registers TF-DF's ops", model_name or "the",
                 eval_saved_model_path)
        loader = shared.model_loader
        loader.construct_fn = functools.partial(_construct_with_ops, loader.construct_fn, eval_saved_model_path)
    return shared
