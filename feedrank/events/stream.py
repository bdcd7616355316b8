"""The event stream: where events are published and how consumers read them.

Producers (the transformer's served log, the online simulator, tests) append
events with :func:`entry_fields` / :func:`publish`; consumers (the feature
updater, the session updater, the log sink) read them through one interface:

* `RedisStreamSource` (local and default): a Redis Stream read with a
  consumer group (``XREADGROUP``); entries are acknowledged only after they
  were applied, and a restarted consumer first re-reads its pending entries.
* `KafkaSource` (in a cluster): the same interface over a Kafka topic with
  ``kafka-python`` (optional, not a dependency of this repository: install it
  in the image that runs the updater against Kafka).  Offsets are committed
  after the batch was applied.

Entries carry the event-contract columns as string fields (``event_id``,
``user_id``, ``item_id``, ``event``, ``ts``, optionally ``request_id``,
``query``, ``dwell_s``); Kafka messages carry the same as a JSON object.

:data:`DEFAULT_REDIS_URL` is the local Redis every command line defaults to;
:func:`local_redis_url` names a Redis on another loopback port.  Redis
itself (the ``redis`` client) is imported only by what talks to it.
"""
from __future__ import annotations

import collections
import json
import logging
import time
from typing import Callable, Dict, List, Mapping, Optional, Protocol, Tuple

from feedrank.events import contract

log = logging.getLogger(__name__)
DEFAULT_STREAM = "fr:events"
DEFAULT_GROUP = "feedrank-updater"
DEFAULT_REDIS_PORT = 6379


def local_redis_url(port: int = DEFAULT_REDIS_PORT, db: int = 0) -> str:
    """The URL of a Redis on loopback: ``redis://127.0.0.1:<port>/<db>``."""
    return f"redis://127.0.0.1:{int(port)}/{int(db)}"


DEFAULT_REDIS_URL = local_redis_url()


class Source(Protocol):
    """A batch-at-a-time event source with explicit acknowledgement."""

    def read(self, count: int, block_ms: int) -> List[Tuple[str, Dict[str, str]]]:
        """Up to ``count`` ``(entry_id, fields)`` pairs (waits at most block_ms)."""

    def ack(self, entry_ids: List[str]) -> None:
        """Marks entries as applied."""


def entry_fields(event: Mapping[str, object]) -> Dict[str, str]:
    """Stream fields of one event (contract columns present in ``event``)."""
    return {k: "" if event[k] is None else str(event[k])
            for k in contract.EVENT_COLUMNS if k in event}


class RedisStreamSource:
    """Reads a Redis Stream through a consumer group.

    The group (and the stream) is created when missing, from the stream's first
    entry (``start_id`` ``"0"``).  When it disappears while reading - Redis
    restarted without persistence, the stream key deleted, the group destroyed -
    Redis answers ``NOGROUP`` (``UNBLOCKED`` to a blocked read); the source then creates the group again from
    ``"0"``, logs one line, counts it in ``stats["group_recreated"]`` and reads
    on.  Starting again from ``"0"`` and not from ``"$"`` is what keeps
    application exact: ``"$"`` would silently skip every entry published between
    the loss and the new group, while re-reading entries already applied costs
    nothing because consumers de-duplicate by ``event_id`` (seen markers, part
    watermarks).  A stream holding entries older than the consumers' seen TTL
    should be trimmed (``XTRIM MINID``) so that a re-read cannot count them twice.
    """

    def __init__(self, client, stream: str = DEFAULT_STREAM, group: str = DEFAULT_GROUP,
                 consumer: str = "updater-1", start_id: str = "0"):
        self.client, self.stream, self.group, self.consumer = client, stream, group, consumer
        self.stats: collections.Counter = collections.Counter()
        ensure_group(client, stream, group, start_id)
        self._pending = True   # re-read entries delivered to this consumer but not acked
        self._pending_from = "0"   # once each, even those the reader keeps unacked for now

    def read(self, count: int, block_ms: int) -> List[Tuple[str, Dict[str, str]]]:
        try:
            return self._read(count, block_ms)
        except Exception as e:  # redis.ResponseError NOGROUP / UNBLOCKED: the group or the stream is gone
            if not is_nogroup(e):
                raise
            self.recreate(e)
            return []

    def _read(self, count: int, block_ms: int) -> List[Tuple[str, Dict[str, str]]]:
        if self._pending:
            got = self.client.xreadgroup(self.group, self.consumer, {self.stream: self._pending_from}, count=count)
            entries = got[0][1] if got else []
            if entries:
                self._pending_from = entries[-1][0]
                return entries
            self._pending = False
        got = self.client.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count,
                                     block=block_ms or None)
        return got[0][1] if got else []

    def recreate(self, cause: Exception) -> None:
        """Creates the vanished group again from ``"0"`` (see the class doc) and counts it."""
        self._pending, self._pending_from = True, "0"
        if not ensure_group(self.client, self.stream, self.group, "0"):
            return   # another consumer of the group was first
        self.stats["group_recreated"] += 1
        log.warning("consumer group %s on %s was gone (%s): created it again from the stream's start "
                    "(%d time(s) so far)", self.group, self.stream, str(cause).split(" ", 1)[0],
                    self.stats["group_recreated"])

    def ack(self, entry_ids: List[str]) -> None:
        if entry_ids:   # XACK on a vanished group acknowledges nothing and raises nothing
            self.client.xack(self.stream, self.group, *entry_ids)


