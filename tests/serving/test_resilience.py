"""The stack survives its parts, against real redis-servers: the feature updater
resumes after a Redis restart without data, a deleted stream and a destroyed
group (counting what it could not apply); the log sink recreates its group;
the launcher's supervisor restarts Redis with its append-only file while the
transformer and the updater keep running; the served log accounts for every
entry (written + dropped + backlog == offered) and logs only shown posts."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pandas as pd
import pytest

from feedrank.events import stream
from serving.common import procs
from serving.features import redis_layout, sink, updater, writer
from serving.transformer import served_log
from tests.helpers import examplegen as H
from tests.helpers import serving_env
from tests.helpers.redis_stack import FeaturePredictor, RedisProcess

ITEMS = pd.DataFrame({"item_id": ["i0", "i1"], "category_id": ["c0", "c1"], "region_id": ["r0", "r1"],
                      "price": [1.0, 2.0], "title": ["", ""]})
STREAM, GROUP = "t:events", "t-updater"
T0 = 1_700_000_000


def until(cond, timeout_s: float = 30.0, what: str = "condition") -> None:
    """Waits for ``cond()`` to be true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - Redis coming back
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def impressions(ids, item="i0"):
    return [{"event_id": e, "user_id": "u1", "item_id": item, "event": "impression", "ts": T0 + k}
            for k, e in enumerate(ids)]


@pytest.fixture()
def rs(tmp_path):
    """A private redis-server (no persistence) for one test."""
    serving_env.require_redis()
    r = RedisProcess(str(tmp_path))
    yield r
    r.stop()


@pytest.fixture()
def running(rs):
    """An updater consuming ``STREAM`` into namespace ``t`` in a thread: (client, keys, updater)."""
    client = writer.redis_client(rs.url)
    keys = redis_layout.Keys("t")
    writer.load_items(client, keys, ITEMS)
    up = updater.Updater(stream.RedisStreamSource(client, STREAM, GROUP, "c1"),
                         writer.FeatureWriter(client, keys), block_ms=100)
    thread = threading.Thread(target=up.run, daemon=True)
    thread.start()
    yield client, keys, up
    up.stop()
    thread.join(15)
    assert not thread.is_alive()


def imp_count(client, keys, item="i0") -> int:
    return int(client.hget(keys.impressions, item) or 0)


def test_updater_resumes_after_a_redis_restart_without_data(rs, running):
    client, keys, up = running
    stream.publish(client, impressions(["e1", "e2"]), STREAM)
    until(lambda: imp_count(client, keys) == 2, what="the first events")
    rs.proc.kill()                       # kill -9: no persistence, the stream and the group are gone
    rs.proc.wait()
    until(lambda: up.stats["redis_outages"] == 1, what="the outage to be noticed")
    rs.restart()                         # a new, empty redis-server on the same port
    writer.load_items(client, keys, ITEMS)
    stream.publish(client, impressions(["e3", "e4", "e5"]), STREAM)   # before or after the group is back
    until(lambda: imp_count(client, keys) == 3, what="the events published after the restart")
    assert up.stats["group_recreated"] == 1 and up.stats["applied"] == 5


def test_updater_resumes_after_the_stream_is_deleted(running):
    client, keys, up = running
    stream.publish(client, impressions(["e1"]), STREAM)
    until(lambda: imp_count(client, keys) == 1, what="the first event")
    client.delete(STREAM)
    stream.publish(client, impressions(["e2", "e3"]), STREAM)
    until(lambda: imp_count(client, keys) == 3, what="the events after the deletion")
    assert up.stats["group_recreated"] == 1
    assert {g["name"] for g in client.xinfo_groups(STREAM)} == {GROUP}


def test_a_destroyed_group_is_read_again_from_the_start_and_counts_nothing_twice(running):
    client, keys, up = running
    stream.publish(client, impressions(["e1", "e2"]), STREAM)
    until(lambda: imp_count(client, keys) == 2, what="the first events")
    client.xgroup_destroy(STREAM, GROUP)
    stream.publish(client, impressions(["e3"]), STREAM)
    until(lambda: up.stats["duplicates"] == 2, what="the re-read")
    until(lambda: imp_count(client, keys) == 3, what="the new event")
    assert up.stats["group_recreated"] == 1 and up.stats["applied"] == 3


