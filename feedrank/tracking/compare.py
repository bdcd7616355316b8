"""The candidates of an experiment side by side, with deltas versus the champion.

  rows, champion = gather(client, "feedrank-demo", "feedrank-demo-ranker")
  print(format_table(rows, champion)); plot(rows, champion, "compare.png")

Per candidate: AUC, GAUC, logloss (exact, on the eval split), blessed,
registry version and aliases, and the AUC of its largest slices; deltas are
candidate minus champion (for logloss, lower is better).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

from feedrank.tracking import BLESSED_TAG, CHAMPION, TrackingError, error_code

METRICS = ("auc", "gauc", "logloss")


@dataclasses.dataclass
class Row:
    run_id: str
    name: str
    tfx_run_id: str
    blessed: bool
    version: Optional[str]
    aliases: List[str]
    metrics: Dict[str, Optional[float]]
    slices: Dict[str, float]       # "category_id.jobs-sales" -> AUC
    slice_n: Dict[str, float]      # "category_id.jobs-sales" -> example count
    start_time: int
    family: str = ""               # the trainer family (run tag model_family)

    @property
    def label(self) -> str:
        tag = f"v{self.version}" if self.version else "unreg."
        return (f"{self.run_id[:7]} {self.family or '?'} {tag}"
                + (f" [{','.join(self.aliases)}]" if self.aliases else ""))


def _row(run, versions: Dict[str, Tuple[str, List[str]]]) -> Row:
    m = run.data.metrics
    tags = run.data.tags
    version, aliases = versions.get(run.info.run_id, (tags.get("registered_version"), []))
    return Row(
        run_id=run.info.run_id, name=run.info.run_name or run.info.run_id,
        tfx_run_id=tags.get("tfx.run_id", ""), blessed=tags.get(BLESSED_TAG, "false") == "true",
        version=version, aliases=sorted(aliases), metrics={k: m.get(k) for k in METRICS},
        slices={k[4:]: v for k, v in m.items() if k.startswith("auc.")},
        slice_n={k[2:]: v for k, v in m.items() if k.startswith("n.")},
        start_time=run.info.start_time or 0, family=tags.get("model_family", ""))


def _versions(client, model: Optional[str]) -> Tuple[Dict[str, Tuple[str, List[str]]], Optional[str]]:
    """run_id -> (version, aliases) for the registered model, and the champion's run id."""
    if not model:
        return {}, None
    try:
        rm = client.get_registered_model(model)
    except Exception as e:  # noqa: BLE001 - nothing registered yet
        if error_code(e) != "RESOURCE_DOES_NOT_EXIST":
            raise
        return {}, None
    by_version: Dict[str, List[str]] = {}
    for alias, v in (rm.aliases or {}).items():
        by_version.setdefault(str(v), []).append(alias)
    out, champion_run = {}, None
    for mv in client.search_model_versions(f"name = '{model}'"):
        out[mv.run_id] = (str(mv.version), by_version.get(str(mv.version), []))
        if CHAMPION in by_version.get(str(mv.version), []):
            champion_run = mv.run_id
    return out, champion_run


