"""The feature updater against a real Redis: per-event rules, idempotency on
event_id, capped channels in offline order, row checks, stream
acknowledgement, and the bulk loader's agreement with the updater."""
from __future__ import annotations

import logging
import subprocess
import sys
import threading

import pandas as pd
import pytest

from feedrank.events import contract, stream
from serving.features import bootstrap, online, redis_layout, updater, writer
from tests.helpers import examplegen as H
from tests.helpers.redis_stack import redis_server  # noqa: F401 (fixture)

ITEMS = pd.DataFrame({"item_id": [f"i{k}" for k in range(5)], "category_id": ["c0", "c1", "c0", "c2", "c1"],
                      "region_id": ["r0", "r1", "r0", "r1", "r0"], "price": [1.0, 2.0, float("nan"), 4.0, 5.0],
                      "title": [""] * 5})


T0 = 1_700_000_000  # test times are seconds after T0: the example generator's floor (min_ts) is 2000-01-01


def _ev(event_id, event, ts, user="u1", item="i0", query=""):
    """An event ``ts`` seconds after T0 (a ``ts`` given as text is passed through as is)."""
    ts = T0 + ts if isinstance(ts, int) else ts
    return {"event_id": event_id, "user_id": user, "item_id": item, "event": event, "ts": ts,
            "request_id": "", "query": query, "dwell_s": None}


@pytest.fixture()
def ns(redis_server):  # noqa: F811
    """An empty namespace with the items loaded, and its writer."""
    client = redis_server.client()
    keys = redis_layout.Keys("t")
    writer.flush(client, keys)
    writer.load_items(client, keys, ITEMS)
    return client, keys, writer.FeatureWriter(client, keys)


def _read(client, keys, user="u1", items=("i0",), ts=None):
    pipe = client.pipeline()
    online.queue_reads(pipe, keys, user, list(items), None if ts is None else T0 + ts)
    return online.parse_reads(pipe.execute(), None if ts is None else T0 + ts)


def test_events_update_channels_and_counters_once(ns):
    client, keys, w = ns
    events = [_ev("e1", "impression", 100), _ev("e2", "click", 101), _ev("e3", "view", 102, item="i1"),
              _ev("e4", "conversion", 103), _ev("e5", "search", 104, item="", query="red  bike"),
              _ev("e6", "purchase", 105)]
    assert w.apply(writer.events_frame(events)) == 6
    assert w.apply(writer.events_frame(events)) == 0          # the same events again
    assert w.apply(writer.events_frame(events[1:2])) == 0     # and one of them alone
    user, imp, clk = _read(client, keys)
    assert (imp, clk) == ([1.0], [1.0])
    assert user.channels == {"click": ["i0"], "view": ["i1"], "conversion": ["i0"], "search": ["red", "bike"]}
    assert w.stats["applied"] == 6 and w.stats["duplicates"] == 7


def test_the_event_category_is_the_one_valid_at_the_event_and_a_reload_is_seen(ns):
    """The user counters count an event in its post's category at the event's second (rows
    with ``valid_from``, none before the first); a reload of the attribute store replaces
    what the writer remembered of the posts."""
    client, keys, w = ns
    versioned = pd.concat([ITEMS.assign(valid_from=float("nan")),
                           ITEMS.iloc[:1].assign(category_id="c9", valid_from=float(T0 + 200)),
                           ITEMS.iloc[1:2].assign(valid_from=float(T0 + 300))], ignore_index=True)
    versioned = versioned[~((versioned.item_id == "i1") & versioned.valid_from.isna())]
    writer.load_items(client, keys, versioned)
    w.apply(writer.events_frame([_ev("e1", "impression", 100), _ev("e2", "impression", 250),
                                 _ev("e3", "impression", 260, item="i1"), _ev("e4", "impression", 400, item="i1")]))
    counters = client.hgetall(keys.user("u1"))
    assert (counters["imp"], counters["imp:c0"], counters["imp:c9"], counters["imp:c1"]) == ("4", "1", "1", "1")
    writer.load_items(client, keys, ITEMS.assign(category_id="c7"))   # a new load: every post is c7
    w.apply(writer.events_frame([_ev("e5", "impression", 500)]))
    assert client.hget(keys.user("u1"), "imp:c7") == "1"


