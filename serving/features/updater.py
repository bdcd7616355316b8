"""The feature updater: consumes the event stream and updates Redis per event.

    python -m serving.features.updater --redis redis://127.0.0.1:6379/0 --stream fr:events
    python -m serving.features.updater --bootstrap data/tiny ...   # seed first, then consume

Each batch read from the source is validated and applied by `FeatureWriter`
(idempotent per ``event_id``) and only then acknowledged, so a crash between
the two re-delivers the batch and nothing is counted twice.  The Redis
Stream is the local source; ``--source kafka`` reads a Kafka topic instead
(needs the optional kafka-python).

Feature staleness (``--delay-s S``, for studies): an event is applied only
once the stream's event-time watermark - the newest ``ts`` read so far - has
passed ``event.ts + S``; until then it is held in memory and not
acknowledged (a restarted updater re-reads it, and its watermark starts again
from the entries it reads).  The delay is in event time, not wall time: a
simulated clock may run much faster than the wall clock.  An entry whose
``ts`` is not a number is released at once (the writer then rejects it).
``S = 0`` (the default) applies every batch as it is read.

Batching (``--linger-ms``, default 50): after a read that returned fewer
events than ``--batch``, the updater waits that long and reads what arrived
meanwhile before applying.  Under ``make serve`` every ranking request adds
about ten served impressions to the stream; applying each request's handful
on its own costs a validation frame and a Redis round trip per handful, so
lingering trades at most 50 ms of feature freshness for a fraction of the CPU.

Nothing is skipped silently.  `stats` counts, by outcome and reason: events
applied, duplicates, rows the row checks rejected (``rejected_<reason>``),
events Redis refused (``failed_<error code>``, e.g. ``WRONGTYPE``: logged
with their id, counted and acknowledged, so that one bad event cannot stop
the stream; a transient refusal such as ``OOM`` is an outage instead, and the
batch is applied again once Redis recovers), consumer groups
created again after a ``NOGROUP`` (``group_recreated``) and Redis outages
(``redis_outages``).  They are logged every ``--stats-every-s`` seconds when
they changed, and at exit, and with ``--metrics-port`` served to Prometheus
as ``feedrank_updater_events_total{outcome}`` and
``feedrank_updater_recoveries_total{kind}``.
"""
from __future__ import annotations

import argparse
import collections
import logging
import math
import signal
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple

import redis

from feedrank.events import stream
from serving.features import bootstrap as bootstrap_lib
from serving.features import declared, redis_layout, writer

log = logging.getLogger(__name__)
RECOVERIES = ("group_recreated", "redis_outages")   # stats that are recoveries, not event outcomes


