"""A/B arms in the ranking endpoint, as real servers: the transformer with a
champion and a challenger predictor stand-in (different versions) on a real
Redis.  The user-hash assignment (stable, share respected), the response
fields and header, debug requests (forced arm, nothing logged), 400s for a
bad ``show``, ``context.request_id`` or ``debug``, and the served log: impressions of the shown posts in
``fr:events`` and one record per request (answered or refused) in
``fr:requests``, also while Redis is down."""
from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from feedrank.ab import assign
from serving.common import procs
from tests.helpers.redis_stack import FeaturePredictor, redis_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("serving_venv")  # skipped, or failed under make test, without it
SHARE, SALT = 0.5, "test-salt"
TS = 1_900_000_000
CANDS = [f"p{i:03d}" for i in range(8)]


def start_transformer(tmp, redis_url: str, champion: str, challenger: str = "", *extra: str):
    port = procs.free_port()
    log_path = str(tmp / f"transformer-{port}.log")
    args = ["--model-name", "feedrank", "--predictor-url", champion, "--redis", redis_url, "--prefix", "ab",
            "--http-port", str(port), "--redis-timeout-ms", "50", "--redis-backoff-s", "0.2",
            "--ab-salt", SALT, "--challenger-share", str(SHARE), *extra]
    if challenger:
        args += ["--challenger-url", challenger]
    proc = procs.start_server("serving.transformer", args, log_path)
    url = f"http://127.0.0.1:{port}"
    procs.wait_ready(f"{url}/v1/models/feedrank", 120, proc, log_path)
    return proc, url


@pytest.fixture(scope="module")
def stack(redis_server, tmp_path_factory):  # noqa: F811
    """(transformer URL, champion stand-in, challenger stand-in, Redis, tmp dir)."""
    tmp = tmp_path_factory.mktemp("ab")
    champion, challenger = FeaturePredictor("feedrank", version="7"), FeaturePredictor("feedrank", version="9")
    proc, url = start_transformer(tmp, redis_server.url, champion.url, challenger.url)
    try:
        yield url, champion, challenger, redis_server, tmp
    finally:
        procs.stop(proc)
        champion.stop()
        challenger.stop()


def post(url, body, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}/v1/models/feedrank:predict", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


def metric(url, name):
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def user_in(arm: str, start: int = 0) -> str:
    return next(f"u{i}" for i in range(start, start + 1000) if assign.arm_of(f"u{i}", SHARE, SALT) == arm)


def entries(rs, stream, request_id):
    return [f for _, f in rs.client().xrange(stream) if f.get("request_id") == request_id]


# -- assignment -------------------------------------------------------------------
def test_assignment_share_within_binomial_tolerance_and_stable():
    ids = [f"user{i}" for i in range(10_000)]
    for share in (0.1, 0.5, 0.8):
        n = sum(assign.arm_of(u, share, SALT) == assign.CHALLENGER for u in ids)
        sd = math.sqrt(len(ids) * share * (1 - share))
        assert abs(n - share * len(ids)) < 4 * sd, (share, n)
    # growing the share only moves users to the challenger; another salt reshuffles
    small = {u for u in ids if assign.arm_of(u, 0.2, SALT) == assign.CHALLENGER}
    large = {u for u in ids if assign.arm_of(u, 0.4, SALT) == assign.CHALLENGER}
    other = {u for u in ids if assign.arm_of(u, 0.2, "another") == assign.CHALLENGER}
    assert small < large and 0.15 < len(small & other) / len(small) < 0.25
    assert all(assign.arm_of(u, 0.0, SALT) == assign.CHAMPION and assign.arm_of(u, 1.0, SALT) == assign.CHALLENGER
               for u in ids[:200])
    # the contract's formula, in another process (another interpreter: no shared state)
    code = ("import sys; from feedrank.ab.assign import arm_of; "
            "print(''.join('1' if arm_of(f'user{i}', 0.5, 'test-salt') == 'challenger' else '0' "
            "for i in range(10000)))")
    other_proc = subprocess.run([procs.SERVING_PYTHON, "-c", code], capture_output=True, text=True, check=True,
                                cwd=procs.REPO_ROOT, env=procs.serving_env()).stdout.strip()
    assert other_proc == "".join("1" if assign.arm_of(u, 0.5, SALT) == assign.CHALLENGER else "0" for u in ids)
    with pytest.raises(ValueError, match="share"):
        assign.arm_of("u", 1.5, SALT)


