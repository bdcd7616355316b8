"""The quality benchmark's Markdown table and plot (see benchmarks/quality.py)."""
from __future__ import annotations

import os
from typing import Dict, List

NAMES = {"gbdt": "GBDT (LightGBM)", "dnn": "DNN", "wide_deep": "Wide&Deep", "deepfm": "DeepFM", "din": "DIN",
         "dien": "DIEN", "bst": "BST (Transformer)", "double_channel": "Double-channel",
         "multi_channel": "Multi-channel", "din_w2v": "DIN + Word2Vec similarity",
         "gbdt_tfdf": "GBDT (TF-DF, the served gbdt family)",
         "item_prior": "Item prior (post CTR so far)", "user_prior": "User prior (user CTR so far)"}


def _pm(agg: Dict, key: str, digits: int = 4) -> str:
    if key not in agg:
        return "n/a"
    mean, std = agg[key]
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def best_on_validation(result: Dict) -> str:
    """The family with the highest mean validation AUC (never chosen by test)."""
    fams = result["families"]
    return max(fams, key=lambda f: fams[f].get("val_auc", [0.0])[0])


def markdown(result: Dict) -> str:
    """One row per family: test-user metrics, mean ± std over the random seeds,
    the AUC on the cold slices, then the oracles and the slice sizes."""
    lines: List[str] = [
        "| model | val AUC | test AUC | test GAUC | test logloss | test calibration | oracle lift recovered "
        "| AUC unseen posts | AUC no-history users | epochs/rounds | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    best = best_on_validation(result)
    for fam, agg in result["families"].items():
        epochs = [r["epochs"] for r in result["runs"] if r["family"] == fam]
        name = NAMES.get(fam, fam) + (" **(best on val)**" if fam == best else "")
        lines.append(f"| {name} | {_pm(agg, 'val_auc')} | {_pm(agg, 'test_auc')} | {_pm(agg, 'test_gauc')} "
                     f"| {_pm(agg, 'test_logloss')} | {_pm(agg, 'test_calibration', 3)} "
                     f"| {_pm(agg, 'test_oracle_lift_recovered', 3)} "
                     f"| {_pm(agg, 'test_auc_unseen_post')} | {_pm(agg, 'test_auc_no_history')} "
                     f"| {'/'.join(str(e) for e in epochs)} | {agg['train_s']:.0f} |")
    test = next((r["test"] for r in result["runs"] if r["test"].get("oracle_auc")), None)
    if test:
        agg_oracle = test.get("oracle_aggregate_auc")
        lines.append(f"\nOracle (the simulator's true p_click) test AUC: {test['oracle_auc']:.4f}"
                     + (f"; aggregates-only oracle {agg_oracle:.4f} (the true model without its order "
                        "terms: it keeps the position term and the within-day drift, so it is not the best "
                        "predictor that ignores order)" if agg_oracle else "")
                     + f"; seeds {result['seeds']}; {result['machine'].get('cpu_model')}, "
                     f"{result['machine'].get('cpus')} cores.")
    any_run = result["runs"][0]["test"] if result["runs"] else {}
    if "n" in any_run:
        lines.append(f"Test impressions: {any_run['n']:,}, of which unseen posts "
                     f"{any_run.get('n_unseen_post', 0):,} and no-history users {any_run.get('n_no_history', 0):,}.")
    if result.get("paired"):
        lines.append("\n" + paired_markdown(result))
    return "\n".join(lines)


def paired_markdown(result: Dict) -> str:
    """The paired comparisons: difference on the test users and its 95% interval over users."""
    seed = result["seeds"][0]
    lines = [f"Paired differences on the test users (seed {seed}; 95% bootstrap interval over users, "
             f"{result['paired'][0]['resamples']} resamples): an ordering only where the interval excludes 0.",
             "", "| a | b | metric | a − b | 95% interval | ordered |", "|---|---|---|---|---|---|"]
    for d in result["paired"]:
        verdict = ("**a ahead**" if d["lo"] > 0 else "**b ahead**") if d["ordered"] else "no"
        lines.append(f"| {NAMES.get(d['a'], d['a'])} | {NAMES.get(d['b'], d['b'])} | {d['metric'].upper()} "
                     f"| {d['diff']:+.4f} | [{d['lo']:+.4f}, {d['hi']:+.4f}] | {verdict} |")
    return "\n".join(lines)


WORLDS = {"quality.yaml": "aggregate world", "quality_realistic.yaml": "realistic world",
          "quality_cold.yaml": "impressions-and-clicks-only world", "quality_w2v.yaml": "realistic world, Word2Vec",
          "movielens.yaml": "MovieLens 100K (a real public log)"}


def world_of(result: Dict) -> str:
    """The simulated world of a result, from its config's file name."""
    name = os.path.basename(str(result.get("config", "")))
    return WORLDS.get(name, name or "unknown world")


def plot(result: Dict, path: str) -> None:
    """Bar chart of the test AUC (mean ± std) per family from 0.5 (chance) up, the oracles as
    lines; the world in the title, the legend outside the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(result["families"])
    means = [result["families"][f].get("test_auc", [float("nan")])[0] for f in fams]
    stds = [result["families"][f].get("test_auc", [0, 0])[1] for f in fams]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    bars = ax.bar([NAMES.get(f, f) for f in fams], [m - 0.5 for m in means], bottom=0.5, yerr=stds, capsize=4,
                  color="#4c72b0")
    for bar, m in zip(bars, means):
        if m == m:
            ax.annotate(f"{m:.4f}", (bar.get_x() + bar.get_width() / 2, 0.5), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", color="white", fontsize=8)
    oracle = next((r["test"]["oracle_auc"] for r in result["runs"] if r["test"].get("oracle_auc")), None)
    if oracle:
        ax.axhline(oracle, color="#c44e52", ls="--", label=f"oracle {oracle:.3f}")
    agg_oracle = next((r["test"]["oracle_aggregate_auc"] for r in result["runs"]
                       if r["test"].get("oracle_aggregate_auc")), None)
    if agg_oracle and oracle and agg_oracle < oracle - 1e-4:
        ax.axhline(agg_oracle, color="#dd8452", ls=":", label=f"aggregates-only oracle {agg_oracle:.3f}")
    if oracle:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8)
    ax.set_ylim(0.5, max([oracle or 0.0] + [m + s for m, s in zip(means, stds) if m == m]) + 0.02)
    ax.set_ylabel("test-user AUC (axis from 0.5 = chance)")
    where = world_of(result) if result.get("public") else f"Simulated {world_of(result)}"
    ax.set_title(f"{where}: test AUC, mean ± std over seeds {result['seeds']}")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
