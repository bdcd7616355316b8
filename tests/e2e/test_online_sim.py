"""The simulator's online mode: the rebuilt world, the traffic plan, the true
outcome of both arms' rankings (position bias exact), the events sent to a
real Redis stream, reproducibility by seed, the command's errors - and the
closed loop against the real serving stack (redis, updater, two predictors,
the transformer, the log sink) on the tiny pipeline's model."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from feedrank.ab.assign import arm_of
from feedrank.events.simulator import generate, online, online_io, online_truth, online_world
from feedrank.events.simulator import world as world_lib
from feedrank.events.simulator.online_schedule import plan
from serving.common import procs
from serving.features import online as online_features
from serving.features import redis_layout, writer
from tests.helpers.redis_stack import redis_server  # noqa: F401 (fixture)

SETTINGS = dict(seed=3, users=40, requests=240, days=1, show=6, candidates=40, share=0.5, salt="feedrank-ab",
                staleness_s=0.0, concurrency=3, run_id="t", endpoint="", model_name="", redis="", stream="")


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    """A small log of the realistic world (every mechanism on, position bias included)."""
    out = str(tmp_path_factory.mktemp("online") / "log")
    generate.simulate(out, users=400, items=800, days=3, seed=5, mechanisms="realistic", verbose=False)
    return out


class OracleRanker:
    """An in-process stand-in of the endpoint: the champion shows the candidates in recall
    order, the challenger by the hidden world's interest, region and quality terms of the
    true click logit (a better ranking by construction)."""

    def __init__(self, world: online_world.World, share: float = 0.5, salt: str = "feedrank-ab"):
        self.world, self.share, self.salt = world, share, salt
        self.item = {i: k for k, i in enumerate(world.item_ids)}
        self.user = {u: k for k, u in enumerate(world.user_ids)}

    async def check(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def score(self, user_id, candidates):
        sim = self.world.sim
        items = np.array([self.item[i] for i in candidates])
        users = np.full(len(items), self.user[user_id])
        share = world_lib.interest_share(sim.users, sim.tax, users, sim.items.cat[items])
        match = sim.items.region[items] == sim.users.region[users]
        return 2.8 * np.sqrt(share) + sim.tax.region_beta[sim.items.cat[items]] * match + sim.items.quality[items]

    async def rank(self, body):
        forced = (body.get("debug") or {}).get("arm")
        arm = forced or arm_of(body["user_id"], self.share, self.salt)
        ranking = list(body["candidates"])
        if arm == "challenger":
            order = np.argsort(-self.score(body["user_id"], ranking), kind="stable")
            ranking = [ranking[k] for k in order]
        return online_io.Ranked(200, arm, ranking[:body["show"]], arm)


def _run(log_dir, redis_url, stream, **over):
    world = online_world.rebuild(log_dir)
    s = {**SETTINGS, **over, "redis": redis_url, "stream": stream}
    events = online_io.EventStream(redis_url, stream)
    return asyncio.run(online.run_online(world, s, OracleRanker(world), events)), world


def test_rebuild_reproduces_the_log_and_refuses_others(log_dir, tmp_path):
    world = online_world.rebuild(log_dir)          # checks the feed requests against world.json
    assert world.end_ts == world.params["start_ts"] + 3 * 86400 and world.sim.mech.position_bias == 0.3
    with pytest.raises(online_world.OnlineError, match="has no world.json"):
        online_world.rebuild(str(tmp_path))
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    meta = json.load(open(os.path.join(log_dir, "world.json")))
    meta["params"]["seed"] = 6                    # another world than the one that wrote the log
    (wrong / "world.json").write_text(json.dumps(meta))
    with pytest.raises(online_world.OnlineError, match="does not reproduce the log"):
        online_world.rebuild(str(wrong))


def test_plan_spreads_requests_over_sessions_of_active_users(log_dir):
    world = online_world.rebuild(log_dir)
    days = plan(world, 40, 240, 2, seed=1)
    reqs = [r for d in days for s in d for r in s.requests]
    assert sorted(r.index for r in reqs) == list(range(240))
    users = {r.user for r in reqs}
    assert len(users) == 40
    starts = [s.start for d in days for s in d]
    assert min(starts) >= world.end_ts and max(starts) < world.end_ts + 2 * 86400
    act = world.sim.users.activity
    assert act[list(users)].mean() > act.mean()   # drawn by activity
    with pytest.raises(ValueError, match="at least users"):
        plan(world, 40, 10, 1, seed=1)


def test_truth_of_both_arms_and_events_in_the_stream(log_dir, redis_server):  # noqa: F811
    client = redis_server.client()
    client.delete("o:events")
    run, world = _run(log_dir, redis_server.url, "o:events")
    t = run.truth.table().to_pandas()
    assert run.stats["requests_ok"] == 240 and run.stats["counterfactual_failed"] == 0
    assert len(t) == 240 * 2 * 6 and set(t.arm) == {"champion", "challenger"}
    assert all(p == list(range(6)) for p in t.groupby(["request_id", "arm"]).position.apply(list))
    assigned = t.groupby("user_id").assigned_arm.first()
    assert all(arm_of(u, 0.5, "feedrank-ab") == a for u, a in assigned.items())
    assert ((t.p_click > 0) & (t.p_click < 1) & (t.p_convert > 0) & (t.p_convert < t.p_click)).all()
    # the same post in both arms' slots: its true logit differs by the position term alone
    both = t.merge(t, on=["request_id", "item_id"])
    both = both[(both.arm_x == "champion") & (both.arm_y == "challenger") & (both.position_x != both.position_y)]
    assert len(both) > 50
    logit = np.log(both.p_click_x / (1 - both.p_click_x)) - np.log(both.p_click_y / (1 - both.p_click_y))
    np.testing.assert_allclose(logit, -0.3 * (np.log1p(both.position_x) - np.log1p(both.position_y)), atol=1e-9)
    # the true lift is the ratio of the arms' mean true CTR over all requests' shown slots
    lift = online_truth.true_lift(run.truth.table())
    ctr = t.groupby("arm").p_click.mean()
    assert lift["lift_ctr"] == pytest.approx(ctr["challenger"] / ctr["champion"] - 1)
    assert lift["lift_ctr"] > 0.1 and lift["lift_cvr"] > 0.1   # the oracle ranks better
    # every click, view, conversion and purchase reached the stream with its request id
    entries = [f for _, f in client.xrange("o:events")]
    assert len(entries) == len(run.published) > 0
    clicks = [e for e in entries if e["event"] == "click"]
    assert len(clicks) == run.stats["clicks"] > 10
    assert {e["request_id"] for e in entries} <= set(t.request_id)
    shown = set(zip(t.request_id[t.arm == t.assigned_arm], t.item_id[t.arm == t.assigned_arm]))
    assert all((e["request_id"], e["item_id"]) in shown for e in entries)   # only shown posts are clicked
    assert {e["event"] for e in entries} >= {"click", "view", "conversion"}
    ts = {r: v for r, v in zip(t.request_id, t.ts)}
    assert all(int(e["ts"]) > ts[e["request_id"]] for e in entries)


def test_a_run_is_reproducible_by_seed_given_the_same_rankings(log_dir, redis_server):  # noqa: F811
    client = redis_server.client()
    runs = []
    for stream, seed in (("r1:events", 3), ("r2:events", 3), ("r3:events", 4)):
        client.delete(stream)
        run, world = _run(log_dir, redis_server.url, stream, seed=seed, days=2,
                          concurrency=1 if stream == "r2:events" else 4)
        events = sorted((f for _, f in client.xrange(stream)), key=lambda f: f["event_id"])
        runs.append((run.truth.table(), events))
    # 4 requests in flight or 1: the same truth and events (the stream's interleaving of users aside)
    assert runs[0][0].equals(runs[1][0]) and runs[0][1] == runs[1][1] and len(runs[0][1]) > 10
    assert not runs[0][0].equals(runs[2][0])                               # another seed, other traffic
    day = (np.array(runs[0][0].column("ts").to_pylist()) - world.end_ts) // 86400
    assert set(day) == {0, 1}                                              # two online days


def test_command_help_and_errors(tmp_path, log_dir, redis_server):  # noqa: F811
    cmd = [sys.executable, "-m", "feedrank.events.simulator.online"]
    helptext = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=60)
    assert helptext.returncode == 0 and "--endpoint" in helptext.stdout and "--staleness-s" in helptext.stdout
    cases = [(["--log", str(tmp_path)], "has no world.json"),
             (["--log", log_dir, "--endpoint", "http://127.0.0.1:1"], "is unreachable"),
             (["--log", log_dir, "--users", "50", "--requests", "10"], "--requests >= --users")]
    for args, msg in cases:
        r = subprocess.run(cmd + args + ["--out", str(tmp_path / "out"), "--redis", redis_server.url],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_an_endpoint_failing_every_request_ends_the_run(log_dir, redis_server):  # noqa: F811
    class Failing(OracleRanker):
        async def rank(self, body):
            return online_io.Ranked(502, error="predictor failed with HTTP 400")

    world = online_world.rebuild(log_dir)
    s = {**SETTINGS, "redis": redis_server.url, "stream": "f:events"}
    with pytest.raises(online_world.OnlineError, match="failed 20 requests in a row .*HTTP 502 predictor failed"):
        asyncio.run(online.run_online(world, s, Failing(world), online_io.EventStream(redis_server.url, "f:events")))


def test_without_a_challenger_the_run_goes_on_with_the_champion_only(log_dir, redis_server):  # noqa: F811
    class ChampionOnly(OracleRanker):
        async def rank(self, body):
            if "debug" in body:
                return online_io.Ranked(400, error="'debug.arm' is 'challenger' but this server has no challenger")
            return online_io.Ranked(200, "champion", body["candidates"][:body["show"]], "1")

    world = online_world.rebuild(log_dir)
    s = {**SETTINGS, "redis": redis_server.url, "stream": "c:events"}
    run = asyncio.run(online.run_online(world, s, ChampionOnly(world), online_io.EventStream(redis_server.url,
                                                                                             "c:events")))
    t = run.truth.table().to_pandas()
    assert run.stats["requests_ok"] == 240 and run.stats["counterfactual_failed"] == 1   # asked once, then not
    assert set(t.arm) == {"champion"} and len(t) == 240 * 6
    lift = online_truth.true_lift(run.truth.table())
    assert lift["challenger"] is None and lift["lift_ctr"] is None and lift["champion"]["ctr"] > 0


def test_a_users_events_are_applied_before_their_next_request(log_dir, redis_server, tmp_path):  # noqa: F811
    """With a real feature updater on the stream, the run waits until it has applied a request's
    clicks: right after the wait, the user's click channel holds them."""
    client = redis_server.client()
    keys = redis_layout.Keys("w")
    writer.flush(client, keys)
    writer.load_items(client, keys, pd.read_parquet(os.path.join(log_dir, "items.parquet")))
    client.delete("w:events")
    up = subprocess.Popen([sys.executable, "-m", "serving.features.updater", "--redis", redis_server.url,
                           "--prefix", "w", "--stream", "w:events", "--block-ms", "50"],
                          stdout=open(tmp_path / "updater.log", "wb"), stderr=subprocess.STDOUT)
    try:
        for _ in range(200):   # the updater creates its consumer group on start
            if client.exists("w:events") and client.xinfo_groups("w:events"):
                break
            time.sleep(0.1)
        checked = []

        class Checking(online_io.EventStream):
            async def wait_consumed(self, entry_id):
                await super().wait_consumed(entry_id)
                if entry_id is not None:
                    last = client.xrange("w:events", entry_id, entry_id)[0][1]
                    pipe = client.pipeline()
                    online_features.queue_reads(pipe, keys, last["user_id"], [last["item_id"]], None)
                    user, _, _ = online_features.parse_reads(pipe.execute())
                    checked.append(last["item_id"] in user.channels.get(last["event"], [last["item_id"]]))

        world = online_world.rebuild(log_dir)
        events = Checking(redis_server.url, "w:events")
        s = {**SETTINGS, "users": 10, "requests": 60, "redis": redis_server.url, "stream": "w:events"}
        run = asyncio.run(online.run_online(world, s, OracleRanker(world), events))
        assert events.waiting and len(checked) > 3 and all(checked), checked
        assert client.xpending("w:events", "feedrank-updater")["pending"] == 0
        assert len(run.published) == client.xlen("w:events")
    finally:
        up.terminate()
        up.wait(30)


