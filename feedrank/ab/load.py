"""An A/B run directory -> the tables the report needs.

  DIR/events/part-*.parquet     served impressions (arm, model_version) and the clicks and
                                conversions sent back, with request_id (the event contract)
  DIR/requests/part-*.parquet   one record per ranking request: arm, latency_ms, status
  DIR/ab_run.json               the simulator's settings and true lift (optional)
  DIR/truth_ab.parquet          both arms' shown slots with their true probabilities (optional)

A click or conversion counts once per served impression it names, by
(request_id, item_id); the arm and the user are the impression's.  Outcomes that
name no served impression, duplicate event ids and impressions without an arm
are dropped and counted in ``diagnostics``.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

from feedrank.ab import ARMS, ABError

log = logging.getLogger(__name__)

EVENTS_DIR, REQUESTS_DIR = "events", "requests"
RUN_FILE, TRUTH_FILE = "ab_run.json", "truth_ab.parquet"
OUTCOMES = ("click", "conversion")
REQUEST_COLUMNS = ("request_id", "user_id", "arm", "model_version", "ts", "latency_ms", "status")


@dataclasses.dataclass
class ABData:
    """One A/B run: per served request (user, arm, ts, impressions, clicks, conversions),
    the request records (None when absent), the run's settings and the diagnostics."""

    served: pd.DataFrame
    requests: Optional[pd.DataFrame]
    run: Dict[str, Any]
    model_versions: Dict[str, List[str]]
    diagnostics: Dict[str, int]
    truth_path: Optional[str] = None


def _parts(directory: str) -> List[str]:
    return sorted(glob.glob(os.path.join(directory, "part-*.parquet")))


def _read_parts(paths: List[str], columns: tuple) -> pd.DataFrame:
    import pyarrow.parquet as pq

    frames = []
    for path in paths:
        try:
            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file: name it
            raise ABError(f"{path} is not a readable parquet file ({type(e).__name__}: {e})") from None
        frames.append(table.select([c for c in columns if c in table.column_names]).to_pandas())
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    for c in columns:
        if c not in df.columns:
            df[c] = None
    return df


def _text(s: pd.Series) -> pd.Series:
    return s.fillna("").astype(str)


def read_run(ab_dir: str) -> Dict[str, Any]:
    """DIR/ab_run.json as a dict ({} when absent)."""
    path = os.path.join(ab_dir, RUN_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            run = json.load(f)
    except (OSError, ValueError) as e:
        raise ABError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(run, dict):
        raise ABError(f"{path} must hold a JSON object")
    return run


def load(ab_dir: str) -> ABData:
    """Reads an A/B run directory; ABError naming the problem when it cannot be analysed."""
    if not os.path.isdir(ab_dir):
        raise ABError(f"A/B run directory {ab_dir!r} does not exist")
    events_dir = os.path.join(ab_dir, EVENTS_DIR)
    paths = _parts(events_dir)
    if not paths:
        raise ABError(f"no served events in {events_dir!r} (expected part-*.parquet files written by "
                      f"the log sink)")
    ev = _read_parts(paths, ("event_id", "event", "user_id", "item_id", "ts", "request_id", "arm",
                             "model_version"))
    for c in ("event_id", "event", "user_id", "item_id", "request_id", "arm", "model_version"):
        ev[c] = _text(ev[c])
    diag: Dict[str, int] = {"event_rows": int(len(ev))}
    dup = ev["event_id"].ne("") & ev.duplicated("event_id")
    diag["duplicate_event_ids"] = int(dup.sum())
    ev = ev[~dup]

    imp = ev[ev["event"] == "impression"]
    diag["impressions_without_arm"] = int((~imp["arm"].isin(ARMS)).sum())
    imp = imp[imp["arm"].isin(ARMS) & imp["request_id"].ne("")]
    imp = imp.drop_duplicates(["request_id", "item_id"])
    if imp.empty:
        raise ABError(f"{events_dir!r} holds no served impressions with an arm (champion/challenger)")
    imp = imp.assign(ts=pd.to_numeric(imp["ts"], errors="coerce").fillna(0).astype(np.int64))
    keys = imp[["request_id", "item_id"]].assign(served=True)

    served = imp.groupby("request_id", sort=False).agg(
        user_id=("user_id", "first"), arm=("arm", "first"), ts=("ts", "min"),
        impressions=("item_id", "size"), arms=("arm", "nunique"))
    diag["requests_with_two_arms"] = int((served["arms"] > 1).sum())
    served = served.drop(columns="arms")
    for kind in OUTCOMES:
        out = ev[ev["event"] == kind].drop_duplicates(["request_id", "item_id"])
        matched = out.merge(keys, on=["request_id", "item_id"], how="left")["served"].eq(True).to_numpy()
        diag[f"{kind}s_unmatched"] = int((~matched).sum())
        counts = out[matched].groupby("request_id").size()
        served[f"{kind}s"] = counts.reindex(served.index).fillna(0).astype(np.int64)
    served = served.reset_index()

    versions = {arm: sorted(v for v in imp.loc[imp["arm"] == arm, "model_version"].unique() if v)
                for arm in ARMS}
    requests = None
    req_paths = _parts(os.path.join(ab_dir, REQUESTS_DIR))
    if req_paths:
        requests = _read_parts(req_paths, REQUEST_COLUMNS)
        requests["arm"] = _text(requests["arm"])
        requests["request_id"] = _text(requests["request_id"])
        requests["latency_ms"] = pd.to_numeric(requests["latency_ms"], errors="coerce")
        requests["status"] = pd.to_numeric(requests["status"], errors="coerce").fillna(0).astype(np.int64)
        requests["ts"] = pd.to_numeric(requests["ts"], errors="coerce")
        before = len(requests)
        requests = requests[requests["request_id"].eq("") | ~requests.duplicated("request_id")]
        diag["duplicate_request_records"] = before - len(requests)
    else:
        log.warning("no request records in %s: the latency and error guardrails cannot be checked",
                    os.path.join(ab_dir, REQUESTS_DIR))
    truth = os.path.join(ab_dir, TRUTH_FILE)
    return ABData(served, requests, read_run(ab_dir), versions, diag,
                  truth if os.path.exists(truth) else None)


def per_user(served: pd.DataFrame, arm: str, until_ts: Optional[float] = None) -> pd.DataFrame:
    """One row per user of ``arm``: impressions, clicks, conversions (requests with ts <= until_ts)."""
    rows = served[served["arm"] == arm]
    if until_ts is not None:
        rows = rows[rows["ts"] <= until_ts]
    return rows.groupby("user_id")[["impressions", "clicks", "conversions"]].sum()
