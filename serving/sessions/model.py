"""The session endpoint: a ``kserve.Model`` that updates a shopper's session in
Redis and answers with the refreshed top-k items of the pushed session model.

Per request (one process, no second hop): validate (`request.parse`), apply
the event to the user's state (`state`: a read, then an atomic Lua
compare-and-set that also appends the event to the stream ``fr:events``), call
the SavedModel's ``serving_default`` (raw ids in, top-k ids out: the session
contract) on the session's pages, dwell times and the purchase history, and
return the items with their scores and the model version.

The model is called on the event loop itself by default (``threads: 0``): one
session's call takes a few milliseconds, and handing it to a thread adds a wake-up
and a wait for the GIL behind the loop's other work.  On the benchmark machine the
call on the loop used 6 % less server CPU per request than a pool of 2 threads, with
the p99 within the runs' spread (benchmarks/README.md, "Session endpoint").  With
``threads > 0`` it runs in that many threads instead.  After loading, the
loaded graph's Python objects are frozen out of the garbage collector
(`gc.freeze`): a full collection over them takes about 180 ms with the demo-shaped
model (benchmarks/README.md, "Session endpoint"), a stall no request should wait behind.

Redis down or slower than ``redis_timeout_s``: a **degraded answer from the
request alone** (200, ``"degraded": true``, header ``X-Feedrank-Degraded:
redis``): the current page as a one-page session, no purchase history.  The
widget keeps showing something relevant to the page; the event is NOT
recorded (neither state nor stream), so the session resumes from what Redis
holds.  Redis is then left alone for ``redis_backoff_s``.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import kserve
import numpy as np
import redis
import redis.asyncio as aredis
import tensorflow as tf
from prometheus_client import Counter, Histogram

from feedrank.events import contract, stream
from serving.common import metrics
from serving.common.errors import BadRequest
from serving.predictor import store
from serving.sessions import request as rq
from serving.sessions import state as st

log = logging.getLogger(__name__)

DEGRADED_HEADER = "X-Feedrank-Degraded"
INFO_FILE = "session_model.json"
INPUTS = ("pages", "dwell", "purchases", "user_id")
OUTPUTS = ("items", "scores")

EVENTS = Counter("feedrank_session_events_total", "Session events by outcome.", ["server", "outcome"])
DEGRADED = Counter("feedrank_session_degraded_total", "Answers from the request alone.", ["server", "reason"])
STATE_SECONDS = Histogram("feedrank_session_state_seconds", "Redis state transaction time.", ["server"],
                          buckets=metrics.LATENCY_BUCKETS)
MODEL_SECONDS = Histogram("feedrank_session_model_seconds", "SavedModel call time.", ["server"],
                          buckets=metrics.LATENCY_BUCKETS)


@dataclasses.dataclass
class SessionConfig:
    """The endpoint's settings (flags of ``python -m serving.sessions``)."""

    model_dir: str = "model_store/session"
    redis_url: str = stream.DEFAULT_REDIS_URL
    prefix: str = "fr"
    redis_timeout_s: float = 0.05
    redis_backoff_s: float = 1.0
    log_events: bool = True
    events_stream: str = stream.DEFAULT_STREAM
    gap_s: Optional[int] = None        # None: the model's session_model.json, else 30 min
    max_pages: Optional[int] = None      # None: the model's session_model.json, else 50
    max_purchases: Optional[int] = None  # None: the model's session_model.json, else 50
    ttl_s: int = st.DEFAULT_TTL_S
    seen_ttl_s: int = st.DEFAULT_SEEN_TTL_S
    threads: int = 0                     # 0: call the model on the event loop; n > 0: in n threads


def resolve(model_dir: str) -> Tuple[str, str]:
    """``(version, path)``: a version directory as is, else the newest version under it."""
    if os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        return os.path.basename(os.path.normpath(model_dir)), model_dir
    found = store.newest_version(model_dir)
    if found is None:
        raise store.ModelSourceError(f"no version directory with a saved_model.pb under {model_dir}")
    return found


def check_signature(fn, path: str) -> None:
    """The session contract's raw signature, or a ModelSourceError naming the difference."""
    specs = dict(fn.structured_input_signature[1])
    want = {"pages": tf.string, "dwell": tf.float32, "purchases": tf.string, "user_id": tf.string}
    wrong = {n: (specs[n].dtype.name if n in specs else "missing") for n, d in want.items()
             if n not in specs or specs[n].dtype != d}
    outs = set(fn.structured_outputs)
    if wrong or not set(OUTPUTS) <= outs:
        raise store.ModelSourceError(
            f"{path} is not a raw session model (pages/purchases/user_id string, dwell float32 -> "
            f"items, scores): inputs {wrong or 'ok'}, outputs {sorted(outs)}")


