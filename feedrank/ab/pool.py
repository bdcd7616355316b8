"""Truth pools: every request with both arms' shown slots and their true probabilities.

The online simulator writes one per A/B run (``truth_ab.parquet``: request_id,
user_id, ts, assigned_arm, arm, position, item_id, p_click, p_convert).
`from_offline` derives one from an offline simulated log and its truth
(``events.parquet`` + ``truth.parquet``, per-impression p_click): the champion
shows the logged order's first ``show`` posts; the challenger re-ranks the
request's logged candidates by their true relevance plus Gaussian noise (on
the logit scale) and shows its top ``show``.  A post's click probability moves
with its slot by the simulator's position bias, ``logit -= b * ln(1 + position)``;
p_convert is p_click times the log's conversions per click.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np
import pandas as pd

from feedrank.ab import CHALLENGER_ARM, CHAMPION_ARM, ABError

log = logging.getLogger(__name__)

POOL_COLUMNS = ("request_id", "user_id", "ts", "assigned_arm", "arm", "position", "item_id", "p_click",
                "p_convert")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def read(path: str) -> pd.DataFrame:
    """A truth pool (parquet), checked for the contract's columns."""
    if not os.path.exists(path):
        raise ABError(f"truth pool {path!r} does not exist (an A/B run's truth_ab.parquet)")
    df = pd.read_parquet(path)
    missing = [c for c in ("request_id", "user_id", "arm", "p_click", "p_convert") if c not in df.columns]
    if missing:
        raise ABError(f"truth pool {path!r} lacks column(s) {missing}")
    arms = set(df["arm"].unique())
    if arms != {CHAMPION_ARM, CHALLENGER_ARM}:
        raise ABError(f"truth pool {path!r} must hold both arms' slots, got arms {sorted(arms)}")
    return df


def from_offline(log_dir: str, show: int = 10, noise: float = 1.5, seed: int = 0,
                 position_bias: Optional[float] = None, max_requests: int = 0) -> pd.DataFrame:
    """A truth pool from an offline simulated log (see the module docstring)."""
    import json

    events = os.path.join(log_dir, "events.parquet")
    truth = os.path.join(log_dir, "truth.parquet")
    for path in (events, truth):
        if not os.path.exists(path):
            raise ABError(f"{path!r} does not exist: an offline pool needs a simulated log and its truth")
    if position_bias is None:
        world = os.path.join(log_dir, "world.json")
        mech = json.load(open(world)).get("params", {}).get("mechanisms", {}) if os.path.exists(world) else {}
        position_bias = float(mech.get("position_bias", 0.0) or 0.0)
    ev = pd.read_parquet(events, columns=["event_id", "user_id", "item_id", "event", "ts", "request_id", "position"])
    clicks = int((ev["event"] == "click").sum())
    per_click = (ev["event"] == "conversion").sum() / clicks if clicks else 0.0
    imp = ev[(ev["event"] == "impression") & ev["request_id"].fillna("").ne("")]
    imp = imp.merge(pd.read_parquet(truth, columns=["event_id", "p_click"]), on="event_id", how="inner")
    if imp.empty:
        raise ABError(f"{log_dir!r}: no impressions with a request_id and a true p_click")
    if max_requests:
        keep = imp["request_id"].drop_duplicates().iloc[:max_requests]
        imp = imp[imp["request_id"].isin(keep)]
    imp = imp.sort_values(["request_id", "position"], kind="stable").reset_index(drop=True)
    pos = imp.groupby("request_id").cumcount().to_numpy()
    base = _logit(imp["p_click"].to_numpy()) + position_bias * np.log1p(pos)  # the slot-free relevance
    rng = np.random.default_rng(seed)
    imp["relevance"] = base
    imp["noisy"] = base + rng.normal(0.0, noise, len(imp))
    arms = []
    for arm, key in ((CHAMPION_ARM, None), (CHALLENGER_ARM, "noisy")):
        df = imp.assign(position=pos) if key is None else imp.sort_values(
            ["request_id", key], ascending=[True, False], kind="stable").assign(position=0)
        if key is not None:
            df["position"] = df.groupby("request_id").cumcount()
        df = df[df["position"] < show]
        p = _sigmoid(df["relevance"].to_numpy() - position_bias * np.log1p(df["position"].to_numpy()))
        arms.append(pd.DataFrame({
            "request_id": df["request_id"].to_numpy(), "user_id": df["user_id"].to_numpy(),
            "ts": df["ts"].to_numpy(np.int64), "assigned_arm": "", "arm": arm,
            "position": df["position"].to_numpy(np.int64), "item_id": df["item_id"].to_numpy(),
            "p_click": p, "p_convert": p * per_click}))
    out = pd.concat(arms, ignore_index=True)
    log.info("offline pool from %s: %d requests, %d users, %d slots per arm (show %d, noise %.2f, bias %.2f)",
             log_dir, out["request_id"].nunique(), out["user_id"].nunique(), len(arms[0]), show, noise,
             position_bias)
    return out


def true_lift(pool: pd.DataFrame) -> dict:
    """The pool's own CTR and conversion per impression per arm, and the challenger's lifts."""
    out = {}
    for arm in (CHAMPION_ARM, CHALLENGER_ARM):
        rows = pool[pool["arm"] == arm]
        out[arm] = {"ctr": float(rows["p_click"].mean()), "cvr": float(rows["p_convert"].mean())}
    return {**out, "lift_ctr": out[CHALLENGER_ARM]["ctr"] / out[CHAMPION_ARM]["ctr"] - 1.0,
            "lift_cvr": out[CHALLENGER_ARM]["cvr"] / out[CHAMPION_ARM]["cvr"] - 1.0}


def synthetic(users: int = 1000, lift: float = 0.05, show: int = 5, seed: int = 0, user_sd: float = 0.8,
              requests_mean: float = 3.0, start_ts: int = 1_700_000_000) -> pd.DataFrame:
    """A small pool with heterogeneous users (the case a per-impression variance gets wrong).

    User u's requests (1 + Poisson(requests_mean)) show ``show`` slots per arm with
    ``p_click = sigmoid(a_u + e_slot - 0.3 ln(1 + position))``, a_u ~ N(-2.5, user_sd);
    the challenger's slots are the champion's times ``1 + lift`` (capped at 0.99);
    p_convert = 0.3 p_click.
    """
    rng = np.random.default_rng(seed)
    n_req = 1 + rng.poisson(requests_mean, users)
    user = np.repeat(np.arange(users), n_req)
    req = np.arange(len(user))
    slot_user = np.repeat(user, show)
    slot_req = np.repeat(req, show)
    pos = np.tile(np.arange(show), len(req))
    a = rng.normal(-2.5, user_sd, users)
    p = _sigmoid(a[slot_user] + rng.normal(0.0, 0.5, len(slot_user)) - 0.3 * np.log1p(pos))
    frames = []
    for arm, probs in ((CHAMPION_ARM, p), (CHALLENGER_ARM, np.minimum(p * (1.0 + lift), 0.99))):
        frames.append(pd.DataFrame({
            "request_id": [f"r{r:07d}" for r in slot_req], "user_id": [f"u{u:06d}" for u in slot_user],
            "ts": start_ts + 60 * slot_req, "assigned_arm": "", "arm": arm, "position": pos,
            "item_id": [f"i{(r * show + k) % 997:04d}" for r, k in zip(slot_req, pos)],
            "p_click": probs, "p_convert": 0.3 * probs}))
    return pd.concat(frames, ignore_index=True)
