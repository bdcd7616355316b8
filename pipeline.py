#!/usr/bin/env python
"""The feedrank pipeline: `create_pipeline()` in data-flow order, and its CLI.

  python pipeline.py run --config configs/demo.yaml

Runs LocalDagRunner with Beam's DirectRunner and a SQLite MLMD store, then
prints the run summary and writes ``<run_root>/<run-id>/summary.json``.
``compile``/``submit``/``schedule`` build and run it on Kubeflow Pipelines;
``promote``/``compare``/``mlflow`` work with the MLflow registry; ``deploy``/``rollback``
render (and apply) the KServe InferenceService from its aliases; ``ab-report`` measures
an A/B test (docs/ab.md). The command line itself is `feedrank.cli`.
"""
from __future__ import annotations

import os
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)  # google-api-core's Python EOL notices
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFT/TFMA 1.16 expect Keras 2

from typing import List, Optional  # noqa: E402

from feedrank.config import Config  # noqa: E402
from feedrank.runners.session_pipeline import create_session_pipeline  # noqa: E402
from feedrank.runners.target import PipelineTarget  # noqa: E402


def create_pipeline(cfg: Config, target: Optional[PipelineTarget] = None):
    """The TFX pipeline, components in data-flow order.

    ``target`` says where it runs (paths, data version, Beam args, caching, MLMD):
    `feedrank.runners.kubeflow_config.kubeflow_target` for Kubeflow; None (the
    default) is `feedrank.runners.local.local_target(cfg)`.  ``mode: session`` builds
    `feedrank.runners.session_pipeline.create_session_pipeline` instead.
    """
    if cfg.mode == "session":
        return create_session_pipeline(cfg, target)
    from tfx import v1 as tfx

    from components.baseline.component import LatestBlessedModel
    from components.example_gen.component import BehaviorExampleGen
    from components.gate.component import AnomaliesGate
    from components.trainer.component import Trainer
    from components.word2vec.component import Word2VecGen
    from feedrank.evaluate.eval_config import make_eval_config
    from feedrank.evaluate.models import MODULE_PATH as EVALUATOR_MODULE
    from feedrank.features import FeatureSpec
    from feedrank.fingerprint import code_fingerprint
    from feedrank.runners.local import local_target
    from feedrank.runners.stages import push_and_track, word2vec_args
    from feedrank.tracking import registered_model_name
    from feedrank.tracking.server import tracking_uri

    target = target or local_target(cfg)
    ex = cfg.examples
    code_version = code_fingerprint()
    # The declared item/user columns (docs/features.md) travel to every component as JSON.
    spec = cfg.features_spec
    declared = {"declared_features": spec.to_json()} if spec != FeatureSpec() else {}

    # Events -> validated, labelled examples with behaviour strictly before each impression.
    example_gen = BehaviorExampleGen(
        input_base=target.input_base, input_fingerprint=target.input_fingerprint,
        label_window_s=ex.label_window_s, eval_days=ex.eval_days,
        negative_sampling_rate=ex.negative_sampling_rate, max_bad_fraction=ex.max_bad_fraction,
        seed=ex.seed, num_shards=ex.num_shards, valid_split=ex.valid_split, valid_days=ex.valid_days,
        valid_user_share=ex.valid_user_share, warmup_days=ex.warmup_days, min_ts=ex.min_ts,
        max_future_skew_s=ex.max_future_skew_s, feature_delay_s=ex.feature_delay_s, **declared)
    # Optional (word2vec.enabled): Word2Vec post/query-token vectors from the warm-up days before the train split.
    word2vec = Word2VecGen(**word2vec_args(cfg), examples=example_gen.outputs["examples"],
                           input_base=example_gen.exec_properties["input_base"],
                           input_fingerprint=example_gen.exec_properties["input_fingerprint"],
                           warmup_days=ex.warmup_days) if cfg.word2vec.enabled else None
    # Statistics of every split.
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    # The schema derived from feedrank/features.py (not inferred, so drift is caught).
    schema_gen = tfx.components.ImportSchemaGen(schema_file=target.schema_file)
    # Anomalies of the statistics against the schema...
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    # ...halt the run here, before Transform and the Trainer.
    gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    # Shared vocabularies with OOV buckets, padded sequences, scaled numbers.
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
        preprocessing_fn="feedrank.transform.preprocessing.preprocessing_fn",
        materialize=cfg.transform.materialize, disable_statistics=not cfg.transform.statistics,
        custom_config={"code_version": code_version, **declared})
    transform.add_upstream_node(gate)
    # The model family named in the config, exported with the Transform graph attached;
    # it reads the raw examples and applies the graph itself unless Transform materialises.
    # Fitted on train, early-stopped on valid; the negative sampling rate comes from the Examples artifact.
    trainer_config = {**cfg.trainer.to_dict(), "code_version": code_version,
                      "raw_examples": not cfg.transform.materialize, **declared}
    trainer = Trainer(
        run_fn="feedrank.train.trainer.run_fn",
        examples=(transform.outputs["transformed_examples"] if cfg.transform.materialize
                  else example_gen.outputs["examples"]),
        source_examples=example_gen.outputs["examples"] if cfg.transform.materialize else None,
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["valid"]),
        custom_config=target.wrap_trainer_config(trainer_config),
        word_vectors=word2vec.outputs["word_vectors"] if word2vec else None).with_id("Trainer")
    # The served model: the registry's champion, else the newest blessed push (no Resolver: Kubeflow cannot run one).
    baseline = LatestBlessedModel(push_dir=target.push_dir, tracking_uri=tracking_uri(cfg, start=False),
                                  registered_model=registered_model_name(cfg), **declared)
    # TFMA on the eval split: AUC floor, no regression versus the baseline, calibration band.
    # Its models load through feedrank.evaluate.models (TF-DF's ops for a gbdt candidate or baseline).
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        example_splits=["eval"],
        eval_config=make_eval_config(cfg.evaluator.auc_floor, cfg.evaluator.max_auc_regression,
                                     cfg.evaluator.slice_features, cfg.evaluator.calibration_band),
        module_path=EVALUATOR_MODULE)
    # Pusher (blessed only), then MlflowLogger (every candidate; blessed + pushed -> 'challenger').
    pusher, mlflow_logger = push_and_track(
        cfg, target, trainer, evaluator, schema_gen, example_gen, trainer_config,
        {"pipeline_name": cfg.pipeline_name, "input_base": example_gen.exec_properties["input_base"],
         "evaluator": vars(cfg.evaluator)})

    return tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline_name, pipeline_root=target.pipeline_root,
        components=[example_gen, *([word2vec] if word2vec else []), statistics_gen, schema_gen,
                    example_validator, gate, transform, trainer, baseline, evaluator, pusher, mlflow_logger],
        enable_cache=target.enable_cache,
        metadata_connection_config=target.metadata_connection_config,
        beam_pipeline_args=list(target.beam_pipeline_args))


def run(cfg: Config) -> dict:
    """Runs the pipeline locally and returns the summary (also written as JSON)."""
    from feedrank.runners.local import run_local

    return run_local(cfg, create_pipeline)


def main(argv: Optional[List[str]] = None) -> int:
    """The command line (`feedrank.cli`); ``argv`` defaults to ``sys.argv[1:]``. Its exit status."""
    from feedrank import cli

    return cli.main(argv, create_pipeline)


if __name__ == "__main__":
    raise SystemExit(main())
