"""The session endpoint as a real server (``python -m serving.sessions`` in the
serving environment) on a real redis-server: a session replayed page by page gives
the offline model's top-k on the same prefixes, the 30-minute timeout and new
session ids, the purchase history across sessions, bad input (4xx with an error),
the stream updater sharing the state without counting twice, and Redis down."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Dict, List, Tuple

import numpy as np
import pytest

from feedrank.events import contract
from feedrank.sessions import random_model, sessionize
from serving.common import procs
from tests.helpers.redis_stack import redis_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("serving_venv")  # skipped, or failed under make test, without it
K = 5
NAME = "session"
T0 = 1_750_000_000
PAGES = ["x0"] + [f"c{i}" for i in range(6)] + [f"i{i:03d}" for i in range(30)]
ITEMS = [f"i{i:03d}" for i in range(30)]
TINY_DRNN = {"width": 3, "length": 2, "units": 16, "page_dim": 8, "fnn_dim": 8, "fnn_units": [16], "height": 1}


# --------------------------------------------------------------------------- the model
def build_raw_model(path: str):
    """The tiny DRNN (`TINY_DRNN`, random weights) in the endpoint's raw-id form, top-`K`:
    ``(keras model, catalogue vocabulary, item mask)``."""
    return random_model.export_random_raw(path, PAGES, ITEMS, TINY_DRNN, k=K)


def offline_top_k(model, vocab, item_mask, events: List[sessionize.Event], k: int = K):
    """The offline answer after every event of a user's events: the sessions
    (`sessionize.split_sessions`), the purchase history of the earlier sessions
    (`samples.user_samples`' rule), the session's page views so far with their
    `sessionize.page_dwell` (the current page's dwell: a view's own ``dwell_s``, an
    add-to-cart's time since the last view), the model inputs of `drnn.from_samples`,
    the top k of `export.top_k`.  -> [(items, scores)], one per event in session order."""
    from feedrank.sessions import drnn, export
    from feedrank.sessions import features as SF

    rows, history = [], []
    for part in sessionize.split_sessions(events):
        views: List[sessionize.Event] = []
        for e in part:
            if e.event == contract.VIEW:
                views.append(e)
                current = e.dwell_s if np.isfinite(e.dwell_s) else 0.0
            else:
                current = float(e.ts - views[-1].ts)
            rows.append({SF.USER_ID: e.user_id, SF.HISTORY_PAGES: [], SF.HISTORY_DWELL: [],
                         SF.RECENT_PAGES: [v.item_id for v in views],
                         SF.RECENT_DWELL: sessionize.page_dwell([v.ts for v in views], current),
                         SF.PURCHASE_HISTORY: list(history[-SF.DEFAULT_MAX_PURCHASE_HISTORY:]),
                         SF.LABEL_ITEMS: [ITEMS[0]]})
        history += [e.item_id for e in part if e.event == contract.PURCHASE]
    x, _, _, _ = drnn.from_samples(rows, vocab, item_mask=item_mask)
    out = export.top_k(model, x, k)
    names = np.asarray([""] + list(vocab) + [""])
    return [(list(names[r]), list(s)) for r, s in zip(out["items"].numpy(), out["scores"].numpy())]


# --------------------------------------------------------------------------- the server
_MODEL_DIRS: Dict[str, str] = {}   # endpoint URL -> the model version it serves
@pytest.fixture(scope="module")
def endpoint(redis_server, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("sessions")
    model_dir = tmp / "model_store" / "session"
    model, pv, iv = build_raw_model(str(model_dir / "3"))
    port = procs.free_port()
    log_path = str(tmp / "sessions.log")
    proc = procs.start_server("serving.sessions", [
        "--model-dir", str(model_dir), "--redis", redis_server.url, "--prefix", "st",
        "--http-port", str(port), "--redis-timeout-ms", "200", "--redis-backoff-s", "0.3",
        "--max-body-bytes", "20000"], log_path)
    url = f"http://127.0.0.1:{port}"
    _MODEL_DIRS[url] = str(model_dir / "3")
    try:
        procs.wait_ready(f"{url}/v1/models/{NAME}", 180, proc, log_path)
        yield url, (model, pv, iv), redis_server
    finally:
        procs.stop(proc)


def post(url: str, body=None, raw: bytes = None) -> Tuple[int, Dict, Dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}/v1/models/{NAME}:predict", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


def view(user: str, page: str, ts: int, dwell: float = 5.0, **extra) -> Dict:
    return {"user_id": user, "event": {"page_id": page, "ts": ts, "dwell_s": dwell, **extra}}


def cart(user: str, item: str, ts: int, **extra) -> Dict:
    return {"user_id": user, "event": {"type": "purchase", "item_id": item, "ts": ts, **extra}}


def as_event(body: Dict) -> sessionize.Event:
    e = body["event"]
    kind = e.get("type", contract.VIEW)
    return sessionize.Event(e["event_id"], body["user_id"], e.get("page_id") or e["item_id"], kind, e["ts"],
                            e.get("dwell_s", float("nan")), e.get("session_id", ""))


# --------------------------------------------------------------------------- tests
def test_replayed_sessions_match_the_offline_model(endpoint):
    """Three sessions (a 29-minute pause inside the first, a 31-minute pause, then another
    session id 2 minutes later), add-to-carts 3 s after their page in the first two: after
    every page view and add-to-cart the endpoint's top-k is the offline model's on the same
    prefix, with the same page dwell (`sessionize.page_dwell`), purchase history included."""
    url, (model, pv, iv), _ = endpoint
    rng = np.random.default_rng(3)
    user, ts, bodies = "replay-user", T0, []
    plan = [(None, 8, [5]), (31 * 60, 6, [2, 4]), (2 * 60, 7, [])]   # (pause before, pages, carts after page #)
    sid = [{}, {"session_id": "app-s2"}, {"session_id": "app-s3"}]
    for s, (pause, n_pages, carts) in enumerate(plan):
        ts += pause or 0
        for p in range(n_pages):
            if p:
                ts += 29 * 60 if (s == 0 and p == 3) else int(rng.integers(5, 90))
            page = PAGES[int(rng.integers(0, len(PAGES)))]
            bodies.append(view(user, page, ts, round(float(rng.uniform(0, 120)), 2),
                               event_id=f"r{s}-{p}", **sid[s]))
            if p in carts:
                bodies.append(cart(user, ITEMS[int(rng.integers(0, len(ITEMS)))], ts + 3, event_id=f"r{s}-{p}-c",
                                   **sid[s]))   # the next page comes 5 s or more after ts
    served, answers = [], []
    for b in bodies:
        status, headers, body = post(url, b)
        assert status == 200, body
        assert body["degraded"] is False and headers["x-model-version"] == "3" == body["model_version"]
        answers.append(body)
        if b["event"].get("type", "view") == "view":
            served.append(body)
    expected = offline_top_k(model, pv, iv, [as_event(b) for b in bodies])
    assert len(served) == 21 and len(answers) == len(expected) == 24
    for i, (body, (items, scores)) in enumerate(zip(answers, expected)):
        assert [r["item_id"] for r in body["items"]] == items, i
        np.testing.assert_allclose([r["score"] for r in body["items"]], scores, rtol=1e-4, atol=1e-6)
    assert len({tuple(r["item_id"] for r in b["items"]) for b in served}) > 3   # the top k moves
    outcomes = [b["event"] for b in served]
    assert outcomes.count("new_session") == 3 and outcomes[0] == "new_session"
    assert served[3]["event"] == "applied" and served[3]["pages"] == 4          # 29 min: same session
    assert served[8]["event"] == "new_session" and served[8]["pages"] == 1      # 31 min: new session
    assert served[14]["event"] == "new_session" and served[14]["session_id"] == "app-s3"   # new id
    assert served[0]["session_id"] == f"{user}:{T0}" and served[8]["session_id"] == "app-s2"


def test_model_called_in_threads_answers_as_on_the_event_loop(endpoint, tmp_path):
    """``--threads 2`` (the model in a thread pool) serves the answers of the default, where the
    model is called on the event loop: the same items and scores for one session."""
    url, _, redis_srv = endpoint
    port = procs.free_port()
    log_path = str(tmp_path / "threads.log")
    model_dir = os.path.dirname(_MODEL_DIRS[url])
    proc = procs.start_server("serving.sessions", [
        "--model-dir", model_dir, "--redis", redis_srv.url, "--prefix", "st-threads",
        "--http-port", str(port), "--threads", "2"], log_path)
    threaded = f"http://127.0.0.1:{port}"
    try:
        procs.wait_ready(f"{threaded}/v1/models/{NAME}", 180, proc, log_path)
        for i, page in enumerate(PAGES[:5] + [ITEMS[1]]):
            body = view("threads-user", page, T0 + 40 * i, 3.0 + i, event_id=f"th-{i}")
            (s1, _, inline), (s2, _, pooled) = post(url, body), post(threaded, body)
            assert s1 == s2 == 200 and inline["pages"] == pooled["pages"] == i + 1
            assert [r["item_id"] for r in inline["items"]] == [r["item_id"] for r in pooled["items"]]
            np.testing.assert_allclose([r["score"] for r in inline["items"]], [r["score"] for r in pooled["items"]],
                                       rtol=1e-6)
    finally:
        procs.stop(proc)


def test_timeout_and_session_id_rules(endpoint):
    url = endpoint[0]
    u = "timeout-user"
    assert post(url, view(u, "x0", T0))[2]["event"] == "new_session"
    assert post(url, view(u, "c1", T0 + 29 * 60))[2]["event"] == "applied"
    _, _, b = post(url, view(u, "c2", T0 + 29 * 60 + 31 * 60))
    assert b["event"] == "new_session" and b["pages"] == 1 and b["session_id"] == f"{u}:{T0 + 60 * 60}"
    # a second under the gap and exactly the gap keep the session, a second over ends it
    # (sessionize's rule)
    assert post(url, view(u, "c3", T0 + 60 * 60 + 1799))[2]["pages"] == 2
    assert post(url, view(u, "c4", T0 + 60 * 60 + 1799 + 1800))[2]["pages"] == 3
    _, _, b = post(url, view(u, "c5", T0 + 60 * 60 + 1799 + 1800 + 1801))
    assert b["event"] == "new_session" and b["pages"] == 1
    # a new session id starts a session at once; the same id continues it
    t = T0 + 20_000
    assert post(url, view(u, "c1", t, session_id="a"))[2]["event"] == "new_session"
    assert post(url, view(u, "c2", t + 5, session_id="a"))[2]["pages"] == 2
    _, _, b = post(url, view(u, "c3", t + 10, session_id="b"))
    assert b["event"] == "new_session" and b["session_id"] == "b" and b["pages"] == 1
    # a late event of the closed session is left out; a retried event counts once
    assert post(url, view(u, "c5", t + 1, session_id="a"))[2]["event"] == "late"
    again = view(u, "i001", t + 20, session_id="b", event_id="dup-1")
    assert post(url, again)[2]["pages"] == 2
    _, _, b = post(url, again)
    assert b["event"] == "duplicate" and b["pages"] == 2
    # k below the model's
    _, _, b = post(url, {**view(u, "i002", t + 30, session_id="b"), "k": 2})
    assert len(b["items"]) == 2 and b["pages"] == 3


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "Unrecognized request format"),
    (b"[1]", 400, "must be a JSON object"),
    ({"event": {"page_id": "x0", "ts": T0}}, 400, "missing field 'user_id'"),
    ({"user_id": "u"}, 400, "missing field 'event'"),
    ({"user_id": 7, "event": {"page_id": "x0"}}, 400, "'user_id' must be a string"),
    ({"user_id": "", "event": {"page_id": "x0"}}, 400, "'user_id' must be 1..256"),
    ({"user_id": "u", "event": {"page_id": "x0", "ts": "yesterday"}}, 400, "'event.ts' (unix seconds) must be"),
    ({"user_id": "u", "event": {"page_id": "x0", "ts": -5}}, 400, "non-negative unix seconds"),
    ({"user_id": "u", "event": {"type": "click", "page_id": "x0"}}, 400, "'event.type' must be one of"),
    ({"user_id": "u", "event": {"page_id": "x0", "dwell_s": "long"}}, 400, "'event.dwell_s' (seconds) must be"),
    ({"user_id": "u", "event": {"page_id": "x0", "dwell_s": -1}}, 400, "must be >= 0"),
    ({"user_id": "u", "event": {"ts": T0}}, 400, "'event.page_id' must be a string"),
    ({"user_id": "u", "event": {"type": "purchase", "page_id": "x0"}}, 400, "'event.item_id'"),
    ({"user_id": "u", "event": {"page_id": "x0", "dwell": 3}}, 400, "unknown field(s) ['dwell']"),
    ({"user_id": "u", "event": "x0"}, 400, "'event' must be an object"),
    ({"user_id": "u", "event": {"page_id": "x0"}, "k": 99}, 400, f"'k' must be an integer in [1, {K}]"),
    ({"user_id": "u", "event": {"page_id": "x0", "pad": "y" * 30000}}, 413, "limit"),
])
def test_bad_input_gets_4xx_with_error(endpoint, body, status, words):
    got, _, answer = post(endpoint[0], raw=body if isinstance(body, bytes) else json.dumps(body).encode())
    assert got == status, answer
    assert words in answer["error"] and "Traceback" not in answer["error"]


def test_stream_updater_shares_the_state_without_counting_twice(endpoint):
    """The endpoint writes each event to fr:events; the updater skips those (seen by id)
    and applies what other channels sent (an add-to-cart from the app's backend)."""
    import redis

    from feedrank.events import stream
    from serving.sessions import state as st
    from serving.sessions.updater import SessionUpdater

    url, _, rs = endpoint
    client = redis.Redis.from_url(rs.url, decode_responses=True)
    source = stream.RedisStreamSource(client, "fr:events", "test-sessions", "t1", start_id="$")
    u = "stream-user"
    for i, page in enumerate(["x0", "c1", "i003"]):
        assert post(url, view(u, page, T0 + 10 * i, event_id=f"s-{i}"))[0] == 200
    logged = [f for _, f in client.xrange("fr:events") if f["user_id"] == u]
    assert [f["item_id"] for f in logged] == ["x0", "c1", "i003"] and logged[0]["event"] == "view"
    stream.publish(client, [{"event_id": "backend-1", "user_id": u, "item_id": "i003", "event": "purchase",
                             "ts": T0 + 25, "session_id": ""},
                            {"event_id": "imp-1", "user_id": u, "item_id": "i003", "event": "impression",
                             "ts": T0 + 26}])
    up = SessionUpdater(source, client, st.Keys("st"), st.StateConfig(), block_ms=10)
    while up.step():
        pass
    assert up.stats["duplicate"] == 3 and up.stats["applied"] == 1 and up.stats["other_types"] >= 1
    state = st.decode(client.get(st.Keys("st").state(u)))
    assert [r[2] for r in state["events"]] == ["x0", "c1", "i003", "i003"] and state["hist"] == []
    # the next session carries the cart as purchase history
    _, _, b = post(url, view(u, "x0", T0 + 4000, event_id="s-9"))
    assert b["event"] == "new_session"
    assert st.decode(client.get(st.Keys("st").state(u)))["hist"] == [["i003", T0 + 25]]


def test_concurrent_writers_lose_nothing(redis_server):  # noqa: F811
    """Four threads apply one user's 40 page views at once (the compare-and-set retries)."""
    import threading

    from serving.sessions import state as st

    client, keys, cfg = redis_server.client(), st.Keys("cc"), st.StateConfig()
    events = [sessionize.Event(f"cc-{i}", "cc-user", f"c{i}", "view", T0 + i, 1.0) for i in range(40)]
    outcomes = []

    def worker(part):
        for e in part:
            outcomes.append(st.apply_sync(redis_server.client(), st.Transaction(keys, cfg, e)).outcome)

    threads = [threading.Thread(target=worker, args=(events[j::4],)) for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = st.decode(client.get(keys.state("cc-user")))
    assert [r[2] for r in state["events"]] == [f"c{i}" for i in range(40)]
    assert sorted(outcomes) == sorted([st.NEW_SESSION] + [st.APPLIED] * 39)
    assert st.apply_sync(client, st.Transaction(keys, cfg, events[7])).outcome == st.DUPLICATE


def test_state_bounds_and_constants():
    from feedrank.sessions import features as SF
    from serving.sessions import state as st

    assert st.DEFAULT_MAX_PURCHASES == SF.DEFAULT_MAX_PURCHASE_HISTORY
    cfg = st.StateConfig(max_pages=3, max_purchases=2)
    s = st.empty()
    for i in range(6):
        s, _ = st.apply(s, sessionize.Event(f"v{i}", "u", f"c{i}", "view", T0 + i, 1.0), cfg)
        s, _ = st.apply(s, sessionize.Event(f"p{i}", "u", f"i00{i}", "purchase", T0 + i), cfg)
    pages, dwell, hist = st.model_inputs(s, cfg)
    assert pages == ["c3", "c4", "c5"] and dwell == [1.0, 1.0, 0.0] and hist == []   # page_dwell, at page open
    s, outcome = st.apply(s, sessionize.Event("n", "u", "x0", "view", T0 + 5000), cfg)
    assert outcome == st.NEW_SESSION and st.model_inputs(s, cfg)[2] == ["i004", "i005"]


def test_redis_down_answers_from_the_request_alone(endpoint):
    url, (model, pv, iv), rs = endpoint
    rs.stop()
    try:
        status, headers, body = post(url, view("down-user", "c2", T0, dwell=7.0))
        assert status == 200 and headers.get("x-feedrank-degraded") == "redis" and body["degraded"] is True
        assert body["event"] == "not_recorded" and body["pages"] == 1
        expected = offline_top_k(model, pv, iv, [as_event(view("down-user", "c2", T0, 7.0, event_id="d"))])
        assert [r["item_id"] for r in body["items"]] == expected[0][0]
    finally:
        rs.restart()
    import time
    time.sleep(0.4)   # past the back-off
    status, headers, body = post(url, view("down-user", "c2", T0 + 5))
    assert status == 200 and "x-feedrank-degraded" not in headers and body["event"] == "new_session"


def test_command_line_help_and_missing_model(tmp_path):
    import subprocess

    env = procs.serving_env()
    out = subprocess.run([procs.SERVING_PYTHON, "-m", "serving.sessions", "--help"], capture_output=True,
                         text=True, env=env, cwd=procs.REPO_ROOT, timeout=120)
    assert out.returncode == 0 and "--model-dir" in out.stdout and "--gap-s" in out.stdout
    out = subprocess.run([procs.SERVING_PYTHON, "-m", "serving.sessions", "--model-dir", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=procs.REPO_ROOT, timeout=120)
    assert out.returncode == 2 and "no version directory" in out.stderr and "Traceback" not in out.stderr
