"""Parts of the pipelines that ``pipeline.create_pipeline`` builds outside its own body.

* `push_and_track`: the Pusher and the MlflowLogger, the same for the ranking and the
  session pipeline (`feedrank.runners.session_pipeline`);
* `word2vec_args`: the ranking pipeline's `Word2VecGen` parameters from the config.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

from feedrank.config import Config
from feedrank.runners.target import PipelineTarget


def push_and_track(cfg: Config, target: PipelineTarget, trainer: Any, evaluator: Any, schema_gen: Any,
                   examples_gen: Any, trainer_config: Dict[str, Any],
                   run_context: Dict[str, Any]) -> Tuple[Any, Any]:
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


def word2vec_args(cfg: Config) -> Dict[str, Any]:
    """`Word2VecGen`'s parameters from the config; vector sizes 0 -> the trainer's embedding dims."""
    w2v = cfg.word2vec
    dims = cfg.trainer.embedding_dims
    return dict(window_days=w2v.window_days, vector_size=w2v.vector_size or dims.item,
                token_vector_size=w2v.token_vector_size or dims.token, window=w2v.window,
                min_count=w2v.min_count, epochs=w2v.epochs, negative=w2v.negative, sample=w2v.sample,
                seed=w2v.seed)
