"""Table II of Wu et al. (ICDE 2016) on simulated shop sessions, and the DRNN's training throughput.

    .venv/bin/python -m benchmarks.session_table2 [--seeds 0 1 2] [--users 2000 --items 3000 --days 14]

For each seed: the simulator's e-commerce log (`--mode ecommerce`), the session
samples (`feedrank.sessions.beam_samples`, the last ``--eval-days`` days are
eval), then the models of the table, each fitted on the training split less
its last ``--val-days`` day(s) (the validation split):

* DRNN+FNN, DRNN without the FNN, DRNN without the history state (the
  `DrnnSettings` defaults otherwise), the GRU4Rec-style GRU (its defaults):
  Adam, batch ``--batch``, at most ``--epochs`` epochs, the weights of the
  epoch with the best validation top-10 kept (stopped after ``--patience``
  epochs without a gain);
* ALS with and without the user's history (`feedrank.sessions.als`): factors
  and regularization chosen per variant on the validation split's top-10;
* popularity.

All are scored on the eval split's full-path samples with
`feedrank.sessions.metrics.evaluate` (top-1/top-10, recall@20 and MRR@20 over
every prefix, path compression with the top 10 refreshed after each page
view), on all of them and on slices: sessions longer / not longer than k
pages, returning / first-time buyers.  The oracle is the simulator's truth
(``purchase_truth.parquet``: the true top-1 and top-10 mass of each add-to-cart).
The page and item vocabularies are the shop's catalogue (``items.parquet``).
Training throughput: DRNN+FNN vs GRU4Rec on the same rows and batch size, one
warm-up epoch, then the median of 3 timed epochs, alternating the two.
Writes benchmarks/results/session_table2.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Sequence

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from feedrank.sessions import beam_samples, drnn, gru4rec, metrics  # noqa: E402
from feedrank.sessions import features as SF  # noqa: E402
from feedrank.sessions.als import HISTORY_MODES, AlsSettings, SessionAls  # noqa: E402
from feedrank.sessions.baselines import Popularity  # noqa: E402

log = logging.getLogger("session_table2")
DAY = 86400
NEURAL = {"DRNN+FNN": {}, "DRNN without FNN": {"use_fnn": False},
          "DRNN without history state": {"use_history": False}, "GRU4Rec": None}
ALS_NAMES = {"user": "ALS with user history", "session": "ALS without user history"}
ALS_GRID = [(f, r) for f in (32, 64) for r in (0.01, 0.1)]
SLICES = ("all", "longer_than_k", "at_most_k", "returning", "first_time")
KEYS = ("top1", "top10", "path_compression", "recall@20", "mrr@20")


def simulate_and_sample(seed: int, args, work: str) -> Dict[str, Any]:
    shop, out = os.path.join(work, "shop"), os.path.join(work, "samples")
    cmd = [sys.executable, "-m", "feedrank.events.simulator", "--mode", "ecommerce", "--seed", str(seed),
           "--users", str(args.users), "--items", str(args.items), "--days", str(args.days), "--out", shop]
    if args.reuse and os.path.exists(os.path.join(out, beam_samples.SUMMARY_FILE)):
        with open(os.path.join(shop, "world.json")) as f:
            world = json.load(f)["summary"]
        summary = beam_samples.finalize(out)
    else:
        world = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout)
        summary = beam_samples.run(shop, out, beam_samples.SampleSettings(k=args.k, eval_days=args.eval_days))
    read = {split: [SF.from_example(r.numpy()) for r in tf.data.TFRecordDataset(
        sorted(glob.glob(os.path.join(out, f"Split-{split}", "*.gz"))), compression_type="GZIP")]
        for split in ("train", "eval")}
    return {"shop": shop, "world": world, "summary": summary, **read}


def vocabularies(shop: str, train: Sequence[Mapping]) -> tuple:
    """Pages and items of the catalogue, numbered by training frequency (then id)."""
    cat = pd.read_parquet(os.path.join(shop, "items.parquet"))
    full = [s for s in train if s[SF.FULL_PATH]]
    pages = drnn.vocabulary([p for s in full for p in s[SF.HISTORY_PAGES] + s[SF.RECENT_PAGES]]
                            + cat["item_id"].tolist())
    items = drnn.vocabulary([i for s in full for i in s[SF.LABEL_ITEMS]]
                            + cat.loc[cat["page_type"] == "item", "item_id"].tolist())
    page_item = np.zeros(len(pages) + 1, np.int64)
    for page, pid in pages.items():
        page_item[pid] = items.get(page, 0)
    return pages, items, page_item


def keras_scorer(model) -> Callable[[Dict[str, np.ndarray]], np.ndarray]:
    used = model.input_names_used
    return lambda b: model({k: tf.constant(b[k]) for k in used}, training=False).numpy()


class BestTop10(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best validation top-10 (full-path samples); stops
    after ``patience`` epochs without a gain.  (The validation LOSS is no guide here: it rises from
    the second epoch on while the ranking still improves, the softmax growing over-confident.)"""

    def __init__(self, x: Dict[str, np.ndarray], y: np.ndarray, patience: int):
        super().__init__()
        self.x, self.y, self.patience = x, y, patience
        self.history: List[float] = []
        self.best, self.weights, self.wait = -1.0, None, 0

    def on_epoch_end(self, epoch, logs=None):
        top10 = metrics.top_k_accuracy(metrics.ranks(keras_scorer(self.model)(self.x), self.y), 10)
        self.history.append(round(top10, 4))
        if top10 > self.best:
            self.best, self.weights, self.wait = top10, self.model.get_weights(), 0
        else:
            self.wait += 1
            self.model.stop_training = self.wait >= self.patience

    def on_train_end(self, logs=None):
        if self.weights is not None:
            self.model.set_weights(self.weights)


