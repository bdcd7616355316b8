"""The cumulative CTR lift over time with its interval (the report's PNG)."""
from __future__ import annotations

import logging
from typing import Any, Dict

log = logging.getLogger(__name__)


def plot_timeline(rep: Dict[str, Any], path: str) -> str:
    """Cumulative lift and its band against hours since the first request; zero, ``ab.min_lift``
    and (when known) the true lift as horizontal lines. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rep["timeline"]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    if rows:
        t0 = rows[0]["ts"]
        x = [(r["ts"] - t0) / 3600.0 for r in rows]
        ax.fill_between(x, [100 * r["lo"] for r in rows], [100 * r["hi"] for r in rows], alpha=0.25,
                        color="tab:blue", label=f"{int(round(100 * rep['settings']['level']))}% CI (user-clustered)")
        ax.plot(x, [100 * r["lift"] for r in rows], "o-", color="tab:blue", ms=3, label="cumulative CTR lift")
        ax.set_xlabel("hours since the first checkpoint")
    else:
        ax.text(0.5, 0.5, "too little data for a timeline", ha="center", transform=ax.transAxes)
    ax.axhline(0.0, color="black", lw=0.8)
    min_lift = rep["settings"]["min_lift"]
    if min_lift:
        ax.axhline(100 * min_lift, color="tab:orange", ls=":", label="ab.min_lift")
    truth = rep.get("truth") or {}
    if truth.get("lift_ctr") is not None:
        ax.axhline(100 * truth["lift_ctr"], color="tab:green", ls="--", label="true lift")
    ax.set_ylabel("challenger vs champion CTR (%)")
    verdict = "promote" if rep["decision"]["promote"] else "do not promote"
    ax.set_title(f"A/B: CTR lift {100 * rep['lift']['ctr']['estimate']:+.2f}%  ({verdict})")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
