#!/usr/bin/env python
"""The feedrank pipeline: `create_pipeline()` in data-flow order, and its CLI.

  python pipeline.py run --config configs/demo.yaml

Runs LocalDagRunner with Beam's DirectRunner and a SQLite MLMD store, then
prints the run summary and writes ``<run_root>/<run-id>/summary.json``.
``compile``/``submit``/``schedule`` build and run it on Kubeflow Pipelines;
``promote``/``compare``/``mlflow`` work with the MLflow registry; ``deploy``/``rollback``
render (and apply) the KServe InferenceService from its aliases; ``ab-report`` measures
an A/B test (docs/ab.md).
"""
from __future__ import annotations

import os
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)  # google-api-core's Python EOL notices
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFT/TFMA 1.16 expect Keras 2

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from typing import List, Optional  # noqa: E402

from feedrank.config import Config, ConfigError, load  # noqa: E402
from feedrank.runners.target import PipelineTarget  # noqa: E402

log = logging.getLogger("feedrank")


def create_pipeline(cfg: Config, target: Optional[PipelineTarget] = None):
    """The TFX pipeline, components in data-flow order.

    ``target`` says where it runs (paths, data version, Beam args, caching, MLMD):
    `feedrank.runners.kubeflow_config.kubeflow_target` for Kubeflow; None (the
    default) is `feedrank.runners.local.local_target(cfg)`.  ``mode: session`` builds
    `create_session_pipeline` instead.
    """
    if cfg.mode == "session":
        return create_session_pipeline(cfg, target)
    from tfx import v1 as tfx

    from components.baseline.component import LatestBlessedModel
    from components.example_gen.component import BehaviorExampleGen
    from components.gate.component import AnomaliesGate
    from components.trainer.component import Trainer
    from components.word2vec.component import Word2VecGen
    from feedrank import features as F
    from feedrank.evaluate.eval_config import make_eval_config
    from feedrank.evaluate.models import MODULE_PATH as EVALUATOR_MODULE
    from feedrank.fingerprint import code_fingerprint
    from feedrank.runners.local import local_target
    from feedrank.tracking import registered_model_name
    from feedrank.tracking.server import tracking_uri

    target = target or local_target(cfg)
    ex = cfg.examples
    code_version = code_fingerprint()
    # The declared item/user columns (docs/features.md) travel to every component as JSON.
    declared = {"declared_features": F.to_json(cfg.declared)} if cfg.declared else {}

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
                                  registered_model=registered_model_name(cfg))
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


def create_session_pipeline(cfg: Config, target: Optional[PipelineTarget] = None):
    """The session recommender's pipeline (docs/session_pipeline.md), components in data-flow order.

    The gate, the baseline, the Pusher and the MlflowLogger are the ranking pipeline's.
    """
    from tfx import v1 as tfx

    from components.baseline.component import LatestBlessedModel
    from components.gate.component import AnomaliesGate
    from components.session_evaluator.component import SessionEvaluator
    from components.session_samples.component import SessionSampleGen
    from feedrank.fingerprint import code_fingerprint
    from feedrank.runners.local import local_target
    from feedrank.tracking import registered_model_name
    from feedrank.tracking.server import tracking_uri

    target = target or local_target(cfg)
    ss = cfg.sessions
    code_version = code_fingerprint()
    # Events -> sessions (a new session id or a gap_s pause) -> full and shortened-path samples, split by time.
    samples = SessionSampleGen(
        input_base=target.input_base, input_fingerprint=target.input_fingerprint, gap_s=ss.gap_s, k=ss.k,
        eval_days=ss.eval_days, eval_start_ts=ss.eval_start_ts, max_purchase_history=ss.max_purchase_history,
        shortened=ss.shortened, num_shards=ss.num_shards)
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
    transform_config = {"max_pages": ss.max_pages, "max_purchases": ss.max_purchases, "max_labels": ss.max_labels}
    transform = tfx.components.Transform(
        examples=samples.outputs["examples"], schema=schema_gen.outputs["schema"],
        preprocessing_fn="feedrank.sessions.transform.preprocessing_fn",
        disable_statistics=not cfg.transform.statistics, custom_config=transform_config)
    transform.add_upstream_node(gate)
    trainer_config = {**cfg.trainer.to_dict(), "top_k": ss.top_k, "gap_s": ss.gap_s, "k_pages": ss.k,
                      "code_version": code_version}
    # Optional (tuner.enabled): the genetic-algorithm Tuner; its best hyperparameters feed the Trainer.
    tuner = session_tuner(cfg, samples, transform)
    # The DRNN (or GRU4Rec) on the transformed train split, exported with the Transform layer: raw ids in, top k out.
    trainer = tfx.components.Trainer(
        run_fn="feedrank.sessions.trainer.run_fn", examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"], schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]), eval_args=tfx.proto.EvalArgs(splits=["eval"]),
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
        {"pipeline_name": cfg.pipeline_name, "mode": cfg.mode,
                     "input_base": samples.exec_properties["input_base"],
                     "evaluator": {"top10_floor": cfg.evaluator.top10_floor,
                                   "max_top10_regression": cfg.evaluator.max_top10_regression}})

    return tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline_name, pipeline_root=target.pipeline_root,
        components=[samples, statistics_gen, schema_gen, example_validator, gate, transform,
                    *([tuner] if tuner else []), trainer, baseline, evaluator, pusher, mlflow_logger],
        enable_cache=target.enable_cache,
        metadata_connection_config=target.metadata_connection_config,
        beam_pipeline_args=list(target.beam_pipeline_args))


