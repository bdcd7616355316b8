"""The candidate's plots (ROC, calibration) and its short model card."""
from __future__ import annotations

import datetime
from typing import Any, Dict, Optional

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_plot(labels: np.ndarray, scores: np.ndarray, path: str, title: str = "") -> Optional[str]:
    """ROC curve of the eval split; None if the split lacks a class."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if len(labels) == 0 or labels.min() == labels.max():
        return None
    fpr, tpr, _ = roc_curve(labels, scores)
    auc = roc_auc_score(labels, scores)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, lw=2, label=f"model (AUC {auc:.4f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC, eval split{' - ' + title if title else ''}", fontsize=10)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def calibration_plot(labels: np.ndarray, scores: np.ndarray, path: str, bins: int = 15,
                     title: str = "") -> Optional[str]:
    """Observed CTR vs mean prediction in equal-count score bins, with the score histogram."""
    if len(labels) == 0:
        return None
    order = np.argsort(scores, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
    pred = np.array([scores[g].mean() for g in groups])
    obs = np.array([labels[g].mean() for g in groups])
    plt = _pyplot()
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5, 6), sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1]})
    hi = float(max(pred.max(), obs.max(), 1e-3)) * 1.05
    ax.plot([0, hi], [0, hi], "--", color="grey", label="perfectly calibrated")
    ax.plot(pred, obs, "o-", label="model")
    ax.set_ylabel("observed click rate")
    ax.set_title(f"Calibration, eval split{' - ' + title if title else ''}\n"
                 f"mean prediction {scores.mean():.4f} vs observed {labels.mean():.4f}", fontsize=10)
    ax.legend(loc="upper left")
    hx.hist(scores, bins=40, color="tab:blue", alpha=0.6)
    hx.set_xlabel("predicted click probability")
    hx.set_ylabel("examples")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _f(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else "n/a"


def model_card(*, name: str, family: str, blessed: bool, blessing_reason: str, pushed_dir: Optional[str],
               metrics: Dict[str, float], slices: Dict[str, tuple], params: Dict[str, str],
               tags: Dict[str, str], data: Dict[str, Any]) -> str:
    """A short markdown model card."""
    lines = [
        f"# Model card: {name}",
        "",
        f"- **Family:** {family}",
        f"- **Status:** {'BLESSED' if blessed else 'NOT BLESSED'} - {blessing_reason}",
        f"- **Pushed to:** {pushed_dir or 'not pushed'}",
        f"- **TFX run:** {tags.get('tfx.run_id', 'n/a')}"
        + (f", KFP run {tags['kfp.run_id']}" if tags.get("kfp.run_id") else ""),
        f"- **Code:** git {tags.get('git.commit', 'unknown')}, fingerprint {tags.get('code_version', 'n/a')}",
        f"- **Logged:** {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        "",
        "## Intended use",
        "Ranks candidate items for a user by predicted click probability (CTR) from the user's "
        "behaviour sequence. Scores are calibrated probabilities (negative sampling corrected).",
        "",
        "## Data",
        *[f"- {k}: {v}" for k, v in data.items()],
        "",
        "## Eval metrics (eval split, exact)",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_f(metrics.get(k))} |" for k in ("auc", "gauc", "logloss", "oracle_auc",
                                                       "tfma_auc", "calibration") if k in metrics],
    ]
    if slices:  # {slice: (AUC, examples)}, largest slices first
        lines += ["", "## AUC per slice (TFMA, largest slices first)", "| slice | AUC | examples |",
                  "|---|---|---|"]
        ranked = sorted(slices.items(), key=lambda kv: -(kv[1][1] or 0))
        lines += [f"| {k} | {_f(auc)} | {int(n) if n is not None else 'n/a'} |" for k, (auc, n) in ranked[:15]]
        if len(ranked) > 15:
            lines.append(f"| ({len(ranked) - 15} smaller slices: see the run's metrics) | | |")
    lines += ["", "## Hyperparameters", *[f"- {k}: {v}" for k, v in sorted(params.items())
                                          if not k.startswith(("data.", "evaluator."))]]
    lines += ["", "## Caveats",
              "- Offline metrics on the last day of the log; online CTR may differ.",
              "- Slices with few examples have noisy AUC."]
    return "\n".join(lines) + "\n"
