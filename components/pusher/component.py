"""Pusher: a blessed model to ``<push_dir>/<version>/``, atomically, never the same model twice.

It replaces ``tfx.components.Pusher`` (same input and output keys, same
``pushed``/``pushed_destination``/``pushed_version`` properties) with:

* its own blessing check (`feedrank.push.blessing`): no push without a
  blessing of this very model;
* a content fingerprint of the Trainer's ``Format-Serving`` SavedModel: a model
  already pushed is not pushed again, the existing version is output
  (``push_reused=1``);
* a push through a hidden staging directory and a rename, and clean-up of the
  staging directories killed pushes left (`feedrank.push.store`).

Caching: the output describes the push store, which changes outside TFX, so
the Pusher runs on every pipeline run, like the MlflowLogger: ``run_nonce``
(fresh per pipeline build) is part of its cache key.  On Kubeflow the nonce is
pinned and the task is uncached instead (``never_cache``).
"""
from __future__ import annotations

import uuid
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.pusher.executor import BLESSING_KEY, MODEL_KEY, PUSHED_MODEL_KEY, Executor
from feedrank.push.store import DEFAULT_STALE_AFTER_S


class PusherSpec(ComponentSpec):
    PARAMETERS = {
        # Versions go to <push_dir>/<version>/ (local path, gs:// or s3://).
        "push_dir": ExecutionParameter(type=str),
        # Staging directories older than this are removed by the next push (store.clean_stale).
        "stale_after_s": ExecutionParameter(type=int, optional=True),
        # Unique per pipeline build, so the Pusher is never served from the cache (module doc).
        "run_nonce": ExecutionParameter(type=str),
    }
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
    }
    OUTPUTS = {PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel)}


class Pusher(base_component.BaseComponent):
    """Pushes the model iff ``model_blessing`` blesses it; reuses an identical earlier push."""

    SPEC_CLASS = PusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, *, model: types.BaseChannel, model_blessing: types.BaseChannel, push_dir: str,
                 stale_after_s: int = DEFAULT_STALE_AFTER_S, run_nonce: Optional[str] = None):
        super().__init__(spec=PusherSpec(
            model=model, model_blessing=model_blessing, push_dir=push_dir,
            stale_after_s=int(stale_after_s), run_nonce=run_nonce or uuid.uuid4().hex,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
