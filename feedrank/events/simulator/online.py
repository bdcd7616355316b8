"""The simulator's online mode: simulated users in a closed loop with the ranking endpoint.

    python -m feedrank.events.simulator.online --log data/demo --endpoint http://127.0.0.1:8081 \\
        --model-name feedrank --redis redis://127.0.0.1:6379/0 --users 300 --requests 3000 --seed 0 --out DIR

The hidden world of ``--log`` is rebuilt as the batch simulator left it
(:mod:`feedrank.events.simulator.online_world`) and continues after the log's
end on a simulated clock.  ``--users`` users (drawn by activity) make
``--requests`` feed requests in sessions over ``--days`` days; per request the
simulator recalls ~``--candidates`` posts, asks the endpoint to rank them
(``context.ts`` = the simulated time), sees the top ``--show`` and clicks,
views, converts and buys by the hidden truth, position bias included.  Those
events go to the event stream with the request's id (the transformer logs the
impressions itself), and a user's next request waits until the feature updater
has consumed them.  Each request is also ranked by the other arm
(``debug: {arm, log: false}``), so the true lift of the challenger is exact on
the same traffic: ``DIR/truth_ab.parquet`` and ``DIR/ab_run.json``
(docs/simulator.md, "Online mode").
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import uuid
from typing import Dict, List, Optional

import numpy as np

from feedrank.ab import assign
from feedrank.events import stream as stream_lib
from feedrank.events.simulator import online_io, online_outcome, online_truth, online_world
from feedrank.events.simulator.online_outcome import CLICK, CONV, PURCHASE
from feedrank.events.simulator.online_schedule import Planned, plan
from feedrank.events.simulator.online_world import OnlineDay, OnlineError, World

log = logging.getLogger(__name__)

AB_RUN_FILE = "ab_run.json"
MAX_FAILING = 20   # failed requests in a row that end the run
DEGRADED_WARN = 0.05   # share of degraded responses worth a warning
ARMS = (online_truth.CHAMPION, online_truth.CHALLENGER)


def other(arm: str) -> str:
    return online_truth.CHALLENGER if arm == online_truth.CHAMPION else online_truth.CHAMPION


def expected_arm(user_id: str, share: float, salt: str) -> str:
    """The transformer's assignment rule (:func:`feedrank.ab.assign.arm_of`)."""
    return assign.arm_of(user_id, share, salt)