class Updater:
    """Reads batches from a source and applies them (``delay_s``: see the module doc)."""

    def __init__(self, source: stream.Source, feature_writer: writer.FeatureWriter,
                 batch: int = 500, block_ms: int = 1000, delay_s: float = 0.0, linger_ms: int = 0):
        if not delay_s >= 0:
            raise ValueError(f"delay_s must be >= 0 seconds, got {delay_s!r}")
        if not linger_ms >= 0:
            raise ValueError(f"linger_ms must be >= 0, got {linger_ms!r}")
        self.source, self.writer, self.batch, self.block_ms = source, feature_writer, batch, block_ms
        self.linger_s = linger_ms / 1000.0
        self.delay_s = float(delay_s)
        self.watermark: Optional[float] = None   # newest event ts read (delay mode)
        self._held: Dict[str, Tuple[float, Dict[str, str]]] = {}   # entry id -> (release ts, fields)
        self.loop_stats: collections.Counter = collections.Counter()   # Redis outages
        self._stop = False

    @property
    def stats(self) -> collections.Counter:
        """Event outcomes and recoveries so far (the writer's, the source's and the loop's)."""
        out = collections.Counter(self.writer.stats)
        out.update(getattr(self.source, "stats", {}))
        out.update(self.loop_stats)
        return out

    def stop(self, *_args) -> None:
        """Asks the loop to end after the current batch."""
        self._stop = True

    def _apply(self, rows: List[Dict[str, str]]) -> None:
        self.writer.apply(writer.events_frame(rows))

    def step(self) -> int:
        """Reads, applies and acknowledges one batch; returns its size."""
        if self.delay_s > 0:
            return self._delayed_step()
        entries = self._read()
        if not entries:
            return 0
        self._apply([fields for _, fields in entries])
        self.source.ack([entry_id for entry_id, _ in entries])
        return len(entries)

    @property
    def held(self) -> int:
        """Events read but not yet applied (delay mode)."""
        return len(self._held)

    def _read(self) -> List[Tuple[str, Dict[str, str]]]:
        """One batch: a blocking read, then (``linger_s``) what arrives within the linger."""
        entries = self.source.read(self.batch, self.block_ms)
        if entries and self.linger_s > 0 and len(entries) < self.batch:
            time.sleep(self.linger_s)
            entries = entries + self.source.read(self.batch - len(entries), 0)
        return entries

    def _delayed_step(self) -> int:
        """Reads a batch into the held events, then applies and acknowledges, in
        arrival order, those the watermark has passed; returns how many were read."""
        entries = self._read()
        for entry_id, fields in entries:
            ts = _event_ts(fields)
            if ts is not None:
                self.watermark = ts if self.watermark is None else max(self.watermark, ts)
            if entry_id not in self._held:   # a re-delivered held entry is held once
                self._held[entry_id] = (-math.inf if ts is None else ts + self.delay_s, fields)
        if self.watermark is None:
            due = [e for e, (t, _) in self._held.items() if t == -math.inf]
        else:
            due = [e for e, (t, _) in self._held.items() if t <= self.watermark]
        if due:
            self._apply([self._held[e][1] for e in due])
            self.source.ack(due)
            for e in due:
                del self._held[e]
        return len(entries)

    def run(self, idle_exit_s: Optional[float] = None, stats_every_s: float = 60.0) -> None:
        """Loops until stopped (or idle for ``idle_exit_s`` seconds), logging `stats`
        every ``stats_every_s`` seconds when they changed."""
        last = {"at": time.monotonic(), "stats": dict(self.stats)}

        def step() -> int:
            n = self.step()
            if n:
                log.debug("applied a batch of %d", n)
            if time.monotonic() - last["at"] >= stats_every_s:
                now = dict(self.stats)
                if now != last["stats"]:
                    log.info("updater: %s", _fmt(now))
                last.update(at=time.monotonic(), stats=now)
            return n

        stream.run_until_stopped(step, lambda: self._stop, idle_exit_s, stats=self.loop_stats)
        log.info("updater stopped: %s", _fmt(dict(self.stats)))


def _fmt(stats: Dict[str, int]) -> str:
    """``name=count`` pairs in name order."""
    return ", ".join(f"{k}={v}" for k, v in sorted(stats.items())) or "nothing yet"


class StatsCollector:
    """The updater's `stats` as Prometheus counters (for ``prometheus_client`` registries)."""

    def __init__(self, up: Updater):
        self.up = up

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily

        events = CounterMetricFamily("feedrank_updater_events", "Stream events by outcome (applied, "
                                     "duplicates, rejected_<reason>, failed_<redis error>).", labels=["outcome"])
        recoveries = CounterMetricFamily("feedrank_updater_recoveries", "Consumer groups created again "
                                         "(group_recreated) and Redis outages survived (redis_outages).",
                                         labels=["kind"])
        for name, n in sorted(self.up.stats.items()):
            (recoveries if name in RECOVERIES else events).add_metric([name], n)
        yield events
        yield recoveries


