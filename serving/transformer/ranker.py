"""The transformer: a ``kserve.Model`` that ranks a user's candidate posts.

Per request: validate (`request.parse`), read the user's channels, region
and the candidates' live counters from Redis in one round trip
(`serving.features.online`), add the post attributes from the in-memory
store and the item / user columns the served model's feature contract
declares (read once from ``model``, `serving.features.declared`), call the
predictor of the user's A/B arm (v1 columnar, the user's side once) and return
the candidates sorted by score with the arm, the model's name and version,
the request id and how many of the top posts are shown.

* A/B arms: with a challenger predictor (``challenger_url``) each user is in
  the arm `assign.arm_of` gives (stable per user); without one everybody is
  champion.  ``debug.arm`` forces an arm for counterfactual evaluation.
* The served log (`served_log`): the shown posts' impressions and one record
  per request are written to Redis Streams after the ranking is computed.

* Unknown user (no region, no behaviour): cold-start defaults (empty
  sequences, region from the context or ""), counted.
* Unknown post: OOV handling - its id is sent as is (the model's OOV
  buckets), "" category/region, the default price, zero counters; counted.
* Redis down or slower than ``redis_timeout_s``: request-only features
  (no sequences or counters), header ``X-Feedrank-Degraded: redis``,
  counted; Redis is then left alone for ``redis_backoff_s``.
* The store lacks a declared column the model reads (`store.StoreContract`,
  from the store's own record of what it holds): not ready, and ranking
  requests get a 503 naming the missing columns, until the store holds them.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any, Dict, List, Optional, Tuple

import httpx
import kserve
import redis
import redis.asyncio as aredis
from kserve.errors import ModelNotReady
from prometheus_client import Counter, Histogram

from feedrank import features as F
from feedrank.ab import assign
from feedrank.events.stream import DEFAULT_REDIS_URL
from serving.common import metrics
from serving.common.errors import ApiError, BadRequest
from serving.features import declared, online, redis_layout
from serving.transformer import request as rq
from serving.transformer import served_log
from serving.transformer.store import StoreContract

log = logging.getLogger(__name__)

DEGRADED_HEADER = "X-Feedrank-Degraded"
VERSION_HEADER = "x-feedrank-model-version"
ARM_HEADER = "x-feedrank-arm"

DEGRADED = Counter("feedrank_degraded_total", "Requests served without Redis features.",
                   ["server", "reason"])
COLD_START = Counter("feedrank_cold_start_total", "Requests of users unknown to Redis.", ["server"])
OOV_POSTS = Counter("feedrank_oov_candidates_total", "Candidates missing from the post store.",
                    ["server"])
CANDIDATES = Histogram("feedrank_candidates_per_request", "Candidates per ranking request.",
                       ["server"], buckets=(1, 5, 10, 20, 50, 100, 120, 200, 500, 1000))
FEATURE_LATENCY = Histogram("feedrank_feature_read_seconds", "Redis feature read latency.",
                            ["server"], buckets=metrics.LATENCY_BUCKETS)


@dataclasses.dataclass
class RankerConfig:
    """Where the predictor and Redis are, and the limits."""

    predictor_url: str = "http://127.0.0.1:8080"
    redis_url: str = DEFAULT_REDIS_URL
    prefix: str = redis_layout.DEFAULT_PREFIX
    redis_timeout_s: float = 0.02
    redis_backoff_s: float = 1.0
    predictor_timeout_s: float = 5.0
    max_candidates: int = 500
    model: str = ""     # the exported model (or its declaration file): its declared columns are sent
    challenger_url: str = ""          # a second predictor: A/B test; "" = everybody champion
    challenger_share: float = 0.5
    ab_salt: str = assign.DEFAULT_SALT
    show: int = 0                     # posts shown when the request has no "show"; 0 = all
    store_check_s: float = 5.0        # how often a ready transformer looks again at what the store holds
    log: served_log.LogConfig = dataclasses.field(default_factory=served_log.LogConfig)


@dataclasses.dataclass
class Arm:
    """One arm's predictor and the version it served last."""

    name: str
    url: str
    model_version: str = "unknown"
    client: Optional[httpx.AsyncClient] = None