def train_neural(name: str, overrides, dims: Dict[str, int], fit, val_full, args, seed: int) -> tuple:
    keras.utils.set_random_seed(seed)
    model = (gru4rec.build(gru4rec.Gru4recSettings(**dims)) if overrides is None
             else drnn.build(drnn.DrnnSettings(**dims, **overrides)))
    used = model.input_names_used
    best = BestTop10(val_full[0], val_full[1], args.patience)
    t0 = time.perf_counter()
    hist = model.fit({k: fit[0][k] for k in used}, fit[1], batch_size=args.batch, epochs=args.epochs,
                     callbacks=[best], verbose=0)
    wall = time.perf_counter() - t0
    info = {"epochs_run": len(best.history), "best_epoch": int(np.argmax(best.history)) + 1,
            "train_s": round(wall, 1), "val_top10": best.history,
            "train_loss": [round(v, 3) for v in hist.history["loss"]]}
    log.info("%s: %s", name, info)
    return model, info


def fit_als(fit_samples, users_rows, page_item, num_items, val_x, val_y, seed: int) -> Dict[str, tuple]:
    """ALS per history mode, (factors, regularization) chosen on the validation full-path top-10."""
    best: Dict[str, tuple] = {}
    for factors, reg in ALS_GRID:
        als = SessionAls(num_items, page_item, AlsSettings(factors=factors, regularization=reg, seed=seed))
        als.fit(*users_rows)
        for mode in HISTORY_MODES:
            top10 = metrics.top_k_accuracy(metrics.ranks(als.scores(val_x, mode), val_y), 10)
            if mode not in best or top10 > best[mode][1]:
                best[mode] = (als, top10, {"factors": factors, "regularization": reg, "val_top10": round(top10, 4)})
    return {m: (b[0], b[2]) for m, b in best.items()}


def als_rows(fit_samples, pages, items, max_pages: int) -> tuple:
    """One row per training session: its user, every page up to its last add-to-cart, its carts."""
    by_session: Dict[str, List[Mapping]] = collections.defaultdict(list)
    for s in fit_samples:
        if s[SF.FULL_PATH]:
            by_session[s[SF.SESSION_ID]].append(s)
    users, grid, carts = [], [], []
    for group in by_session.values():
        last = max(group, key=lambda s: s[SF.PREFIX_LEN])
        seq = [pages[p] for p in last[SF.HISTORY_PAGES] + last[SF.RECENT_PAGES] if p in pages][-max_pages:]
        users.append(last[SF.USER_ID])
        grid.append(seq + [0] * (max_pages - len(seq)))
        carts.append([items[i] for s in group for i in s[SF.LABEL_ITEMS] if i in items])
    return users, np.asarray(grid, np.int64), carts


