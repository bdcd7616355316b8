"""Is the A/B report's interval honest?  Repeated simulated A/B tests against the true lift.

  .venv/bin/python -m benchmarks.ab_coverage --pool RUN/truth_ab.parquet    # an online A/B run's truth
  .venv/bin/python -m benchmarks.ab_coverage --offline data/demo            # a pool from an offline log

Each repetition draws users with replacement from the truth pool (every
request with both arms' shown slots and true p_click / p_convert), assigns
arms with the transformer's hash under a fresh salt, draws clicks and
conversions from the assigned arm's slots and computes the report's 95%
interval (`feedrank.ab.stats`, user-clustered delta method, log and linear
scale).  Coverage is counted against two truths: the pool's lift (the
population the users are drawn from, the interval's target) and the drawn
users' own lift (the same users under both arms).  An A/A test (both arms show
the champion's slots) counts how often the interval declares a winner.
Writes benchmarks/results/ab_coverage.json and docs/img/ab_coverage.png.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from typing import Dict, List

import numpy as np

from feedrank.ab import CHALLENGER_ARM, CHAMPION_ARM, stats
from feedrank.ab import pool as pool_lib
from feedrank.ab.assign import add_share_argument
from feedrank.ab.simulate import Sampler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
log = logging.getLogger(__name__)


def one(sampler: Sampler, users: int, seed: int, share: float, level: float, boot: int) -> Dict:
    """One repetition: estimates, intervals (log, linear, bootstrap if ``boot``) and both truths."""
    d = sampler.draw(users, seed, share)
    a, b = d.arms[CHAMPION_ARM], d.arms[CHALLENGER_ARM]
    row: Dict = {"seed": seed, "users": [len(a.impressions), len(b.impressions)]}
    for metric, num in (("ctr", "clicks"), ("cvr", "conversions")):
        ra = stats.ratio(getattr(a, num), a.impressions)
        rb = stats.ratio(getattr(b, num), b.impressions)
        m = {"true_pop": d.true_population[f"lift_{metric}"], "true_sample": d.true_sample[f"lift_{metric}"]}
        for scale in stats.SCALES:
            lift = stats.lift(rb, ra, level, scale)
            m[scale] = [lift.estimate, lift.lo, lift.hi]
            m["se_log"] = lift.se_log
        if boot and metric == "ctr":
            bl = stats.bootstrap_lift(a.clicks, a.impressions, b.clicks, b.impressions, reps=boot, level=level,
                                      seed=seed)
            m["bootstrap"] = [bl.estimate, bl.lo, bl.hi]
        row[metric] = m
    return row


def covered(rows: List[Dict], metric: str, scale: str, truth: str) -> List[bool]:
    return [r[metric][scale][1] <= r[metric][truth] <= r[metric][scale][2] for r in rows if scale in r[metric]]


def summarise(rows: List[Dict], level: float) -> Dict:
    """Coverage per metric, scale and truth with a binomial standard error; SE calibration."""
    out: Dict = {"reps": len(rows)}
    for metric in ("ctr", "cvr"):
        m: Dict = {"true_pop": rows[0][metric]["true_pop"],
                   "true_sample_mean": float(np.mean([r[metric]["true_sample"] for r in rows])),
                   "true_sample_sd": float(np.std([r[metric]["true_sample"] for r in rows], ddof=1))}
        for scale in (*stats.SCALES, "bootstrap"):
            for truth in ("true_pop", "true_sample"):
                hits = covered(rows, metric, scale, truth)
                if not hits:
                    continue
                rate = float(np.mean(hits))
                m[f"coverage_{scale}_{truth}"] = rate
                m[f"coverage_{scale}_{truth}_se"] = math.sqrt(level * (1 - level) / len(hits))
                m[f"reps_{scale}"] = len(hits)
        logs = np.log1p([r[metric]["log"][0] for r in rows])
        m["sd_log_lift"] = float(np.std(logs, ddof=1))          # the spread of the estimates ...
        m["mean_se_log"] = float(np.mean([r[metric]["se_log"] for r in rows]))  # ... and what the formula says
        m["mean_estimate"] = float(np.mean([r[metric]["log"][0] for r in rows]))
        m["mean_width_log"] = float(np.mean([r[metric]["log"][2] - r[metric]["log"][1] for r in rows]))
        for scale in stats.SCALES:  # which side the misses fall on: a skewed estimate misses one side more
            m[f"miss_below_{scale}"] = float(np.mean([r[metric][scale][2] < r[metric]["true_pop"] for r in rows]))
            m[f"miss_above_{scale}"] = float(np.mean([r[metric][scale][1] > r[metric]["true_pop"] for r in rows]))
        out[metric] = m
    return out


def summarise_aa(rows: List[Dict]) -> Dict:
    """A/A: how often the interval declares a winner (two-sided) or would promote (lower bound > 0)."""
    out: Dict = {"reps": len(rows)}
    for metric in ("ctr", "cvr"):
        for scale in stats.SCALES:
            lo = np.array([r[metric][scale][1] for r in rows])
            hi = np.array([r[metric][scale][2] for r in rows])
            out[f"{metric}_{scale}_no_winner"] = float(np.mean((lo <= 0) & (hi >= 0)))
            out[f"{metric}_{scale}_promote_rate"] = float(np.mean(lo > 0))
    return out


def rounded(x, digits: int = 6):
    """``x`` with every float rounded (the stored repetitions)."""
    if isinstance(x, float):
        return round(x, digits)
    if isinstance(x, dict):
        return {k: rounded(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v, digits) for v in x]
    return x


def plot(result: Dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["ab"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    axes = axes.ravel()
    ax = axes[0]
    sizes = [r["users"] for r in runs]
    x = np.arange(len(sizes))
    for k, (scale, truth, color) in enumerate((("log", "true_pop", "tab:blue"), ("linear", "true_pop", "tab:orange"),
                                               ("log", "true_sample", "tab:green"))):
        y = [100 * r["summary"]["ctr"][f"coverage_{scale}_{truth}"] for r in runs]
        e = [100 * 1.96 * r["summary"]["ctr"][f"coverage_{scale}_{truth}_se"] for r in runs]
        ax.errorbar(x + (k - 1) * 0.12, y, yerr=e, fmt="o", color=color, capsize=3,
                    label=f"{scale} CI vs {'pool' if truth == 'true_pop' else 'drawn users'} lift")
    ax.axhspan(93, 97, color="grey", alpha=0.15, label="target 93-97%")
    ax.axhline(95, color="black", lw=0.8)
    ax.set_xticks(x, [f"{s} users" for s in sizes])
    ax.set_ylabel("coverage of the 95% CI (%)")
    ax.set_title("CTR lift: coverage (±1.96 binomial SE)")
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[1]
    big = runs[-1]["rows"][:100]
    big = sorted(big, key=lambda r: r["ctr"]["log"][0])
    truth = big[0]["ctr"]["true_pop"]
    for i, r in enumerate(big):
        lo, hi = r["ctr"]["log"][1], r["ctr"]["log"][2]
        ax.plot([i, i], [100 * lo, 100 * hi], color="tab:blue" if lo <= truth <= hi else "tab:red", lw=1.2)
        ax.plot(i, 100 * r["ctr"]["log"][0], ".", color="black", ms=2)
    ax.axhline(100 * truth, color="tab:green", ls="--", label=f"pool lift {100 * truth:+.2f}%")
    ax.set_title(f"first 100 repetitions, {runs[-1]['users']} users (red: misses)")
    ax.set_ylabel("CTR lift (%)")
    ax.set_xlabel("repetition (sorted by estimate)")
    ax.legend(fontsize=8)
    ax = axes[2]
    aa = result["aa"]["summary"]
    labels = ["CTR log", "CTR linear", "conv. log", "conv. linear"]
    keys = ["ctr_log", "ctr_linear", "cvr_log", "cvr_linear"]
    ax.bar(np.arange(4) - 0.2, [100 * (1 - aa[f"{k}_no_winner"]) for k in keys], 0.4, label="declares a winner")
    ax.bar(np.arange(4) + 0.2, [100 * aa[f"{k}_promote_rate"] for k in keys], 0.4, label="would promote (lo > 0)")
    ax.axhline(5, color="black", lw=0.8, ls="--")
    ax.axhline(2.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(np.arange(4), labels)
    ax.set_ylabel("% of A/A repetitions")
    ax.set_title(f"A/A ({result['aa']['users']} users, {aa['reps']} repetitions)")
    ax.legend(fontsize=8)
    ax = axes[3]
    for k, (scale, color) in enumerate((("log", "tab:blue"), ("linear", "tab:orange"))):
        below = [100 * r["summary"]["ctr"][f"miss_below_{scale}"] for r in runs]
        above = [100 * r["summary"]["ctr"][f"miss_above_{scale}"] for r in runs]
        ax.bar(x + (k - 0.5) * 0.38, below, 0.36, color=color, alpha=0.55, label=f"{scale}: CI below the truth")
        ax.bar(x + (k - 0.5) * 0.38, above, 0.36, bottom=below, color=color, hatch="//", alpha=0.9,
               label=f"{scale}: CI above the truth (a false promotion)")
    ax.axhline(2.5, color="black", lw=0.8, ls=":")
    ax.axhline(5, color="black", lw=0.8)
    ax.set_xticks(x, [f"{s} users" for s in sizes])
    ax.set_ylabel("% of repetitions")
    ax.set_title("CTR lift: which side the misses fall on (nominal 2.5% + 2.5%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pool", help="an A/B run's truth_ab.parquet")
    src.add_argument("--offline", default="data/demo", help="derive a pool from this simulated log (default)")
    p.add_argument("--noise", type=float, default=12.0, help="offline pool: the challenger's ranking noise (logit sd)")
    p.add_argument("--show", type=int, default=10, help="offline pool: posts shown per request")
    p.add_argument("--reps", type=int, default=1000, help="repetitions per sample size (default: %(default)s)")
    p.add_argument("--aa-reps", type=int, default=2000, help="A/A repetitions (default: %(default)s)")
    p.add_argument("--users", type=int, nargs="*", default=[100, 300, 2000, 0],
                   help="users drawn per repetition (0: as many as the pool has) (default: %(default)s)")
    add_share_argument(p)
    p.add_argument("--level", type=float, default=0.95)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates in the cross-check")
    p.add_argument("--bootstrap-reps", type=int, default=100, help="repetitions that also get the bootstrap")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "ab_coverage.json"))
    p.add_argument("--plot", default=os.path.join(ROOT, "docs", "img", "ab_coverage.png"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.time()
    if args.pool:
        df, source = pool_lib.read(args.pool), {"pool": os.path.relpath(os.path.abspath(args.pool), ROOT)}
    else:
        df = pool_lib.from_offline(os.path.join(ROOT, args.offline) if not os.path.isabs(args.offline)
                                   else args.offline, show=args.show, noise=args.noise)
        source = {"offline": args.offline, "noise": args.noise, "show": args.show}
    truth = pool_lib.true_lift(df)
    sampler, aa_sampler = Sampler(df), Sampler(df, aa=True)
    n_pool = len(sampler.users)
    log.info("pool: %d users, %d requests; true CTR lift %+.4f, conversion lift %+.4f", n_pool,
             df["request_id"].nunique(), truth["lift_ctr"], truth["lift_cvr"])
    result: Dict = {"source": source, "pool_users": n_pool, "pool_requests": int(df["request_id"].nunique()),
                    "truth": truth, "share": args.share, "level": args.level, "ab": []}
    for users in args.users:
        n = users or n_pool
        rows = [one(sampler, n, seed, args.share, args.level, args.bootstrap if seed < args.bootstrap_reps else 0)
                for seed in range(args.reps)]
        s = summarise(rows, args.level)
        c = s["ctr"]
        log.info("%6d users: CTR coverage log %.3f linear %.3f (pool truth), log %.3f (drawn users' truth), "
                 "bootstrap %.3f; sd(log lift) %.4f vs mean SE %.4f", n, c["coverage_log_true_pop"],
                 c["coverage_linear_true_pop"], c["coverage_log_true_sample"],
                 c.get("coverage_bootstrap_true_pop", float("nan")), c["sd_log_lift"], c["mean_se_log"])
        result["ab"].append({"users": n, "summary": s, "rows": rows})
    n = args.users[-1] or n_pool
    aa_rows = [one(aa_sampler, n, 10_000 + seed, args.share, args.level, 0) for seed in range(args.aa_reps)]
    result["aa"] = {"users": n, "summary": summarise_aa(aa_rows)}
    aa = result["aa"]["summary"]
    log.info("A/A %d users: no winner (log CI) %.3f, promote rate %.3f", n, aa["ctr_log_no_winner"],
             aa["ctr_log_promote_rate"])
    result["seconds"] = round(time.time() - t0, 1)
    result["command"] = "python -m benchmarks.ab_coverage " + " ".join(argv if argv is not None else sys.argv[1:])
    plot(result, args.plot)
    for r in result["ab"]:  # keep the JSON small: the intervals of the first 100 repetitions only
        r["rows"] = rounded(r["rows"][:100])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    log.info("wrote %s and %s (%.0f s)", args.out, args.plot, result["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