class OnlineRun:
    """One online run: the world, the traffic plan, the ranker, the event stream."""

    def __init__(self, world: World, settings: Dict, ranker, events, counterfactual: bool = True):
        self.world, self.s, self.ranker, self.events = world, settings, ranker, events
        self.counterfactual = counterfactual
        self.truth = online_truth.TruthLog()
        self.published: List[Dict] = []     # every event sent, for the record
        self.stats = dict(requests_ok=0, requests_failed=0, no_candidates=0, counterfactual_failed=0,
                          clicks=0, conversions=0, arm_mismatch=0, degraded=0, counterfactual_degraded=0)
        self._sem = asyncio.Semaphore(int(settings["concurrency"]))
        self._done = 0
        self._failing = 0   # failed requests in a row
        self._t0 = time.monotonic()

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        days = plan(self.world, self.s["users"], self.s["requests"], self.s["days"], self.s["seed"])
        first_day = int(self.world.params["days"])
        everyone = np.unique([s.user for sessions in days for s in sessions])
        for d, sessions in enumerate(days):
            rng = np.random.Generator(np.random.PCG64([self.s["seed"], 3, d]))
            s_user = np.array([s.user for s in sessions], dtype=np.int64)
            s_start = np.array([s.start for s in sessions], dtype=np.int64)
            day = OnlineDay(self.world, first_day + d, rng, s_user, s_start, everyone)
            by_user: Dict[int, List[int]] = {}
            for i, s in enumerate(sessions):
                by_user.setdefault(s.user, []).append(i)
            await asyncio.gather(*(self._user(day, sessions, idx) for idx in by_user.values()))
            day.close()
            log.info("online day %d/%d done: %d requests so far", d + 1, len(days), self._done)

    async def _user(self, day: OnlineDay, sessions: List, idx: List[int]) -> None:
        """One user's sessions of the day, strictly in order."""
        last_event = -1
        for i in sorted(idx, key=lambda j: (sessions[j].start, j)):
            s = sessions[i]
            ts = max(s.start, last_event + 5)
            for k, req in enumerate(s.requests):
                if k:
                    ts = max(ts + req.gap_s, last_event + 5)
                last_event = max(last_event, await self._request(day, i, req, ts))

    async def _request(self, day: OnlineDay, sess: int, req: Planned, ts: int) -> int:
        """Serves one request; returns the time of the user's last event (the request's ts if none)."""
        w, s = self.world, self.s
        user_id = str(w.user_ids[req.user])
        rid = f"{s['run_id']}-{req.index:07d}"
        rng = np.random.Generator(np.random.PCG64([s["seed"], 2, req.index]))
        cands = day.recall(rng, req.user, sess, ts, s["candidates"])
        if not len(cands):
            self.stats["no_candidates"] += 1
            return ts
        logit = day.logits(rng, req.user, sess, ts, cands)
        p_conv_view = day.p_convert_given_click(req.user, ts, cands)
        draws = online_outcome.draws(rng, len(cands), w, req.user, ts, cands)
        ids = [str(x) for x in w.item_ids[cands]]
        where = {c: j for j, c in enumerate(ids)}
        body = {"user_id": user_id, "candidates": ids, "show": s["show"],
                "context": {"ts": int(ts), "request_id": rid,
                            "user_region_id": w.params["regions"][w.sim.users.region[req.user]]
                            if w.params.get("regions") else None}}
        async with self._sem:
            cf: Dict[str, online_io.Ranked] = {}
            guess = expected_arm(user_id, s["share"], s["salt"]) if self.counterfactual else ""
            if self.counterfactual:   # first, so that it sees the features the real request sees
                cf[other(guess)] = await self._counterfactual(body, other(guess))
            real = await self.ranker.rank(body)
            if real.status == 200 and self.counterfactual and real.arm in cf:
                self.stats["arm_mismatch"] += 1
                cf[other(real.arm)] = await self._counterfactual(body, other(real.arm))
        self._progress()
        if real.status != 200:
            self.stats["requests_failed"] += 1
            self._failing += 1
            log.warning("request %s failed: HTTP %s %s", rid, real.status, real.error)
            if self._failing >= MAX_FAILING:
                raise OnlineError(f"the ranking endpoint failed {self._failing} requests in a row (last: HTTP "
                                  f"{real.status} {real.error}); see the transformer's log")
            return ts
        self._failing = 0
        self.stats["requests_ok"] += 1
        self.stats["degraded"] += int(real.degraded)
        self.stats["counterfactual_degraded"] += sum(int(r.degraded) for r in cf.values() if r is not None)
        real.arm = real.arm or online_truth.CHAMPION   # an endpoint without A/B serves the champion
        for arm, ranked in [(real.arm, real)] + [(a, r) for a, r in cf.items() if a != real.arm]:
            if ranked is None or ranked.status != 200:
                continue
            j = np.array([where[i] for i in ranked.items], dtype=np.int64)
            pc = day.p_click(logit[j], np.arange(len(j)))
            self.truth.add(rid, user_id, ts, real.arm, arm, ranked.items, pc, pc * p_conv_view[j])
        j = np.array([where[i] for i in real.items], dtype=np.int64)
        pc = day.p_click(logit[j], np.arange(len(j)))
        events, outcome = online_outcome.outcome(w, req.user, user_id, rid, ts, j, cands[j], pc, p_conv_view[j], draws)
        day.record(req.user, cands[j], ts, outcome)
        self.stats["clicks"] += int((outcome["etype"] == CLICK).sum())
        self.stats["conversions"] += int((outcome["etype"] == CONV).sum())
        self.published += events
        last_id = await self.events.publish(events)
        await self.events.wait_consumed(last_id)
        seen = outcome["ts"][outcome["etype"] != PURCHASE]
        return int(seen.max()) if len(seen) else ts

    async def _counterfactual(self, body: Dict, arm: str) -> Optional[online_io.Ranked]:
        r = await self.ranker.rank({**body, "debug": {"arm": arm, "log": False}})
        if r.status == 200 and r.arm in ("", arm):
            return r
        self.stats["counterfactual_failed"] += 1
        if 400 <= r.status < 500 or r.status == 200:   # refused (no challenger) or not the forced arm
            if self.counterfactual:
                log.warning("the endpoint cannot rank for the other arm (HTTP %s %s; arm %r): no counterfactual "
                            "rankings, so no true lift on the same traffic (an A/B endpoint needs a challenger: "
                            "transformer --challenger-url)", r.status, r.error, r.arm)
            self.counterfactual = False
        else:
            log.warning("the counterfactual %s ranking of a request failed: HTTP %s %s", arm, r.status, r.error)
        return None

    def _progress(self) -> None:
        self._done += 1
        n = self.s["requests"]
        if self._done % max(1, n // 10) == 0 or self._done == n:
            el = time.monotonic() - self._t0
            log.info("%d/%d requests (%.1f/s), %d clicks, %d conversions", self._done, n,
                     self._done / max(el, 1e-9), self.stats["clicks"], self.stats["conversions"])

    # --------------------------------------------------------------- outputs
    def write(self, out_dir: str) -> Dict:
        os.makedirs(out_dir, exist_ok=True)
        table = self.truth.table()
        online_truth.pq.write_table(table, os.path.join(out_dir, online_truth.TRUTH_AB_FILE))
        summary = dict(settings={k: v for k, v in self.s.items()}, stats=self.stats,
                       events_published=len(self.published), truth_rows=len(table),
                       true=online_truth.true_lift(table), wall_s=round(time.monotonic() - self._t0, 2))
        with open(os.path.join(out_dir, AB_RUN_FILE), "w") as f:
            json.dump(summary, f, indent=2)
        return summary


async def run_online(world: World, settings: Dict, ranker=None, events=None) -> OnlineRun:
    """Runs the plan against ``ranker`` (default: the HTTP endpoint of ``settings``) and
    ``events`` (default: the Redis stream of ``settings``); both are checked first."""
    own = ranker is None, events is None
    ranker = ranker or online_io.HttpRanker(settings["endpoint"], settings["model_name"])
    events = events or online_io.EventStream(settings["redis"], settings["stream"],
                                             staleness_s=settings["staleness_s"])
    try:
        await ranker.check()
        await events.check()
        run = OnlineRun(world, settings, ranker, events)
        await run.run()
        return run
    finally:
        if own[0]:
            await ranker.close()
        if own[1]:
            await events.close()


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m feedrank.events.simulator.online", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", required=True, help="simulated log whose world continues (needs its world.json)")
    p.add_argument("--out", required=True, help="A/B run directory: truth_ab.parquet and ab_run.json")
    p.add_argument("--endpoint", default="http://127.0.0.1:8081", help="the ranking endpoint (transformer)")
    p.add_argument("--model-name", default="feedrank", help="the model name in /v1/models/<name>:predict")
    p.add_argument("--redis", default=stream_lib.DEFAULT_REDIS_URL, help="Redis of the event stream")
    p.add_argument("--stream", default=stream_lib.DEFAULT_STREAM, help="event stream (XADD)")
    p.add_argument("--users", type=int, default=300, help="users taking part (drawn by activity)")
    p.add_argument("--requests", type=int, default=3000, help="feed requests in all (>= --users)")
    p.add_argument("--days", type=int, default=1, help="simulated days after the log the requests spread over")
    p.add_argument("--show", type=int, default=10, help="posts shown per request (the top of the ranking)")
    p.add_argument("--candidates", type=int, default=120, help="posts recalled per request")
    assign.add_share_argument(p, "the endpoint's challenger share (its assignment)")
    p.add_argument("--salt", default=assign.DEFAULT_SALT, help="the endpoint's assignment salt")
    p.add_argument("--staleness-s", type=float, default=0.0,
                   help="the feature updater's --delay-s (recorded; with it the simulator waits for "
                        "delivery, not application, of a user's events)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (users in parallel)")
    p.add_argument("--seed", type=int, default=0, help="seed of the traffic and the users' draws")
    p.add_argument("--run-id", default="", help="prefix of request and event ids (default: a fresh one)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def _check(args: argparse.Namespace) -> Optional[str]:
    if args.users < 1 or args.requests < args.users:
        return "--users must be >= 1 and --requests >= --users"
    if args.days < 1 or args.show < 1 or args.candidates < 1 or args.concurrency < 1:
        return "--days, --show, --candidates and --concurrency must be positive"
    if not 0.0 <= args.share <= 1.0:
        return f"--share must be in [0, 1], got {args.share}"
    if not args.staleness_s >= 0:
        return f"--staleness-s must be >= 0, got {args.staleness_s}"
    return None


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)   # one line per request otherwise
    err = _check(args)
    if err:
        print(f"online: {err}", file=sys.stderr)
        return 2
    settings = dict(seed=args.seed, users=args.users, requests=args.requests, days=args.days, show=args.show,
                    candidates=args.candidates, share=args.share, salt=args.salt, staleness_s=args.staleness_s,
                    concurrency=args.concurrency, run_id=args.run_id or f"sim{args.seed}-{uuid.uuid4().hex[:8]}",
                    log=args.log, endpoint=args.endpoint, model_name=args.model_name, redis=args.redis,
                    stream=args.stream)
    try:
        os.makedirs(args.out, exist_ok=True)
        world = online_world.rebuild(args.log)
        if args.users > len(world.user_ids):
            raise OnlineError(f"--users {args.users} exceeds the world's {len(world.user_ids)} users")
        settings["world"] = dict(seed=world.params["seed"], end_ts=world.end_ts,
                                 mechanisms=online_world.mech_lib.name_of(world.params.get("mechanisms") or {}))
        run = asyncio.run(run_online(world, settings))
    except (OnlineError, online_io.EndpointError) as e:
        print(f"online: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"online: cannot write to {args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    summary = run.write(args.out)
    st = summary["stats"]
    if st["requests_ok"] and st["degraded"] > DEGRADED_WARN * st["requests_ok"]:
        log.warning("%d of %d responses were served degraded (without the Redis features): the transformer's "
                    "Redis timeout (--redis-timeout-ms) is too tight for this machine's load", st["degraded"],
                    st["requests_ok"])
    t = summary["true"]
    log.info("true CTR champion %s, challenger %s, lift %s; wrote %s", *(
        None if t[a] is None else round(t[a]["ctr"], 5) for a in ARMS), t["lift_ctr"], args.out)
    ctr = {a: "n/a" if t[a] is None else f"{t[a]['ctr']:.4f}" for a in ARMS}
    lift = "n/a" if t["lift_ctr"] is None else f"{t['lift_ctr']:+.1%}"
    print(f"online: {st['requests_ok']} requests answered ({st['degraded']} degraded, {st['requests_failed']} "
          f"failed), {st['clicks']} clicks; simulated true CTR {ctr[ARMS[0]]} ({ARMS[0]}) vs {ctr[ARMS[1]]} "
          f"({ARMS[1]}), true lift {lift}; everything in {os.path.join(args.out, AB_RUN_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
