"""The session recommender's TFX pipeline (docs/session_pipeline.md), components in data-flow order.

``pipeline.create_pipeline(cfg, target)`` builds it for a config with ``mode: session``.
The anomalies gate, the baseline, the Pusher and the MlflowLogger are the ranking
pipeline's; the samples, their schema, Transform, the optional Tuner, the Trainer and
the Evaluator are the session recommender's own.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from feedrank.config import Config
from feedrank.runners.target import PipelineTarget


def create_session_pipeline(cfg: Config, target: Optional[PipelineTarget] = None) -> Any:
    """The session pipeline, components in data-flow order; ``target`` as for
    ``pipeline.create_pipeline`` (None: `feedrank.runners.local.local_target(cfg)`)."""
    from tfx import v1 as tfx

    from components.baseline.component import LatestBlessedModel
    from components.gate.component import AnomaliesGate
    from components.session_evaluator.component import SessionEvaluator
    from components.session_samples.component import SessionSampleGen
    from feedrank.fingerprint import code_fingerprint
    from feedrank.runners.local import local_target
    from feedrank.runners.stages import push_and_track
    from feedrank.tracking import registered_model_name
    from feedrank.tracking.server import tracking_uri

    target = target or local_target(cfg)
    ss = cfg.sessions
    code_version = code_fingerprint()
    # Events -> sessions (a new session id or a gap_s pause) -> full and shortened-path samples, split by time.
    samples = SessionSampleGen(
        input_base=target.input_base, input_fingerprint=target.input_fingerprint, gap_s=ss.gap_s, k=ss.k,
        eval_days=ss.eval_days, eval_start_ts=ss.eval_start_ts, max_purchase_history=ss.max_purchase_history,
        shortened=ss.shortened, num_shards=ss.num_shards, val_days=ss.val_days, next_pages=ss.next_pages)
    # Statistics of every split.
    statistics_gen = tfx.components.StatisticsGen(examples=samples.outputs["examples"])
    # The schema derived from feedrank/sessions/features.py (not inferred, so drift is caught).
    schema_gen = tfx.components.ImportSchemaGen(schema_file=session_schema_file(target))
    # Anomalies of the statistics against the schema...
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    # ...halt the run here, before Transform and the Trainer.
    gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    # Page and item vocabularies (by frequency), left-padded page/dwell matrices, purchase histories, labels.
    transform_config = {"max_pages": ss.max_pages, "max_purchases": ss.max_purchases, "max_labels": ss.max_labels,
                        "catalogue": target.input_base}
    transform = tfx.components.Transform(
        examples=samples.outputs["examples"], schema=schema_gen.outputs["schema"],
        preprocessing_fn="feedrank.sessions.transform.preprocessing_fn",
        disable_statistics=not cfg.transform.statistics, custom_config=transform_config)
    transform.add_upstream_node(gate)
    trainer_config = {**cfg.trainer.to_dict(), "top_k": ss.top_k, "gap_s": ss.gap_s, "k_pages": ss.k,
                      "code_version": code_version}
    # Optional (tuner.enabled): the genetic-algorithm Tuner; its best hyperparameters feed the Trainer.
    tuner = session_tuner(cfg, samples, transform)
    # The DRNN (or GRU4Rec) on the transformed train split, early-stopped on val, exported with the Transform
    # layer: raw ids in, top k out.
    trainer = tfx.components.Trainer(
        run_fn="feedrank.sessions.trainer.run_fn", examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"], schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]), eval_args=tfx.proto.EvalArgs(splits=["val"]),
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
        custom_config=target.wrap_trainer_config(trainer_config)).with_id("Trainer")
    # The served session model: the registry's champion, else the newest blessed push.
    baseline = LatestBlessedModel(push_dir=target.push_dir, tracking_uri=tracking_uri(cfg, start=False),
                                  registered_model=registered_model_name(cfg))
    # Top-k metrics on the eval split; blesses on top-10 accuracy: a floor and no regression versus the baseline.
    evaluator = SessionEvaluator(
        examples=samples.outputs["examples"], model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"], top10_floor=cfg.evaluator.top10_floor,
        max_top10_regression=cfg.evaluator.max_top10_regression).with_id("SessionEvaluator")
    # Pusher (blessed only), then MlflowLogger (every candidate; blessed + pushed -> 'challenger').
    pusher, mlflow_logger = push_and_track(
        cfg, target, trainer, evaluator, schema_gen, samples, trainer_config,
        {"pipeline_name": cfg.pipeline_name, "mode": cfg.mode, "input_base": samples.exec_properties["input_base"],
         "evaluator": {"top10_floor": cfg.evaluator.top10_floor,
                       "max_top10_regression": cfg.evaluator.max_top10_regression}})

    return tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline_name, pipeline_root=target.pipeline_root,
        components=[samples, statistics_gen, schema_gen, example_validator, gate, transform,
                    *([tuner] if tuner else []), trainer, baseline, evaluator, pusher, mlflow_logger],
        enable_cache=target.enable_cache,
        metadata_connection_config=target.metadata_connection_config,
        beam_pipeline_args=list(target.beam_pipeline_args))


def session_schema_file(target: PipelineTarget) -> str:
    """The session samples' schema beside the rankers' (`feedrank.sessions.tfdv_schema`): written here
    for a local run; in the image for Kubeflow (the Dockerfile's `write_config_schemas`)."""
    from feedrank.sessions.tfdv_schema import schema_path, write_schema

    root = os.path.dirname(os.path.dirname(target.schema_file))
    return write_schema(root) if os.path.isdir(root) else schema_path(root)


def session_tuner(cfg: Config, samples: Any, transform: Any) -> Optional[Any]:
    """The Tuner between Transform and the Trainer when the config's ``tuner.enabled`` (else None)."""
    if not cfg.tuner.enabled:
        return None
    from tfx import v1 as tfx

    return tfx.components.Tuner(
        tuner_fn="feedrank.tune.tuner.tuner_fn", examples=samples.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        train_args=tfx.proto.TrainArgs(splits=["train"]), eval_args=tfx.proto.EvalArgs(splits=["val"]),
        custom_config={"tuner": dataclasses.asdict(cfg.tuner), "drnn": dict(cfg.trainer.drnn),
                       "sessions": {"max_pages": cfg.sessions.max_pages, "max_purchases": cfg.sessions.max_purchases}})