def test_channels_are_capped_and_in_offline_order(ns):
    client, keys, w = ns
    cap = redis_layout.CHANNELS["click"]
    events = [_ev(f"c{k:03d}", "click", 1000 + k, item=f"i{k % 5}") for k in range(cap + 30)]
    # same second, ids out of order: offline orders them by event_id
    events += [_ev("z2", "click", 5000, item="i2"), _ev("z1", "click", 5000, item="i1")]
    w.apply(writer.events_frame(reversed(events)))            # arrival order is irrelevant
    user, _, _ = _read(client, keys)
    expected = [e["item_id"] for e in sorted(events, key=lambda e: (e["ts"], e["event_id"]))][-cap:]
    assert user.channels["click"] == expected and len(expected) == cap
    assert client.zcard(keys.seq("click", "u1")) == redis_layout.stored_len("click")
    # a read at ts=5000 sees only what happened strictly before it
    before, _, _ = _read(client, keys, ts=5000)
    assert before.channels["click"] == [e["item_id"] for e in events[:cap + 30]][-cap:]


def test_bad_rows_are_skipped_by_reason(ns):
    client, keys, w = ns
    bad = [_ev("b1", "click", 10, item="nope"), _ev("", "click", 10), _ev("b3", "click", "soon"),
           _ev("b4", "teleport", 10), _ev("b5", "click", "-5")]       # negative: before the floor
    assert w.apply(writer.events_frame(bad + [_ev("g1", "impression", 11)])) == 1
    assert {k: v for k, v in w.stats.items() if k.startswith("rejected_")} == {
        f"rejected_{contract.UNKNOWN_ITEM}": 1, f"rejected_{contract.MISSING_ID}": 1,
        f"rejected_{contract.BAD_TS}": 1, f"rejected_{contract.UNKNOWN_EVENT}": 1,
        f"rejected_{contract.TS_BEFORE_FLOOR}": 1}
    assert client.hget(keys.clicks, "nope") is None and client.hget(keys.impressions, "i0") == "1"


def test_linger_applies_what_arrives_meanwhile_in_the_same_batch(ns):
    """A request's served impressions arrive a handful at a time: with ``linger_ms`` the updater
    applies the ones published during the linger in the same batch (one frame, one round trip)."""
    client, keys, w = ns
    client.delete("l:events")
    stream.publish(client, [_ev(f"a{k}", "impression", k) for k in range(3)], "l:events")
    later = threading.Timer(0.02, stream.publish, args=(client, [_ev(f"b{k}", "impression", 10 + k)
                                                                 for k in range(4)], "l:events"))
    up = updater.Updater(stream.RedisStreamSource(client, "l:events", "g", "c1"), w, batch=100, block_ms=0,
                         linger_ms=500)
    later.start()
    assert up.step() == 7                                     # 3 read, 4 more within the linger
    later.join()
    assert client.xpending("l:events", "g")["pending"] == 0 and w.stats["applied"] == 7
    eager = updater.Updater(stream.RedisStreamSource(client, "l:events", "g2", "c1"), writer.FeatureWriter(
        client, keys), batch=2, block_ms=0, linger_ms=500)
    assert eager.step() == 2                                  # a full batch does not linger
    with pytest.raises(ValueError, match="linger_ms"):
        updater.Updater(stream.RedisStreamSource(client, "l:events", "g", "c1"), w, linger_ms=-1)


def test_stream_acknowledges_only_applied_entries(ns):
    client, keys, w = ns
    client.delete("t:events")
    stream.publish(client, [_ev("s1", "impression", 1), _ev("s2", "click", 2), _ev("s1", "impression", 1)],
                   "t:events")
    crashed = stream.RedisStreamSource(client, "t:events", "g", "c1")
    assert len(crashed.read(10, 0)) == 3                      # delivered, never applied nor acked
    assert client.xpending("t:events", "g")["pending"] == 3
    up = updater.Updater(stream.RedisStreamSource(client, "t:events", "g", "c1"), w, batch=10, block_ms=0)
    assert up.step() == 3                                     # the restarted consumer re-reads them
    assert client.xpending("t:events", "g")["pending"] == 0
    assert up.step() == 0
    _, imp, clk = _read(client, keys)
    assert (imp, clk) == ([1.0], [1.0])                       # the redelivered s1 counted once


