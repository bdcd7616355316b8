"""Command line: load (and warm up) a model, then serve it over REST.

    python -m serving.predictor --model-dir model_store/din --http-port 8080
    python -m serving.predictor --model-uri models:/feedrank-din@champion \\
        --tracking-uri http://127.0.0.1:5000

Run it with the serving environment's Python, where ``make serving-install``
installed the project (``make serve-predictor`` does both).

Model management (``POST /admin/reload``, kserve's ``/v2/repository/models/<name>/load``
and ``unload``) is off unless ``FEEDRANK_ADMIN_TOKEN`` is set in the environment;
then it needs ``Authorization: Bearer <token>``.  ``GET /admin/version`` (the served
version) is public.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from fastapi import FastAPI
from fastapi.responses import JSONResponse

log = logging.getLogger("serving.predictor")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serving.predictor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", help="model_store/<model> (newest version) or one version directory")
    src.add_argument("--model-uri", help="models:/<name>@<alias> or models:/<name>/<version> in MLflow")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", ""),
                   help="MLflow server URL for --model-uri")
    p.add_argument("--model-name", default="feedrank", help="name in the URLs (/v1/models/<name>:predict)")
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--batch-size", type=int, default=120, help="candidates per model call")
    p.add_argument("--max-candidates", type=int, default=1000, help="more per request is a 400")
    p.add_argument("--max-body-bytes", type=int, default=4 << 20, help="larger bodies get 413")
    p.add_argument("--max-in-flight", type=int, default=64, help="beyond this, 503 + Retry-After")
    p.add_argument("--retry-after-s", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2, help="model threads (batches run in parallel)")
    p.add_argument("--intra-op-threads", type=int, default=1,
                   help="TensorFlow intra-op threads (0: TensorFlow's default); 1 runs each request on one "
                        "core, requests in parallel on --threads: the least CPU per request")
    p.add_argument("--inter-op-threads", type=int, default=1, help="TensorFlow inter-op threads (0: its default)")
    p.add_argument("--poll-s", type=float, default=0.0, help="poll --model-dir for new versions (0: off)")
    p.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "feedrank-models"))
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import tensorflow as tf

    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    from serving.common.guard import GuardConfig
    from serving.common.server import ServerOptions, serve
    from serving.predictor.model import FeedrankPredictor, PredictorConfig
    from serving.predictor.store import ModelSourceError

    config = PredictorConfig(batch_size=args.batch_size, max_candidates=args.max_candidates,
                             threads=args.threads, intra_op_threads=args.intra_op_threads,
                             inter_op_threads=args.inter_op_threads, poll_s=args.poll_s)
    model = FeedrankPredictor(args.model_name, args.model_dir or args.model_uri, config,
                              tracking_uri=args.tracking_uri, cache_dir=args.cache_dir)
    try:
        model.load()
    except ModelSourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def admin_routes(app: FastAPI) -> None:
        # ManagementAuth (serving.common.server) guards /admin/* but the public GET /admin/version.
        @app.post("/admin/reload")
        async def reload() -> JSONResponse:  # noqa: F811 - route handler
            import asyncio
            result = await asyncio.get_running_loop().run_in_executor(None, model.restore)
            # a failed reload with nothing served is 503; with the old version still served, 200
            return JSONResponse(result, status_code=200 if result.get("ready") else 503)

        @app.get("/admin/version")
        async def version() -> dict:
            cur = model.current
            return {"model": model.name, "version": cur.version if cur else None,
                    "ready": await model.healthy()}

    guard = GuardConfig(max_body_bytes=args.max_body_bytes, max_in_flight=args.max_in_flight,
                        retry_after_s=args.retry_after_s)
    serve([model], ServerOptions(http_port=args.http_port, host=args.host, server_name="predictor",
                                 guard=guard, configure_app=admin_routes))
    model.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
