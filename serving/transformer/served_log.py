"""The served log: what the ranking endpoint showed, written to Redis Streams.

Per ranking request the transformer writes, in one pipelined round trip:

* one ``impression`` event per SHOWN post to ``fr:events`` (the stream the
  feature updater and the log sink consume): ``event_id`` =
  ``f"{request_id}:{position}"``, user_id, item_id, ts (the request's ts),
  request_id, position (0-based among the shown posts), arm, model_version,
  score (`stream.entry_fields` of the event contract);
* one record to ``fr:requests`` for every request answered or refused
  (request_id, user_id, arm, model_version, ts, latency_ms, status,
  n_candidates, n_shown).  Refused requests have ``""`` where a field could
  not be read from the body.

`RequestLogMiddleware` wraps the ranking route: the model fills this
request's record (`current`), and when the response is ready the middleware
writes the record and the impressions, then lets the response out.  So the
HTTP status (also of errors raised before the model runs, such as overload
or a malformed body) and the latency are known, and a client that got its
ranking can rely on the impressions being in the stream before its clicks.

Only the posts the response says were shown are logged: the impressions
are cut to the record's ``n_shown`` (the response's ``shown``), whatever the
ranking held.

Redis down, slow or overloaded: a request waits for its own write at most
``timeout_s``, then is answered anyway; its entries go to an in-memory
backlog (bounded by ``backlog`` entries) that a background task writes in
chunks once Redis answers again (after ``backoff_s``; the request path only
ever writes its own entries).  Beyond the bound new entries are dropped.
Accounting is exact, per entry: every entry handed to the log is counted
``offered``, then once ``written`` or once ``dropped`` (by reason:
``backlog_full``, ``shutdown`` for what is still in the backlog when the
server stops), or is in the backlog, so at any time
``offered = written + dropped + backlog`` (`ServedLog.stats`, the Prometheus
counters, and a log line at most every `REPORT_EVERY_S` seconds while entries
are dropped or waiting, and at shutdown).  A write that timed out may still
have reached Redis, and is written again: such a duplicate has the same
``event_id`` / ``request_id``, readers drop it by that id, and it is counted
once.  Debug requests (``debug`` in the body) log nothing.
"""
from __future__ import annotations

import asyncio
import collections
import contextvars
import dataclasses
import logging
import time
import uuid
from typing import Any, Callable, Deque, Dict, List, MutableMapping, Optional, Tuple

import redis
import redis.asyncio as aredis
from prometheus_client import Counter, Gauge, Histogram

from feedrank.events import stream
from serving.common import metrics

log = logging.getLogger(__name__)

REQUESTS_STREAM = "fr:requests"
REQUEST_FIELDS = ("request_id", "user_id", "arm", "model_version", "ts", "latency_ms", "status",
                  "n_candidates", "n_shown")
Entry = Tuple[str, Dict[str, str]]   # (stream, fields)
FLUSH_EVERY_S = 0.5      # the backlog's background flush
FLUSH_CHUNK = 1000       # backlog entries per pipeline
REPORT_EVERY_S = 10.0    # the accounting line, at most this often
DROP_REASONS = ("backlog_full", "shutdown")

ENTRIES = Counter("feedrank_served_log_entries_total", "Served-log stream entries by outcome (offered: "
                  "handed to the log; written; dropped, by reason in feedrank_served_log_dropped_total; "
                  "backlog: kept for a retry). offered = written + dropped + feedrank_served_log_backlog.",
                  ["server", "outcome"])
DROPPED = Counter("feedrank_served_log_dropped_total", "Served-log entries dropped, by reason "
                  "(backlog_full: the backlog had no room; shutdown: still in the backlog at shutdown).",
                  ["server", "reason"])
FAILURES = Counter("feedrank_served_log_failures_total", "Failed served-log writes to Redis.",
                   ["server", "reason"])
BACKLOG = Gauge("feedrank_served_log_backlog", "Served-log entries waiting for Redis.", ["server"])
WRITE_LATENCY = Histogram("feedrank_served_log_write_seconds", "Served-log write (one pipeline) latency.",
                          ["server"], buckets=metrics.LATENCY_BUCKETS)

_CURRENT: contextvars.ContextVar[Optional[Dict[str, Any]]] = contextvars.ContextVar(
    "feedrank_served_record", default=None)


def current() -> Dict[str, Any]:
    """This request's log record, filled by the model (a throwaway dict outside the middleware)."""
    record = _CURRENT.get()
    return record if record is not None else {}