def push_and_track(cfg: Config, target: PipelineTarget, trainer, evaluator, schema_gen, examples_gen,
                   trainer_config, run_context: dict):
    """The Pusher and the MlflowLogger, the same in both modes: blessed models only go to
    model_store/<model>/<version>/ (an identical model is never pushed twice), and every candidate
    becomes one MLflow run (blessed + pushed ones registry versions, alias 'challenger')."""
    from components.mlflow_logger.component import MlflowLogger
    from components.pusher.component import Pusher
    from feedrank.tracking import experiment_name, registered_model_name
    from feedrank.tracking.server import tracking_uri

    pusher = Pusher(model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
                    push_dir=target.push_dir)
    mlflow_logger = MlflowLogger(
        model=trainer.outputs["model"], model_run=trainer.outputs["model_run"],
        evaluation=evaluator.outputs["evaluation"], blessing=evaluator.outputs["blessing"],
        pushed_model=pusher.outputs["pushed_model"], schema=schema_gen.outputs["schema"],
        examples=examples_gen.outputs["examples"], custom_config=trainer_config,
        tracking_uri=tracking_uri(cfg, start=False), experiment_name=experiment_name(cfg),
        registered_model_name=registered_model_name(cfg), run_context=run_context)
    return pusher, mlflow_logger


def session_schema_file(target: PipelineTarget) -> str:
    """The session samples' schema beside the rankers' (`feedrank.sessions.schema`): written here
    for a local run; in the image for Kubeflow (the Dockerfile's `write_config_schemas`)."""
    from feedrank.sessions.schema import schema_path, write_schema

    root = os.path.dirname(os.path.dirname(target.schema_file))
    return write_schema(root) if os.path.isdir(root) else schema_path(root)


def session_tuner(cfg: Config, samples, transform):
    """The Tuner between Transform and the Trainer when the config's ``tuner.enabled`` (else None)."""
    import dataclasses

    settings = getattr(cfg, "tuner", None)
    if not getattr(settings, "enabled", False):
        return None
    from tfx import v1 as tfx

    tuner_config = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)
    return tfx.components.Tuner(
        tuner_fn="feedrank.tune.tuner.tuner_fn", examples=samples.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        train_args=tfx.proto.TrainArgs(splits=["train"]), eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config={"tuner": tuner_config, "drnn": dict(cfg.trainer.drnn),
                       "sessions": {"max_pages": cfg.sessions.max_pages, "max_purchases": cfg.sessions.max_purchases}})


def word2vec_args(cfg: Config) -> dict:
    """`Word2VecGen`'s parameters from the config; vector sizes 0 -> the trainer's embedding dims."""
    w2v = cfg.word2vec
    dims = cfg.trainer.embedding_dims
    return dict(window_days=w2v.window_days, vector_size=w2v.vector_size or dims.item,
                token_vector_size=w2v.token_vector_size or dims.token, window=w2v.window,
                min_count=w2v.min_count, epochs=w2v.epochs, negative=w2v.negative, sample=w2v.sample,
                seed=w2v.seed)


