"""GA tuning vs random search vs the default config, at an equal trial budget (docs/tuning.md).

    .venv/bin/python -m benchmarks.ga_tuning [--trials 12] [--epochs 2] [--seeds 0 1 2]
        [--population 4] [--final-epochs 3] [--plot-only]

1. Simulates a small e-commerce log (`--users`, `--items`, `--days`) and turns
   it into session samples with SessionSampleGen's Beam graph (k = 5; the
   last day is the eval split).
2. The train split is the tuning data (`feedrank.tune.data`: the latest 20 %
   of its samples validate, by session start).
3. Per seed, three searches over the same DRNN genes (`feedrank.tune.genes`),
   each a `FitnessTuner` with the same R epochs per trial, the same fitness
   (top-10 accuracy + 1/(1+loss)) and the same early termination:
   - ``ga``: `GeneticOracle` (population `--population`, crossover 0.8, mutation 0.2);
   - ``random``: KerasTuner's RandomSearch oracle;
   - ``default``: the DRNN's default settings with batch 128, one trial.
4. Per method and seed, the best-so-far fitness after each trial, and the best
   config retrained on the tuning fit set for ``--final-epochs`` epochs and
   scored on the eval split (top-10 accuracy).

Writes benchmarks/results/ga_tuning.json and docs/img/ga_tuning.png (best
fitness against the trial count, mean over seeds, with the seeds' range).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from typing import Any, Dict, List

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

log = logging.getLogger("ga_tuning")
OUT_JSON = os.path.join(ROOT, "benchmarks", "results", "ga_tuning.json")
OUT_PNG = os.path.join(ROOT, "docs", "img", "ga_tuning.png")
METHODS = ("ga", "random", "default")
DEFAULT_VALUES = {"width": 5, "length": 2, "height": 0, "units": 64, "learning_rate": 1e-3, "batch_size": 128}


def make_samples(workdir: str, args) -> Dict[str, Any]:
    """The simulated log's session samples (Split-train/, Split-eval/) and their summary."""
    from feedrank.events.simulator import ecommerce_io as EIO
    from feedrank.sessions import beam_samples as B

    log_dir, out = os.path.join(workdir, "log"), os.path.join(workdir, "samples")
    EIO.simulate_ecommerce(log_dir, users=args.users, items=args.items, categories=args.categories,
                           days=args.days, seed=args.data_seed)
    summary = B.run(log_dir, out, B.SampleSettings(k=5, eval_days=1))
    return {"dir": out, "summary": {k: v for k, v in summary.items() if k != "settings"}}


def best_so_far(fitness: List[float]) -> List[float]:
    return [float(x) for x in np.maximum.accumulate(np.asarray(fitness, float))]


def final_eval(data, eval_xy, values: Dict[str, Any], epochs: int, seed: int) -> float:
    """Top-10 accuracy on the eval split of ``values`` retrained on the tuning fit set."""
    import tf_keras as keras

    from feedrank.sessions import drnn
    from feedrank.tune import genes

    overrides, batch = genes.drnn_overrides(values)
    keras.utils.set_random_seed(seed)
    model = drnn.build({**overrides, "num_pages": data.num_pages, "num_items": data.num_items}, data.item_mask or None)
    model.fit(data.train[0], data.train[1], sample_weight=data.train[2], batch_size=batch or 128, epochs=epochs,
              verbose=0)
    return float(model.evaluate(eval_xy[0], eval_xy[1], sample_weight=eval_xy[2], batch_size=512, verbose=0,
                                return_dict=True)["cart_top10"])


def run_method(method: str, data, seed: int, args, workdir: str) -> Dict[str, Any]:
    """One search (or the default config) for one seed: its trials and best values."""
    from feedrank.tune import fitness as FIT
    from feedrank.tune import tuner as T
    from feedrank.tune.settings import TunerSettings

    settings = TunerSettings(algorithm="random" if method == "random" else "genetic", max_trials=args.trials,
                             epochs=args.epochs, population_size=args.population, seed=seed,
                             termination_fraction=args.termination)
    trial_fit = T.session_trial_fit(data, {}, settings, seed=seed)
    t0 = time.time()
    if method == "default":
        cb = FIT.FitnessCallback(FIT.session_fitness_from_logs, args.epochs, 0.0, list)
        trial_fit(dict(DEFAULT_VALUES), [cb])
        trials = [{"values": dict(DEFAULT_VALUES), "curve": cb.curve, "fitness": max(cb.curve),
                   "terminated_after": None}]
    else:
        tuner = T.FitnessTuner(T.make_oracle(settings, "session"), trial_fit, FIT.session_fitness_from_logs,
                               args.epochs, args.termination, directory=workdir,
                               project_name=f"{method}_{seed}", overwrite=True)
        tuner.search()
        trials = tuner.trials_log
    fitness = [t["fitness"] for t in trials]
    best = trials[int(np.argmax(fitness))]
    return {"trials": trials, "best_so_far": best_so_far(fitness), "best_fitness": float(max(fitness)),
            "best_values": best["values"], "search_s": round(time.time() - t0, 1),
            "epochs_trained": int(sum(len(t["curve"]) for t in trials)),
            "terminated": int(sum(bool(t["terminated_after"]) for t in trials))}


