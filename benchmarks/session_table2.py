"""Table II of Wu et al. (ICDE 2016) on simulated shop sessions and on MovieLens 100K sessions.

    .venv/bin/python -m benchmarks.session_table2 [--logs shop ml100k] [--trials 4] [--search ga]

For each log: the session samples (`feedrank.sessions.beam_samples`: every page transition
and add-to-cart; the shop's last ``--eval-days`` days, MovieLens's last ``--eval-fraction``
of the events, are eval), the training split less its last part (``--val-days`` /
``--val-fraction``) as the fit split, that last part as the validation split, one id
space (the log's catalogue, `feedrank.sessions.catalogue`), and the rows of
`benchmarks.session_rows` fitted and tuned by the same search (the GA tuner's operators,
`benchmarks.session_search`) with the same trial count.

Every row is scored on the eval split's add-to-carts (the full-path samples) by
`feedrank.sessions.metrics.per_sample`: top-1/top-10 (top-10 = recall@10 with one target),
recall@20 and MRR@20 over every prefix, and path compression with the page on which the
recommended item is opened counted (L2 = m + 1), with and without credit for the page
being viewed.  The DRNN+FNN is compared with every other row by a paired bootstrap over
users (`feedrank.sessions.compare.paired_interval`, 95 %): an ordering is stated only
where the interval excludes 0.  The shop's oracle is the simulator's truth
(``purchase_truth.parquet``).  MovieLens 100K: ratings as page views, each 30-minute
session's last rating of 4 stars or more as its add-to-cart
(`feedrank.events.public.movielens_shop`).  Writes benchmarks/results/session_table2.json,
docs/img/session_table2.png and prints a markdown table per log.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
import time
from typing import Any, Dict, List, Mapping

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import session_rows as R  # noqa: E402
from benchmarks import session_search as S  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from feedrank.sessions import beam_samples, catalogue, drnn, metrics  # noqa: E402
from feedrank.sessions import features as SF  # noqa: E402
from feedrank.sessions.compare import paired_interval  # noqa: E402

log = logging.getLogger("session_table2")
DAY = 86400
OURS = "DRNN+FNN"
KEYS = ("top1", "top10", "recall@20", "mrr@20", "path_compression", "path_compression_with_view_credit")


def prepare(name: str, args, work: str) -> Dict[str, Any]:
    """The log (simulated or converted), its samples and the split bounds."""
    shop, out = os.path.join(work, "log"), os.path.join(work, "samples")
    if name == "shop":
        from feedrank.events.simulator.ecommerce_io import simulate_ecommerce
        if not os.path.exists(os.path.join(shop, "world.json")):
            simulate_ecommerce(shop, users=args.users, items=args.items, days=args.days, seed=args.seed)
        ts = pd.read_parquet(os.path.join(shop, "events.parquet"), columns=["ts"])["ts"]
        eval_start = beam_samples.S.eval_start(int(ts.max()), args.eval_days)
        val_start = eval_start - args.val_days * DAY
    else:
        from feedrank.events.public import movielens_shop
        if not os.path.exists(os.path.join(shop, "events.parquet")):
            movielens_shop.convert(shop)
        ts = pd.read_parquet(os.path.join(shop, "events.parquet"), columns=["ts"])["ts"]
        eval_start = int(ts.quantile(1 - args.eval_fraction))
        val_start = int(ts.quantile(1 - args.eval_fraction - args.val_fraction))
    summary = beam_samples.run(shop, out, beam_samples.SampleSettings(k=args.k, eval_start_ts=eval_start))
    read = {split: [SF.from_example(r.numpy()) for r in tf.data.TFRecordDataset(
        sorted(glob.glob(os.path.join(out, f"Split-{split}", "*.gz"))), compression_type="GZIP")]
        for split in ("train", "eval")}
    return {"shop": shop, "summary": summary, "eval_start": eval_start, "val_start": val_start, **read}


def item_sessions(samples, vocab: Mapping[str, int], mask: np.ndarray) -> List[List[int]]:
    """Each training session's item pages then its carted items, as ids (item-kNN's input)."""
    last: Dict[str, Mapping] = {}
    for s in samples:
        if s[SF.SESSION_ID] not in last or s[SF.PREFIX_LEN] > last[s[SF.SESSION_ID]][SF.PREFIX_LEN]:
            last[s[SF.SESSION_ID]] = s
    carts: Dict[str, List[str]] = {}
    for s in samples:
        carts.setdefault(s[SF.SESSION_ID], []).extend(s[SF.LABEL_ITEMS] if s[SF.FULL_PATH] else [])
    out = []
    for sid, s in last.items():
        ids = [vocab.get(p, 0) for p in list(s[SF.HISTORY_PAGES]) + list(s[SF.RECENT_PAGES]) + [s[SF.NEXT_PAGE]]]
        ids += [vocab.get(i, 0) for i in carts.get(sid, [])]
        out.append([i for i in ids if i and mask[i]])
    return [s for s in out if s]


def als_input(samples, vocab: Mapping[str, int], max_pages: int) -> tuple:
    """One row per training session: its user, its pages, its carts (`SessionAls.fit`'s input)."""
    sessions: Dict[str, List[Mapping]] = {}
    for s in samples:
        sessions.setdefault(s[SF.SESSION_ID], []).append(s)
    users, grid, carts = [], [], []
    for group in sessions.values():
        last = max(group, key=lambda s: s[SF.PREFIX_LEN])
        seq = [vocab.get(p, 0) for p in list(last[SF.HISTORY_PAGES]) + list(last[SF.RECENT_PAGES])][-max_pages:]
        users.append(last[SF.USER_ID])
        grid.append(seq + [0] * (max_pages - len(seq)))
        carts.append([vocab[i] for s in group if s[SF.FULL_PATH] for i in s[SF.LABEL_ITEMS] if i in vocab])
    return users, np.asarray(grid, np.int64), carts


def oracle(shop: str, eval_full, rows: np.ndarray, targets: List[str]) -> Dict[str, float]:
    truth = pd.read_parquet(os.path.join(shop, "purchase_truth.parquet"))
    keys = pd.DataFrame({"session_id": [eval_full[r][SF.SESSION_ID] for r in rows],
                         "pages_before": [eval_full[r][SF.N_PAGES_BEFORE_PURCHASE] for r in rows],
                         "item_id": targets})
    t = truth.drop_duplicates(["session_id", "pages_before", "item_id"])
    got = keys.merge(t[["session_id", "pages_before", "item_id", "p_top1", "p_top10"]], how="left")
    return {"top1": float(got["p_top1"].mean()), "top10": float(got["p_top10"].mean()),
            "rows_without_truth": int(got["p_top10"].isna().sum())}


def run_log(name: str, args) -> Dict[str, Any]:
    t0 = time.perf_counter()
    work = os.path.join(ROOT, args.work, name)
    d = prepare(name, args, work)
    cat = catalogue.load(d["shop"])
    vocab = catalogue.vocabulary_ids(cat.page_ids)
    mask = np.asarray(catalogue.is_item(cat.page_ids, cat.types))
    fit_s = [s for s in d["train"] if s[SF.SESSION_START_TS] < d["val_start"]]
    val_s = [s for s in d["train"] if s[SF.SESSION_START_TS] >= d["val_start"] and s[SF.FULL_PATH]]
    eval_full = [s for s in d["eval"] if s[SF.FULL_PATH]]
    fit = drnn.from_samples(fit_s, vocab, args.max_pages, args.max_pages, mask, cart_rows=args.cart_rows)
    val = drnn.from_samples(val_s, vocab, args.max_pages, args.max_pages, mask)
    ev_x, ev_y, _, ev_rows = drnn.from_samples(eval_full, vocab, args.max_pages, args.max_pages, mask)
    targets = ev_y[drnn.CART]
    keep = mask[targets]                                   # add-to-carts of a catalogue item
    ev_x, targets, ev_rows = {k: v[keep] for k, v in ev_x.items()}, targets[keep], ev_rows[keep]
    # the path start within the pages kept (the last max_pages of the prefix)
    starts = np.asarray([max(0, eval_full[r][SF.PATH_START] - max(0, eval_full[r][SF.PREFIX_LEN] - args.max_pages))
                         for r in ev_rows], np.int64)
    log.info("%s: %d fit rows, %d val rows, %d eval add-to-carts, %d catalogue ids", name, len(fit[3]),
             len(val[3]), len(targets), len(mask))
    scorers: Dict[str, R.Scorer] = {}
    training: Dict[str, Any] = {}
    for row, family in R.NEURAL.items():
        model, training[row] = R.tuned_neural(row, family, len(mask), mask, fit, val, args, args.seed)
        scorers[row] = R.masked(R.keras_scorer(model), mask)
    chosen = training[OURS]["chosen"]
    for row, change in R.ABLATIONS.items():
        model, training[row] = R.train_neural("drnn", {**chosen, **change}, len(mask), mask, fit, val, args,
                                              args.seed)
        scorers[row] = R.masked(R.keras_scorer(model), mask)
    base, info = R.baselines(fit_s, fit, val, mask, item_sessions(fit_s, vocab, mask),
                             als_input(fit_s, vocab, args.max_pages), args, args.seed)
    scorers.update(base)
    training.update(info)
    page_item = np.where(mask, np.arange(len(mask)), 0)
    per = {row: metrics.per_sample(fn, ev_x, targets, page_item=page_item, path_start=starts,
                                   group=ev_x[drnn.USER_ID]) for row, fn in scorers.items()}
    results = {row: metrics.summarise(p) for row, p in per.items()}
    ours = per[OURS]
    mean_l1 = float(np.mean(ours["l1"]))
    compare = {}
    for row, p in per.items():
        if row == OURS:
            continue
        compare[row] = {key: paired_interval(ours[key], p[key], ours["group"], reps=args.reps, seed=args.seed)
                        for key in ("top1", "top10")}
        compare[row]["path_compression"] = paired_interval(ours["l2"] / mean_l1, p["l2"] / mean_l1, ours["group"],
                                                           reps=args.reps, seed=args.seed)
    out = {"data": {"samples": {k: d["summary"][k] for k in d["summary"] if k.startswith(("samples_", "full_",
                                                                                         "next_page_"))},
                    "fit_rows": int(len(fit[3])), "val_rows": int(len(val[3])), "eval_add_to_carts": int(len(targets)),
                    "eval_users": int(len(set(ev_x[drnn.USER_ID].tolist()))), "catalogue_ids": int(len(mask)),
                    "items": int(mask.sum()), "eval_start_ts": d["eval_start"], "val_start_ts": d["val_start"]},
           "training": training, "results": results, "paired_vs_drnn_fnn": compare}
    if name == "shop":
        names = np.asarray([""] + list(cat.page_ids) + [""])
        out["results"]["Oracle (simulator truth)"] = oracle(d["shop"], eval_full, ev_rows, list(names[targets]))
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    log.info("%s done in %.0f s", name, out["wall_s"])
    return out


def markdown(res: Mapping[str, Any]) -> str:
    lines = ["| model | top-1 | top-10 | recall@20 | MRR@20 | path compression | with view credit | "
             "DRNN+FNN − model, top-10 (95 % interval) |", "|---|---|---|---|---|---|---|---|"]
    for row, vals in res["results"].items():
        cells = [f"{vals[k]:.3f}" if k in vals else "" for k in KEYS]
        c = res["paired_vs_drnn_fnn"].get(row, {}).get("top10")
        cells.append(f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]" if c else "")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(per_log: Mapping[str, Any]) -> Dict[str, Any]:
    """The issue's targets, each with its numbers and met / not met."""
    out: Dict[str, Any] = {}
    if "shop" in per_log:
        res, cmp = per_log["shop"]["results"], per_log["shop"]["paired_vs_drnn_fnn"]
        best = max(("Recently viewed", "Session item-kNN", "ALS without user history", "ALS with user history"),
                   key=lambda r: res[r]["top10"])
        c = cmp[best]["top10"]
        als = res["ALS without user history"]["top10"]
        out["shop_top10_ge_best_simple_plus_0.05"] = {
            "best_simple": best, "diff": round(c["diff"], 4), "interval": [round(c["lo"], 4), round(c["hi"], 4)],
            "met": c["lo"] > 0.05 or (c["diff"] >= 0.05 and c["ordered"])}
        out["shop_top10_ge_5x_als_without_history"] = {
            "ratio": round(res[OURS]["top10"] / als, 3) if als > 0 else None,
            "met": als > 0 and res[OURS]["top10"] >= 5 * als}
    if "ml100k" in per_log:
        res, cmp = per_log["ml100k"]["results"], per_log["ml100k"]["paired_vs_drnn_fnn"]
        c = cmp["SASRec"]["top10"]
        out["ml100k_recall10_ge_sasrec"] = {"diff": round(c["diff"], 4),
                                            "interval": [round(c["lo"], 4), round(c["hi"], 4)], "met": c["diff"] >= 0}
        pop = res["Popularity"]["top10"]
        out["ml100k_recall10_ge_3x_popularity"] = {"ratio": round(res[OURS]["top10"] / pop, 3) if pop else None,
                                                   "met": pop > 0 and res[OURS]["top10"] >= 3 * pop}
        pc, knn = res[OURS]["path_compression"], res["Session item-kNN"]["path_compression"]
        out["ml100k_path_compression_le_item_knn"] = {"drnn_fnn": round(pc, 4), "item_knn": round(knn, 4),
                                                      "met": pc <= knn}
    return out


def plot(result: Mapping[str, Any], path: str) -> None:
    """Top-10 accuracy per model and log, with the paired interval against the DRNN+FNN."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = list(result["per_log"])
    fig, axes = plt.subplots(1, len(logs), figsize=(6.2 * len(logs), 5.2), squeeze=False)
    for ax, name in zip(axes[0], logs):
        res = result["per_log"][name]
        rows = [r for r in res["results"] if "top10" in res["results"][r]]
        vals = [res["results"][r]["top10"] for r in rows]
        colors = ["#c44e52" if r == OURS else "#8c8c8c" if r.startswith("Oracle") else "#4c72b0" for r in rows]
        ax.barh(rows[::-1], vals[::-1], color=colors[::-1])
        ax.set_title(f"{name}: add-to-cart top-10 (eval)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Session recommenders, Table II (one seed; paired intervals in the JSON)", fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--logs", nargs="+", default=["shop", "ml100k"], choices=["shop", "ml100k"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--eval-days", type=int, default=2, help="the shop's eval split: its last days")
    ap.add_argument("--val-days", type=int, default=1, help="the shop's validation split: the days before eval")
    ap.add_argument("--eval-fraction", type=float, default=0.1, help="MovieLens: the last events' share for eval")
    ap.add_argument("--val-fraction", type=float, default=0.1, help="MovieLens: the share before it for validation")
    ap.add_argument("--k", type=int, default=5, help="the samples' recent pages")
    ap.add_argument("--trials", type=int, default=4, help="configurations per learned row (the same for every row)")
    ap.add_argument("--search", choices=S.SEARCHES, default="ga",
                    help="how each learned row's configurations are proposed: the GA tuner's operators or random")
    ap.add_argument("--epochs", type=int, default=8, help="most epochs of a neural configuration")
    ap.add_argument("--patience", type=int, default=2, help="epochs without a validation gain before stopping")
    ap.add_argument("--cart-rows", choices=drnn.CART_ROWS, default="last",
                    help="prefixes that train the add-to-cart output (feedrank.sessions.drnn.from_samples)")
    ap.add_argument("--checks-per-epoch", type=int, default=4, help="validation checks per epoch of a neural row")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--max-pages", type=int, default=50)
    ap.add_argument("--reps", type=int, default=1000, help="bootstrap replicates")
    ap.add_argument("--work", default="runs/session_table2")
    ap.add_argument("--out", default="benchmarks/results/session_table2.json")
    ap.add_argument("--plot", default="docs/img/session_table2.png", help="'' for no plot")
    ap.add_argument("--merge", action="store_true", help="keep the other logs' results already in --out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("feedrank", "absl", "apache_beam"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    t0 = time.perf_counter()
    info = machine_info("tensorflow", "tf_keras", "implicit", "numpy")
    out_path = os.path.join(ROOT, args.out)
    per_log: Dict[str, Any] = {}
    configs: Dict[str, Any] = {}
    if args.merge and os.path.exists(out_path):      # the other logs' rows from an earlier run of this script
        with open(out_path) as f:
            earlier = json.load(f)
        per_log = {k: v for k, v in earlier["per_log"].items() if k not in args.logs}
        configs = {k: v for k, v in earlier.get("config_per_log", {}).items() if k not in args.logs}
    config = {k: v for k, v in vars(args).items() if k not in ("out", "plot", "merge")}
    for name in args.logs:
        per_log[name] = run_log(name, args)
        configs[name] = {**config, "machine": info}
        result = {"config_per_log": configs, "search_spaces": R.SPACES, "defaults": R.DEFAULTS,
                  "targets": targets(per_log), "per_log": per_log, "wall_s": round(time.perf_counter() - t0, 1)}
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        with open(out_path, "w") as f:                # written after each log
            json.dump(result, f, indent=1, default=float)
    if args.plot:
        plot(result, os.path.join(ROOT, args.plot))
    for name, res in per_log.items():
        print(f"\n### {name}\n\n{markdown(res)}")
    print(json.dumps({"targets": result["targets"], "wall_s": result["wall_s"]}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
