"""Pairs two quality-benchmark runs on the same test impressions: what a feature or setting adds.

Two runs of `benchmarks.quality` on one world (same log, splits and seeds) that differ in one
setting, e.g. ``features.seen_before``, each written with ``--scores``, are compared row by
row: for every family and seed in both, the paired bootstrap over test users of the AUC and
GAUC differences (`feedrank.evaluate.paired`), A minus B.  ``--families FA FB`` pairs two
families instead, also of one run (``--b`` left out).  The impressions must be the same ones
with the same labels; anything else is refused.

    .venv/bin/python -m benchmarks.quality_ablation --a runs/seen.npz --b runs/no_seen.npz \\
        --names "seen before" "without" --out benchmarks/results/seen_before_ablation.json
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Dict, List, Tuple

import numpy as np

from feedrank.evaluate import paired

log = logging.getLogger(__name__)


def rows_of(npz) -> Dict[Tuple[str, str], Dict[str, np.ndarray]]:
    """``(family, seed) -> {"id", "score", "label", "user"}`` of a ``--scores`` file."""
    out: Dict[Tuple[str, str], Dict[str, np.ndarray]] = {}
    for key in npz.files:
        family, seed, field = key.split("/")
        out.setdefault((family, seed), {})[field] = npz[key]
    return out


def align(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray], what: str) -> np.ndarray:
    """Positions in ``b`` of ``a``'s impressions (ValueError unless both hold the same ones,
    labelled and attributed to users alike)."""
    order = np.argsort(b["id"])
    pos = order[np.clip(np.searchsorted(b["id"][order], a["id"]), 0, len(order) - 1)]
    if len(a["id"]) != len(b["id"]) or not np.array_equal(b["id"][pos], a["id"]):
        raise ValueError(f"{what}: the two runs scored different test impressions "
                         f"({len(a['id'])} and {len(b['id'])}); run both on the same world and splits")
    if not (np.array_equal(b["label"][pos], a["label"]) and np.array_equal(b["user"][pos], a["user"])):
        raise ValueError(f"{what}: the same impressions carry different labels or users in the two runs")
    return pos


def compare(a_rows: Dict, b_rows: Dict, resamples: int = 1000,
            families: Tuple[str, str] | None = None) -> List[Dict]:
    """A minus B for every (family, seed) both runs have; with ``families`` (a, b), A's rows of
    family a against B's rows of family b, seed by seed (two families of one run: A = B)."""
    out = []
    if families:
        keys = sorted((k, (families[1], k[1])) for k in a_rows if k[0] == families[0]
                      and (families[1], k[1]) in b_rows)
    else:
        keys = [(k, k) for k in sorted(set(a_rows) & set(b_rows))]
    for key_a, key_b in keys:
        a, b = a_rows[key_a], b_rows[key_b]
        name = key_a[0] if key_a[0] == key_b[0] else f"{key_a[0]} - {key_b[0]}"
        pos = align(a, b, f"{name} seed {key_a[1]}")
        diffs = paired.compare(a["label"], a["score"], b["score"][pos], a["user"], resamples=resamples,
                               seed=int(key_a[1]))
        for d in diffs.values():
            out.append({"family": name, "seed": int(key_a[1]), **d.to_dict(), "ordered": d.ordered})
    return out


def markdown(rows: List[Dict], names: Tuple[str, str]) -> str:
    lines = [f"| family | seed | metric | {names[0]} | {names[1]} | difference | 95% interval | ordered |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['seed']} | {r['metric'].upper()} | {r['a_value']:.4f} | "
                     f"{r['b_value']:.4f} | {r['diff']:+.4f} | [{r['lo']:+.4f}, {r['hi']:+.4f}] | "
                     f"{'yes' if r['ordered'] else 'no (a tie)'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True, help="the --scores file of run A")
    p.add_argument("--b", default="", help="the --scores file of run B (default: A's)")
    p.add_argument("--families", nargs=2, default=None, metavar=("FA", "FB"),
                   help="pair A's family FA with B's family FB, seed by seed (default: each family with itself)")
    p.add_argument("--names", nargs=2, default=("A", "B"), metavar=("A", "B"), help="the two runs' names")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--out", default="", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        with np.load(args.a) as fa, np.load(args.b or args.a) as fb:
            a_rows, b_rows = rows_of(fa), rows_of(fb)
        rows = compare(a_rows, b_rows, args.resamples, tuple(args.families) if args.families else None)
        if not rows:
            raise ValueError(f"no family and seed to pair: {sorted(a_rows)} vs {sorted(b_rows)}")
    except (OSError, ValueError, KeyError) as e:
        print(f"quality_ablation: {e}", file=sys.stderr)
        return 2
    print(markdown(rows, tuple(args.names)))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"a": args.names[0], "b": args.names[1], "rows": rows}, f, indent=1)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
