"""Offline/online alignment: replays an event log through the updater and
compares, at every impression, the request the transformer sends the
predictor with the example the example generator built for it.

    python -m serving.features.replay --redis redis://127.0.0.1:6379/0 --log data/tiny [--model DIR]

The online side runs the code ``make serve`` runs: the bulk loader's table
loader (`bootstrap.load_tables`), the stream and the updater's `FeatureWriter`,
the transformer's in-memory post store, its Redis reads
(`online.queue_request`) and its request builder (`online.raw_inputs`,
`online.v1_request`).  Each candidate's row of that request, read as the
predictor reads it (`candidate_features`), is compared feature by feature:
every input of the request (`Report.inputs`, which a test checks equals the
signature's inputs, declared columns included), plus the in-graph crosses
(`build.crosses`).  A mismatch is any differing feature (floats compared as
float32).  With ``--model`` a SavedModel directory, the compared inputs must
also equal its ``serving_default`` inputs.

Time semantics.  Offline features use only events strictly before the
impression's ``ts`` (events of the same second are not history, ordered by
``event_id`` among themselves).  The replay walks the log one second ``t`` at
a time: it publishes all events of second ``t`` to the stream and lets the
updater drain it, and only then builds, per user with impressions at ``t``,
the request ranking those impressions at ``t``, as a live request meets
events of its own second (its own served impressions, a click, another
user's impression of the same post).  So the online reads must leave out
second ``t`` themselves: sequences by their ``< t`` score bound, counters,
session and recency by what the latest second added (`online.parse_reads`).
Arrival order is ``(ts, file order)``, the example generator's
duplicate-resolution order, and
every raw row goes through the stream - invalid and duplicate rows included -
so the updater's row checks and idempotency are compared too.

Offline side: the example generator's own functions in-process
(`validate.split_batch`, `validate.dedupe`, `history.item_history`,
`build.build_examples`), with the feature contract passed in (``--model``:
the exported model's).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import os
import sys
from typing import Callable, Dict, List, Optional, Set

import numpy as np

from feedrank import features as F
from feedrank.events import contract, io, stream, validate
from feedrank.examples import build
from feedrank.examples.history import item_history
from serving.features import bootstrap, declared, online, redis_layout, updater, writer

log = logging.getLogger(__name__)
STREAM = "fr:replay"


@dataclasses.dataclass
class Report:
    """Outcome of a replay."""

    impressions: int = 0
    mismatched: int = 0
    by_feature: Dict[str, int] = dataclasses.field(default_factory=collections.Counter)
    examples: List[Dict] = dataclasses.field(default_factory=list)   # first few mismatches
    updater_stats: Dict[str, int] = dataclasses.field(default_factory=dict)
    inputs: Set[str] = dataclasses.field(default_factory=set)   # the request inputs compared

    @property
    def rate(self) -> float:
        return self.mismatched / self.impressions if self.impressions else 0.0


def offline_examples(log_dir: str, label_window_s: int = 1800, spec: F.FeatureSpec = F.BUILTIN):
    """``(raw events, users map, impression_id -> feature dict,
    impression_id -> serialized tf.Example)`` of the examples the example
    generator writes with the feature contract ``spec``."""
    from tensorflow.core.example import example_pb2

    items = build.ItemTable(io.read_table(log_dir, contract.ITEMS, declared.table_columns(spec, contract.ITEMS)),
                            spec)
    users_df = io.read_table(log_dir, contract.USERS, declared.table_columns(spec, contract.USERS))
    users = dict(zip(*users_df[["user_id", "region_id"]].to_numpy(dtype=object).T))
    raw = io.read_events(log_dir)
    good, _ = validate.split_batch(raw, items.index)
    kept, _ = validate.dedupe(good)
    hist = item_history(kept)
    user_table = build.UserTable(users_df, spec)   # what the example generator reads (snapshots)
    built = build.build_examples(kept[build.EVENT_COLUMNS], hist, items, user_table, label_window_s, spec=spec)
    examples = {}
    serialized = dict(zip(built.impression_id, built.serialized))
    for imp_id, ser in serialized.items():
        feats = example_pb2.Example.FromString(ser).features.feature
        ex = {}
        for name, feat in feats.items():
            kind = feat.WhichOneof("kind")
            vals = list(getattr(feat, kind).value) if kind else []
            ex[name] = [v.decode() if isinstance(v, bytes) else v for v in vals]
        examples[imp_id] = ex
    return raw, users, examples, serialized


def request_body(client, keys: redis_layout.Keys, store: online.ItemStore, user_id: str,
                 candidates: List[str], ts: Optional[int], now: int,
                 spec: F.FeatureSpec = F.BUILTIN) -> Dict[str, list]:
    """The v1 request the transformer serving a model with contract ``spec`` sends the
    predictor for ``user_id`` and ``candidates`` (its own reads, `online.queue_request`, and
    request builder, `online.v1_request`); Redis is read strictly before ``ts`` (None: no
    bound), the crosses are computed at ``now``."""
    pipe = client.pipeline(transaction=False)
    pending = online.queue_request(pipe, keys, user_id, candidates, ts, spec, store)
    user, imp, clk = online.parse_request(pipe.execute(), pending, store)
    unknown = online.history_to_fetch(user, store)
    if unknown:
        store.add_raw(unknown, client.hmget(keys.items, unknown))
    return online.v1_request(online.raw_inputs(user, candidates, store, imp, clk, now, spec), spec)["inputs"]


def candidate_features(body: Dict[str, list], j: int, spec: F.FeatureSpec = F.BUILTIN) -> Dict[str, list]:
    """Candidate ``j``'s raw features as the predictor reads them from a v1 request body
    (the user's side shared, "" padding of sequences and token bags dropped), plus the
    in-graph crosses (`build.crosses`)."""
    user = set(spec.features_of_side("user"))
    rows = {s.name for s in spec.seq_features} | set(declared.bag_names(spec))
    # a channel's sequences are as long as its id sequence (ids are never ""; an attribute of a
    # post with no valid row is "", and stays)
    length = {s.channel: len([v for v in body[s.name][0] if v != ""])
              for s in spec.seq_features if s.shares_with in (None, "item_id") and not s.ages}
    seqs = {s.name: s.channel for s in spec.seq_features}
    feats: Dict[str, list] = {}
    for name, values in body.items():
        if name in user:
            feats[name] = list(values[0] if name in rows else values)
        else:
            feats[name] = list(values[j]) if name in rows else [values[j]]
        if name in seqs:
            feats[name] = feats[name][:length[seqs[name]]]
        elif name in rows:
            feats[name] = [v for v in feats[name] if v != ""]
    region_match, share = build.crosses(feats[F.USER_REGION_ID.name][0], feats[F.REGION_ID.name][0],
                                        feats[F.CLICK_CATEGORIES.name], feats[F.CATEGORY_ID.name][0])
    feats[F.REGION_MATCH.name] = [region_match]
    feats[F.INTEREST_CATEGORY_SHARE.name] = [share]
    return feats


def signature_inputs(model_dir: str) -> Set[str]:
    """The input names of a SavedModel's ``serving_default`` (needs TensorFlow)."""
    import tensorflow as tf

    return set(tf.saved_model.load(model_dir).signatures["serving_default"].structured_input_signature[1])


def compare(online_feats: Dict[str, list], offline: Dict[str, list],
            spec: F.FeatureSpec = F.BUILTIN) -> List[str]:
    """Names of the raw features that differ (``spec`` says which are floats)."""
    bad = []
    for name, values in online_feats.items():
        ref = offline.get(name, [])
        if spec.is_dense(name):
            same = np.array_equal(np.float32(values), np.float32(ref))
        else:
            same = list(values) == list(ref)
        if not same:
            bad.append(name)
    return bad


def replay(client, log_dir: str, keys: redis_layout.Keys, label_window_s: int = 1800,
           keep_examples: int = 5, naive: bool = False, offline=None,
           on_second: Optional[Callable[[int, List[str]], None]] = None,
           spec: F.FeatureSpec = F.BUILTIN) -> Report:
    """Replays ``log_dir`` into an emptied namespace, with the item / user columns
    of the feature contract ``spec``; returns the report.

    ``naive=True`` reads with no time bound (a reader that ignores the
    strict-before rule); a test uses it to check that the replay catches
    same-second leakage.  ``offline``: a precomputed `offline_examples` result
    (of the same ``spec``).  ``on_second(t, impression_ids)`` is called at each
    second with impressions, when Redis holds the events up to and including
    ``t`` (e.g. to send the transformer those requests at ``t``)."""
    raw, users, examples, _ = offline or offline_examples(log_dir, label_window_s, spec)
    writer.flush(client, keys)
    client.delete(STREAM)
    bootstrap.load_tables(client, log_dir, keys, spec)     # the bulk load's own table loader
    store = online.ItemStore.from_hash(client.hgetall(keys.items))   # as the transformer loads it
    fw = writer.FeatureWriter(client, keys)
    up = updater.Updater(stream.RedisStreamSource(client, STREAM, "replay", "replay-1"), fw,
                         batch=1000, block_ms=0)
    ts, ok = validate.parse_ts(raw["ts"])
    order = np.lexsort((raw[validate.ORDER].to_numpy(), ts, ok))   # bad ts first, then (ts, file order)
    raw, ts, ok = raw.iloc[order].reset_index(drop=True), ts[order], ok[order]
    rows = raw[list(contract.EVENT_COLUMNS)].to_dict("records")
    # the impressions that have an example, by second
    imp_ids = raw["event_id"].to_numpy(dtype=object)
    is_ex = np.array([i in examples for i in imp_ids]) & (raw["event"].to_numpy(dtype=object)
                                                          == contract.IMPRESSION) & ok
    report = Report()
    done = set()
    bounds = np.flatnonzero(np.r_[True, (ts[1:] != ts[:-1]) | (ok[1:] != ok[:-1]), True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        stream.publish(client, rows[a:b], STREAM)   # the second's own events first (see the module doc)
        while up.step():
            pass
        if on_second is not None and is_ex[a:b].any():
            on_second(int(ts[a]), sorted({imp_ids[i] for i in np.flatnonzero(is_ex[a:b]) + a}))
        by_user: Dict[str, List[str]] = {}   # one request per user: their impressions at t
        for i in np.flatnonzero(is_ex[a:b]) + a:
            imp_id = imp_ids[i]
            if imp_id in done:      # a duplicate row of an impression already compared
                continue
            done.add(imp_id)
            by_user.setdefault(examples[imp_id][F.USER_ID][0], []).append(imp_id)
        t = int(ts[a])
        for user_id, ids in by_user.items():
            body = request_body(client, keys, store, user_id, [examples[i][F.ITEM_ID.name][0] for i in ids],
                                None if naive else t, t, spec)
            report.inputs.update(body)
            for j, imp_id in enumerate(ids):
                ex = examples[imp_id]
                feats = candidate_features(body, j, spec)
                bad = compare(feats, ex, spec)
                report.impressions += 1
                if bad:
                    report.mismatched += 1
                    report.by_feature.update(bad)
                    if len(report.examples) < keep_examples:
                        report.examples.append({"impression_id": imp_id, "features": {
                            n: {"online": feats[n], "offline": ex.get(n)} for n in bad}})
    report.updater_stats = dict(fw.stats)
    missing = set(examples) - done
    if missing:
        raise AssertionError(f"{len(missing)} offline examples were never replayed")
    return report


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.features.replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis", default=stream.DEFAULT_REDIS_URL, help="Redis URL (a scratch db)")
    p.add_argument("--log", required=True, help="event-log directory")
    p.add_argument("--prefix", default="replay", help="key namespace (emptied first)")
    p.add_argument("--label-window-s", type=int, default=1800)
    p.add_argument("--model", default="", help="exported model (or its declaration file) whose declared "
                                               "item/user columns are compared too")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spec = declared.spec_from_model(args.model)
    r = replay(writer.redis_client(args.redis), args.log, redis_layout.Keys(args.prefix), args.label_window_s,
               spec=spec)
    uncovered: List[str] = []
    if args.model and os.path.isfile(os.path.join(args.model, "saved_model.pb")):
        uncovered = sorted(signature_inputs(args.model) ^ r.inputs)
    print(json.dumps({"impressions": r.impressions, "mismatched": r.mismatched,
                      "mismatch_rate": r.rate, "by_feature": dict(r.by_feature), "inputs": sorted(r.inputs),
                      "inputs_not_in_both_signature_and_request": uncovered,
                      "updater": r.updater_stats, "examples": r.examples}, indent=1, default=str))
    return 0 if r.mismatched == 0 and not uncovered else 1


if __name__ == "__main__":
    sys.exit(main())