# ------------------------------------------------------------------ the closed loop against the real stack
N_USERS, N_REQUESTS, SHOW = 30, 150, 5


@pytest.fixture(scope="module")
def stack(first_run, tmp_path_factory):
    """The local serving stack (serving.stack) on the tiny pipeline's pushed model as both
    champion and challenger, with the log sink writing into the A/B run directory."""
    if not os.path.exists(procs.SERVING_PYTHON):
        pytest.fail("the serving environment is missing: run `make serving-install`")
    cfg, summary = first_run
    work = tmp_path_factory.mktemp("stack")
    ports = [procs.free_port() for _ in range(4)]
    url = f"http://127.0.0.1:{ports[2]}"
    out = open(work / "local.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.stack", "--log", str(cfg.input_base), "--workdir", str(work),
         "--model", summary["push"]["path"], "--challenger-model", summary["push"]["path"],
         "--sink-dir", str(work / "ab"), "--redis-port", str(ports[0]), "--predictor-port", str(ports[1]),
         "--transformer-port", str(ports[2]), "--challenger-port", str(ports[3])],
        stdout=out, stderr=subprocess.STDOUT, cwd=procs.REPO_ROOT)
    try:
        procs.wait_ready(f"{url}/v1/models/feedrank", 900, proc, str(work / "local.log"))
        yield dict(log=str(cfg.input_base), url=url, redis=f"redis://127.0.0.1:{ports[0]}/0", ab=work / "ab")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _parts(path, want_rows, timeout_s=60.0):
    """The sink's part files of ``path`` once they hold ``want_rows`` rows."""
    deadline = time.monotonic() + timeout_s
    while True:
        files = sorted(path.glob("part-*.parquet")) if path.exists() else []
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()
        if len(df) >= want_rows or time.monotonic() > deadline:
            return df
        time.sleep(0.5)


