"""The log sink (serving.features.sink) against a real redis-server, as a real
subprocess: contract-typed parts, exactly once across kill -9 and restarts
while a producer keeps writing, a crash between a part's rename and its
acknowledgement, another consumer's pending entries, and the whole loop with
the transformer (events served = events logged)."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pyarrow.parquet as pq
import pytest

from feedrank.events import contract, io, stream
from serving.common import procs
from serving.features import sink
from tests.helpers.redis_stack import FeaturePredictor, redis_server  # noqa: F401 (fixture)


def start_sink(rs, events_dir, requests_dir, log_path, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "serving.features.sink", "--redis", rs.url, "--events-dir", str(events_dir),
         "--requests-dir", str(requests_dir), *extra],
        cwd=procs.REPO_ROOT, env=procs.serving_env(), stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)


def read_parts(out_dir):
    paths = sorted(glob.glob(os.path.join(str(out_dir), "part-*.parquet")))
    rows = [r for p in paths for r in pq.read_table(p).to_pylist()]
    return paths, rows


def impression(i: int, request_id: str = "r") -> dict:
    return stream.entry_fields({"event_id": f"{request_id}{i // 5}:{i % 5}", "user_id": f"u{i % 17}",
                                "item_id": f"p{i % 31}", "event": "impression", "ts": 1_800_000_000 + i,
                                "request_id": f"{request_id}{i // 5}", "position": i % 5, "arm": "champion",
                                "model_version": "7", "score": 0.5})


def drained(c) -> bool:
    """The sink's group has read and acknowledged every entry of both streams."""
    groups = [g for n in (stream.DEFAULT_STREAM, sink.REQUESTS_STREAM) for g in c.xinfo_groups(n)
              if g["name"] == sink.GROUP]
    return len(groups) == 2 and all(g["pending"] == 0 and g["lag"] == 0 for g in groups)


def fresh_streams(rs):
    c = rs.client()
    c.delete(stream.DEFAULT_STREAM, sink.REQUESTS_STREAM)
    return c


def test_parts_have_the_contract_columns_and_types(redis_server, tmp_path):  # noqa: F811
    c = fresh_streams(redis_server)
    c.xadd(stream.DEFAULT_STREAM, impression(0))
    c.xadd(stream.DEFAULT_STREAM, stream.entry_fields({"event_id": "c1", "user_id": "u0", "item_id": "p0",
                                                       "event": "click", "ts": 1_800_000_001, "request_id": "r0"}))
    c.xadd(stream.DEFAULT_STREAM, {"event_id": "bad", "user_id": "u0", "item_id": "p0", "event": "click",
                                   "ts": "not-a-time"})
    c.xadd(sink.REQUESTS_STREAM, {"request_id": "r0", "user_id": "u0", "arm": "champion", "model_version": "7",
                                  "ts": "1800000000", "latency_ms": "3.25", "status": "200",
                                  "n_candidates": "20", "n_shown": "5"})
    c.xadd(sink.REQUESTS_STREAM, {"request_id": "r1", "user_id": "", "arm": "", "model_version": "",
                                  "ts": "1800000002", "latency_ms": "0.4", "status": "400",
                                  "n_candidates": "0", "n_shown": "0"})
    proc = start_sink(redis_server, tmp_path / "events", tmp_path / "requests", tmp_path / "sink.log",
                      "--idle-exit-s", "1", "--flush-s", "0.2")
    assert proc.wait(60) == 0, (tmp_path / "sink.log").read_text()
    (path,), rows = read_parts(tmp_path / "events")
    schema = pq.read_schema(path)
    assert schema.names == list(contract.EVENT_COLUMNS)
    assert [str(t) for t in schema.types] == [{"string": "string", "int64": "int64", "float64": "double"}[k]
                                              for k, _ in contract.EVENT_COLUMNS.values()]
    assert rows[0] == {"event_id": "r0:0", "user_id": "u0", "item_id": "p0", "event": "impression",
                       "ts": 1_800_000_000, "request_id": "r0", "query": "", "dwell_s": None, "position": 0,
                       "arm": "champion", "model_version": "7", "score": 0.5, "session_id": ""}
    assert rows[1]["position"] is None and rows[1]["arm"] == "" and rows[2]["ts"] is None   # kept, quarantined later
    io.check_table(str(tmp_path), contract.EVENTS)                # a log directory's events table
    first, last = c.xrange(stream.DEFAULT_STREAM)[0][0], c.xrange(stream.DEFAULT_STREAM)[-1][0]
    assert os.path.basename(path) == f"part-{first}-{last}.parquet"
    (rpath,), reqs = read_parts(tmp_path / "requests")
    assert pq.read_schema(rpath).names == list(sink.REQUEST_COLUMNS)
    assert reqs[0] == {"request_id": "r0", "user_id": "u0", "arm": "champion", "model_version": "7",
                       "ts": 1_800_000_000, "latency_ms": 3.25, "status": 200, "n_candidates": 20, "n_shown": 5}
    assert reqs[1]["status"] == 400
    for name in (stream.DEFAULT_STREAM, sink.REQUESTS_STREAM):
        assert c.xpending(name, sink.GROUP)["pending"] == 0


