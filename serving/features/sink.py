"""The log sink: the served log's Redis Streams as Parquet part files.

    python -m serving.features.sink --redis redis://127.0.0.1:6379/0 \
        --events-dir runs/ab/events --requests-dir runs/ab/requests [--idle-exit-s 5]

Reads ``fr:events`` (impressions the transformer served, clicks and
conversions the app sent back) and ``fr:requests`` (one record per ranking
request) through the consumer group ``feedrank-log-sink`` and appends
``<dir>/part-<first-entry-id>-<last-entry-id>.parquet`` files: events in
the event contract's columns, order and types (`EVENT_COLUMNS`), requests in
`REQUEST_COLUMNS`.  A value that does not parse as its column's number is
written as null (the log keeps the row; readers quarantine it).

Exactly once, across crashes and restarts (one sink per directory):

* a part is written to a hidden ``.part-*.tmp`` file, fsynced and renamed
  into place; its entries are acknowledged only after the rename;
* entries arrive in entry-id order, so every entry up to the newest
  ``<last-entry-id>`` among the part names is in a part; on start (and after
  a crash between the rename and the acknowledgement) entries at or below
  that id are acknowledged without being written again;
* on start the sink takes over the group's pending entries (also those of
  another consumer name) and re-reads them before new ones, so an entry read
  but not yet written is written after the restart; leftover ``.tmp`` files
  are removed;
* when the group vanishes (Redis restarted without its data, the stream
  deleted: ``NOGROUP``), the sink creates it again from the stream's start,
  logs one line and counts it (``group_recreated``); entries already in a part
  are skipped by the watermark above.  Redis outages are waited out and
  counted (``redis_outages``); both appear in the sink's exit line.

Runs in the pipeline environment (pyarrow); the part files are a log
directory's ``events/`` table (`feedrank.events.io`).
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
import re
import signal
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.parquet as pq
import redis

from feedrank.events import contract, stream

log = logging.getLogger(__name__)

GROUP = "feedrank-log-sink"
REQUESTS_STREAM = "fr:requests"
EVENT_COLUMNS: Dict[str, str] = {name: logical for name, (logical, _) in contract.EVENT_COLUMNS.items()}
REQUEST_COLUMNS: Dict[str, str] = {
    "request_id": "string", "user_id": "string", "arm": "string", "model_version": "string",
    "ts": "int64", "latency_ms": "float64", "status": "int64", "n_candidates": "int64", "n_shown": "int64"}
_ARROW = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}
PART = re.compile(r"^part-(\d+)-(\d+)-(\d+)-(\d+)\.parquet$")
EntryId = Tuple[int, int]


def parse_id(entry_id: str) -> EntryId:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def newest_written(out_dir: str) -> Optional[EntryId]:
    """The largest last-entry id among the part names in ``out_dir`` (None if none)."""
    ids = [(int(m[3]), int(m[4])) for m in map(PART.match, os.listdir(out_dir)) if m]
    return max(ids) if ids else None


def _number(value: Optional[str], kind: str):
    if value is None or value == "":
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    if kind == "float64":
        return x
    return int(x) if x == x and abs(x) < 2 ** 63 else None


def to_table(rows: Sequence[Dict[str, str]], columns: Dict[str, str]) -> pa.Table:
    """Stream fields -> a table of ``columns`` (strings ``""`` when absent, numbers null)."""
    arrays = []
    for name, kind in columns.items():
        if kind == "string":
            values = [r.get(name) or "" for r in rows]
        else:
            values = [_number(r.get(name), kind) for r in rows]
        arrays.append(pa.array(values, _ARROW[kind]))
    return pa.Table.from_arrays(arrays, schema=pa.schema([(n, _ARROW[k]) for n, k in columns.items()]))


def write_part(out_dir: str, first: str, last: str, table: pa.Table) -> str:
    """Writes ``part-<first>-<last>.parquet`` atomically (tmp file, fsync, rename, dir fsync)."""
    name = f"part-{first}-{last}.parquet"
    tmp = os.path.join(out_dir, f".{name}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    path = os.path.join(out_dir, name)
    os.replace(tmp, path)
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


class StreamSink:
    """One stream into one directory of parts."""

    def __init__(self, client: redis.Redis, stream_name: str, out_dir: str, columns: Dict[str, str],
                 group: str = GROUP, consumer: str = "sink-1"):
        self.client, self.stream, self.out_dir, self.columns = client, stream_name, out_dir, columns
        self.group, self.consumer = group, consumer
        os.makedirs(out_dir, exist_ok=True)
        for name in os.listdir(out_dir):
            if name.startswith(".part-") and name.endswith(".tmp"):
                os.remove(os.path.join(out_dir, name))    # a part that was never renamed: rewritten
        self.watermark = newest_written(out_dir)
        self.buffer: List[Tuple[str, Dict[str, str]]] = []
        self.first_at = 0.0
        self.written = self.skipped = 0
        self.start()

    def start(self) -> bool:
        """Creates the group if needed (True if it did), takes over its pending entries and
        re-reads them first."""
        created = stream.ensure_group(self.client, self.stream, self.group, "0")
        for c in self.client.xinfo_consumers(self.stream, self.group):
            name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
            if name != self.consumer and int(c.get("pending", 0)):
                cursor = "0-0"
                while True:   # XAUTOCLAIM: ownership moves to this consumer, read again below
                    got = self.client.xautoclaim(self.stream, self.group, self.consumer, 0, cursor, count=1000)
                    cursor = got[0].decode() if isinstance(got[0], bytes) else got[0]
                    if cursor in ("0-0", "0"):
                        break
                log.info("took over the pending entries of consumer %s on %s", name, self.stream)
        self.pending_cursor: Optional[str] = "0"
        return created

    def read_pending(self, count: int) -> None:
        """Re-reads entries delivered before (not acknowledged); ends the phase when none are left."""
        got = self.client.xreadgroup(self.group, self.consumer, {self.stream: self.pending_cursor}, count=count)
        entries = got[0][1] if got else []
        if not entries:
            self.pending_cursor = None
            return
        self.pending_cursor = entries[-1][0]
        self.add(entries)

    def add(self, entries: List[Tuple[str, Optional[Dict[str, str]]]]) -> None:
        """Buffers new entries; acknowledges at once those already in a part (or deleted)."""
        done = []
        for entry_id, fields in entries:
            if not fields:
                log.warning("%s: entry %s was deleted from the stream before it was logged", self.stream, entry_id)
                done.append(entry_id)
            elif self.watermark is not None and parse_id(entry_id) <= self.watermark:
                done.append(entry_id)
            else:
                if not self.buffer:
                    self.first_at = time.monotonic()
                self.buffer.append((entry_id, fields))
        if done:
            self.skipped += len(done)
            self.client.xack(self.stream, self.group, *done)

    def due(self, batch: int, flush_s: float) -> bool:
        return bool(self.buffer) and (len(self.buffer) >= batch or time.monotonic() - self.first_at >= flush_s)

    def flush(self) -> int:
        """Writes the buffer as one part, then acknowledges it."""
        if not self.buffer:
            return 0
        ids = [entry_id for entry_id, _ in self.buffer]
        path = write_part(self.out_dir, ids[0], ids[-1], to_table([f for _, f in self.buffer], self.columns))
        self.watermark = parse_id(ids[-1])
        for i in range(0, len(ids), 10_000):
            self.client.xack(self.stream, self.group, *ids[i:i + 10_000])
        self.buffer = []
        self.written += len(ids)
        log.info("%s: %d entries -> %s", self.stream, len(ids), os.path.basename(path))
        return len(ids)


class Sink:
    """Several stream sinks sharing one reading loop."""

    def __init__(self, client: redis.Redis, sinks: List[StreamSink], batch: int = 5000,
                 flush_s: float = 1.0, block_ms: int = 500):
        self.client, self.sinks, self.batch, self.flush_s, self.block_ms = client, sinks, batch, flush_s, block_ms
        self.by_stream = {s.stream: s for s in sinks}
        self.stats: collections.Counter = collections.Counter()   # group_recreated, redis_outages
        self._stop = False

    def stop(self, *_args) -> None:
        self._stop = True

    def step(self) -> int:
        """One read (pending entries first), then the parts that are due; returns entries read."""
        n = 0
        pending = [s for s in self.sinks if s.pending_cursor is not None]
        if pending:
            for s in pending:
                before = len(s.buffer) + s.skipped
                s.read_pending(self.batch)
                n += len(s.buffer) + s.skipped - before
        else:
            waits = [self.flush_s - (time.monotonic() - s.first_at) for s in self.sinks if s.buffer]
            block = self.block_ms if not waits else max(1, min(self.block_ms, int(min(waits) * 1000)))
            got = self.client.xreadgroup(self.sinks[0].group, self.sinks[0].consumer,
                                         {s.stream: ">" for s in self.sinks}, count=self.batch, block=block)
            for name, entries in got or []:
                name = name.decode() if isinstance(name, bytes) else name
                self.by_stream[name].add(entries)
                n += len(entries)
        for s in self.sinks:
            if s.due(self.batch, self.flush_s):
                s.flush()
        return n

    def run(self, idle_exit_s: Optional[float] = None) -> None:
        """Loops until stopped (or idle for ``idle_exit_s``), then writes what it holds."""
        def recover(e: Exception) -> bool:
            if not stream.is_nogroup(e):
                return False
            created = sum(s.start() for s in self.sinks)
            if created:
                self.stats["group_recreated"] += created
                log.warning("consumer group %s gone (%s): created it again from the stream's start on %d "
                            "stream(s) (%d time(s) so far)", self.sinks[0].group, str(e).splitlines()[0],
                            created, self.stats["group_recreated"])
            return True

        stream.run_until_stopped(self.step, lambda: self._stop, idle_exit_s, recover=recover,
                                 active=lambda: any(s.buffer for s in self.sinks), stats=self.stats)
        for s in self.sinks:
            s.flush()
        log.info("sink stopped: %s, %s", {s.stream: {"written": s.written, "skipped": s.skipped}
                                          for s in self.sinks}, dict(self.stats))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serving.features.sink", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis", default=stream.DEFAULT_REDIS_URL, help="Redis URL")
    p.add_argument("--events-dir", default="", help="parts of the events stream (none: not read)")
    p.add_argument("--requests-dir", default="", help="parts of the requests stream (none: not read)")
    p.add_argument("--events-stream", default=stream.DEFAULT_STREAM)
    p.add_argument("--requests-stream", default=REQUESTS_STREAM)
    p.add_argument("--group", default=GROUP, help="consumer group")
    p.add_argument("--consumer", default="sink-1", help="consumer name (one sink per directory)")
    p.add_argument("--batch", type=int, default=5000, help="most entries per part")
    p.add_argument("--flush-s", type=float, default=1.0, help="a part at least this often while entries arrive")
    p.add_argument("--block-ms", type=int, default=500, help="longest wait for new entries")
    p.add_argument("--idle-exit-s", type=float, default=None,
                   help="exit after this many seconds without entries (default: run until stopped)")
    args = p.parse_args(argv)
    if not (args.events_dir or args.requests_dir):
        p.error("give --events-dir and/or --requests-dir")
    if args.batch < 1 or args.flush_s <= 0 or args.block_ms < 1:
        p.error("--batch and --block-ms must be >= 1 and --flush-s > 0")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    client = redis.Redis.from_url(args.redis, decode_responses=True, socket_timeout=30, socket_connect_timeout=5)
    targets = [(args.events_stream, args.events_dir, EVENT_COLUMNS),
               (args.requests_stream, args.requests_dir, REQUEST_COLUMNS)]
    try:
        sinks = [StreamSink(client, name, out_dir, cols, args.group, args.consumer)
                 for name, out_dir, cols in targets if out_dir]
    except redis.RedisError as e:
        print(f"sink: Redis at {args.redis} failed: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"sink: cannot use the output directory: {e}", file=sys.stderr)
        return 2
    sink = Sink(client, sinks, args.batch, args.flush_s, args.block_ms)
    signal.signal(signal.SIGTERM, sink.stop)
    signal.signal(signal.SIGINT, sink.stop)
    log.info("log sink: %s", ", ".join(f"{s.stream} -> {s.out_dir}" for s in sinks))
    sink.run(idle_exit_s=args.idle_exit_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
