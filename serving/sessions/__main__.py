"""Starts the session endpoint (the shop's real-time recommendations).

    python -m serving.sessions --model-dir model_store/session --redis redis://127.0.0.1:6379/0 \
        --http-port 8083

Apps POST ``{"user_id": ..., "event": {"page_id": ..., "ts": ..., "dwell_s": ...}}`` to
``/v1/models/<model-name>:predict`` after every page view (or ``{"type": "purchase",
"item_id": ...}`` for an add-to-cart) and get the refreshed top-k items.  One process
reads and writes Redis and calls the SavedModel in-process.  Run
``python -m serving.sessions.updater`` beside it so that page views and add-to-carts
arriving on the event stream from other channels update the same state.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import List, Optional

from serving.common.args import non_negative_int, positive
from serving.common.guard import GuardConfig
from serving.common.server import ServerOptions, serve
from serving.predictor.store import ModelSourceError
from serving.sessions.model import SessionConfig, SessionRecommender


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    d, g = SessionConfig(), GuardConfig()
    p = argparse.ArgumentParser(prog="python -m serving.sessions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True,
                   help="a pushed session model: its directory (newest numeric version) or one version")
    p.add_argument("--model-name", "--model_name", default="session", help="the route's model name")
    p.add_argument("--redis", default=d.redis_url, help="Redis URL of the session state")
    p.add_argument("--prefix", default=d.prefix, help="key namespace")
    p.add_argument("--http-port", "--http_port", type=int, default=8083)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--gap-s", type=positive(int), default=None,
                   help="a pause longer than this ends a session (default: the model's session_model.json, else 1800)")
    p.add_argument("--max-pages", type=positive(int), default=None,
                   help="page views kept per session (default: the model's session_model.json, else 50)")
    p.add_argument("--max-purchases", type=positive(int), default=None,
                   help="purchase-history items kept per user (default: the model's session_model.json, else 50)")
    p.add_argument("--state-ttl-s", type=positive(int), default=d.ttl_s,
                   help="a user's state expires after this long without events")
    p.add_argument("--seen-ttl-s", type=positive(int), default=d.seen_ttl_s,
                   help="how long an event id stays deduplicated")
    p.add_argument("--redis-timeout-ms", type=positive(float), default=d.redis_timeout_s * 1000,
                   help="beyond this, answer from the request alone (default %(default)s)")
    p.add_argument("--redis-backoff-s", type=float, default=d.redis_backoff_s,
                   help="after a Redis failure, skip Redis for this long")
    p.add_argument("--log-events", action=argparse.BooleanOptionalAction, default=d.log_events,
                   help="append each applied event to the event stream (default on)")
    p.add_argument("--events-stream", default=d.events_stream)
    p.add_argument("--threads", type=non_negative_int, default=d.threads,
                   help="threads calling the model (default 0: the model is called on the event loop, which "
                        "avoids a thread hop and a wait for the GIL per request)")
    p.add_argument("--tf-threads", type=int, default=1,
                   help="TensorFlow's intra- and inter-op threads (default 1: one session's call is small and "
                        "spreading it costs more CPU than it saves; 0 = TensorFlow's default)")
    p.add_argument("--request-log", action=argparse.BooleanOptionalAction, default=False,
                   help="log every request (kserve's timing and uvicorn's access lines; default off: "
                        "the Prometheus metrics count them)")
    p.add_argument("--uvloop", action=argparse.BooleanOptionalAction, default=True,
                   help="run the server on uvloop when it is installed (default on)")
    p.add_argument("--max-body-bytes", type=positive(int), default=64 * 1024)
    p.add_argument("--max-in-flight", type=positive(int), default=g.max_in_flight)
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = SessionConfig(model_dir=args.model_dir, redis_url=args.redis, prefix=args.prefix,
                        redis_timeout_s=args.redis_timeout_ms / 1000.0, redis_backoff_s=args.redis_backoff_s,
                        log_events=args.log_events, events_stream=args.events_stream, gap_s=args.gap_s,
                        max_pages=args.max_pages, max_purchases=args.max_purchases, ttl_s=args.state_ttl_s,
                        seen_ttl_s=args.seen_ttl_s, threads=args.threads)
    if args.tf_threads > 0:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.tf_threads)
    if args.uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            logging.getLogger(__name__).info("uvloop is not installed: the standard asyncio loop serves")
    logging.getLogger(__name__).info(
        "session state in Redis at %s (namespace '%s'; --redis to change it)", args.redis, args.prefix)
    model = SessionRecommender(args.model_name, cfg)
    try:
        model.load()
    except ModelSourceError as e:
        print(f"sessions: {e}", file=sys.stderr)
        return 2
    def configure(_app) -> None:   # after kserve configured its logging
        if not args.request_log:
            for name in ("kserve.trace", "uvicorn.access"):
                logging.getLogger(name).setLevel(logging.WARNING)

    serve([model], ServerOptions(http_port=args.http_port, host=args.host, server_name="sessions",
                                 guard=GuardConfig(max_body_bytes=args.max_body_bytes,
                                                   max_in_flight=args.max_in_flight),
                                 configure_app=configure))
    return 0


if __name__ == "__main__":
    sys.exit(main())
