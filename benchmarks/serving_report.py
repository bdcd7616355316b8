"""The tables and the plot of ``benchmarks/results/serving.json`` (written by
``benchmarks/serving.py``), as the benchmarks README shows them.

    .venv/bin/python -m benchmarks.serving_report [benchmarks/results/serving.json] [--plot PNG]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional

LABELS = {"predictor": "predictor (make serve's)", "transformer": "make serve end to end",
          "naive": "naive peer (stock kserve, row per candidate)"}
ROLES = ("predictor", "transformer", "redis", "updater", "launcher", "naive")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "serving.json")


def _ms(v: Optional[float]) -> str:
    return "–" if v is None else f"{v:g}"


def _cpu(row: Dict) -> str:
    cpu = row.get("cpu") or {}
    roles = cpu.get("by_role_ms_per_request", {})
    parts = [f"{r} {roles[r]:.1f}" for r in ROLES if roles.get(r)]
    return f"**{cpu.get('server_ms_per_request', 0):.1f}**" + (f" ({', '.join(parts)})" if len(parts) > 1 else "")


def rates_table(result: Dict) -> str:
    """One row per target and offered rate."""
    lines = ["| target | offered req/s | achieved | p50 / p99 ms | errors | degraded | server CPU ms/request |",
             "|---|---|---|---|---|---|---|"]
    for target, res in result["targets"].items():
        for r in res["rates"]:
            errors = r["errors"] if not r["errors"] else f"{r['errors']} ({', '.join(r.get('error_kinds', {}))})"
            lines.append(f"| {LABELS.get(target, target)} | {r['offered']:g} | {r['achieved_rps']:g} | "
                         f"{_ms(r['p50_ms'])} / {_ms(r['p99_ms'])} | {errors} | {r['degraded']} | {_cpu(r)} |")
    return "\n".join(lines)


def _at(res: Dict, rate: float) -> Optional[Dict]:
    return next((r for r in res["rates"] if r["offered"] == rate), None)


def summary_table(result: Dict, rate: float = 100.0) -> str:
    """Sustainable rate, p99 and CPU at ``rate`` req/s, and the ratio to the naive peer."""
    naive = result["targets"].get("naive", {}).get("max_sustainable_rps")
    lines = [f"| target | highest rate, 0 errors and p99 < {result['slo_ms']:g} ms | p99 at {rate:g} req/s "
             f"| server CPU per request at {rate:g} req/s | vs naive peer |", "|---|---|---|---|---|"]
    for target, res in result["targets"].items():
        row = _at(res, rate)
        p99 = "–" if row is None else (f"{_ms(row['p99_ms'])} ms" + (f" ({row['errors']} errors)" if row["errors"]
                                                                      else ""))
        ratio = f"{res['max_sustainable_rps'] / naive:.1f}×" if naive and target != "naive" else "–"
        lines.append(f"| {LABELS.get(target, target)} | **{res['max_sustainable_rps']:g} req/s** | {p99} | "
                     f"{'–' if row is None else _cpu(row) + ' ms'} | {ratio} |")
    return "\n".join(lines)


def faults_table(result: Dict) -> str:
    """The faults under load: errors, degraded answers, recovery, survivors."""
    lines = ["| fault | offered req/s | answered | errors | degraded | p99 ms | fault took | recovered after "
             "| stack processes after |", "|---|---|---|---|---|---|---|---|---|"]
    for name, f in result.get("faults", {}).items():
        if "skipped" in f:
            lines.append(f"| {name} | skipped: {f['skipped']} |||||||| ")
            continue
        d = f["disruption"]
        took = (f"swap {d.get('swap_s')} s" if name == "hot_swap"
                else f"Redis back {d.get('redis_back_s')} s ({d.get('signal')})")
        errors = sum(f["errors"].values())
        lines.append(f"| {name} | {f['offered']:g} | {f['ok']}/{f['sent']} | {errors} | {f['degraded']} | "
                     f"{_ms(f['p99_ms'])} | {took} | {f['recover_s']} s | {', '.join(f['processes_after'])} |")
    return "\n".join(lines)


def plot(result: Dict, path: str) -> None:
    """p50 and p99 against offered req/s for each target (log scale), with the issue's p99 targets."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for i, (target, res) in enumerate(result["targets"].items()):
        rows = [r for r in res["rates"] if r["p99_ms"] is not None]
        color = f"C{i}"
        ax.plot([r["offered"] for r in rows], [r["p99_ms"] for r in rows], "o-", color=color,
                label=f"{LABELS.get(target, target)} p99")
        ax.plot([r["offered"] for r in rows], [r["p50_ms"] for r in rows], "s--", color=color, alpha=0.6,
                label="p50")
        bad = [r for r in rows if r["errors"]]
        ax.plot([r["offered"] for r in bad], [r["p99_ms"] for r in bad], "x", color="k", markersize=9)
    for ms in (5, 10):
        ax.axhline(ms, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("offered load (req/s, open loop)")
    ax.set_ylabel("latency from scheduled start (ms)")
    ax.set_title(f"{result['candidates']}-candidate ranking request, {result['machine'].get('cpus')} CPUs "
                 f"(x: errors; dotted: 5 and 10 ms)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)   # beside the data
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="?", default=OUT)
    p.add_argument("--rate", type=float, default=100.0, help="the rate of the summary's p99 and CPU columns")
    p.add_argument("--plot", default="", help="also write the latency plot here")
    args = p.parse_args(argv)
    with open(args.results) as f:
        result = json.load(f)
    print(summary_table(result, args.rate), rates_table(result), faults_table(result), sep="\n\n")
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
