"""Starts the transformer (ranking API).

    python -m serving.transformer --model-name feedrank --predictor-url http://127.0.0.1:8080 \
        --redis redis://127.0.0.1:6379/0 --http-port 8081

Apps POST ``{"user_id": ..., "candidates": [...], "context": {...}}`` to
``/v1/models/<model-name>:predict``; the transformer calls the predictor at
the same path on ``--predictor-url``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from serving.common.guard import GuardConfig
from serving.common.server import ServerOptions, serve
from serving.transformer.ranker import Ranker, RankerConfig


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    d, g = RankerConfig(), GuardConfig()
    p = argparse.ArgumentParser(prog="python -m serving.transformer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # KServe starts a transformer with --model_name, --predictor_host and --http_port.
    p.add_argument("--model-name", "--model_name", default="feedrank", help="the predictor's model name")
    p.add_argument("--predictor-url", default=d.predictor_url)
    p.add_argument("--predictor_host", default="", help="host[:port] of the predictor; overrides --predictor-url")
    p.add_argument("--redis", default=d.redis_url, help="Redis URL of the online features")
    p.add_argument("--prefix", default=d.prefix, help="feature key namespace")
    p.add_argument("--http-port", "--http_port", type=int, default=8081)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--redis-timeout-ms", type=float, default=d.redis_timeout_s * 1000,
                   help="beyond this, rank with request-only features (default %(default)s)")
    p.add_argument("--redis-backoff-s", type=float, default=d.redis_backoff_s,
                   help="after a Redis failure, skip Redis for this long")
    p.add_argument("--predictor-timeout-s", type=float, default=d.predictor_timeout_s)
    p.add_argument("--max-candidates", type=int, default=d.max_candidates)
    p.add_argument("--max-body-bytes", type=int, default=g.max_body_bytes)
    p.add_argument("--max-in-flight", type=int, default=g.max_in_flight)
    p.add_argument("--model", default=d.model, help="the exported model (or its declaration file): "
                                                    "its declared item/user columns are sent")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    predictor_url = f"http://{args.predictor_host}" if args.predictor_host else args.predictor_url
    cfg = RankerConfig(predictor_url=predictor_url, redis_url=args.redis, prefix=args.prefix,
                       redis_timeout_s=args.redis_timeout_ms / 1000.0, redis_backoff_s=args.redis_backoff_s,
                       predictor_timeout_s=args.predictor_timeout_s, max_candidates=args.max_candidates,
                       model=args.model)
    ranker = Ranker(args.model_name, cfg)
    ranker.load()
    serve([ranker], ServerOptions(http_port=args.http_port, host=args.host, server_name="transformer",
                                  guard=GuardConfig(max_body_bytes=args.max_body_bytes,
                                                    max_in_flight=args.max_in_flight)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
