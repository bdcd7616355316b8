"""Starts the transformer (ranking API).

    python -m serving.transformer --model-name feedrank --predictor-url http://127.0.0.1:8080 \
        --redis redis://127.0.0.1:6379/0 --http-port 8081

Apps POST ``{"user_id": ..., "candidates": [...], "context": {...}}`` to
``/v1/models/<model-name>:predict``; the transformer calls the predictor at
the same path on ``--predictor-url``.

A/B test: ``--challenger-url`` names a second predictor (same model name);
each user is served by the arm ``feedrank.ab.assign.arm_of(user,
--challenger-share, --ab-salt)`` gives.  Every answered or refused request is
logged to the ``fr:requests`` stream and the shown posts' impressions to
``fr:events`` (``--no-log-events`` turns the served log off).

Readiness (``/v2/health/ready``, ``/v1/models/<model-name>``) is true only while
the champion predictor says its model is ready (asked at most once a second;
``--no-predictor-health-check`` turns that off).  Model management (kserve's
``/v2/repository/...``) is off unless ``FEEDRANK_ADMIN_TOKEN`` is set, then needs
``Authorization: Bearer <token>``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from feedrank.ab.assign import share_arg
from serving.common.args import non_negative_int
from serving.common.guard import GuardConfig
from serving.common.management import UpstreamReadiness
from serving.common.server import ServerOptions, serve
from serving.transformer import served_log
from serving.transformer.ranker import Ranker, RankerConfig


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    d, g, lg = RankerConfig(), GuardConfig(), served_log.LogConfig()
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
    p.add_argument("--predictor-health-check", action=argparse.BooleanOptionalAction, default=True,
                   help="report ready only while the champion predictor reports its model ready (default on)")
    p.add_argument("--max-candidates", type=int, default=d.max_candidates)
    p.add_argument("--max-body-bytes", type=int, default=g.max_body_bytes)
    p.add_argument("--max-in-flight", type=int, default=g.max_in_flight)
    p.add_argument("--model", default=d.model, help="the exported model (or its declaration file): "
                                                    "its declared item/user columns are sent")
    ab = p.add_argument_group("A/B test and served log")
    ab.add_argument("--challenger-url", default="", help="the challenger's predictor (none: no A/B test, "
                                                         "everybody is served by the champion)")
    ab.add_argument("--challenger-share", type=share_arg, default=d.challenger_share,
                    help="share of users in the challenger arm (default %(default)s)")
    ab.add_argument("--ab-salt", default=d.ab_salt, help="salt of the user hash (a new salt reshuffles users)")
    ab.add_argument("--show", type=non_negative_int, default=d.show,
                    help="posts shown (logged) when a request has no 'show'; 0 = all (default)")
    ab.add_argument("--log-events", action=argparse.BooleanOptionalAction, default=lg.enabled,
                    help="log impressions and request records to Redis Streams (default on)")
    ab.add_argument("--events-stream", default=lg.events_stream)
    ab.add_argument("--requests-stream", default=lg.requests_stream)
    ab.add_argument("--log-timeout-ms", type=float, default=lg.timeout_s * 1000,
                    help="longest served-log write; beyond it the entries wait in memory for a retry")
    ab.add_argument("--log-backlog", type=int, default=lg.backlog,
                    help="served-log entries kept in memory while Redis is unavailable")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    predictor_url = f"http://{args.predictor_host}" if args.predictor_host else args.predictor_url
    cfg = RankerConfig(predictor_url=predictor_url, redis_url=args.redis, prefix=args.prefix,
                       redis_timeout_s=args.redis_timeout_ms / 1000.0, redis_backoff_s=args.redis_backoff_s,
                       predictor_timeout_s=args.predictor_timeout_s, max_candidates=args.max_candidates,
                       model=args.model, challenger_url=args.challenger_url,
                       challenger_share=args.challenger_share, ab_salt=args.ab_salt, show=args.show,
                       log=served_log.LogConfig(enabled=args.log_events, events_stream=args.events_stream,
                                                requests_stream=args.requests_stream,
                                                timeout_s=args.log_timeout_ms / 1000.0,
                                                backoff_s=args.redis_backoff_s, backlog=args.log_backlog))
    try:
        ranker = Ranker(args.model_name, cfg)   # reads the model's feature contract (--model)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ranker.load()
    if args.challenger_url:
        logging.getLogger(__name__).info("A/B test: %.1f%% of users on the challenger %s (salt %r)",
                                         100 * args.challenger_share, args.challenger_url, args.ab_salt)

    def configure(app) -> None:   # outermost: sees overload and size refusals too
        app.add_middleware(served_log.RequestLogMiddleware, log=ranker.served_log)

    # the champion answers every user outside the challenger's share: the transformer is
    # ready while it is (a dead challenger fails its own arm's requests, 503, counted)
    upstream = UpstreamReadiness([predictor_url], args.model_name) if args.predictor_health_check else None
    serve([ranker], ServerOptions(http_port=args.http_port, host=args.host, server_name="transformer",
                                  guard=GuardConfig(max_body_bytes=args.max_body_bytes,
                                                    max_in_flight=args.max_in_flight),
                                  configure_app=configure, ready_check=upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