def run(cfg: Config) -> dict:
    """Runs the pipeline locally and returns the summary (also written as JSON)."""
    from feedrank.runners.local import run_local

    return run_local(cfg, create_pipeline)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pipeline.py", description="feedrank: behaviour-sequence ranking pipeline (TFX).")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the pipeline locally (LocalDagRunner, DirectRunner, SQLite MLMD)")
    p_run.add_argument("--config", default="configs/demo.yaml", help="YAML run config (default: %(default)s)")
    p_run.add_argument("--input", help="override the config's input_base (a directory with events/items/users)")
    p_run.add_argument("--simulate-if-missing", action="store_true",
                       help="if input_base does not exist, simulate it with the config's `simulate` section")
    p_run.add_argument("--no-cache", action="store_true", help="disable component caching for this run")
    p_run.add_argument("-v", "--verbose", action="store_true", help="show TFX and Beam logs")
    from feedrank.tracking import TrackingError
    from feedrank.tracking import cli as tracking_cli

    tracking_cli.add_commands(sub)  # promote, compare, mlflow
    from feedrank.runners import cli as kubeflow_cli
    from feedrank.runners.console import configure_logging, quiet_native_logs

    kubeflow_cli.add_commands(sub)  # compile, submit, schedule (Kubeflow Pipelines)
    from feedrank.deploy import cli as deploy_cli

    deploy_cli.add_commands(sub)  # deploy, rollback (KServe)
    from feedrank.ab import cli as ab_cli

    ab_cli.add_commands(sub)  # ab-report (the A/B test)
    args = parser.parse_args(argv)
    quiet_native_logs(getattr(args, "verbose", False))  # before anything imports TensorFlow
    if args.command in tracking_cli.COMMANDS:
        return tracking_cli.main(args)
    if args.command in deploy_cli.COMMANDS:
        return deploy_cli.main(args)
    if args.command in ab_cli.COMMANDS:
        return ab_cli.main(args)
    configure_logging(getattr(args, "verbose", False))
    if args.command in kubeflow_cli.COMMANDS:
        return kubeflow_cli.run(args, create_pipeline)

    overrides = {}
    if args.input:
        overrides["input_base"] = args.input
    if args.no_cache:
        overrides["enable_cache"] = False
    try:
        cfg = load(args.config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if os.path.isdir(cfg.input_base) and args.simulate_if_missing and cfg.simulate.mode == "feed":
        from feedrank.events.simulator.generate import settings_differ

        differ = settings_differ(cfg.input_base, **cfg.simulate.kwargs())
        if differ:
            log.warning("%s was simulated with other settings than the config's simulate section (%s); "
                        "it is used as it is: delete it to simulate it again", cfg.input_base, "; ".join(differ))
    if not os.path.isdir(cfg.input_base) and args.simulate_if_missing and cfg.simulate.mode == "ecommerce":
        from feedrank.events.simulator.ecommerce_io import simulate_ecommerce

        log.info("simulating the shop %s (%s)", cfg.input_base, cfg.simulate.ecommerce_kwargs())
        simulate_ecommerce(cfg.input_base, **cfg.simulate.ecommerce_kwargs())
    if not os.path.isdir(cfg.input_base) and args.simulate_if_missing:
        from feedrank.events.simulator import simulate

        sim = cfg.simulate
        log.info("simulating %s (users=%d items=%d days=%d seed=%d)", cfg.input_base,
                 sim.users, sim.items, sim.days, sim.seed)
        simulate(cfg.input_base, **sim.kwargs())
    if not os.path.isdir(cfg.input_base):
        print(f"error: input directory {cfg.input_base!r} does not exist; create demo data with "
              f"`python -m feedrank.events.simulator --out {cfg.input_base}` or pass --input DIR", file=sys.stderr)
        return 2
    try:
        summary = run(cfg)
    except TrackingError as e:  # the MLflow server could not be started or reached
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if summary.get("status") == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