def test_exactly_once_across_kill_9_and_restarts(redis_server, tmp_path):  # noqa: F811
    c = fresh_streams(redis_server)
    n_total, done = 12_000, threading.Event()

    def produce():
        pc = redis_server.client()
        for start in range(0, n_total, 300):
            pipe = pc.pipeline(transaction=False)
            for i in range(start, start + 300):
                pipe.xadd(stream.DEFAULT_STREAM, impression(i))
            pipe.xadd(sink.REQUESTS_STREAM, {"request_id": f"batch{start}", "status": "200", "ts": "1800000000"})
            pipe.execute()
            time.sleep(0.03)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    args = ("--batch", "700", "--flush-s", "0.1", "--block-ms", "50")
    kills = 0
    try:
        for delay in (0.4, 0.25, 0.6, 0.15):
            proc = start_sink(redis_server, tmp_path / "events", tmp_path / "requests", tmp_path / "sink.log", *args)
            time.sleep(delay + 0.8)          # start-up, then some parts
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
    finally:
        producer.join()
    assert done.is_set() and kills == 4
    paths_before, _ = read_parts(tmp_path / "events")
    assert paths_before, (tmp_path / "sink.log").read_text()[-2000:]      # the killed sinks wrote parts
    proc = start_sink(redis_server, tmp_path / "events", tmp_path / "requests", tmp_path / "sink.log",
                      *args, "--idle-exit-s", "1.5")
    assert proc.wait(120) == 0, (tmp_path / "sink.log").read_text()[-3000:]
    _, rows = read_parts(tmp_path / "events")
    ids = [r["event_id"] for r in rows]
    assert len(ids) == n_total and set(ids) == {impression(i)["event_id"] for i in range(n_total)}
    _, reqs = read_parts(tmp_path / "requests")
    assert sorted(r["request_id"] for r in reqs) == sorted(f"batch{s}" for s in range(0, n_total, 300))
    assert c.xpending(stream.DEFAULT_STREAM, sink.GROUP)["pending"] == 0
    assert not [n for n in os.listdir(tmp_path / "events") if n.endswith(".tmp")]


def test_crash_after_rename_before_ack_and_another_consumers_pending(redis_server, tmp_path):  # noqa: F811
    c = fresh_streams(redis_server)
    for i in range(50):
        c.xadd(stream.DEFAULT_STREAM, impression(i))
    out = tmp_path / "events"
    s = sink.StreamSink(c, stream.DEFAULT_STREAM, str(out), sink.EVENT_COLUMNS, consumer="sink-a")
    s.read_pending(100)
    s.pending_cursor = None
    got = c.xreadgroup(sink.GROUP, "sink-a", {stream.DEFAULT_STREAM: ">"}, count=30)[0][1]
    s.add(got)
    ids = [e for e, _ in s.buffer]
    sink.write_part(str(out), ids[0], ids[-1], sink.to_table([f for _, f in s.buffer], sink.EVENT_COLUMNS))
    # crash here: renamed, not acknowledged; 20 more entries read by another consumer, never written
    c.xreadgroup(sink.GROUP, "sink-b", {stream.DEFAULT_STREAM: ">"}, count=20)
    (out / ".part-1-1.parquet.tmp").write_bytes(b"half a part")
    assert c.xpending(stream.DEFAULT_STREAM, sink.GROUP)["pending"] == 50
    again = sink.StreamSink(c, stream.DEFAULT_STREAM, str(out), sink.EVENT_COLUMNS, consumer="sink-a")
    sink.Sink(c, [again], batch=100, flush_s=0.05, block_ms=20).run(idle_exit_s=0.3)
    _, rows = read_parts(out)
    assert sorted(r["event_id"] for r in rows) == sorted(impression(i)["event_id"] for i in range(50))
    assert again.skipped == 30 and again.written == 20
    assert c.xpending(stream.DEFAULT_STREAM, sink.GROUP)["pending"] == 0
    assert not (out / ".part-1-1.parquet.tmp").exists()


@pytest.mark.usefixtures("serving_venv")
def test_events_served_equal_events_logged(redis_server, tmp_path):  # noqa: F811
    c = fresh_streams(redis_server)
    predictor = FeaturePredictor("feedrank", version="3")
    port = procs.free_port()
    t_log = str(tmp_path / "transformer.log")
    transformer = procs.start_server("serving.transformer", [
        "--model-name", "feedrank", "--predictor-url", predictor.url, "--challenger-url", predictor.url,
        "--redis", redis_server.url, "--prefix", "sk", "--http-port", str(port), "--redis-timeout-ms", "50"], t_log)
    sink_proc = start_sink(redis_server, tmp_path / "events", tmp_path / "requests", tmp_path / "sink.log",
                           "--flush-s", "0.2")
    served, request_ids = set(), []
    try:
        url = f"http://127.0.0.1:{port}"
        procs.wait_ready(f"{url}/v1/models/feedrank", 120, transformer, t_log)
        for i in range(40):
            body = {"user_id": f"u{i}", "candidates": [f"p{j}" for j in range(10)], "show": 1 + i % 6}
            req = urllib.request.Request(f"{url}/v1/models/feedrank:predict", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=30) as r:
                out = json.loads(r.read())
            served |= {(out["request_id"], p, x["post_id"], out["arm"])
                       for p, x in enumerate(out["ranking"][:out["shown"]])}
            request_ids.append(out["request_id"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not drained(c):
            time.sleep(0.2)
        sink_proc.send_signal(signal.SIGTERM)
        assert sink_proc.wait(30) == 0, (tmp_path / "sink.log").read_text()[-2000:]
    finally:
        procs.stop(transformer)
        procs.stop(sink_proc)
        predictor.stop()
    _, rows = read_parts(tmp_path / "events")
    logged = [(r["request_id"], r["position"], r["item_id"], r["arm"]) for r in rows]
    assert len(logged) == len(set(logged)) == len(served) and set(logged) == served
    assert {r["arm"] for r in rows} == {"champion", "challenger"}
    _, reqs = read_parts(tmp_path / "requests")
    assert sorted(r["request_id"] for r in reqs) == sorted(request_ids)
    assert all(r["status"] == 200 and r["latency_ms"] > 0 for r in reqs)