class SessionRecommender(kserve.Model):
    """``/v1/models/<name>:predict`` with ``{"user_id", "event", "k"?}``."""

    def __init__(self, name: str, config: SessionConfig):
        super().__init__(name, return_response_headers=True)
        self.config = config
        self.keys = st.Keys(config.prefix)
        self.version, self.path, self.k, self.info = "", "", 0, {}
        self.state_cfg: Optional[st.StateConfig] = None
        self._fn = None
        self._saved = None
        self._redis: Optional[aredis.Redis] = None
        self._cas = None   # the registered compare-and-set script
        self._skip_redis_until = 0.0
        self.pool = (concurrent.futures.ThreadPoolExecutor(config.threads, thread_name_prefix="tf")
                     if config.threads > 0 else None)

    def load(self) -> bool:
        self.version, self.path = resolve(self.config.model_dir)
        t0 = time.perf_counter()
        try:
            self._saved = tf.saved_model.load(self.path)
        except (OSError, ValueError) as e:
            raise store.ModelSourceError(f"cannot load a SavedModel from {self.path}: {e}") from None
        if store.SIGNATURE not in self._saved.signatures:
            raise store.ModelSourceError(f"{self.path} has no {store.SIGNATURE!r} signature")
        self._fn = self._saved.signatures[store.SIGNATURE]
        check_signature(self._fn, self.path)
        info_path = os.path.join(self.path, INFO_FILE)
        self.info = {}
        if os.path.exists(info_path):
            with open(info_path) as f:
                self.info = json.load(f)
        gap = self.config.gap_s or int(self.info.get("gap_s", st.sessionize.DEFAULT_GAP_S))
        if self.config.gap_s and "gap_s" in self.info and int(self.info["gap_s"]) != self.config.gap_s:
            log.warning("session gap %d s differs from the model's training gap %s s", gap, self.info["gap_s"])
        max_pages = self.config.max_pages or int(self.info.get("max_pages", st.DEFAULT_MAX_PAGES))
        max_purchases = self.config.max_purchases or int(self.info.get("max_purchases", st.DEFAULT_MAX_PURCHASES))
        self.state_cfg = st.StateConfig(gap, max_pages, max_purchases, self.config.ttl_s, self.config.seen_ttl_s)
        for _ in range(3):   # trace and warm up
            out = self._run(["x0", "c1"], [1.0, 2.0], [""], "warm-up")
        self.k = len(out[0])
        gc.collect()
        gc.freeze()      # the loaded graph's objects live as long as the server: keep them out of every collection
        self.ready = True
        log.info("loaded session model version %s from %s (top-%d, gap %d s) in %.1f s", self.version,
                 self.path, self.k, gap, time.perf_counter() - t0)
        return True

    def _run(self, pages: List[str], dwell: List[float], purchases: List[str],
             user_id: str) -> Tuple[List[str], List[float]]:
        out = self._fn(pages=tf.constant([pages or [""]]),
                       dwell=tf.constant([dwell or [0.0]], tf.float32),
                       purchases=tf.constant([purchases or [""]]), user_id=tf.constant([user_id]))
        items = [v.decode() for v in out["items"].numpy()[0]]
        return items, np.asarray(out["scores"].numpy()[0], np.float64).tolist()

    def _client(self) -> aredis.Redis:
        if self._redis is None:
            t = max(self.config.redis_timeout_s, 0.001)
            self._redis = aredis.Redis.from_url(self.config.redis_url, decode_responses=True,
                                                socket_timeout=t, socket_connect_timeout=t,
                                                max_connections=64)
        return self._redis

    async def update(self, event) -> Optional[st.Applied]:
        """Applies the event to the user's state; None when Redis is unavailable (degraded)."""
        if time.monotonic() < self._skip_redis_until:
            return None
        fields = None
        if self.config.log_events:
            fields = stream.entry_fields({"event_id": event.event_id, "user_id": event.user_id,
                                          "item_id": event.item_id, "event": event.event, "ts": event.ts,
                                          "dwell_s": event.dwell_s if event.event == contract.VIEW else None,
                                          "session_id": event.session_id})
        tx = st.Transaction(self.keys, self.state_cfg, event, self.config.events_stream, fields)
        t0 = time.perf_counter()
        try:
            client = self._client()
            if self._cas is None:
                self._cas = client.register_script(st.CAS_LUA)
            return await asyncio.wait_for(st.apply_async(client, tx, self._cas), self.config.redis_timeout_s)
        except (asyncio.TimeoutError, redis.RedisError, OSError) as e:
            log.warning("Redis unavailable (%s: %s): answering from the request alone", type(e).__name__, e)
            self._skip_redis_until = time.monotonic() + self.config.redis_backoff_s
            return None
        finally:
            STATE_SECONDS.labels(metrics.server_name()).observe(time.perf_counter() - t0)

    async def predict(self, payload: Any, headers: Optional[Dict[str, str]] = None,
                      response_headers: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        if isinstance(payload, (bytes, bytearray)):
            raise BadRequest("request body must be JSON (Content-Type: application/json)")
        req = rq.parse(payload, self.k)
        ev = req.event
        done = await self.update(ev)
        server = metrics.server_name()
        if done is None:
            DEGRADED.labels(server, "redis").inc()
            alone, _ = st.apply(st.empty(), ev, self.state_cfg)   # the request as a one-event session
            inputs = st.model_inputs(alone, self.state_cfg, st.current_dwell(alone, ev))
            session_id, outcome = ev.session_id, "not_recorded"
        else:
            EVENTS.labels(server, done.outcome).inc()
            inputs = st.model_inputs(done.state, self.state_cfg, st.current_dwell(done.state, ev))
            session_id, outcome = done.state["sid"], done.outcome
        t0 = time.perf_counter()
        if self.pool is None:
            items, scores = self._run(*inputs, ev.user_id)
        else:
            items, scores = await asyncio.get_running_loop().run_in_executor(self.pool, self._run, *inputs, ev.user_id)
        MODEL_SECONDS.labels(server).observe(time.perf_counter() - t0)
        k = req.k or self.k
        if response_headers is not None:
            response_headers["x-model-version"] = self.version
            if done is None:
                response_headers[DEGRADED_HEADER] = "redis"
        return {"model_name": self.name, "model_version": self.version, "user_id": ev.user_id,
                "event_id": ev.event_id, "session_id": session_id, "event": outcome,
                "pages": len(inputs[0]), "degraded": done is None,
                "items": [{"item_id": i, "score": s} for i, s in zip(items[:k], scores[:k])]}