def oracle(shop: str, eval_full: Sequence[Mapping], rows: np.ndarray, y: np.ndarray, items) -> pd.DataFrame:
    truth = pd.read_parquet(os.path.join(shop, "purchase_truth.parquet"))
    inv = {v: k for k, v in items.items()}
    keys = pd.DataFrame({"session_id": [eval_full[r][SF.SESSION_ID] for r in rows],
                         "pages_before": [eval_full[r][SF.N_PAGES_BEFORE_PURCHASE] for r in rows],
                         "item_id": [inv[int(i)] for i in y]})
    t = truth.drop_duplicates(["session_id", "pages_before", "item_id"])
    out = keys.merge(t[["session_id", "pages_before", "item_id", "p_top1", "p_top10"]], how="left")
    if out["p_top10"].isna().any():
        raise RuntimeError(f"{int(out['p_top10'].isna().sum())} eval rows have no truth row")
    return out


def run_seed(seed: int, args) -> Dict[str, Any]:
    t0 = time.perf_counter()
    work = os.path.join(ROOT, args.work, f"seed{seed}")
    d = simulate_and_sample(seed, args, work)
    eval_start = d["summary"]["eval_start_ts"]
    val_start = eval_start - args.val_days * DAY
    fit_s = [s for s in d["train"] if s[SF.SESSION_START_TS] < val_start]
    val_s = [s for s in d["train"] if s[SF.SESSION_START_TS] >= val_start]
    eval_full = [s for s in d["eval"] if s[SF.FULL_PATH]]
    pages, items, page_item = vocabularies(d["shop"], d["train"])
    dims = {"num_pages": len(pages) + 1, "num_items": len(items) + 1}
    t_eval = max(s[SF.PREFIX_LEN] for s in eval_full)
    fit = drnn.from_samples(fit_s, pages, items, max_pages=args.max_pages)
    val_full = drnn.from_samples([s for s in val_s if s[SF.FULL_PATH]], pages, items, max_pages=args.max_pages)
    ev_x, ev_y, ev_rows = drnn.from_samples(eval_full, pages, items, max_pages=t_eval)
    masks = {"all": np.ones(len(ev_y), bool),
             "longer_than_k": np.array([eval_full[r][SF.PREFIX_LEN] > args.k for r in ev_rows]),
             "returning": np.array([len(eval_full[r][SF.PURCHASE_HISTORY]) > 0 for r in ev_rows])}
    masks["at_most_k"], masks["first_time"] = ~masks["longer_than_k"], ~masks["returning"]
    log.info("seed %d: %d fit rows, %d val sessions, %d eval sessions (T=%d), %d pages, %d items",
             seed, len(fit[1]), len(val_full[1]), len(ev_y), t_eval, len(pages), len(items))
    scorers: Dict[str, Callable] = {}
    training: Dict[str, Any] = {}
    for name, over in NEURAL.items():
        model, training[name] = train_neural(name, over, dims, fit, val_full, args, seed)
        scorers[name] = keras_scorer(model)
    users_rows = als_rows(fit_s, pages, items, max_pages=args.max_pages)
    for mode, (als, chosen) in fit_als(fit_s, users_rows, page_item, dims["num_items"], val_full[0], val_full[1],
                                      seed).items():
        scorers[ALS_NAMES[mode]] = als.scorer(mode)
        training[ALS_NAMES[mode]] = chosen
    pop = Popularity(dims["num_items"]).fit(np.asarray([i for c in users_rows[2] for i in c], np.int64))
    scorers["Popularity"] = pop.scores
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    for name, fn in scorers.items():
        results[name] = {sl: metrics.evaluate(fn, {k: v[m] for k, v in ev_x.items()}, ev_y[m], path_k=10)
                         for sl, m in masks.items()}
    orc = oracle(d["shop"], eval_full, ev_rows, ev_y, items)
    results["Oracle (simulator truth)"] = {sl: {"top1": float(orc["p_top1"][m].mean()),
                                                "top10": float(orc["p_top10"][m].mean())}
                                           for sl, m in masks.items()}
    out = {"data": {"world": {k: d["world"].get(k) for k in ("events", "sessions", "purchases",
                                                              "pages_before_first_purchase", "truth_top10_mass")},
                    "samples": {k: d["summary"][k] for k in ("samples_train", "samples_eval", "full_samples_train",
                                                             "full_samples_eval")},
                    "fit_rows": int(len(fit[1])), "val_full_rows": int(len(val_full[1])),
                    "eval_sessions": {sl: int(m.sum()) for sl, m in masks.items()},
                    "num_pages": dims["num_pages"], "num_items": dims["num_items"]},
           "training": training, "results": results}
    if seed == args.seeds[0] and args.throughput_rows:
        out["throughput"] = throughput(dims, fit, args)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    log.info("seed %d done in %.0f s", seed, out["wall_s"])
    return out


