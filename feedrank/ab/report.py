"""The A/B report: per-arm metrics, lifts with user-clustered intervals, SRM, guardrails, timeline.

  data = load.load("runs/ab"); rep = build(data, cfg.ab); write(rep, "runs/ab")

``build`` returns a JSON-ready dict (written as ``ab_report.json``); ``format_text``
renders it as a table, with the simulator's true lift beside the estimate when
``ab_run.json`` holds it.
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import os
from typing import Any, Dict, List, Optional

import numpy as np

from feedrank.ab import ARMS, CHALLENGER_ARM, CHAMPION_ARM, ABError, stats
from feedrank.ab.decision import decide
from feedrank.ab.load import ABData, per_user

log = logging.getLogger(__name__)

REPORT_FILE, PLOT_FILE, TEXT_FILE = "ab_report.json", "ab_lift.png", "ab_report.txt"
METRICS = {"ctr": "clicks", "cvr": "conversions"}  # lift metric -> numerator (per impression)


def _finite(x: Optional[float]) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else float(x)


def _arm_table(data: ABData) -> Dict[str, Dict[str, Any]]:
    arms = {}
    for arm in ARMS:
        rows = data.served[data.served["arm"] == arm]
        imp, clicks, conv = (int(rows[c].sum()) for c in ("impressions", "clicks", "conversions"))
        arms[arm] = {"users": int(rows["user_id"].nunique()), "requests": int(len(rows)), "impressions": imp,
                     "clicks": clicks, "ctr": clicks / imp if imp else None, "conversions": conv,
                     "cvr": conv / imp if imp else None, "model_versions": data.model_versions.get(arm, [])}
    return arms


def guardrails(data: ABData) -> Dict[str, Dict[str, Any]]:
    """Per arm, from the request records: requests, p50/p99 server latency, errors (status >= 500)."""
    out: Dict[str, Dict[str, Any]] = {}
    req = data.requests
    if req is None:
        return out
    for arm in (*ARMS, ""):
        rows = req[req["arm"] == arm]
        if arm == "" and rows.empty:
            continue
        lat = rows["latency_ms"].dropna().to_numpy(dtype=np.float64)
        errors = int((rows["status"] >= 500).sum())
        out[arm or "unassigned"] = {
            "requests": int(len(rows)), "errors": errors,
            "error_rate": errors / len(rows) if len(rows) else 0.0,
            "client_errors": int(((rows["status"] >= 400) & (rows["status"] < 500)).sum()),
            "p50_latency_ms": _finite(float(np.percentile(lat, 50))) if len(lat) else None,
            "p99_latency_ms": _finite(float(np.percentile(lat, 99))) if len(lat) else None}
    return out


def lifts(served, level: float = 0.95, until_ts: Optional[float] = None,
          scale: str = "log") -> Dict[str, Dict[str, Any]]:
    """CTR and conversion-per-impression lifts of the challenger (user-clustered delta method)."""
    a, b = per_user(served, CHAMPION_ARM, until_ts), per_user(served, CHALLENGER_ARM, until_ts)
    out = {}
    for metric, num in METRICS.items():
        ra = stats.ratio(a[num].to_numpy(), a["impressions"].to_numpy())
        rb = stats.ratio(b[num].to_numpy(), b["impressions"].to_numpy())
        try:
            out[metric] = stats.lift(rb, ra, level, scale).to_dict()
        except ABError as e:
            out[metric] = {"estimate": None, "lo": None, "hi": None, "se_log": None, "p_value": None,
                           "level": level, "scale": scale, "error": str(e)}
    return out


def timeline(served, level: float = 0.95, points: int = 20) -> List[Dict[str, Any]]:
    """The cumulative CTR lift and its interval at ``points`` request-ts quantiles."""
    ts = served["ts"].to_numpy()
    cuts = np.unique(np.quantile(ts, np.linspace(1.0 / points, 1.0, points), method="higher"))
    rows = []
    for t in cuts:
        seen = served[served["ts"] <= t]
        users = [seen.loc[seen["arm"] == arm, "user_id"].nunique() for arm in ARMS]
        if min(users) < 2:
            continue
        ctr = lifts(seen, level)["ctr"]
        if ctr["lo"] is None:
            continue
        rows.append({"ts": int(t), "impressions": int(seen["impressions"].sum()), "users": int(sum(users)),
                     "lift": ctr["estimate"], "lo": ctr["lo"], "hi": ctr["hi"]})
    return rows


def _truth(run: Dict[str, Any], lift: Dict[str, Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    true = run.get("true")
    if not isinstance(true, dict):
        return None
    out = {"champion": true.get("champion"), "challenger": true.get("challenger")}
    for metric in METRICS:
        value = true.get(f"lift_{metric}")
        est = lift[metric]
        if value is None:
            continue
        out[f"lift_{metric}"] = value
        if est.get("lo") is not None:
            out[f"lift_{metric}_covered"] = bool(est["lo"] <= value <= est["hi"])
    return out


def build(data: ABData, ab, level: float = 0.95, points: int = 20) -> Dict[str, Any]:
    """The report of an A/B run under the `ab` config section (feedrank.config.AbConfig)."""
    arms = _arm_table(data)
    for arm in ARMS:
        if arms[arm]["impressions"] == 0:
            raise ABError(f"no {arm} impressions in the served log: the A/B test has nothing to compare "
                          f"(is the challenger deployed, and its share > 0?)")
        if arms[arm]["users"] < 2:
            raise ABError(f"the {arm} arm has {arms[arm]['users']} user(s): a user-clustered interval "
                          f"needs at least 2 per arm")
    lift = lifts(data.served, level)
    report: Dict[str, Any] = {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"share": ab.share, "salt": ab.salt, "min_lift": ab.min_lift, "max_p99_ms": ab.max_p99_ms,
                     "max_error_rate": ab.max_error_rate, "srm_alpha": ab.srm_alpha, "level": level,
                     "unit": "user", "interval": "delta method on per-user sums, log scale"},
        "arms": arms,
        "lift": lift,
        "lift_linear": lifts(data.served, level, scale="linear"),
        "srm": stats.srm(arms[CHAMPION_ARM]["users"], arms[CHALLENGER_ARM]["users"], ab.share).to_dict(),
        "guardrails": guardrails(data),
        "truth": _truth(data.run, lift),
        "run": {k: v for k, v in data.run.items() if k != "true"},
        "diagnostics": data.diagnostics,
        "timeline": timeline(data.served, level, points),
    }
    run_share = data.run.get("share", (data.run.get("settings") or {}).get("share"))
    if isinstance(run_share, (int, float)) and abs(float(run_share) - ab.share) > 1e-9:
        report["warnings"] = [f"the run's share {run_share} differs from ab.share {ab.share}: the SRM test "
                              f"uses ab.share"]
    report["decision"] = decide(report, ab).to_dict()
    return report


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100.0 * x:+.2f}%"


def format_text(rep: Dict[str, Any]) -> str:
    """A readable table of the report."""
    arms = rep["arms"]
    lines = [f"{'':<26}{'champion':>14}{'challenger':>14}"]
    for key, fmt in (("users", "{:d}"), ("requests", "{:d}"), ("impressions", "{:d}"), ("clicks", "{:d}"),
                     ("ctr", "{:.5f}"), ("conversions", "{:d}"), ("cvr", "{:.5f}")):
        label = {"cvr": "conversions/impression", "ctr": "CTR"}.get(key, key)
        lines.append(f"{label:<26}" + "".join(f"{fmt.format(arms[a][key]) if arms[a][key] is not None else 'n/a':>14}"
                                              for a in ARMS))
    g = rep["guardrails"]
    for key, fmt in (("p99_latency_ms", "{:.1f}"), ("error_rate", "{:.4f}")):
        cells = [fmt.format(g[a][key]) if a in g and g[a][key] is not None else "n/a" for a in ARMS]
        lines.append(f"{key:<26}" + "".join(f"{c:>14}" for c in cells))
    versions = ["/".join(arms[a]["model_versions"]) or "?" for a in ARMS]
    lines.append(f"{'model version':<26}" + "".join(f"{v:>14}" for v in versions))
    truth = rep.get("truth") or {}
    lines.append("")
    for metric, name in (("ctr", "CTR"), ("cvr", "conversions/impression")):
        m = rep["lift"][metric]
        level = int(round(100 * m["level"]))
        text = (f"lift {name}: {_pct(m['estimate'])}  {level}% CI [{_pct(m['lo'])}, {_pct(m['hi'])}]"
                + (f"  p = {m['p_value']:.3g}" if m.get("p_value") is not None else ""))
        if f"lift_{metric}" in truth:
            text += f"  | true {_pct(truth['lift_' + metric])}"
            if f"lift_{metric}_covered" in truth:
                text += " (covered)" if truth[f"lift_{metric}_covered"] else " (NOT covered)"
        lines.append(text)
    s = rep["srm"]
    lines.append(f"SRM: challenger share {s['observed_share']:.4f} vs {s['share']:.4f}, chi2 {s['chi2']:.3f}, "
                 f"p = {s['p_value']:.3g}")
    d = rep["decision"]
    lines.append("decision: " + ("PROMOTE" if d["promote"] else "do not promote"))
    lines += [f"  - {c['name']}: {'ok' if c['ok'] else 'FAIL'}: {c['detail']}" for c in d["checks"]]
    lines += [f"warning: {w}" for w in rep.get("warnings", [])]
    return "\n".join(lines)


def write(rep: Dict[str, Any], ab_dir: str) -> Dict[str, str]:
    """Writes ab_report.json, ab_report.txt and the timeline PNG into ``ab_dir``; returns their paths."""
    from feedrank.ab.plot import plot_timeline

    paths = {"json": os.path.join(ab_dir, REPORT_FILE), "text": os.path.join(ab_dir, TEXT_FILE),
             "png": os.path.join(ab_dir, PLOT_FILE)}
    rep["plot"] = PLOT_FILE
    for key, body in (("json", json.dumps(rep, indent=2, sort_keys=True) + "\n"), ("text", format_text(rep) + "\n")):
        tmp = paths[key] + ".tmp"
        with open(tmp, "w") as f:
            f.write(body)
        os.replace(tmp, paths[key])
    plot_timeline(rep, paths["png"])
    return paths