# -- the served response --------------------------------------------------------------
def test_response_names_the_arm_and_its_predictors_version(stack):
    url, champion, challenger, _, _ = stack
    for arm, predictor, version in ((assign.CHAMPION, champion, "7"), (assign.CHALLENGER, challenger, "9")):
        before = len(predictor.requests)
        user = user_in(arm)
        status, headers, body = post(url, {"user_id": user, "candidates": CANDS, "show": 3})
        assert status == 200, body
        assert body["arm"] == arm and headers["x-feedrank-arm"] == arm
        assert body["model_version"] == version and body["shown"] == 3 and len(body["ranking"]) == len(CANDS)
        assert len(body["request_id"]) == 32 and int(body["request_id"], 16) >= 0   # a uuid4 hex
        assert len(predictor.requests) == before + 1                              # that arm's predictor
    status, _, body = post(url, {"user_id": "u1", "candidates": CANDS[:2], "show": 50})
    assert status == 200 and body["shown"] == 2                                   # show > candidates: all


def test_arm_is_sticky_per_user_across_transformer_restarts(stack):
    url, champion, challenger, rs, tmp = stack
    users = [f"sticky{i}" for i in range(24)]
    first = {u: post(url, {"user_id": u, "candidates": CANDS[:2]})[2]["arm"] for u in users}
    assert set(first.values()) == set(assign.ARMS)
    assert first == {u: assign.arm_of(u, SHARE, SALT) for u in users}
    proc, url2 = start_transformer(tmp, rs.url, champion.url, challenger.url)   # a new process
    try:
        again = {u: post(url2, {"user_id": u, "candidates": CANDS[:2]})[2]["arm"] for u in users}
    finally:
        procs.stop(proc)
    assert again == first


def test_impressions_of_the_shown_posts_land_in_the_stream(stack):
    url, _, _, rs, _ = stack
    user = user_in(assign.CHALLENGER)
    status, _, body = post(url, {"user_id": user, "candidates": CANDS, "show": 3,
                                 "context": {"ts": TS, "request_id": "req-imp-1"}})
    assert status == 200 and body["request_id"] == "req-imp-1"
    got = entries(rs, "fr:events", "req-imp-1")
    assert [e["event_id"] for e in got] == ["req-imp-1:0", "req-imp-1:1", "req-imp-1:2"]
    for pos, (e, r) in enumerate(zip(got, body["ranking"])):
        assert e == {"event_id": f"req-imp-1:{pos}", "user_id": user, "item_id": r["post_id"],
                     "event": "impression", "ts": str(TS), "request_id": "req-imp-1", "position": str(pos),
                     "arm": "challenger", "model_version": "9", "score": e["score"]}
        assert float(e["score"]) == r["score"]
    (rec,) = entries(rs, "fr:requests", "req-imp-1")
    assert {k: rec[k] for k in ("user_id", "arm", "model_version", "ts", "status", "n_candidates", "n_shown")} == {
        "user_id": user, "arm": "challenger", "model_version": "9", "ts": str(TS), "status": "200",
        "n_candidates": str(len(CANDS)), "n_shown": "3"}
    assert 0 < float(rec["latency_ms"]) < 5000


def test_debug_forces_the_arm_and_logs_nothing(stack):
    url, _, challenger, rs, _ = stack
    user = user_in(assign.CHAMPION)
    n_events, n_requests = rs.client().xlen("fr:events"), rs.client().xlen("fr:requests")
    before = len(challenger.requests)
    status, headers, body = post(url, {"user_id": user, "candidates": CANDS, "show": 4,
                                       "context": {"request_id": "req-debug"},
                                       "debug": {"arm": "challenger", "log": False}})
    assert status == 200 and body["arm"] == "challenger" and headers["x-feedrank-arm"] == "challenger"
    assert body["model_version"] == "9" and len(challenger.requests) == before + 1
    status, _, body = post(url, {"user_id": user, "candidates": CANDS, "debug": {"arm": "champion"}})
    assert status == 200 and body["arm"] == "champion"
    status, _, _ = post(url, {"user_id": user, "candidates": CANDS, "show": 0, "debug": {}})   # refused, debug
    assert status == 400
    assert (rs.client().xlen("fr:events"), rs.client().xlen("fr:requests")) == (n_events, n_requests)