def gather(client, experiment: str, model: Optional[str] = None,
           last: int = 10) -> Tuple[List[Row], Optional[Row]]:
    """The newest ``last`` finished candidates (oldest first) and the champion's row (or None)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise TrackingError(f"MLflow experiment {experiment!r} does not exist (no candidate logged yet)")
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=max(1, last))
    versions, champion_run = _versions(client, model)
    rows = [_row(r, versions) for r in runs]
    champion = next((r for r in rows if r.run_id == champion_run), None)
    if champion is None and champion_run:
        try:
            champion = _row(client.get_run(champion_run), versions)
            rows.append(champion)
        except Exception as e:  # noqa: BLE001 - its run was deleted
            if error_code(e) != "RESOURCE_DOES_NOT_EXIST":
                raise
            champion = None
    rows.sort(key=lambda r: r.start_time)
    return rows, champion


def delta(row: Row, champion: Optional[Row], metric: str) -> Optional[float]:
    a = row.metrics.get(metric)
    b = champion.metrics.get(metric) if champion else None
    return None if a is None or b is None else a - b


def top_slices(rows: List[Row], k: int = 3) -> List[str]:
    """The ``k`` slices with the most eval examples (over all rows)."""
    sizes: Dict[str, float] = {}
    for r in rows:
        for s, n in r.slice_n.items():
            sizes[s] = max(sizes.get(s, 0.0), n)
    named = sorted(sizes, key=lambda s: -sizes[s]) or sorted({s for r in rows for s in r.slices})
    return named[:k]


def _f(x: Optional[float], signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def format_table(rows: List[Row], champion: Optional[Row], k_slices: int = 3) -> str:
    """A plain-text table: one line per candidate."""
    slices = top_slices(rows, k_slices)
    head = ["run", "version", "blessed", "AUC", "dAUC", "GAUC", "dGAUC", "logloss", "dlogloss"] + \
        [f"AUC {s}" for s in slices]
    body = []
    for r in rows:
        line = [r.label, r.version or "-", "yes" if r.blessed else "no"]
        for m in METRICS:
            line += [_f(r.metrics.get(m)), _f(delta(r, champion, m), signed=True)]
        for s in slices:
            v = r.slices.get(s)
            d = None if champion is None or v is None or s not in champion.slices else v - champion.slices[s]
            line.append(_f(v) + (f" ({_f(d, True)})" if d is not None else ""))
        body.append(line)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    title = (f"champion: version {champion.version}, {champion.family or 'family unknown'} "
             f"(run {champion.run_id[:7]})" if champion
             else "no champion yet: deltas are n/a (promote one with `pipeline.py promote`)")
    lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*row) for row in body]
    return "\n".join([title] + [line.rstrip() for line in lines])


def plot(rows: List[Row], champion: Optional[Row], path: str, k_slices: int = 4) -> str:
    """Bars of AUC, GAUC and logloss per candidate (champion highlighted, deltas annotated),
    and the AUC of the largest slices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [r.label for r in rows]
    slices = top_slices(rows, k_slices)
    fig, axes = plt.subplots(1, 4 if slices else 3, figsize=(5 * (4 if slices else 3), 4.8))
    colors = ["gold" if champion and r.run_id == champion.run_id else
              ("tab:blue" if r.blessed else "tab:grey") for r in rows]
    x = np.arange(len(rows))
    for ax, m in zip(axes, METRICS):
        vals = [r.metrics.get(m) for r in rows]
        ax.bar(x, [v if v is not None else 0 for v in vals], color=colors)
        known = [v for v in vals if v is not None]
        if known:
            lo, hi = min(known), max(known)
            pad = max((hi - lo) * 0.5, 0.01)
            ax.set_ylim(max(0.0, lo - pad), hi + pad)
        for i, r in enumerate(rows):
            d = delta(r, champion, m)
            if vals[i] is not None:
                ax.text(i, vals[i], f"{vals[i]:.4f}" + (f"\n{d:+.4f}" if d is not None and d != 0 else ""),
                        ha="center", va="bottom", fontsize=8)
        ax.set_title(f"{m.upper() if m != 'logloss' else 'logloss (lower is better)'}")
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    if slices:
        ax = axes[3]
        width = 0.8 / max(1, len(rows))
        for i, r in enumerate(rows):
            ax.bar(np.arange(len(slices)) + i * width, [r.slices.get(s, 0) for s in slices], width,
                   label=r.label, color=colors[i] if len(rows) <= 3 else None)
        ax.set_xticks(np.arange(len(slices)) + 0.4 - width / 2, slices, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0.4, 1.0)
        ax.set_title("AUC, largest slices")
        ax.legend(fontsize=7)
    fig.suptitle("Candidates vs champion (gold = champion, blue = blessed, grey = not blessed)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
