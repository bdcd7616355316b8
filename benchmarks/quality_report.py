"""The quality benchmark's Markdown table and plot (see benchmarks/quality.py)."""
from __future__ import annotations

import os
from typing import Dict, List

NAMES = {"gbdt": "GBDT (LightGBM)", "dnn": "DNN", "wide_deep": "Wide&Deep", "deepfm": "DeepFM", "din": "DIN",
         "dien": "DIEN", "bst": "BST (Transformer)", "double_channel": "Double-channel",
         "multi_channel": "Multi-channel", "din_w2v": "DIN + Word2Vec similarity"}


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
        "| model | val AUC | test AUC | test GAUC | test logloss | oracle lift recovered "
        "| AUC unseen posts | AUC no-history users | epochs/rounds | train s |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    best = best_on_validation(result)
    for fam, agg in result["families"].items():
        epochs = [r["epochs"] for r in result["runs"] if r["family"] == fam]
        name = NAMES.get(fam, fam) + (" **(best on val)**" if fam == best else "")
        lines.append(f"| {name} | {_pm(agg, 'val_auc')} | {_pm(agg, 'test_auc')} | {_pm(agg, 'test_gauc')} "
                     f"| {_pm(agg, 'test_logloss')} | {_pm(agg, 'test_oracle_lift_recovered', 3)} "
                     f"| {_pm(agg, 'test_auc_unseen_post')} | {_pm(agg, 'test_auc_no_history')} "
                     f"| {'/'.join(str(e) for e in epochs)} | {agg['train_s']:.0f} |")
    test = next((r["test"] for r in result["runs"] if r["test"].get("oracle_auc")), None)
    if test:
        agg_oracle = test.get("oracle_aggregate_auc")
        lines.append(f"\nOracle (the simulator's true p_click) test AUC: {test['oracle_auc']:.4f}"
                     + (f"; aggregates-only oracle {agg_oracle:.4f}" if agg_oracle else "")
                     + f"; seeds {result['seeds']}; {result['machine'].get('cpu_model')}, "
                     f"{result['machine'].get('cpus')} cores.")
    any_run = result["runs"][0]["test"] if result["runs"] else {}
    if "n" in any_run:
        lines.append(f"Test impressions: {any_run['n']:,}, of which unseen posts "
                     f"{any_run.get('n_unseen_post', 0):,} and no-history users {any_run.get('n_no_history', 0):,}.")
    return "\n".join(lines)


def plot(result: Dict, path: str) -> None:
    """Bar chart of the test AUC (mean ± std) per family, oracle as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(result["families"])
    means = [result["families"][f].get("test_auc", [float("nan")])[0] for f in fams]
    stds = [result["families"][f].get("test_auc", [0, 0])[1] for f in fams]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.bar([NAMES.get(f, f) for f in fams], means, yerr=stds, capsize=4, color="#4c72b0")
    oracle = next((r["test"]["oracle_auc"] for r in result["runs"] if r["test"].get("oracle_auc")), None)
    if oracle:
        ax.axhline(oracle, color="#c44e52", ls="--", label=f"oracle {oracle:.3f}")
    agg_oracle = next((r["test"]["oracle_aggregate_auc"] for r in result["runs"]
                       if r["test"].get("oracle_aggregate_auc")), None)
    if agg_oracle and oracle and agg_oracle < oracle - 1e-4:
        ax.axhline(agg_oracle, color="#dd8452", ls=":", label=f"aggregates-only oracle {agg_oracle:.3f}")
    if oracle:
        ax.legend(loc="lower right")
    low = min(m for m in means if m == m) - 0.02
    ax.set_ylim(max(0.5, low), (oracle or max(means)) + 0.01)
    ax.set_ylabel("test-user AUC")
    ax.set_title(f"Quality: mean ± std over seeds {result['seeds']}")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