def is_nogroup(e: BaseException) -> bool:
    """True when Redis says the consumer group or its stream is gone: ``NOGROUP``, or
    ``UNBLOCKED the stream key no longer exists`` to a read blocked while the key was deleted."""
    text = str(e)
    return text.startswith("NOGROUP") or (text.startswith("UNBLOCKED") and "no longer exists" in text)


def ensure_group(client, stream: str, group: str, start_id: str = "0") -> bool:
    """Creates ``group`` on ``stream`` (and the stream) from ``start_id``; False if it existed."""
    try:
        client.xgroup_create(stream, group, id=start_id, mkstream=True)
    except Exception as e:  # redis.ResponseError BUSYGROUP: the group exists
        if "BUSYGROUP" not in str(e):
            raise
        return False
    log.info("created consumer group %s on stream %s from %s", group, stream, start_id)
    return True


class KafkaSource:
    """Reads a Kafka topic (JSON events); needs the optional ``kafka-python``."""

    def __init__(self, bootstrap_servers: str, topic: str, group: str = DEFAULT_GROUP):
        try:
            from kafka import KafkaConsumer  # optional dependency
        except ImportError as e:
            raise RuntimeError("the Kafka source needs kafka-python (pip install kafka-python) "
                               "in the updater's environment") from e
        self._consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap_servers.split(","),
                                       group_id=group, enable_auto_commit=False,
                                       value_deserializer=lambda b: json.loads(b.decode()))

    def read(self, count: int, block_ms: int) -> List[Tuple[str, Dict[str, str]]]:
        polled = self._consumer.poll(timeout_ms=block_ms, max_records=count)
        out = []
        for tp, records in polled.items():
            out += [(f"{tp.topic}:{tp.partition}:{r.offset}", entry_fields(r.value)) for r in records]
        return out

    def ack(self, entry_ids: List[str]) -> None:
        if entry_ids:
            self._consumer.commit()


def publish(client, events: List[Mapping[str, object]], stream: str = DEFAULT_STREAM,
            maxlen: Optional[int] = None) -> int:
    """Appends events to a Redis Stream (producers, tests, demos)."""
    pipe = client.pipeline(transaction=False)
    for e in events:
        pipe.xadd(stream, entry_fields(e), maxlen=maxlen, approximate=maxlen is not None)
    return len(pipe.execute())


# Redis error replies of a server that will answer again (a failover, a full memory, a busy script)
TRANSIENT_REPLIES = ("OOM", "READONLY", "MASTERDOWN", "TRYAGAIN", "BUSY ", "CLUSTERDOWN")
RETRY_S = 1.0


def run_until_stopped(step: Callable[[], int], stopped: Callable[[], bool], idle_exit_s: Optional[float] = None,
                      recover: Optional[Callable[[Exception], bool]] = None,
                      active: Optional[Callable[[], bool]] = None,
                      stats: Optional[collections.Counter] = None) -> None:
    """The consumers' loop: calls ``step`` (entries handled) until ``stopped()``, or until
    ``idle_exit_s`` passes with no entry (and ``active()`` false).

    Redis unreachable, timing out, loading its data or answering with a transient
    error (`TRANSIENT_REPLIES`) is an outage: one line when it starts and one when
    it ends, ``stats["redis_outages"]`` counts them, and ``step`` is retried every
    `RETRY_S` seconds meanwhile.  Another Redis error is re-raised unless
    ``recover(e)`` handles it (a ``NOGROUP`` the caller repairs)."""
    import redis

    idle_since = time.monotonic()
    down_since: Optional[float] = None
    while not stopped():
        try:
            n = step()
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as e:
            transient = not isinstance(e, redis.ResponseError) or str(e).startswith(TRANSIENT_REPLIES)
            if transient:
                if down_since is None:
                    down_since = time.monotonic()
                    if stats is not None:
                        stats["redis_outages"] += 1
                    log.warning("Redis unavailable (%s: %s); retrying every %g s",
                                type(e).__name__, str(e).splitlines()[0] if str(e) else "", RETRY_S)
                time.sleep(RETRY_S)
                continue
            if recover is None or not recover(e):
                raise
            continue
        if down_since is not None:
            log.warning("Redis answers again after %.1f s", time.monotonic() - down_since)
            down_since, idle_since = None, time.monotonic()
        if n or (active is not None and active()):
            idle_since = time.monotonic()
        elif idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
            break