def test_events_redis_refuses_are_counted_and_the_rest_applied(running):
    client, keys, up = running
    client.set(keys.user("u9"), "not a hash")          # every event of u9 fails with WRONGTYPE
    events = impressions(["e1", "e2"]) + [{**e, "user_id": "u9"} for e in impressions(["e3", "e4"])]
    events.append({"event_id": "e5", "user_id": "u1", "item_id": "nope", "event": "impression", "ts": T0})
    stream.publish(client, events, STREAM)
    until(lambda: up.stats["applied"] == 2 and sum(v for k, v in up.stats.items() if k.startswith("failed_")) == 2,
          what="the batch to be applied event by event")
    assert up.stats["failed_WRONGTYPE"] == 2
    assert [k for k in up.stats if k.startswith("rejected_")] and sum(
        v for k, v in up.stats.items() if k.startswith("rejected_")) == 1    # the unknown post
    assert client.xinfo_groups(STREAM)[0]["pending"] == 0                 # nothing left to block the stream
    assert client.hget(keys.user("u1"), "imp") == "2"


def test_updater_metrics_name_every_outcome(running):
    client, keys, up = running
    stream.publish(client, impressions(["e1", "e1"]), STREAM)
    until(lambda: up.stats["duplicates"] == 1, what="the duplicate")
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(updater.StatsCollector(up))
    text = generate_latest(registry).decode()
    assert 'feedrank_updater_events_total{outcome="applied"} 1.0' in text
    assert 'feedrank_updater_events_total{outcome="duplicates"} 1.0' in text


def test_sink_recreates_its_group_when_the_streams_are_deleted(rs, tmp_path):
    client = rs.client()
    s = sink.StreamSink(client, "t:ev", str(tmp_path / "ev"), sink.EVENT_COLUMNS, consumer="s1")
    k = sink.Sink(client, [s], batch=10, flush_s=0.1, block_ms=100)
    thread = threading.Thread(target=k.run, daemon=True)
    thread.start()
    try:
        stream.publish(client, impressions(["e1", "e2"]), "t:ev")
        until(lambda: s.written == 2, what="the first part")
        client.delete("t:ev")
        stream.publish(client, impressions(["e3"]), "t:ev")
        until(lambda: s.written == 3, what="the part after the deletion")
        assert k.stats["group_recreated"] == 1
    finally:
        k.stop()
        thread.join(15)
    assert len([n for n in os.listdir(tmp_path / "ev") if sink.PART.match(n)]) == 2


