"""Simulated A/B tests drawn from a truth pool (feedrank.ab.pool).

`Sampler.draw` is one repetition: users drawn with replacement from the pool
(each draw a unit of its own), arms by the server's stable hash
(`feedrank.ab.assign.arm_of`) under the repetition's salt, clicks and
conversions drawn from the true probabilities of the assigned arm's slots.
It returns per-user sums per arm and two true lifts: the pool's (the
population the users are drawn from) and the drawn users' own (every drawn
user under both arms).  `write_run` lays one test out as an A/B run directory
(events, request records, ab_run.json, truth_ab.parquet), as the online
simulator does.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Optional

import numpy as np
import pandas as pd

from feedrank.ab import ARMS, CHALLENGER_ARM, CHAMPION_ARM
from feedrank.ab.assign import DEFAULT_SALT, arm_of  # the transformer's own assignment: one definition


@dataclasses.dataclass
class ArmSums:
    """Per drawn user of one arm: impressions, clicks, conversions."""

    impressions: np.ndarray
    clicks: np.ndarray
    conversions: np.ndarray


@dataclasses.dataclass
class Draw:
    arms: Dict[str, ArmSums]
    true_population: Dict[str, float]   # lift_ctr, lift_cvr of the whole pool
    true_sample: Dict[str, float]       # the same lifts over the drawn users only


class Sampler:
    """A truth pool indexed by user for fast repeated draws (``aa``: both arms show the champion's slots)."""

    def __init__(self, pool: pd.DataFrame, aa: bool = False):
        self.users, codes = np.unique(pool["user_id"].astype(str).to_numpy(), return_inverse=True)
        self.aa = aa
        self.slots = {}
        self.sums = {}
        for arm in ARMS:
            source = CHAMPION_ARM if aa else arm
            mask = (pool["arm"] == source).to_numpy()
            c = codes[mask]
            order = np.argsort(c, kind="stable")
            p = pool["p_click"].to_numpy(np.float64)[mask][order]
            pc = pool["p_convert"].to_numpy(np.float64)[mask][order]
            counts = np.bincount(c, minlength=len(self.users))
            offsets = np.concatenate([[0], np.cumsum(counts)])
            self.slots[arm] = (offsets, p, pc)
            self.sums[arm] = (counts.astype(np.float64), np.bincount(c[order], p, len(self.users)),
                              np.bincount(c[order], pc, len(self.users)))
        # A conversion follows a click when the pool allows it (p_convert <= p_click everywhere).
        self.nested = all(np.all(self.slots[a][2] <= self.slots[a][1] + 1e-12) for a in ARMS)
        self.population = self._lifts(np.arange(len(self.users)))

    def _lifts(self, users: np.ndarray) -> Dict[str, float]:
        rates = {}
        for arm in ARMS:
            n, p, pc = (x[users].sum() for x in self.sums[arm])
            rates[arm] = (p / n, pc / n)
        a, b = rates[CHAMPION_ARM], rates[CHALLENGER_ARM]
        return {"lift_ctr": b[0] / a[0] - 1.0, "lift_cvr": b[1] / a[1] - 1.0}

    def draw(self, users: int, seed: int, share: float = 0.5, salt: Optional[str] = None) -> Draw:
        rng = np.random.default_rng(seed)
        drawn = rng.integers(0, len(self.users), size=users)
        salt = salt if salt is not None else f"ab-coverage-{seed}"
        ids = (f"{self.users[u]}#{j}" for j, u in enumerate(drawn))
        challenger = np.fromiter((arm_of(i, share, salt) == CHALLENGER_ARM for i in ids), bool, users)
        out = {}
        for arm, mask in ((CHAMPION_ARM, ~challenger), (CHALLENGER_ARM, challenger)):
            offsets, p, pc = self.slots[arm]
            who = drawn[mask]
            lens = offsets[who + 1] - offsets[who]
            idx = np.repeat(offsets[who] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
            unit = np.repeat(np.arange(len(who)), lens)
            click = rng.random(len(idx)) < p[idx]
            if self.nested:
                conv = click & (rng.random(len(idx)) * p[idx] < pc[idx])
            else:
                conv = rng.random(len(idx)) < pc[idx]
            out[arm] = ArmSums(lens.astype(np.float64), np.bincount(unit, click, len(who)),
                               np.bincount(unit, conv, len(who)))
        return Draw(out, self.population, self._lifts(drawn))


def write_run(pool: pd.DataFrame, out_dir: str, *, seed: int = 0, share: float = 0.5, salt: str = DEFAULT_SALT,
              versions: Optional[Dict[str, str]] = None, latency_ms: Optional[Dict[str, float]] = None,
              error_rate: Optional[Dict[str, float]] = None, drop_challenger_users: float = 0.0,
              parts: int = 2) -> Dict[str, float]:
    """One A/B test over the pool's own users as an A/B run directory; returns the true lifts.

    ``latency_ms`` (median per arm, log-normal spread) and ``error_rate`` (per arm: requests
    answered 503, nothing shown) feed the guardrails; ``drop_challenger_users`` loses that
    share of the challenger's users from the log (a sample-ratio mismatch).
    """
    from feedrank.events.contract import EVENT_COLUMNS

    rng = np.random.default_rng(seed)
    versions = versions or {CHAMPION_ARM: "1", CHALLENGER_ARM: "2"}
    latency_ms = latency_ms or {CHAMPION_ARM: 20.0, CHALLENGER_ARM: 20.0}
    error_rate = error_rate or {}
    users = pool["user_id"].astype(str).unique()
    assigned = {u: arm_of(u, share, salt) for u in users}
    lost = {u for u in users if assigned[u] == CHALLENGER_ARM and rng.random() < drop_challenger_users}
    pool = pool.assign(assigned_arm=pool["user_id"].astype(str).map(assigned))
    req = pool[["request_id", "user_id", "ts", "assigned_arm"]].drop_duplicates("request_id")
    req = req[~req["user_id"].isin(lost)].reset_index(drop=True)
    arm = req["assigned_arm"].to_numpy()
    status = np.where(rng.random(len(req)) < np.vectorize(lambda a: error_rate.get(a, 0.0))(arm), 503, 200)
    median = np.vectorize(latency_ms.get)(arm).astype(np.float64)
    requests = pd.DataFrame({
        "request_id": req["request_id"].astype(str), "user_id": req["user_id"].astype(str), "arm": arm,
        "model_version": [versions[a] for a in arm], "ts": req["ts"].astype(np.int64),
        "latency_ms": median * np.exp(rng.normal(0.0, 0.3, len(req))), "status": status.astype(np.int64)})
    ok = set(requests.loc[requests["status"] == 200, "request_id"])
    shown = pool[(pool["arm"] == pool["assigned_arm"]) & pool["request_id"].isin(ok)].reset_index(drop=True)
    click = rng.random(len(shown)) < shown["p_click"].to_numpy()
    conv = click & (rng.random(len(shown)) * shown["p_click"].to_numpy() < shown["p_convert"].to_numpy())
    base = {"user_id": shown["user_id"].astype(str), "item_id": shown["item_id"].astype(str),
            "request_id": shown["request_id"].astype(str)}
    frames = [pd.DataFrame({**base, "event": "impression", "ts": shown["ts"].astype(np.int64),
                            "position": shown["position"].astype(np.int64), "arm": shown["arm"],
                            "model_version": [versions[a] for a in shown["arm"]],
                            "score": rng.random(len(shown))})]
    for kind, hit, delay in (("click", click, 5), ("conversion", conv, 60)):
        rows = shown[hit]
        frames.append(pd.DataFrame({"user_id": rows["user_id"].astype(str), "item_id": rows["item_id"].astype(str),
                                    "request_id": rows["request_id"].astype(str), "event": kind,
                                    "ts": rows["ts"].astype(np.int64) + delay, "arm": ""}))
    events = pd.concat(frames, ignore_index=True).sort_values("ts", kind="stable").reset_index(drop=True)
    events["event_id"] = [f"ab{seed}-{i:09d}" for i in range(len(events))]
    for col, (kind, _) in EVENT_COLUMNS.items():
        if col not in events:
            events[col] = None
        events[col] = events[col].astype("float64" if kind == "float64" else "Int64" if kind == "int64" else object)
    events = events[list(EVENT_COLUMNS)]
    for name, df in (("events", events), ("requests", requests)):
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
        for i, chunk in enumerate(np.array_split(np.arange(len(df)), parts)):
            df.iloc[chunk].to_parquet(os.path.join(out_dir, name, f"part-{i:06d}.parquet"), index=False)
    pool.to_parquet(os.path.join(out_dir, "truth_ab.parquet"), index=False)
    from feedrank.ab.pool import true_lift

    true = true_lift(pool[pool["user_id"].isin(set(requests["user_id"]))])
    with open(os.path.join(out_dir, "ab_run.json"), "w") as f:
        json.dump({"seed": seed, "users": int(len(users)), "requests": int(len(requests)), "share": share,
                   "salt": salt, "true": true}, f, indent=2)
    return true