@dataclasses.dataclass
class LogConfig:
    """Where and how the served log is written."""

    enabled: bool = True
    events_stream: str = stream.DEFAULT_STREAM
    requests_stream: str = REQUESTS_STREAM
    timeout_s: float = 0.1      # one write; beyond it the entries go to the backlog
    backoff_s: float = 1.0      # after a failure, straight to the backlog for this long
    backlog: int = 100_000      # entries kept for a retry at most


def impressions(req: Any, arm: str, version: str, shown: List[Dict[str, Any]]) -> List[Dict[str, str]]:
    """Stream fields of the impressions of the shown posts (ranking order)."""
    return [stream.entry_fields({
        "event_id": f"{req.request_id}:{pos}", "user_id": req.user_id, "item_id": r["post_id"],
        "event": "impression", "ts": req.ts, "request_id": req.request_id, "position": pos,
        "arm": arm, "model_version": version, "score": repr(float(r["score"]))})
        for pos, r in enumerate(shown)]


class ServedLog:
    """Writes entries to Redis in one pipeline each; keeps a bounded backlog on failure."""

    def __init__(self, redis_url: str, config: LogConfig):
        self.redis_url, self.config = redis_url, config
        self._client: Optional[aredis.Redis] = None
        self._backlog: Deque[Entry] = collections.deque()
        self._skip_until = 0.0
        self._flusher: Optional[asyncio.Task] = None
        self.counts: collections.Counter = collections.Counter()   # offered, written, dropped_<reason>
        self._reported = (0.0, 0, 0)   # (when, dropped, backlog) of the last accounting line
        self._closed = False

    def stats(self) -> Dict[str, int]:
        """Entries ``offered``, ``written``, ``dropped`` (and ``dropped_<reason>``) and in the ``backlog``;
        ``offered == written + dropped + backlog`` always."""
        out = {"offered": self.counts["offered"], "written": self.counts["written"],
               "dropped": sum(self.counts[f"dropped_{r}"] for r in DROP_REASONS), "backlog": len(self._backlog)}
        out.update({f"dropped_{r}": self.counts[f"dropped_{r}"] for r in DROP_REASONS})
        return out

    def _redis(self) -> aredis.Redis:
        if self._client is None:   # created in the serving event loop
            t = max(self.config.timeout_s, 0.001)
            self._client = aredis.Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=t,
                                                 socket_connect_timeout=t, max_connections=64)
        return self._client

    def record_entry(self, record: Dict[str, Any], status: int, latency_ms: float) -> Entry:
        """The ``fr:requests`` entry of a request."""
        fields = {
            "request_id": record.get("request_id") or uuid.uuid4().hex,
            "user_id": record.get("user_id", ""), "arm": record.get("arm", ""),
            "model_version": record.get("model_version", ""),
            "ts": str(int(record.get("ts") or time.time())), "latency_ms": f"{latency_ms:.3f}",
            "status": str(status), "n_candidates": str(record.get("n_candidates", 0)),
            "n_shown": str(record.get("n_shown", 0) if status == 200 else 0)}
        return self.config.requests_stream, fields

    def entries(self, record: Dict[str, Any], status: int, latency_ms: float) -> List[Entry]:
        """A request's entries: its impressions (answered requests) and its record."""
        if not record.get("log", True):
            return []
        out: List[Entry] = []
        if status == 200:
            impressions = list(record.get("impressions", ()))
            shown = impressions[:max(0, int(record.get("n_shown", len(impressions))))]
            out = [(self.config.events_stream, f) for f in shown]
        out.append(self.record_entry(record, status, latency_ms))
        return out

    async def write(self, entries: List[Entry]) -> bool:
        """Writes ``entries`` in one pipeline; False if they went to the backlog."""
        if not self.config.enabled or not entries:
            return True
        self.counts["offered"] += len(entries)
        ENTRIES.labels(metrics.server_name(), "offered").inc(len(entries))
        if self._closed:
            self._drop(entries, "shutdown")
            return False
        self._ensure_flusher()
        if time.monotonic() < self._skip_until:
            self._keep(entries)
            return False
        try:
            ok = await self._try(entries)
        except asyncio.CancelledError:   # the request was cancelled mid-write: kept, counted once
            self._keep(entries)
            raise
        if not ok:
            self._keep(entries)
        return ok

    async def _try(self, batch: List[Entry]) -> bool:
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(self._xadd(batch), self.config.timeout_s)
        except (asyncio.TimeoutError, redis.RedisError, OSError) as e:
            FAILURES.labels(metrics.server_name(), type(e).__name__).inc()
            log.warning("served log not written (%s: %s): %d entries kept for a retry",
                        type(e).__name__, e, len(batch))
            self._skip_until = time.monotonic() + self.config.backoff_s
            return False
        WRITE_LATENCY.labels(metrics.server_name()).observe(time.perf_counter() - t0)
        ENTRIES.labels(metrics.server_name(), "written").inc(len(batch))
        self.counts["written"] += len(batch)
        return True

    async def _xadd(self, batch: List[Entry]) -> None:
        pipe = self._redis().pipeline(transaction=False)
        for name, fields in batch:
            pipe.xadd(name, fields)
        await pipe.execute()

    def _keep(self, batch: List[Entry]) -> None:
        """Keeps what the backlog has room for and drops the rest (``backlog_full``)."""
        room = max(0, self.config.backlog - len(self._backlog))
        self._backlog.extend(batch[:room])
        ENTRIES.labels(metrics.server_name(), "backlog").inc(min(room, len(batch)))
        BACKLOG.labels(metrics.server_name()).set(len(self._backlog))
        if len(batch) > room:
            first = not any(self.counts[f"dropped_{r}"] for r in DROP_REASONS)
            self._drop(batch[room:], "backlog_full")
            if first:   # later drops are summed up by `report`
                log.error("served-log backlog full (%d entries): dropping new entries", self.config.backlog)

    def _drop(self, batch: List[Entry], reason: str) -> None:
        self.counts[f"dropped_{reason}"] += len(batch)
        ENTRIES.labels(metrics.server_name(), "dropped").inc(len(batch))
        DROPPED.labels(metrics.server_name(), reason).inc(len(batch))

    def report(self, force: bool = False) -> None:
        """Logs the accounting (`stats`) when entries were dropped or are waiting since the last
        line, at most every `REPORT_EVERY_S` seconds (``force``: now, whatever changed)."""
        st, now = self.stats(), time.monotonic()
        at, dropped, backlog = self._reported
        changed = st["dropped"] != dropped or st["backlog"] or backlog
        if force or (changed and now - at >= REPORT_EVERY_S):
            level = logging.WARNING if st["dropped"] != dropped else logging.INFO
            log.log(level, "served log: %s", ", ".join(f"{k} {v}" for k, v in st.items()))
            self._reported = (now, st["dropped"], st["backlog"])

    async def close(self) -> None:
        """Writes what the backlog holds if Redis answers, counts the rest as dropped (``shutdown``)
        and logs the final accounting; later entries are dropped (``shutdown``)."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:   # a chunk it holds goes back to the backlog first
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        self._skip_until = 0.0
        await self.flush_backlog()
        left = list(self._backlog)
        self._backlog.clear()
        BACKLOG.labels(metrics.server_name()).set(0)
        if left:
            self._drop(left, "shutdown")
        self.report(force=True)

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def flush_backlog(self, chunk: int = FLUSH_CHUNK) -> None:
        """Writes the backlog in pipelines of ``chunk`` entries until it is empty or a write fails."""
        while self._backlog and time.monotonic() >= self._skip_until:
            batch = [self._backlog.popleft() for _ in range(min(chunk, len(self._backlog)))]
            ok = False
            try:
                ok = await self._try(batch)
            finally:
                if not ok:   # failed or cancelled: back in front, in order
                    self._backlog.extendleft(reversed(batch))
            if not ok:
                break
        BACKLOG.labels(metrics.server_name()).set(len(self._backlog))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            await self.flush_backlog()
            self.report()


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class RequestLogMiddleware:
    """ASGI middleware around ``POST ...:predict``: writes the request's served log
    before its response body goes out (``app.add_middleware(RequestLogMiddleware, log=...)``),
    and closes the log (`ServedLog.close`) when the server shuts down."""

    def __init__(self, app: Callable, log: ServedLog):
        self.app, self.log = app, log

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            async def receive_lifespan() -> Message:
                message = await receive()
                if message.get("type") == "lifespan.shutdown":
                    await self.log.close()
                return message

            await self.app(scope, receive_lifespan, send)
            return
        if (scope["type"] != "http" or scope.get("method") != "POST" or not self.log.config.enabled
                or not str(scope.get("path", "")).endswith(":predict")):
            await self.app(scope, receive, send)
            return
        record: Dict[str, Any] = {}
        token = _CURRENT.set(record)
        start = time.perf_counter()
        state = {"status": 500, "done": False}

        async def write(status: int) -> None:
            state["done"] = True
            await self.log.write(self.log.entries(record, status, (time.perf_counter() - start) * 1000.0))

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = int(message["status"])
            elif (message["type"] == "http.response.body" and not message.get("more_body", False)
                  and not state["done"]):
                await write(state["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            if not state["done"]:   # answered by the outermost error handler: a 500
                await write(500)
            raise
        finally:
            _CURRENT.reset(token)