def test_supervisor_restarts_an_exiting_process_and_stops_a_crash_loop():
    sup = procs.Supervisor(max_restarts=2, window_s=60, backoff_s=0.01)
    sleeper = sup.add("sleeper", subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
    quitter = [sys.executable, "-c", "pass"]
    sup.add("quitter", subprocess.Popen(quitter), lambda: subprocess.Popen(quitter))
    try:
        with pytest.raises(procs.CrashLoop, match="quitter exited with code 0 3 time"):
            sup.run(poll_s=0.02, until=lambda: False)
        assert sup.restarts("quitter") == 2 and sleeper.poll() is None
    finally:
        sup.stop_all()
    assert sleeper.poll() is not None


def http_rank(url: str) -> dict:
    body = json.dumps({"user_id": "u1", "candidates": ["a", "b"], "show": 1}).encode()
    req = urllib.request.Request(f"{url}/v1/models/feedrank:predict", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
        return json.loads(r.read())


def lasting_keys(client) -> int:
    """Keys that outlive the test: the bulk load's applied-event markers expire after 1 s, so
    a count taken while they live would exceed any count taken later."""
    names = list(client.scan_iter(count=1000))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.ttl(name)
    return sum(1 for ttl in pipe.execute() if ttl == -1 or ttl > 60)


@pytest.mark.usefixtures("serving_venv")
def test_stack_survives_redis_being_killed_and_brings_it_back_with_its_data(tmp_path):
    serving_env.require_redis()
    log_dir = H.make_log(str(tmp_path / "log"))
    predictor = FeaturePredictor("feedrank")
    port, redis_port, w = procs.free_port(), procs.free_port(), tmp_path / "w"
    stack_log = tmp_path / "stack.log"
    proc = subprocess.Popen([sys.executable, "-m", "serving.stack", "--log", log_dir,
                             "--predictor-url", predictor.url, "--redis-port", str(redis_port),
                             "--transformer-port", str(port), "--workdir", str(w)],
                            cwd=procs.REPO_ROOT, env=procs.serving_env(), stdout=subprocess.DEVNULL,
                            stderr=open(stack_log, "wb"))
    try:
        url = f"http://127.0.0.1:{port}"
        procs.wait_ready(f"{url}/v1/models/feedrank", 300, proc, str(stack_log))
        client = writer.redis_client(stream.local_redis_url(redis_port))
        keys = redis_layout.Keys()
        item = next(iter(client.hkeys(keys.items)))
        before = int(client.hget(keys.impressions, item) or 0)
        stream.publish(client, impressions(["z1"], item))
        until(lambda: int(client.hget(keys.impressions, item) or 0) == before + 1, what="the updater")
        n_keys, old_pid = lasting_keys(client), client.info("server")["process_id"]
        time.sleep(1.5)                                    # the append-only file is fsynced every second
        os.kill(old_pid, signal.SIGKILL)
        until(lambda: procs.redis_ping(redis_port) == "", 10, "Redis to be down")
        assert http_rank(url)["ranking"]                   # answered while Redis is down (degraded or not)
        until(lambda: procs.redis_ping(redis_port) == "PONG", 60, "Redis to be back")
        assert client.info("server")["process_id"] != old_pid
        assert lasting_keys(client) >= n_keys - 1 and client.exists(keys.meta)
        assert int(client.hget(keys.impressions, item)) == before + 1
        stream.publish(client, impressions(["z2"], item))   # the same updater applies new events
        until(lambda: int(client.hget(keys.impressions, item) or 0) == before + 2, 60, "the updater after")
        until(lambda: http_rank(url)["degraded"] is False, 30, "a non-degraded answer")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        predictor.stop()
    text = stack_log.read_text()
    assert "redis exited" in text and "redis started again" in text
    assert "updater exited" not in text and "transformer exited" not in text
    assert proc.returncode == 0


def test_served_log_accounts_for_every_entry_with_a_tiny_backlog(rs):
    cfg = served_log.LogConfig(events_stream="t:served", requests_stream="t:requests", timeout_s=0.5,
                               backoff_s=0.0, backlog=5)

    def batch(n):
        return [("t:served", {"event_id": f"x{k}"}) for k in range(n)]

    async def scenario():
        log = served_log.ServedLog(rs.url, cfg)
        assert await log.write(batch(3))
        rs.stop()
        for _ in range(3):
            assert not await log.write(batch(4))
        st = log.stats()
        assert (st["offered"], st["written"], st["backlog"], st["dropped_backlog_full"]) == (15, 3, 5, 7)
        rs.restart()                               # empty: only what is written from now on is there
        await log.flush_backlog()
        assert await log.write(batch(2))
        rs.stop()
        assert not await log.write(batch(1))       # kept in the backlog ...
        await log.close()                          # ... and lost at shutdown, counted
        return log.stats()

    st = asyncio.run(scenario())
    assert st["offered"] == st["written"] + st["dropped"] + st["backlog"] == 18
    assert (st["written"], st["dropped_backlog_full"], st["dropped_shutdown"], st["backlog"]) == (10, 7, 1, 0)


def test_served_log_logs_only_the_shown_posts():
    log = served_log.ServedLog("redis://127.0.0.1:1/0", served_log.LogConfig())
    imps = [{"event_id": f"r:{k}"} for k in range(5)]
    record = {"request_id": "r", "impressions": imps, "n_shown": 2, "n_candidates": 5}
    entries = log.entries(record, 200, 1.0)
    assert [f["event_id"] for s, f in entries if s == stream.DEFAULT_STREAM] == ["r:0", "r:1"]
    assert entries[-1][0] == served_log.REQUESTS_STREAM and entries[-1][1]["n_shown"] == "2"
    assert [s for s, _ in log.entries(record, 503, 1.0)] == [served_log.REQUESTS_STREAM]


def test_served_log_is_closed_at_server_shutdown():
    closed = []

    class Log:
        config = served_log.LogConfig()

        async def close(self):
            closed.append(True)

    async def app(scope, receive, send):
        assert (await receive())["type"] == "lifespan.shutdown"

    async def receive():
        return {"type": "lifespan.shutdown"}

    async def send(_message):
        pass

    asyncio.run(served_log.RequestLogMiddleware(app, Log())({"type": "lifespan"}, receive, send))
    assert closed == [True]