def throughput(dims: Dict[str, int], fit, args) -> Dict[str, Any]:
    """Samples/s of one training epoch over the same rows, DRNN+FNN vs GRU4Rec, alternating."""
    n = min(args.throughput_rows, len(fit[1]))
    models = {"DRNN+FNN": drnn.build(drnn.DrnnSettings(**dims)),
              "GRU4Rec": gru4rec.build(gru4rec.Gru4recSettings(**dims))}
    xs = {name: {k: fit[0][k][:n] for k in m.input_names_used} for name, m in models.items()}
    rates: Dict[str, List[float]] = {name: [] for name in models}
    for rep in range(4):  # the first is the warm-up (tracing)
        for name, m in models.items():
            t0 = time.perf_counter()
            m.fit(xs[name], fit[1][:n], batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
            if rep:
                rates[name].append(n / (time.perf_counter() - t0))
    out = {name: {"samples_per_s": round(statistics.median(r), 1), "repeats": [round(v, 1) for v in r]}
           for name, r in rates.items()}
    out.update(rows=n, batch=args.batch, max_pages=args.max_pages,
               drnn_over_gru4rec=round(out["DRNN+FNN"]["samples_per_s"] / out["GRU4Rec"]["samples_per_s"], 3))
    log.info("throughput: %s", out)
    return out


def summarise(per_seed: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
    """Mean and sample std (ddof 1) over the seeds, per model, slice and metric."""
    first = next(iter(per_seed.values()))["results"]
    out: Dict[str, Any] = {}
    for name, slices in first.items():
        out[name] = {}
        for sl, vals in slices.items():
            out[name][sl] = {}
            for key in vals:
                xs = [per_seed[s]["results"][name][sl][key] for s in per_seed]
                out[name][sl][key] = {"mean": float(np.mean(xs)),
                                      "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0}
    return out


def paired(per_seed, a: str, b: str, sl: str, key: str) -> Dict[str, Any]:
    """``a - b`` on one slice and metric, per seed, with its mean and std."""
    diffs = [per_seed[s]["results"][a][sl][key] - per_seed[s]["results"][b][sl][key] for s in per_seed]
    return {"diffs": [round(v, 4) for v in diffs], "mean": float(np.mean(diffs)),
            "std": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0}


def targets(per_seed, summary) -> Dict[str, Any]:
    """The paper's targets, each with its numbers and met / not met."""
    drnn_top10 = summary["DRNN+FNN"]["all"]["top10"]["mean"]
    als = {n: summary[n]["all"]["top10"]["mean"] for n in ALS_NAMES.values()}
    ratio = {n: drnn_top10 / v if v > 0 else float("inf") for n, v in als.items()}
    pc = summary["DRNN+FNN"]["all"]["path_compression"]["mean"]
    hist = {f"{sl}_{k}": paired(per_seed, "DRNN+FNN", "DRNN without history state", sl, k)
            for sl in ("longer_than_k", "at_most_k") for k in ("top10", "path_compression")}
    fnn = {f"{sl}_{k}": paired(per_seed, "DRNN+FNN", "DRNN without FNN", sl, k)
           for sl in ("returning", "first_time") for k in ("top10", "path_compression")}
    return {
        "drnn_top10_ge_5x_als": {"ratio": {n: round(r, 3) for n, r in ratio.items()},
                                 "met": all(r >= 5 for r in ratio.values())},
        "path_compression_lt_0.8": {"drnn_fnn": round(pc, 4), "met": pc < 0.8},
        "history_helps_longer_than_k": {**hist, "met": all(d > 0 for d in hist["longer_than_k_top10"]["diffs"])},
        "fnn_helps_returning": {**fnn, "met": all(d > 0 for d in fnn["returning_top10"]["diffs"])},
    }


def markdown(summary) -> str:
    def cell(name, sl, key):
        v = summary[name][sl].get(key)
        return "" if v is None else f"{v['mean']:.3f} ± {v['std']:.3f}"
    lines = ["| model | top-1 | top-10 | path compression | recall@20 | MRR@20 | top-10, > k pages | "
             "top-10, returning |", "|---|---|---|---|---|---|---|---|"]
    for name in summary:
        lines.append(f"| {name} | " + " | ".join(
            [cell(name, "all", k) for k in KEYS] + [cell(name, "longer_than_k", "top10"),
                                                     cell(name, "returning", "top10")]) + " |")
    return "\n".join(lines)


def plot(result: Mapping[str, Any], path: str) -> None:
    """Top-10 accuracy and path compression per model, mean ± std over the seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    names = [n for n in summary if "path_compression" in summary[n]["all"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in ((axes[0], "top10", "top-10 accuracy (higher is better)"),
                           (axes[1], "path_compression", "path compression L2/L1 (lower is better)")):
        mean = [summary[n]["all"][key]["mean"] for n in names]
        std = [summary[n]["all"][key]["std"] for n in names]
        ax.barh(names[::-1], mean[::-1], xerr=std[::-1], color="#4c72b0", capsize=3)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    oracle = summary.get("Oracle (simulator truth)", {}).get("all", {}).get("top10")
    if oracle:
        axes[0].axvline(oracle["mean"], color="#c44e52", ls="--", label="oracle (simulator truth)")
        axes[0].legend(fontsize=8, loc="lower right")
    axes[1].axvline(0.8, color="#c44e52", ls="--", label="target < 0.8")
    axes[1].legend(fontsize=8, loc="lower right")
    axes[1].set_yticklabels([])
    fig.suptitle(f"Session recommenders on simulated shop sessions, {len(result['per_seed'])} seeds", fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    log.info("plot: %s", path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--eval-days", type=int, default=2)
    ap.add_argument("--val-days", type=int, default=1)
    ap.add_argument("--k", type=int, default=5, help="the samples' and the DRNN's width")
    ap.add_argument("--epochs", type=int, default=6, help="most epochs (the best on validation top-10 kept)")
    ap.add_argument("--patience", type=int, default=6, help="epochs without a validation gain before stopping")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--max-pages", type=int, default=50, help="pages kept per training row")
    ap.add_argument("--throughput-rows", type=int, default=16384, help="0: no throughput measurement")
    ap.add_argument("--work", default="runs/session_table2")
    ap.add_argument("--reuse", action="store_true", help="reuse the log and samples already in --work")
    ap.add_argument("--out", default="benchmarks/results/session_table2.json")
    ap.add_argument("--plot", default="docs/img/session_table2.png", help="'' for no plot")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from --out, compute nothing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in ("feedrank", "absl", "apache_beam"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.plot_only:
        with open(os.path.join(ROOT, args.out)) as f:
            result = json.load(f)
        plot(result, os.path.join(ROOT, args.plot))
        print(markdown(result["summary"]))
        return 0
    t0 = time.perf_counter()
    info = machine_info("tensorflow", "tf_keras", "implicit", "numpy")
    per_seed = {seed: run_seed(seed, args) for seed in args.seeds}
    summary = summarise(per_seed)
    result = {"config": {k: v for k, v in vars(args).items() if k not in ("out", "plot", "plot_only", "reuse")},
              "models": {"drnn": drnn.DrnnSettings().__dict__, "gru4rec": gru4rec.Gru4recSettings().__dict__,
                         "als_grid": ALS_GRID},
              "machine": info, "summary": summary, "targets": targets(per_seed, summary),
              "throughput": per_seed[args.seeds[0]].pop("throughput", None),
              "per_seed": {str(s): v for s, v in per_seed.items()},
              "wall_s": round(time.perf_counter() - t0, 1)}
    os.makedirs(os.path.dirname(os.path.join(ROOT, args.out)), exist_ok=True)
    with open(os.path.join(ROOT, args.out), "w") as f:
        json.dump(result, f, indent=1, default=float)
    if args.plot:
        plot(result, os.path.join(ROOT, args.plot))
    print(markdown(summary))
    print(json.dumps({"targets": result["targets"], "throughput": result["throughput"],
                      "wall_s": result["wall_s"]}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