@pytest.mark.parametrize("extra, words", [
    ({"show": 0}, "'show' must be a positive integer"),
    ({"show": "3"}, "'show' must be a positive integer"),
    ({"show": True}, "'show' must be a positive integer"),
    ({"show": 2.5}, "'show' must be a positive integer"),
    ({"context": {"request_id": 5}}, "'context.request_id' must be a string"),
    ({"context": {"request_id": ""}}, "'context.request_id' must be 1..256 characters"),
    ({"debug": "challenger"}, "'debug' must be an object"),
    ({"debug": {"arm": "blue"}}, "'debug.arm' must be one of ['champion', 'challenger']"),
    ({"debug": {"arm": "champion", "log": True}}, "'debug.log' cannot be true with a forced 'debug.arm'"),
    ({"debug": {"log": "no"}}, "'debug.log' must be true or false"),
    ({"debug": {"verbose": 1}}, "'debug' has unknown field(s) ['verbose']"),
])
def test_bad_new_fields_get_400_with_error(stack, extra, words):
    url = stack[0]
    status, _, body = post(url, {"user_id": "u1", "candidates": CANDS, **extra})
    assert status == 400, body
    assert words in body["error"] and "Traceback" not in body["error"]


def test_refused_requests_are_recorded(stack):
    url, _, _, rs, _ = stack
    status, _, _ = post(url, {"user_id": "u-refused", "candidates": [], "context": {"request_id": "req-400"}})
    assert status == 400
    (rec,) = entries(rs, "fr:requests", "req-400")
    assert rec["status"] == "400" and rec["user_id"] == "u-refused" and rec["arm"] == "" and rec["n_shown"] == "0"
    assert entries(rs, "fr:events", "req-400") == []
    n = rs.client().xlen("fr:requests")
    status, _, _ = post(url, None, raw=b"{not json")          # refused before the model runs
    assert status == 400
    last = rs.client().xrevrange("fr:requests", count=1)[0][1]
    assert rs.client().xlen("fr:requests") == n + 1 and last["status"] == "400" and last["user_id"] == ""


def test_without_a_challenger_everybody_is_champion_and_a_dead_predictor_is_recorded(stack):
    url, champion, _, rs, tmp = stack
    dead = f"http://127.0.0.1:{procs.free_port()}"
    proc, url1 = start_transformer(tmp, rs.url, champion.url, "", "--show", "2", "--max-body-bytes", "3000")
    try:
        arms = {post(url1, {"user_id": f"solo{i}", "candidates": CANDS})[2]["arm"] for i in range(10)}
        assert arms == {"champion"}
        status, _, body = post(url1, {"user_id": "u1", "candidates": CANDS, "context": {"request_id": "req-solo"}})
        assert body["shown"] == 2 and len(entries(rs, "fr:events", "req-solo")) == 2   # --show default
        status, _, body = post(url1, {"user_id": "u1", "candidates": CANDS, "debug": {"arm": "challenger"}})
        assert status == 400 and "no challenger predictor" in body["error"]
        status, _, _ = post(url1, {"user_id": "u1", "candidates": CANDS, "pad": "x" * 4000})
        assert status == 413                                       # refused by the size guard: recorded too
        last = rs.client().xrevrange("fr:requests", count=1)[0][1]
        assert last["status"] == "413" and last["user_id"] == "" and float(last["latency_ms"]) > 0
    finally:
        procs.stop(proc)
    proc, url2 = start_transformer(tmp, rs.url, champion.url, dead)
    try:
        status, _, body = post(url2, {"user_id": user_in(assign.CHALLENGER), "candidates": CANDS,
                                      "context": {"request_id": "req-dead"}})
        assert status == 503 and "predictor unavailable" in body["error"]
    finally:
        procs.stop(proc)
    (rec,) = entries(rs, "fr:requests", "req-dead")
    assert rec["status"] == "503" and rec["arm"] == "challenger" and rec["n_shown"] == "0"
    assert entries(rs, "fr:events", "req-dead") == []


def test_redis_down_answers_counts_and_writes_the_backlog_later(stack):
    url, _, _, rs, _ = stack
    before = metric(url, "feedrank_served_log_failures_total")
    rs.stop()
    try:
        for i in range(3):
            status, headers, body = post(url, {"user_id": "u-down", "candidates": CANDS, "show": 2,
                                               "context": {"request_id": f"req-down-{i}"}})
            assert status == 200 and headers.get("x-feedrank-degraded") == "redis", body
        assert metric(url, "feedrank_served_log_failures_total") >= before + 1
        assert metric(url, "feedrank_served_log_backlog") >= 9      # 3 x (2 impressions + 1 record)
    finally:
        rs.restart()                                               # empty: no persistence
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and rs.client().xlen("fr:requests") < 3:
        time.sleep(0.2)                                            # the background flush
    for i in range(3):
        assert len(entries(rs, "fr:events", f"req-down-{i}")) == 2
        assert len(entries(rs, "fr:requests", f"req-down-{i}")) == 1
    assert metric(url, "feedrank_served_log_backlog") == 0