class Ranker(kserve.Model):
    """The ranking endpoint (``/v1/models/<name>:predict``)."""

    def __init__(self, name: str, config: RankerConfig):
        super().__init__(name, return_response_headers=True)
        self.config = config
        # the served model's feature contract (built-ins only without ``config.model``)
        self.spec: F.FeatureSpec = declared.spec_from_model(config.model)
        self.keys = redis_layout.Keys(config.prefix)
        self.items = online.ItemStore()
        self._redis: Optional[aredis.Redis] = None
        self._skip_redis_until = 0.0
        if not 0.0 <= config.challenger_share <= 1.0:
            raise ValueError(f"challenger share must be in [0, 1], got {config.challenger_share}")
        self.arms: Dict[str, Arm] = {assign.CHAMPION: Arm(assign.CHAMPION, config.predictor_url)}
        if config.challenger_url:
            self.arms[assign.CHALLENGER] = Arm(assign.CHALLENGER, config.challenger_url)
        self.served_log = served_log.ServedLog(config.redis_url, config.log)
        self.store = StoreContract(self.spec, config.redis_url, self.keys, self._set_items, config.store_check_s)

    def _set_items(self, items: online.ItemStore) -> None:
        self.items = items

    @property
    def model_version(self) -> str:
        """The champion's version served last."""
        return self.arms[assign.CHAMPION].model_version

    def arm_for(self, req: rq.RankRequest) -> str:
        """The request's arm: forced by ``debug.arm``, else the user's stable arm."""
        if req.forced_arm is not None:
            if req.forced_arm not in self.arms:
                raise BadRequest(f"'debug.arm' is {req.forced_arm!r} but this server has no "
                                 f"challenger predictor (start it with --challenger-url)")
            return req.forced_arm
        if assign.CHALLENGER not in self.arms:
            return assign.CHAMPION
        return assign.arm_of(req.user_id, self.config.challenger_share, self.config.ab_salt)

    def load(self) -> bool:
        """Loads the post-attribute store from Redis (an empty store if Redis is
        unavailable: posts are then fetched on first use); with declared columns, first
        checks that the store holds those the model reads (`StoreContract.check`)."""
        sync = redis.Redis.from_url(self.config.redis_url, decode_responses=True,
                                    socket_timeout=10, socket_connect_timeout=5)
        try:
            if self.store.needed:
                self.store.check()
            else:
                self.items = online.ItemStore.from_hash(sync.hgetall(self.keys.items))
                log.info("post-attribute store: %d posts", len(self.items.items))
            why = redis_layout.seeded_without_seen(sync, self.keys, self.spec)
            if why:   # the store cannot give the model's seen-before inputs from the whole log
                log.warning("%s", why)
        except redis.RedisError as e:
            log.warning("post-attribute store not loaded (Redis: %s); posts will be fetched on use", e)
        finally:
            sync.close()
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        """Loaded, and the store holds every declared column the model reads; otherwise
        kserve's not-ready error (a 503) names the missing columns."""
        if not self.ready:
            return False
        if not await self.store.ready():
            raise ModelNotReady(self.name, self.store.problem())
        return True

    # -- clients (created in the serving event loop) -----------------------
    def _redis_client(self) -> aredis.Redis:
        if self._redis is None:
            t = self.config.redis_timeout_s
            self._redis = aredis.Redis.from_url(self.config.redis_url, decode_responses=True,
                                                socket_timeout=max(t, 0.001),
                                                socket_connect_timeout=max(t, 0.001),
                                                max_connections=64)
        return self._redis

    def _http_client(self, arm: Arm) -> httpx.AsyncClient:
        if arm.client is None:
            arm.client = httpx.AsyncClient(base_url=arm.url, timeout=self.config.predictor_timeout_s,
                                           limits=httpx.Limits(max_keepalive_connections=32))
        return arm.client

    # -- features -----------------------------------------------------------
    async def _read_redis(self, req: rq.RankRequest, items: online.ItemStore
                          ) -> Tuple[online.UserState, List[float], List[float]]:
        client = self._redis_client()
        pipe = client.pipeline(transaction=False)
        pending = online.queue_request(pipe, self.keys, req.user_id, req.candidates, req.ts, self.spec, items)
        user, imp, clk = online.parse_request(await pipe.execute(), pending, items)
        unknown_history = online.history_to_fetch(user, items)
        if unknown_history:
            items.add_raw(unknown_history, await client.hmget(self.keys.items, unknown_history))
        return user, imp, clk

    async def features(self, req: rq.RankRequest) -> Tuple[Dict[str, list], Optional[str]]:
        """``(raw inputs, degraded reason or None)``."""
        items = self.items   # one post store per request, also when a reload swaps it meanwhile
        user, imp, clk = online.empty_user(), [0.0] * len(req.candidates), [0.0] * len(req.candidates)
        degraded = None
        if time.monotonic() < self._skip_redis_until:
            degraded = "redis"
        else:
            t0 = time.perf_counter()
            try:
                user, imp, clk = await asyncio.wait_for(self._read_redis(req, items),
                                                        self.config.redis_timeout_s)
            except (asyncio.TimeoutError, redis.RedisError, OSError) as e:
                log.warning("Redis unavailable (%s: %s): request-only features", type(e).__name__, e)
                degraded = "redis"
                self._skip_redis_until = time.monotonic() + self.config.redis_backoff_s
                user, imp, clk = online.empty_user(), [0.0] * len(req.candidates), [0.0] * len(req.candidates)
            FEATURE_LATENCY.labels(metrics.server_name()).observe(time.perf_counter() - t0)
        if degraded:
            DEGRADED.labels(metrics.server_name(), degraded).inc()
        elif user.cold:
            COLD_START.labels(metrics.server_name()).inc()
        if user.region is None and req.user_region_id is not None:
            user.region = req.user_region_id
        n_oov = sum(1 for c in req.candidates if c not in items)
        if n_oov:
            OOV_POSTS.labels(metrics.server_name()).inc(n_oov)
        return online.raw_inputs(user, req.candidates, items, imp, clk, req.ts, self.spec), degraded

    # -- predictor ------------------------------------------------------------
    async def score(self, inputs: Dict[str, list], arm_name: str = assign.CHAMPION) -> Tuple[List[float], str]:
        """Calls the arm's predictor (v1 columnar): one probability per candidate, and the version."""
        arm = self.arms[arm_name]
        try:
            r = await self._http_client(arm).post(f"/v1/models/{self.name}:predict",
                                                  json=online.v1_request(inputs, self.spec))
        except httpx.HTTPError as e:
            raise ApiError(f"predictor unavailable: {type(e).__name__}", 503,
                           {"Retry-After": "1"}) from None
        if r.status_code == 503:
            raise ApiError("predictor overloaded", 503, {"Retry-After": r.headers.get("Retry-After", "1")})
        if r.status_code != 200:
            log.error("predictor answered %d: %s", r.status_code, r.text[:500])
            raise ApiError(f"predictor failed with HTTP {r.status_code}", 502)
        body = r.json()
        version = r.headers.get(VERSION_HEADER) or body.get("model_version")
        if version:
            arm.model_version = str(version)
        return _probabilities(body), arm.model_version

    async def predict(self, payload: Any, headers: Optional[Dict[str, str]] = None,
                      response_headers: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        record = served_log.current()   # this request's log record (the middleware's), or None
        user_id, request_id, log_it = rq.peek(payload)
        record.update(user_id=user_id, request_id=request_id, log=log_it)
        req = rq.parse(payload, self.config.max_candidates)
        record.update(user_id=req.user_id, request_id=req.request_id, log=req.log, ts=req.ts,
                      n_candidates=len(req.candidates))
        arm = self.arm_for(req)
        record.update(arm=arm, model_version=self.arms[arm].model_version)
        CANDIDATES.labels(metrics.server_name()).observe(len(req.candidates))
        inputs, degraded = await self.features(req)
        scores, version = await self.score(inputs, arm)
        record["model_version"] = version
        if len(scores) != len(req.candidates):
            raise ApiError(f"predictor returned {len(scores)} scores for {len(req.candidates)} candidates", 502)
        if response_headers is not None:
            response_headers[ARM_HEADER] = arm
            if degraded:
                response_headers[DEGRADED_HEADER] = degraded
        order = sorted(range(len(scores)), key=lambda i: -scores[i])   # stable: ties keep request order
        ranking = [{"post_id": req.candidates[i], "score": scores[i]} for i in order]
        shown = min(req.show or self.config.show or len(ranking), len(ranking))
        record.update(n_shown=shown, impressions=served_log.impressions(req, arm, version, ranking[:shown]))
        return {"model_name": self.name, "model_version": version, "arm": arm,
                "request_id": req.request_id, "shown": shown,
                "user_id": req.user_id, "degraded": degraded is not None, "ranking": ranking}


def _probabilities(body: Dict[str, Any]) -> List[float]:
    """Scores from a v1 response: columnar ``outputs`` or row ``predictions``."""
    out = body.get("outputs", body.get("predictions"))
    if isinstance(out, dict):
        out = out.get("probabilities", next(iter(out.values()), None))
    if not isinstance(out, list):
        raise ApiError("predictor response has no probabilities", 502)
    flat = []
    for v in out:
        if isinstance(v, dict):
            v = v.get("probabilities")
        if isinstance(v, list):
            v = v[0] if v else None
        if not isinstance(v, (int, float)):
            raise ApiError("predictor response has a non-numeric score", 502)
        flat.append(float(v))
    return flat