def serve_metrics(up: Updater, port: int) -> None:
    """Serves `StatsCollector` on ``http://0.0.0.0:<port>/metrics`` (a daemon thread)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(StatsCollector(up))
    start_http_server(port, registry=registry)
    log.info("metrics on :%d/metrics", port)


def _event_ts(fields: Dict[str, str]) -> Optional[float]:
    """An entry's event time in unix seconds (None when missing or not a number)."""
    try:
        ts = float(fields.get("ts", ""))
    except (TypeError, ValueError):
        return None
    return ts if math.isfinite(ts) else None


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serving.features.updater", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis", default=stream.DEFAULT_REDIS_URL, help="Redis URL (features)")
    p.add_argument("--prefix", default=redis_layout.DEFAULT_PREFIX, help="feature key namespace")
    p.add_argument("--source", choices=("redis", "kafka"), default="redis", help="event source")
    p.add_argument("--stream", default=stream.DEFAULT_STREAM, help="Redis Stream name")
    p.add_argument("--group", default=stream.DEFAULT_GROUP, help="consumer group")
    p.add_argument("--consumer", default="updater-1", help="consumer name within the group")
    p.add_argument("--kafka-bootstrap", default="", help="Kafka bootstrap servers (host:port,...)")
    p.add_argument("--kafka-topic", default="feedrank-events", help="Kafka topic")
    p.add_argument("--batch", type=int, default=500, help="events per read")
    p.add_argument("--block-ms", type=int, default=1000, help="longest wait for new events")
    p.add_argument("--linger-ms", type=int, default=50,
                   help="after a short read, wait this long for more events before applying (default "
                        "%(default)s; 0: apply each read at once)")
    p.add_argument("--seen-ttl-s", type=int, default=writer.DEFAULT_SEEN_TTL_S,
                   help="how long an event id stays deduplicated")
    p.add_argument("--bootstrap", metavar="LOG_DIR", default="",
                   help="seed the namespace from this event log first (skipped if already seeded)")
    p.add_argument("--model", default="", help="with --bootstrap: the exported model (or its declaration "
                                               "file) whose declared item/user columns are stored too")
    p.add_argument("--delay-s", type=float, default=0.0,
                   help="feature staleness in event time: apply an event only once the newest event ts "
                        "read has passed its ts + this many seconds (0: apply at once)")
    p.add_argument("--idle-exit-s", type=float, default=None,
                   help="exit after this many idle seconds (default: run until stopped)")
    p.add_argument("--stats-every-s", type=float, default=60.0,
                   help="log the event outcomes this often when they changed (default %(default)s)")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="serve the event outcomes to Prometheus on this port (default: off)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if not args.delay_s >= 0:
        print(f"updater: --delay-s must be >= 0 seconds, got {args.delay_s}", file=sys.stderr)
        return 2
    if args.linger_ms < 0:
        print(f"updater: --linger-ms must be >= 0, got {args.linger_ms}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    keys = redis_layout.Keys(args.prefix)
    client = writer.redis_client(args.redis)
    try:
        client.ping()
        if args.bootstrap:
            try:
                bootstrap_lib.bootstrap(client, args.bootstrap, keys,
                                        spec=declared.spec_from_model(args.model))
            except bootstrap_lib.AlreadySeeded as e:
                log.info("bootstrap skipped: %s", e)
        if args.source == "kafka":
            if not args.kafka_bootstrap:
                print("updater: --source kafka needs --kafka-bootstrap host:port", file=sys.stderr)
                return 2
            source: stream.Source = stream.KafkaSource(args.kafka_bootstrap, args.kafka_topic, args.group)
        else:
            source = stream.RedisStreamSource(client, args.stream, args.group, args.consumer)
    except redis.RedisError as e:
        print(f"updater: Redis at {args.redis} failed: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError) as e:
        print(f"updater: {e}", file=sys.stderr)
        return 2
    up = Updater(source, writer.FeatureWriter(client, keys, args.seen_ttl_s), args.batch, args.block_ms,
                 delay_s=args.delay_s, linger_ms=args.linger_ms)
    signal.signal(signal.SIGTERM, up.stop)
    signal.signal(signal.SIGINT, up.stop)
    if args.metrics_port:
        try:
            serve_metrics(up, args.metrics_port)
        except OSError as e:
            print(f"updater: cannot serve metrics on port {args.metrics_port}: {e}", file=sys.stderr)
            return 2
    log.info("updater consuming %s (%s) into namespace '%s'%s", args.stream if args.source == "redis"
             else args.kafka_topic, args.source, args.prefix,
             f", delayed {args.delay_s:g} s in event time" if args.delay_s else "")
    up.run(idle_exit_s=args.idle_exit_s, stats_every_s=args.stats_every_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
