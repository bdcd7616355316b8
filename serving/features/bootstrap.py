"""Bulk loader: seeds Redis from an event-log directory.

    python -m serving.features.bootstrap --redis redis://127.0.0.1:6379/0 --log data/tiny

Reads the three tables with `feedrank.events.io`, writes the post-attribute
store (``items``) and the user regions (``users``), with the columns the
feature contract of ``--model`` declares (`serving.features.declared`; the
namespace's ``meta`` hash records which), then
applies the events in ``(ts, event_id)`` order with the updater's own
`FeatureWriter`, after the example generator's row checks and duplicate
resolution (`feedrank.events.validate`).  Events of the last ``--seen-window-s`` seconds
of the log keep an idempotency marker, so a stream that starts a little
before the log's end does not count them twice.  Refuses a namespace that is
already seeded unless ``--force`` (which deletes it first).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import redis

from feedrank import features as F
from feedrank.events import contract, io, stream, validate
from serving.features import declared, redis_layout, writer

log = logging.getLogger(__name__)
BATCH = 5000


class AlreadySeeded(RuntimeError):
    """The namespace holds a previous bootstrap."""


PROGRESS_EVERY_S = 10   # a progress line this often during the events



def bootstrap(client, log_dir: str, keys: redis_layout.Keys, force: bool = False,
              seen_window_s: int = 3600, seen_ttl_s: int = writer.DEFAULT_SEEN_TTL_S,
              spec: F.FeatureSpec = F.BUILTIN) -> Dict[str, int]:
    """Seeds one namespace from ``log_dir`` with the item / user columns ``spec``
    (the served model's contract) declares; returns counts."""
    if client.exists(keys.meta) or client.exists(keys.items):
        if not force:
            raise AlreadySeeded(f"namespace '{keys.prefix}' is already seeded "
                                f"({client.hget(keys.meta, 'source')}); pass --force to replace it")
        log.info("deleted %d keys of namespace %s", writer.flush(client, keys), keys.prefix)
    t0 = time.time()
    log.info("bootstrap of %s into '%s': loading the items and users tables", log_dir, keys.prefix)
    counts: Dict[str, int] = load_tables(client, log_dir, keys, spec)
    events = io.read_events(log_dir)
    log.info("bootstrap: %d items and %d users loaded; applying %d events (progress every %d s)",
             counts.get("items", 0), counts.get("users", 0), len(events), PROGRESS_EVERY_S)
    w = writer.FeatureWriter(client, keys, seen_ttl_s=seen_ttl_s)
    good = w.valid_rows(events)
    good, dups = validate.dedupe(good)
    good = good.sort_values(["ts", "event_id"], kind="mergesort").reset_index(drop=True)
    max_ts = int(good["ts"].max()) if len(good) else 0
    recent = good["ts"].to_numpy(np.int64) >= max_ts - int(seen_window_s)
    last_report = time.time()
    for start in range(0, len(good), BATCH):
        if time.time() - last_report >= PROGRESS_EVERY_S:
            done = time.time() - t0
            log.info("bootstrap: %d of %d events applied (%.0f%%), %.0f s so far", start, len(good),
                     100.0 * start / max(len(good), 1), done)
            last_report = time.time()
        part = good.iloc[start:start + BATCH]
        mark = recent[start:start + BATCH]
        # rows already validated: apply() re-checks them cheaply (items are known)
        if mark.all() or not mark.any():
            w.apply(part, mark_seen=bool(mark.all()))
        else:
            w.apply(part[~mark], mark_seen=False)
            w.apply(part[mark], mark_seen=True)
    counts.update({"events_read": len(events), "events_applied": int(w.stats["applied"]),
                   "duplicates": len(dups), "rejected": len(events) - len(good) - len(dups), "max_ts": max_ts})
    client.hset(keys.meta, mapping={"source": log_dir, redis_layout.SEEN_FIELD: "1",
                                    **{k: str(v) for k, v in counts.items()}})
    log.info("bootstrap of %s into '%s' in %.1f s: %s", log_dir, keys.prefix, time.time() - t0, counts)
    return counts


def load_tables(client, log_dir: str, keys: redis_layout.Keys, spec: F.FeatureSpec) -> Dict[str, int]:
    """Writes the post-attribute store and the user table of ``log_dir`` with the item / user
    columns ``spec`` declares, and records which (`writer.record_loaded`); returns rows per table."""
    return {table: load(client, keys, io.read_table(log_dir, table, declared.table_columns(spec, table)), spec)
            for table, load in ((contract.ITEMS, writer.load_items), (contract.USERS, writer.load_users))}


def ensure_columns(client, log_dir: str, keys: redis_layout.Keys, spec: F.FeatureSpec) -> List[str]:
    """Makes an already seeded namespace hold the declared columns ``spec`` reads: when its
    ``meta`` record lacks any (`declared.missing_columns`), the attribute tables are written again
    from ``log_dir`` with ``spec`` (the behaviour state is left as it is).  Returns what was lacking."""
    meta = dict(zip(declared.meta_fields(), client.hmget(keys.meta, declared.meta_fields())))
    missing = declared.missing_columns(spec, meta)
    if missing:
        log.info("namespace '%s' lacks column(s) the model reads: %s; loading the attribute tables of %s again",
                 keys.prefix, ", ".join(missing), log_dir)
        load_tables(client, log_dir, keys, spec)
    return missing


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.features.bootstrap", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis", default=stream.DEFAULT_REDIS_URL, help="Redis URL")
    p.add_argument("--log", required=True, help="event-log directory (events, items, users)")
    p.add_argument("--prefix", default=redis_layout.DEFAULT_PREFIX, help="key namespace")
    p.add_argument("--force", action="store_true", help="replace an already seeded namespace")
    p.add_argument("--model", default="", help="exported model (or its declaration file): its declared "
                                               "item/user columns are stored too")
    p.add_argument("--seen-window-s", type=int, default=3600,
                   help="keep idempotency markers for the log's last N seconds (default 3600)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        spec = declared.spec_from_model(args.model)
        counts = bootstrap(writer.redis_client(args.redis), args.log, redis_layout.Keys(args.prefix),
                           force=args.force, seen_window_s=args.seen_window_s, spec=spec)
    except (AlreadySeeded, io.ContractError, ValueError, OSError) as e:
        print(f"bootstrap: {e}", file=sys.stderr)
        return 2
    except redis.RedisError as e:
        print(f"bootstrap: Redis at {args.redis} failed: {e}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
