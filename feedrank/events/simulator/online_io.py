"""What the online simulator talks to: the ranking endpoint and the event stream.

* :class:`HttpRanker` asks the transformer (``/v1/models/<name>:predict``) for a
  ranking, optionally of a forced arm with ``debug: {arm, log: false}`` (a
  counterfactual request: nothing is logged).  Refusals are retried (503 with
  ``Retry-After``, connection errors), then reported as a failed request.
* :class:`EventStream` appends the users' clicks, views, conversions and
  purchases to the Redis Stream the feature updater consumes
  (``feedrank.events.stream.entry_fields`` + ``XADD``), and waits until the
  updater has consumed a user's events before that user's next request.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any, Dict, List, Mapping, Optional

import httpx
import redis
import redis.asyncio as aredis

from feedrank.events import stream as stream_lib

log = logging.getLogger(__name__)

ARM_HEADER = "x-feedrank-arm"


class EndpointError(Exception):
    """The ranking endpoint cannot be used at all (unreachable, unknown model)."""


@dataclasses.dataclass
class Ranked:
    """One answer of the ranking endpoint."""
    status: int
    arm: str = ""
    items: List[str] = dataclasses.field(default_factory=list)   # the shown posts, top first
    model_version: str = ""
    error: str = ""
    degraded: bool = False   # served without the Redis features (the transformer's degraded mode)


class HttpRanker:
    """The transformer over HTTP (a few requests in flight share one connection pool)."""

    def __init__(self, endpoint: str, model_name: str, timeout_s: float = 30.0, retries: int = 3):
        self.endpoint, self.model_name, self.retries = endpoint.rstrip("/"), model_name, retries
        self.url = f"{self.endpoint}/v1/models/{model_name}:predict"
        self._client = httpx.AsyncClient(timeout=timeout_s, limits=httpx.Limits(max_keepalive_connections=16))

    async def check(self) -> None:
        """Raises EndpointError unless the endpoint serves the model."""
        url = f"{self.endpoint}/v1/models/{self.model_name}"
        try:
            r = await self._client.get(url)
        except httpx.HTTPError as e:
            raise EndpointError(f"the ranking endpoint {self.endpoint} is unreachable ({type(e).__name__}): "
                                f"start the serving stack, e.g. python -m serving.stack --log LOG "
                                f"--model ...") from None
        if r.status_code == 404:
            raise EndpointError(f"the ranking endpoint {self.endpoint} serves no model named "
                                f"{self.model_name!r} (--model-name)")
        if r.status_code != 200:
            raise EndpointError(f"the ranking endpoint {url} answered HTTP {r.status_code}: {r.text[:200]}")

    async def rank(self, body: Dict[str, Any]) -> Ranked:
        """Posts one ranking request; the shown posts are the top ``shown`` of the ranking."""
        delay = 0.2
        last = Ranked(0, error="not sent")
        for attempt in range(self.retries + 1):
            try:
                r = await self._client.post(self.url, json=body)
            except httpx.HTTPError as e:
                last = Ranked(0, error=f"{type(e).__name__}: {e}")
            else:
                if r.status_code == 200:
                    return _ranked(r)
                last = Ranked(r.status_code, error=_error_text(r))
                if r.status_code != 503:
                    return last
                delay = float(r.headers.get("Retry-After", delay) or delay)
            if attempt < self.retries:
                await asyncio.sleep(min(delay, 5.0))
                delay *= 2
        return last

    async def close(self) -> None:
        await self._client.aclose()


def _error_text(r: httpx.Response) -> str:
    try:
        return str(r.json().get("error", r.text))[:300]
    except ValueError:
        return r.text[:300]


def _ranked(r: httpx.Response) -> Ranked:
    body = r.json()
    ranking = [str(x["post_id"]) for x in body.get("ranking", [])]
    shown = body.get("shown", len(ranking))
    arm = body.get("arm") or r.headers.get(ARM_HEADER) or ""
    return Ranked(200, str(arm), ranking[:int(shown)], str(body.get("model_version", "")),
                  degraded=bool(body.get("degraded", False)))


def _id_key(entry_id: str) -> tuple:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class EventStream:
    """Publishes events to a Redis Stream and waits for the feature updater."""

    def __init__(self, url: str, stream: str = stream_lib.DEFAULT_STREAM,
                 group: str = stream_lib.DEFAULT_GROUP, staleness_s: float = 0.0, wait_s: float = 10.0):
        self.url, self.stream, self.group = url, stream, group
        self.staleness_s, self.wait_s = staleness_s, wait_s
        self.client = aredis.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                            socket_connect_timeout=5)
        self.waiting = False
        self.published = 0
        self._warned = False

    async def check(self) -> None:
        """Raises EndpointError when Redis is unreachable; notes whether an updater consumes the stream."""
        try:
            await self.client.ping()
            groups = await self.client.xinfo_groups(self.stream) if await self.client.exists(self.stream) else []
        except (redis.RedisError, OSError) as e:
            raise EndpointError(f"Redis at {self.url} is unreachable: {e}") from None
        self.waiting = any(g["name"] == self.group for g in groups)
        if not self.waiting:
            log.warning("no consumer group %r on %s: no feature updater consumes the events, so the features "
                        "will not see the users' clicks", self.group, self.stream)

    async def publish(self, events: List[Mapping[str, object]]) -> Optional[str]:
        """XADDs the events in order; returns the last entry id (None if none)."""
        if not events:
            return None
        pipe = self.client.pipeline(transaction=False)
        for e in events:
            pipe.xadd(self.stream, stream_lib.entry_fields(e))
        ids = await pipe.execute()
        self.published += len(ids)
        return ids[-1]

    async def wait_consumed(self, entry_id: Optional[str]) -> None:
        """Until the updater has read ``entry_id`` and (without staleness) applied it:
        its group has delivered the entry and holds no pending entry at or before it."""
        if entry_id is None or not self.waiting:
            return
        want = _id_key(entry_id)
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            groups = await self.client.xinfo_groups(self.stream)
            g = next((g for g in groups if g["name"] == self.group), None)
            if g is None:
                break
            if _id_key(g["last-delivered-id"]) >= want:
                if self.staleness_s > 0 or not g["pending"]:
                    return
                pend = await self.client.xpending(self.stream, self.group)
                if not pend["pending"] or _id_key(pend["min"]) > want:
                    return
            await asyncio.sleep(0.005)
        if not self._warned:
            log.warning("the feature updater (group %r) did not consume an event within %.0f s; going on "
                        "(is it running?)", self.group, self.wait_s)
            self._warned = True

    async def close(self) -> None:
        await self.client.aclose()