def summarise(runs: Dict[str, Dict[str, Dict[str, Any]]], trials: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for m in METHODS:
        per_seed = list(runs[m].values())
        curves = np.array([(r["best_so_far"] + [r["best_so_far"][-1]] * trials)[:trials] for r in per_seed])
        out[m] = {"best_fitness_mean": float(np.mean([r["best_fitness"] for r in per_seed])),
                  "best_fitness_std": float(np.std([r["best_fitness"] for r in per_seed])),
                  "eval_top10_mean": float(np.mean([r["eval_top10"] for r in per_seed])),
                  "eval_top10_std": float(np.std([r["eval_top10"] for r in per_seed])),
                  "best_so_far_mean": [float(x) for x in curves.mean(0)],
                  "best_so_far_min": [float(x) for x in curves.min(0)],
                  "best_so_far_max": [float(x) for x in curves.max(0)],
                  "search_s_mean": float(np.mean([r["search_s"] for r in per_seed]))}
    ga, rnd = runs["ga"], runs["random"]
    out["ga_ge_random_seeds"] = int(sum(ga[s]["best_fitness"] >= rnd[s]["best_fitness"] for s in ga))
    out["ga_ge_random_mean"] = bool(out["ga"]["best_fitness_mean"] >= out["random"]["best_fitness_mean"])
    for key in ("best_fitness", "eval_top10"):
        out[f"ga_minus_random_{key}"] = paired_over_seeds([ga[s][key] - rnd[s][key] for s in ga])
    return out


def paired_over_seeds(diffs: List[float], level: float = 0.95) -> Dict[str, Any]:
    """Mean of the per-seed differences with its Student-t interval (the seed is the unit a search
    is repeated over); ``ordered`` when the interval excludes 0."""
    from scipy import stats

    d = np.asarray(diffs, float)
    if len(d) < 2:
        return {"diffs": d.tolist(), "mean": float(d.mean()) if len(d) else None, "lo": None, "hi": None,
                "ordered": False}
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return {"diffs": [round(float(v), 5) for v in d], "mean": float(d.mean()), "lo": float(d.mean() - half),
            "hi": float(d.mean() + half), "ordered": bool(d.mean() - half > 0 or d.mean() + half < 0)}


def plot(result: Dict[str, Any], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, n = result["summary"], result["settings"]["trials"]
    x = np.arange(1, n + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for m, style in (("ga", "o-"), ("random", "s-"), ("default", "--")):
        mean = s[m]["best_so_far_mean"]
        label = {"ga": "GA (GeneticOracle)", "random": "random search", "default": "default config"}[m]
        ax.plot(x, mean, style, label=f"{label}: {mean[-1]:.4f}", markersize=4)
        if m != "default":
            ax.fill_between(x, s[m]["best_so_far_min"], s[m]["best_so_far_max"], alpha=0.15)
    pop = result["settings"]["population"]
    ax.axvline(pop + 0.5, color="grey", lw=0.8, ls=":")
    ax.text(pop + 0.6, ax.get_ylim()[1], " GA children from here\n (before: the same random trials)",
            fontsize=7, va="top", color="grey")
    ax.set_xlabel("trials")
    ax.set_ylabel("best fitness so far (top-10 acc + 1/(1+loss))")
    ax.set_title(f"DRNN tuning, R = {result['settings']['epochs']} epochs, "
                 f"mean over {len(result['settings']['seeds'])} seeds (band: min-max)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=2, help="R: the most epochs per trial")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--population", type=int, default=4)
    ap.add_argument("--termination", type=float, default=0.9, help="early-termination fraction (0: off)")
    ap.add_argument("--final-epochs", type=int, default=3)
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--categories", type=int, default=10)
    ap.add_argument("--days", type=int, default=6)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--max-samples", type=int, default=0, help="> 0: keep the latest samples for tuning")
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.plot_only:
        with open(OUT_JSON) as f:
            plot(json.load(f), OUT_PNG)
        return 0
    from benchmarks.machine import machine_info
    from feedrank.tune import data as tune_data

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="ga-tuning-") as work:
        made = make_samples(work, args)
        samples = tune_data.read_samples([os.path.join(made["dir"], "Split-train", "*")])
        data = tune_data.session_data(samples, 0.2, args.max_samples)
        eval_xy = data.arrays(tune_data.read_samples([os.path.join(made["dir"], "Split-eval", "*")]))
        runs: Dict[str, Dict[str, Dict[str, Any]]] = {m: {} for m in METHODS}
        for seed in args.seeds:
            for m in METHODS:
                r = run_method(m, data, seed, args, os.path.join(work, "tuners"))
                r["eval_top10"] = final_eval(data, eval_xy, r["best_values"], args.final_epochs, seed)
                runs[m][str(seed)] = r
                log.info("seed %d %s: best fitness %.4f, eval top-10 %.4f (%.0f s)", seed, m,
                         r["best_fitness"], r["eval_top10"], r["search_s"])
    result = {"settings": {**vars(args), "fitness": "top-10 accuracy + 1/(1+loss) on the tuning validation set",
                           "default_values": DEFAULT_VALUES, "plot_only": None},
              "data": {**made["summary"], "fit_rows": int(len(data.train[0]["pages"])),
                       "valid_rows": int(len(data.valid[0]["pages"])), "eval_rows": int(len(eval_xy[0]["pages"])),
                       "num_pages": data.num_pages, "num_items": data.num_items},
              "runs": runs, "summary": summarise(runs, args.trials),
              "machine": machine_info("tensorflow", "tf_keras", "keras_tuner"),
              "wall_s": round(time.time() - t0, 1)}
    os.makedirs(os.path.dirname(OUT_JSON), exist_ok=True)
    with open(OUT_JSON, "w") as f:
        json.dump(result, f, indent=1, default=float)
    plot(result, OUT_PNG)
    print(json.dumps({k: result["summary"][k] for k in result["summary"]}, indent=1, default=float)[:3000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
