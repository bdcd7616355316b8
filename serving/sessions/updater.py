"""The session-state updater: applies the event stream's page views and
add-to-carts to the shoppers' session state (`serving.sessions.state`).

    python -m serving.sessions.updater --redis redis://127.0.0.1:6379/0 [--stream fr:events]

It reads ``fr:events`` through its own consumer group (``feedrank-sessions``,
independent of the feature updater's and the log sink's) with the feature
updater's `feedrank.events.stream.RedisStreamSource`, and acknowledges a
batch only after applying it.  Only ``view`` and ``purchase`` events count;
other types are acknowledged and skipped.  Events the endpoint already applied
(it writes each one to the stream itself) carry a seen marker and are skipped
as duplicates, so every event id changes the state once, whichever path saw
it first.
"""
from __future__ import annotations

import argparse
import collections
import logging
import math
import signal
import sys
from typing import Dict, List, Optional

import redis

from feedrank.events import contract, stream
from feedrank.sessions import sessionize
from serving.sessions import state as st

log = logging.getLogger(__name__)

DEFAULT_GROUP = "feedrank-sessions"


def to_event(fields: Dict[str, str]) -> sessionize.Event:
    """A stream entry as a session event; ValueError naming what is wrong."""
    for name in ("event_id", "user_id", "item_id"):
        if not fields.get(name):
            raise ValueError(f"missing_{name}")
    try:
        ts = float(fields.get("ts", ""))
    except ValueError:
        raise ValueError("unparsable_ts") from None
    if not math.isfinite(ts) or ts < 0:
        raise ValueError("unparsable_ts")
    try:
        dwell = float(fields.get("dwell_s") or 0.0)
    except ValueError:
        dwell = 0.0
    dwell = dwell if math.isfinite(dwell) and dwell >= 0 else 0.0
    return sessionize.Event(fields["event_id"], fields["user_id"], fields["item_id"], fields["event"],
                            int(ts), dwell, fields.get("session_id", ""))


class SessionUpdater:
    """Reads batches from a source and applies them to the session state."""

    def __init__(self, source: stream.Source, client, keys: st.Keys, cfg: st.StateConfig,
                 batch: int = 500, block_ms: int = 1000):
        self.source, self.client, self.keys, self.cfg = source, client, keys, cfg
        self.batch, self.block_ms = batch, block_ms
        self.stats: collections.Counter = collections.Counter()
        self._stop = False

    def stop(self, *_args) -> None:
        self._stop = True

    def step(self) -> int:
        """Reads, applies and acknowledges one batch; returns its size."""
        entries = self.source.read(self.batch, self.block_ms)
        for _, fields in entries:
            if fields.get("event") not in (contract.VIEW, contract.PURCHASE):
                self.stats["other_types"] += 1
                continue
            try:
                event = to_event(fields)
            except ValueError as e:
                self.stats[f"rejected_{e}"] += 1
                log.warning("skipped a session event: %s", e)
                continue
            done = st.apply_sync(self.client, st.Transaction(self.keys, self.cfg, event))
            self.stats[done.outcome] += 1
        self.source.ack([entry_id for entry_id, _ in entries])
        return len(entries)

    def run(self, idle_exit_s: Optional[float] = None) -> None:
        stream.run_until_stopped(self.step, lambda: self._stop, idle_exit_s)
        log.info("session updater stopped: %s", dict(self.stats))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    d = st.StateConfig()
    p = argparse.ArgumentParser(prog="python -m serving.sessions.updater", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis", default=stream.DEFAULT_REDIS_URL)
    p.add_argument("--prefix", default="fr", help="key namespace (the endpoint's --prefix)")
    p.add_argument("--stream", default=stream.DEFAULT_STREAM)
    p.add_argument("--group", default=DEFAULT_GROUP)
    p.add_argument("--consumer", default="sessions-1")
    p.add_argument("--gap-s", type=int, default=d.gap_s, help="the endpoint's session gap")
    p.add_argument("--max-pages", type=int, default=d.max_pages)
    p.add_argument("--max-purchases", type=int, default=d.max_purchases)
    p.add_argument("--state-ttl-s", type=int, default=d.ttl_s)
    p.add_argument("--seen-ttl-s", type=int, default=d.seen_ttl_s)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--block-ms", type=int, default=1000)
    p.add_argument("--idle-exit-s", type=float, default=None)
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = st.StateConfig(args.gap_s, args.max_pages, args.max_purchases, args.state_ttl_s, args.seen_ttl_s)
    except ValueError as e:
        print(f"session updater: {e}", file=sys.stderr)
        return 2
    client = redis.Redis.from_url(args.redis, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
        source = stream.RedisStreamSource(client, args.stream, args.group, args.consumer)
    except redis.RedisError as e:
        print(f"session updater: Redis at {args.redis} failed: {e}", file=sys.stderr)
        return 2
    up = SessionUpdater(source, client, st.Keys(args.prefix), cfg, args.batch, args.block_ms)
    signal.signal(signal.SIGTERM, up.stop)
    signal.signal(signal.SIGINT, up.stop)
    log.info("session updater consuming %s (group %s)", args.stream, args.group)
    up.run(idle_exit_s=args.idle_exit_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