@pytest.mark.e2e
def test_closed_loop_against_the_serving_stack(stack):
    world = online_world.rebuild(stack["log"])
    s = {**SETTINGS, "users": N_USERS, "requests": N_REQUESTS, "show": SHOW, "candidates": 60, "concurrency": 2,
         "run_id": "e2e", "endpoint": stack["url"], "model_name": "feedrank", "redis": stack["redis"],
         "stream": "fr:events"}
    recorded = {}

    class Recording(online_io.HttpRanker):
        async def rank(self, body):
            r = await super().rank(body)
            recorded[(body["context"]["request_id"], (body.get("debug") or {}).get("arm"))] = r
            return r

    run = asyncio.run(online.run_online(world, s, Recording(stack["url"], "feedrank")))
    summary = run.write(str(stack["ab"]))
    assert run.stats["requests_ok"] == N_REQUESTS and run.stats["counterfactual_failed"] == 0
    truth = pq.read_table(stack["ab"] / online_truth.TRUTH_AB_FILE).to_pandas()
    assert len(truth) == N_REQUESTS * 2 * SHOW and truth.request_id.nunique() == N_REQUESTS
    assert (truth.groupby("request_id").arm.nunique() == 2).all()
    assert set(truth.assigned_arm) == {"champion", "challenger"}
    # the true lift of ab_run.json is the ratio of the arms' mean p_click in the truth file
    ab = json.load(open(stack["ab"] / online.AB_RUN_FILE))
    ctr = truth.groupby("arm").p_click.mean()
    assert ab["true"]["lift_ctr"] == pytest.approx(ctr["challenger"] / ctr["champion"] - 1)
    assert ab["true"] == json.loads(json.dumps(summary["true"])) and ab["settings"]["seed"] == s["seed"]
    # the served log: the transformer's impressions are the assigned arm's truth rows (the
    # counterfactual requests logged nothing); the simulator's clicks carry their request ids
    events = _parts(stack["ab"] / "events", N_REQUESTS * SHOW + len(run.published))
    imps = events[events.event == "impression"].astype({"position": int})
    assert len(imps) == N_REQUESTS * SHOW
    served = truth[truth.arm == truth.assigned_arm]
    key = ["request_id", "item_id", "position", "arm"]
    assert sorted(map(tuple, imps[key].astype(str).values)) == sorted(map(tuple, served[key].astype(str).values))
    clicks = events[events.event == "click"]
    assert len(clicks) == run.stats["clicks"] > 0 and set(clicks.request_id) <= set(served.request_id)
    requests = _parts(stack["ab"] / "requests", N_REQUESTS)
    assert len(requests) == N_REQUESTS and set(requests.request_id) == set(truth.request_id)
    # the features saw the clicks: a clicking user's click channel holds their clicked posts
    c = clicks.iloc[-1]
    client = writer.redis_client(stack["redis"])
    pipe = client.pipeline()
    online_features.queue_reads(pipe, redis_layout.Keys(), c.user_id, [c.item_id], None)
    user, _, clk = online_features.parse_reads(pipe.execute())
    assert c.item_id in user.channels["click"] and clk[0] >= 1
    # reproducible by seed given the same rankings: the recorded answers replayed give the same run

    class Replay(OracleRanker):
        async def rank(self, body):
            return recorded[(body["context"]["request_id"], (body.get("debug") or {}).get("arm"))]

    again = asyncio.run(online.run_online(online_world.rebuild(stack["log"]), {**s, "stream": "replay:events"},
                                          Replay(world), online_io.EventStream(stack["redis"], "replay:events")))
    assert again.truth.table().equals(run.truth.table())
    assert sorted(again.published, key=str) == sorted(run.published, key=str)
    # the command against the same stack
    out = stack["ab"].parent / "cli"
    r = subprocess.run([sys.executable, "-m", "feedrank.events.simulator.online", "--log", stack["log"],
                        "--endpoint", stack["url"], "--redis", stack["redis"], "--users", "3", "--requests", "6",
                        "--show", "3", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cli = json.load(open(out / online.AB_RUN_FILE))
    assert cli["stats"]["requests_ok"] == 6 and cli["truth_rows"] == 6 * 2 * 3
