"""Whether the feature store holds what the served model reads.

Every load of an attribute table records in the namespace's ``meta`` hash the
declared columns it stored (`serving.features.declared.missing_columns` reads
that record).  `StoreContract` compares the record with the served model's
feature contract: while the store lacks a declared column the model reads, the
transformer is not ready (`StoreContract.problem` is the reason, logged once
per change and answered with the 503 of a readiness probe or a ranking
request).  When the attribute tables are written again (a fresh
``attributes_loaded`` token), the in-memory post store is loaded again, so the
declared values served are the stored ones.

A model that declares no columns needs nothing beyond the built-in tables and
is never held back here.  When Redis does not answer, nothing is known: the
last finding stands (at start, none), and the transformer ranks degraded as
usual.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, List, Optional

import redis
from prometheus_client import Gauge

from feedrank import features as F
from serving.common import metrics
from serving.features import declared, online, redis_layout

log = logging.getLogger(__name__)

MISSING = Gauge("feedrank_feature_store_missing_columns",
                "Declared columns the served model reads that the feature store lacks.", ["server"])
READ_TIMEOUT_S = 5.0     # the meta read and a reload of the post store


class StoreContract:
    """What the store at ``redis_url`` (namespace ``keys``) holds, against ``spec``.

    ``on_items`` receives the post store loaded after each new load of the attribute
    tables.  `check` blocks (start-up, or a worker thread); `ready` is for the
    event loop."""

    def __init__(self, spec: F.FeatureSpec, redis_url: str, keys: redis_layout.Keys,
                 on_items: Callable[[online.ItemStore], None], check_every_s: float = 5.0):
        self.spec = spec
        self.redis_url = redis_url
        self.keys = keys
        self.on_items = on_items
        self.check_every_s = float(check_every_s)
        self.missing: List[str] = []          # what the store lacks, as of the last look
        self.loaded: Optional[str] = None     # the ``attributes_loaded`` token of the post store in memory
        self._checked = float("-inf")
        self._begun = 0                       # looks begun by `_recheck` (one at a time)
        self._lock = asyncio.Lock()
        self._task: Optional[asyncio.Task] = None

    @property
    def needed(self) -> bool:
        """Whether the model reads declared columns (else nothing is checked)."""
        return bool(self.spec.declared)

    def problem(self) -> str:
        """The readiness reason ("" when the store holds every declared column the model reads)."""
        if not self.missing:
            return ""
        return (f"The feature store ({self.redis_url}, namespace '{self.keys.prefix}') lacks "
                f"{len(self.missing)} column(s) the model reads: {'; '.join(self.missing)}. Seed it with the "
                f"model's contract: python -m serving.features.bootstrap --log <event log> --model <served model>")

    def check(self) -> List[str]:
        """Reads the store's record (blocking) and, when it holds the model's columns and its
        attribute tables were written since the post store was loaded, loads the post store.
        Returns what the store lacks; raises ``redis.RedisError`` when Redis does not answer."""
        client = redis.Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=READ_TIMEOUT_S,
                                      socket_connect_timeout=READ_TIMEOUT_S)
        try:
            fields = declared.meta_fields()
            meta = dict(zip(fields, client.hmget(self.keys.meta, fields)))
            missing = declared.missing_columns(self.spec, meta)
            token = meta.get(declared.LOADED_FIELD)
            if not missing and token != self.loaded:
                items = online.ItemStore.from_hash(client.hgetall(self.keys.items))
                self.on_items(items)
                self.loaded = token
                log.info("post-attribute store: %d posts with the declared columns %s", len(items.items),
                         [c.feature_name for c in self.spec.declared_of("items")])
        finally:
            client.close()
        self._found(missing)
        return missing

    def _found(self, missing: List[str]) -> None:
        if missing != self.missing:
            self.missing = missing
            if missing:
                log.error("not ready: %s", self.problem())
            else:
                log.info("the feature store holds every declared column the model reads: ready")
        self._checked = time.monotonic()
        MISSING.labels(metrics.server_name()).set(len(missing))

    async def _recheck(self) -> None:
        begun = self._begun
        async with self._lock:
            if self._begun > begun:
                return      # a look that began after this call has finished: its finding is fresh
            self._begun += 1
            try:
                await asyncio.to_thread(self.check)
            except (redis.RedisError, OSError) as e:
                log.warning("feature store record not read (Redis: %s); keeping the last finding", e)
                self._checked = time.monotonic()

    async def ready(self) -> bool:
        """False while the store lacks a column the model reads: looked up again at once while it
        does, otherwise in the background every ``check_every_s``."""
        if not self.needed:
            return True
        if self.missing:
            await self._recheck()
        elif time.monotonic() - self._checked > self.check_every_s and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._recheck())
        return not self.missing
