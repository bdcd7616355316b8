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

Redis down or slow: the request is still answered; the entries go to an
in-memory backlog (bounded by ``backlog`` entries) that a background task
writes in chunks once Redis answers again (after ``backoff_s``; the request
path only ever writes its own entries), and failures are counted in
Prometheus.  Guarantees:
while the process lives and the backlog has room, no entry is lost; entries
in the backlog die with the process, and beyond the bound new entries are
dropped (counted).  A write that timed out may still have reached Redis, and
is written again: such a duplicate has the same ``event_id`` / ``request_id``
and readers drop it by that id.  Debug requests (``debug`` in the body) log
nothing.
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

ENTRIES = Counter("feedrank_served_log_entries_total", "Served-log stream entries by outcome "
                  "(written, backlog: kept for a retry, dropped: backlog full).", ["server", "outcome"])
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
            out = [(self.config.events_stream, f) for f in record.get("impressions", ())]
        out.append(self.record_entry(record, status, latency_ms))
        return out

    async def write(self, entries: List[Entry]) -> bool:
        """Writes ``entries`` in one pipeline; False if they went to the backlog."""
        if not self.config.enabled or not entries:
            return True
        self._ensure_flusher()
        if time.monotonic() < self._skip_until:
            self._keep(entries)
            return False
        if await self._try(entries):
            return True
        self._keep(entries)
        return False

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
        return True

    async def _xadd(self, batch: List[Entry]) -> None:
        pipe = self._redis().pipeline(transaction=False)
        for name, fields in batch:
            pipe.xadd(name, fields)
        await pipe.execute()

    def _keep(self, batch: List[Entry]) -> None:
        room = max(0, self.config.backlog - len(self._backlog))
        self._backlog.extend(batch[:room])
        if len(batch) > room:
            ENTRIES.labels(metrics.server_name(), "dropped").inc(len(batch) - room)
            log.error("served-log backlog full (%d): %d entries dropped", self.config.backlog, len(batch) - room)
        ENTRIES.labels(metrics.server_name(), "backlog").inc(min(room, len(batch)))
        BACKLOG.labels(metrics.server_name()).set(len(self._backlog))

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def flush_backlog(self, chunk: int = FLUSH_CHUNK) -> None:
        """Writes the backlog in pipelines of ``chunk`` entries until it is empty or a write fails."""
        while self._backlog and time.monotonic() >= self._skip_until:
            batch = [self._backlog.popleft() for _ in range(min(chunk, len(self._backlog)))]
            if not await self._try(batch):
                self._backlog.extendleft(reversed(batch))   # back in front, in order
                break
        BACKLOG.labels(metrics.server_name()).set(len(self._backlog))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            await self.flush_backlog()


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class RequestLogMiddleware:
    """ASGI middleware around ``POST ...:predict``: writes the request's served log
    before its response body goes out (``app.add_middleware(RequestLogMiddleware, log=...)``)."""

    def __init__(self, app: Callable, log: ServedLog):
        self.app, self.log = app, log

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
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
