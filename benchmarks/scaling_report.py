"""Pure helpers of the scaling benchmark: the world of a size, growth ratios, the table and the plot."""
from __future__ import annotations

import math
import statistics
from typing import Dict, List, Mapping, Optional, Sequence

#: The linear-scaling target: time may grow at most this much per 4x the events.
LINEAR_LIMIT_PER_4X = 4.4


def scaled_world(multiple: float, base: Mapping[str, object]) -> Dict[str, object]:
    """The simulator's settings for ``multiple`` times the base log's events.

    Events grow with the users (each user's days are simulated alike), so the
    users are scaled and everything else (posts, days, seed, mechanisms) is kept.
    """
    if multiple <= 0:
        raise ValueError("a size multiple must be positive")
    return dict(base, users=max(1, int(round(int(base["users"]) * multiple))))


def size_label(multiple: float) -> str:
    """``1`` -> ``"1x"``, ``0.25`` -> ``"0.25x"``."""
    return f"{multiple:g}x"


def growth_per_4x(small: float, large: float, events_small: int, events_large: int) -> float:
    """How much a cost grows per 4x the events, between two sizes.

    ``(large / small) ** (ln 4 / ln(events_large / events_small))``: the measured
    ratio when the event ratio is exactly 4, else the ratio a power law through
    the two points gives at 4x.  Linear scaling gives 4.0.
    """
    if small <= 0 or large <= 0 or events_large <= events_small:
        raise ValueError("needs positive costs and more events in the larger run")
    return (large / small) ** (math.log(4.0) / math.log(events_large / events_small))


def median_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    """The median of the values that are not None (None when none are)."""
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def add_ratios(rows: List[Dict[str, object]]) -> None:
    """Adds, to each runner's rows after its first (sorted by events), the raw and the
    per-4x-normalised growth of median wall and CPU seconds and of peak RSS vs the previous size."""
    by_runner: Dict[str, List[Dict[str, object]]] = {}
    for row in rows:
        by_runner.setdefault(str(row["runner"]), []).append(row)
    for runs in by_runner.values():
        runs.sort(key=lambda r: int(r["events"]))
        for prev, row in zip(runs, runs[1:]):
            row["event_ratio"] = round(int(row["events"]) / int(prev["events"]), 3)
            for key in ("wall_s", "cpu_s", "peak_rss_mb"):
                a, b = float(prev[key]), float(row[key])
                row[f"{key}_ratio"] = round(b / a, 3)
                row[f"{key}_per_4x"] = round(growth_per_4x(a, b, int(prev["events"]), int(row["events"])), 3)


def markdown(rows: Sequence[Mapping[str, object]]) -> str:
    """The results table: one row per size and runner."""
    def fmt(row: Mapping[str, object], key: str) -> str:
        v = row.get(f"{key}_per_4x")
        return "–" if v is None else f"{row[f'{key}_ratio']:.2f} ({v:.2f})"
    lines = ["| size | runner | events | runs | wall (s) | CPU (s) | peak RSS, tree (MB) | largest process (MB) "
             "| wall ratio (per 4×) | CPU ratio (per 4×) | peak RSS ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rss_ratio = "–" if r.get("peak_rss_mb_ratio") is None else f"{r['peak_rss_mb_ratio']:.2f}"
        lines.append(f"| {r['size']} | {r['runner']} | {int(r['events']):,} | {r['runs']} | {r['wall_s']:.1f} "
                     f"| {r['cpu_s']:.1f} | {r['peak_rss_mb']:,.0f} | {r['largest_process_mb']:,.0f} "
                     f"| {fmt(r, 'wall_s')} | {fmt(r, 'cpu_s')} | {rss_ratio} |")
    return "\n".join(lines)


def phase_markdown(rows: Sequence[Mapping[str, object]], phases: Sequence[str]) -> str:
    """Per-phase seconds and peak tree RSS (MB) of each size and runner (the median run's)."""
    head = "| size | runner | " + " | ".join(f"{p} s / MB" for p in phases) + " |"
    lines = [head, "|---|---|" + "---:|" * len(phases)]
    for r in rows:
        cells = []
        for p in phases:
            ph = r["phases"].get(p)
            cells.append("–" if not ph else f"{ph['seconds']:.0f} / {ph['peak_rss_mb']:,.0f}")
        lines.append(f"| {r['size']} | {r['runner']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def series(row: Mapping[str, object]) -> str:
    """A row's line in the plot: its runner, and its shuffle unless the default (files)."""
    shuffle = row.get("shuffle", "files")
    return str(row["runner"]) if shuffle == "files" else f"{row['runner']}, shuffle: {shuffle}"


def plot(rows: Sequence[Mapping[str, object]], path: str, title: str) -> None:
    """Wall time (log-log, with the linear line from each series' smallest size) and peak
    tree RSS (linear axis from 0) vs events, one line per runner and shuffle (`series`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    names = sorted({series(r) for r in rows}, key=lambda n: ("shuffle" in n, n))
    ticks = sorted({(int(r["events"]), str(r["size"])) for r in rows})
    panels = ((axes[0], "wall_s", "wall time (s)"), (axes[1], "peak_rss_mb", "peak RSS, process tree (MB)"))
    for ax, key, label in panels:
        for name in names:
            pts = sorted((int(r["events"]), float(r[key])) for r in rows if series(r) == name)
            dashed = "shuffle" in name
            color = "C0" if name.startswith("direct") else "C1"
            line, = ax.plot([p[0] / 1e6 for p in pts], [p[1] for p in pts], marker="s" if dashed else "o",
                            ls="--" if dashed else "-", color=color, alpha=0.6 if dashed else 1.0, label=name)
            if key == "wall_s" and pts and not dashed:   # what linear growth from the smallest size gives
                e0, v0 = pts[0]
                ax.plot([p[0] / 1e6 for p in pts], [v0 * p[0] / e0 for p in pts], ls=":",
                        color=line.get_color(), label=f"{name}, linear")
        ax.set_xscale("log")
        ax.set_xticks([e / 1e6 for e, _ in ticks], [f"{s}\n{e / 1e6:.1f} M" for e, s in ticks])
        ax.minorticks_off()
        if key == "wall_s":
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        else:
            ax.set_ylim(0, max(float(r[key]) for r in rows) * 1.25)
        ax.set_xlabel("events")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