def _state(client, keys, users, items):
    out = {}
    for u in users:
        user, _, _ = _read(client, keys, user=u, items=["i0"])
        out[u] = (user.region, user.channels)
    _, imp, clk = _read(client, keys, items=items)
    return out, imp, clk


def test_bulk_loader_equals_the_stream_updater(redis_server, tmp_path, monkeypatch):  # noqa: F811
    log_dir = H.make_log(str(tmp_path / "log"))
    client = redis_server.client()
    loaded, streamed = redis_layout.Keys("boot"), redis_layout.Keys("live")
    monkeypatch.setattr(bootstrap, "PROGRESS_EVERY_S", 0)   # a progress line per batch
    monkeypatch.setattr(bootstrap, "BATCH", 1000)
    # the module's own records, whatever libraries' logging setup earlier in the session did
    records: list = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    monkeypatch.setattr(logging.root.manager, "disable", logging.NOTSET)
    monkeypatch.setattr(bootstrap.log, "disabled", False)
    bootstrap.log.addHandler(handler)
    old_level = bootstrap.log.level
    bootstrap.log.setLevel(logging.INFO)
    try:
        counts = bootstrap.bootstrap(client, log_dir, loaded, force=True)
    finally:
        bootstrap.log.removeHandler(handler)
        bootstrap.log.setLevel(old_level)
    assert counts["events_applied"] > 1000
    progress = [r.getMessage() for r in records if "events applied (" in r.getMessage()]
    assert progress and progress[0].startswith("bootstrap: 0 of ")
    with pytest.raises(bootstrap.AlreadySeeded):
        bootstrap.bootstrap(client, log_dir, loaded)
    # the same log through the stream, in file order (not time order)
    writer.flush(client, streamed)
    writer.load_items(client, streamed, H.load(log_dir, "items"))
    writer.load_users(client, streamed, H.load(log_dir, "users"))
    client.delete("live:events")
    stream.publish(client, H.load(log_dir).to_dict("records"), "live:events")
    w = writer.FeatureWriter(client, streamed)
    up = updater.Updater(stream.RedisStreamSource(client, "live:events", "g", "c"), w, batch=500, block_ms=0)
    while up.step():
        pass
    users = sorted(H.load(log_dir, "users").user_id)
    items = sorted(H.load(log_dir, "items").item_id)
    a, b = _state(client, loaded, users, items), _state(client, streamed, users, items)
    assert a == b
    assert sum(a[1]) > 0 and any(ch["click"] for _, ch in a[0].values())


def test_updater_command(redis_server):  # noqa: F811
    client = redis_server.client()
    keys = redis_layout.Keys("cli")
    writer.flush(client, keys)
    writer.load_items(client, keys, ITEMS)
    client.delete("cli:events")
    stream.publish(client, [_ev("x1", "impression", 5, item="i3"), _ev("x2", "click", 6, item="i3")], "cli:events")
    run = subprocess.run([sys.executable, "-m", "serving.features.updater", "--redis", redis_server.url,
                          "--prefix", "cli", "--stream", "cli:events", "--block-ms", "100",
                          "--idle-exit-s", "0.5"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (client.hget(keys.impressions, "i3"), client.hget(keys.clicks, "i3")) == ("1", "1")
    helptext = subprocess.run([sys.executable, "-m", "serving.features.updater", "--help"],
                              capture_output=True, text=True, timeout=60)
    assert helptext.returncode == 0 and "--stream" in helptext.stdout and "--bootstrap" in helptext.stdout
    down = subprocess.run([sys.executable, "-m", "serving.features.updater", "--redis",
                           "redis://127.0.0.1:1/0"], capture_output=True, text=True, timeout=60)
    assert down.returncode == 2 and "Redis at redis://127.0.0.1:1/0 failed" in down.stderr
    assert "Traceback" not in down.stderr
