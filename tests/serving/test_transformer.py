"""The transformer (ranking API) as a real server: features from a real
Redis seeded by the bulk loader, a stand-in v1 predictor that scores from the
features it receives, bad requests, cold start / OOV metrics and the
Redis-down and Redis-slow degrade."""
from __future__ import annotations

import gzip
import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from feedrank import features as F
from serving.common import procs
from serving.features import bootstrap, online, redis_layout, user_state
from tests.helpers import examplegen as H
from tests.helpers.redis_stack import FeaturePredictor, redis_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("serving_venv")  # skipped, or failed under make test, without it
MAX_CANDIDATES = 150


@pytest.fixture(scope="module")
def stack(redis_server, tmp_path_factory):  # noqa: F811
    """(transformer URL, predictor stand-in, Redis, log dir)."""
    tmp = tmp_path_factory.mktemp("transformer")
    log_dir = H.make_log(str(tmp / "log"))
    bootstrap.bootstrap(redis_server.client(), log_dir, redis_layout.Keys("tr"), force=True)
    predictor = FeaturePredictor("feedrank", version="7")
    port = procs.free_port()
    log_path = str(tmp / "transformer.log")
    proc = procs.start_server("serving.transformer", [
        "--model-name", "feedrank", "--predictor-url", predictor.url, "--redis", redis_server.url,
        "--prefix", "tr", "--http-port", str(port), "--redis-timeout-ms", "50",
        "--redis-backoff-s", "0.2", "--max-candidates", str(MAX_CANDIDATES),
        "--max-body-bytes", "100000"], log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        procs.wait_ready(f"{url}/v1/models/feedrank", 120, proc, log_path)
        yield url, predictor, redis_server, log_dir
    finally:
        procs.stop(proc)
        predictor.stop()


def post(url, body, raw=None, headers=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}/v1/models/feedrank:predict", data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


def metric(url, name):
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def _active_user(log_dir):
    ev = H.load(log_dir)
    clicks = ev[ev.event == "click"]
    return clicks.user_id.value_counts().index[0], list(H.load(log_dir, "items").item_id[:40])


def test_ranks_with_redis_features(stack):
    url, predictor, rs, log_dir = stack
    user, items = _active_user(log_dir)
    cands = items[:30] + ["no_such_post"]
    status, headers, body = post(url, {"user_id": user, "candidates": cands, "context": {"ts": 2_000_000_000}})
    assert status == 200, body
    assert body["model_name"] == "feedrank" and body["model_version"] == "7"
    assert "x-feedrank-degraded" not in headers and body["degraded"] is False
    ranked = [r["post_id"] for r in body["ranking"]]
    scores = [r["score"] for r in body["ranking"]]
    assert sorted(ranked) == sorted(cands) and scores == sorted(scores, reverse=True)
    # what the predictor received: the user's side once, candidates as lists
    sent = predictor.requests[-1]["inputs"]
    pipe = rs.client().pipeline()
    online.queue_reads(pipe, redis_layout.Keys("tr"), user, cands, 2_000_000_000)
    state, imp, clk = online.parse_reads(pipe.execute(), 2_000_000_000)
    assert sent[F.CLICK_ITEMS.name] == [state.channels["click"][-F.CLICK_LEN:]] and state.channels["click"]
    assert sent[F.USER_REGION_ID.name] == [state.region] and state.region
    assert sent[F.ITEM_ID.name] == cands and sent[F.ITEM_HIST_IMPRESSIONS.name] == imp
    assert sent[F.ITEM_HIST_CTR.name] == [F.smoothed_ctr(c, i) for c, i in zip(clk, imp)]
    assert sent[F.CATEGORY_ID.name][-1] == "" and sent[F.PRICE.name][-1] == F.PRICE.default   # OOV post
    assert all(sent[F.CATEGORY_ID.name][:-1])
    # user counters once, the per-category ones and session/recency per candidate
    assert sent[F.USER_HIST_IMPRESSIONS.name] == [float(state.counters["imp"])] and state.counters["imp"]
    for d in F.BUILTIN.request_dense("candidate"):
        assert len(sent[d.name]) == len(cands), d.name
    cross = user_state.cross_features(state.counters, state.session, 2_000_000_000, sent[F.CATEGORY_ID.name])
    assert all(sent[name] == values for name, values in cross.items())
    assert sent[F.CATEGORY_RECENCY_H.name][-1] == F.RECENCY_CAP_H          # OOV post: no category
    assert metric(url, "feedrank_oov_candidates_total") >= 1


def test_cold_start_user(stack):
    url, predictor, _, _ = stack
    before = metric(url, "feedrank_cold_start_total")
    status, _, body = post(url, {"user_id": "never_seen", "candidates": ["i000001", "i000002"],
                                 "context": {"user_region_id": "r01"}})
    assert status == 200, body
    sent = predictor.requests[-1]["inputs"]
    assert sent[F.CLICK_ITEMS.name] == [[""]] and sent[F.USER_REGION_ID.name] == ["r01"]
    assert metric(url, "feedrank_cold_start_total") == before + 1


def test_gzip_request(stack):
    url, _, _, log_dir = stack
    user, items = _active_user(log_dir)
    raw = gzip.compress(json.dumps({"user_id": user, "candidates": items[:5]}).encode())
    status, _, body = post(url, None, raw=raw, headers={"Content-Encoding": "gzip"})
    assert status == 200 and len(body["ranking"]) == 5


@pytest.mark.parametrize("raw, status, words", [
    (b"{not json", 400, "Unrecognized request format"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (json.dumps({"candidates": ["a"]}).encode(), 400, "missing field 'user_id'"),
    (json.dumps({"user_id": "u"}).encode(), 400, "missing field 'candidates'"),
    (json.dumps({"user_id": 5, "candidates": ["a"]}).encode(), 400, "'user_id' must be a string"),
    (json.dumps({"user_id": "u", "candidates": "a,b"}).encode(), 400, "'candidates' must be a list"),
    (json.dumps({"user_id": "u", "candidates": ["a", 3]}).encode(), 400, "'candidates[1]' must be a string"),
    (json.dumps({"user_id": "u", "candidates": []}).encode(), 400, "'candidates' is empty"),
    (json.dumps({"user_id": "u", "candidates": ["a"], "context": 3}).encode(), 400, "'context' must be"),
    (json.dumps({"user_id": "u", "candidates": ["a"], "context": {"ts": "now"}}).encode(), 400, "'context.ts'"),
    (json.dumps({"user_id": "u", "candidates": [f"p{i}" for i in range(MAX_CANDIDATES + 1)]}).encode(),
     400, f"too many candidates: {MAX_CANDIDATES + 1} > the limit of {MAX_CANDIDATES}"),
    (json.dumps({"user_id": "u", "candidates": ["x" * 200] * 140, "pad": "y" * 80000}).encode(), 413, "limit"),
])
def test_bad_requests_get_4xx_with_error(stack, raw, status, words):
    url = stack[0]
    got, _, body = post(url, None, raw=raw)
    assert got == status, body
    assert words in body["error"] and "Traceback" not in body["error"]


def test_slow_redis_degrades_within_the_timeout(stack):
    url, _, rs, log_dir = stack
    user, items = _active_user(log_dir)
    before = metric(url, "feedrank_degraded_total")
    sleeper = threading.Thread(target=lambda: rs.client().execute_command("DEBUG", "SLEEP", "1.0"))
    sleeper.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    status, headers, body = post(url, {"user_id": user, "candidates": items[:10]})
    elapsed = time.monotonic() - t0
    sleeper.join()
    assert status == 200 and headers.get("x-feedrank-degraded") == "redis" and body["degraded"] is True
    assert elapsed < 0.8, elapsed
    assert metric(url, "feedrank_degraded_total") == before + 1
    time.sleep(0.3)                                   # past the back-off: Redis is used again
    status, headers, _ = post(url, {"user_id": user, "candidates": items[:10]})
    assert status == 200 and "x-feedrank-degraded" not in headers


def test_redis_down_degrades_and_recovers(stack):
    url, predictor, rs, log_dir = stack
    user, items = _active_user(log_dir)
    rs.stop()
    try:
        for _ in range(3):
            status, headers, body = post(url, {"user_id": user, "candidates": items[:10]})
            assert status == 200, body
            assert headers.get("x-feedrank-degraded") == "redis" and len(body["ranking"]) == 10
        sent = predictor.requests[-1]["inputs"]
        assert sent[F.CLICK_ITEMS.name] == [[""]] and sent[F.CATEGORY_ID.name][0]   # attributes kept
    finally:
        rs.restart()
    time.sleep(0.3)
    status, headers, _ = post(url, {"user_id": user, "candidates": items[:10]})
    assert status == 200 and "x-feedrank-degraded" not in headers
