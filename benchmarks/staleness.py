"""Feature staleness: offline AUC of a model trained fresh and served stale behaviour features.

    .venv/bin/python -m benchmarks.staleness [--config configs/demo.yaml] [--seeds 0 1]
        [--delays 0 60 600 3600 86400] [--matched 60 600 3600] [--online ONLINE.json] [--plot-only]

How much do fresher behaviour features gain?  A feature delay ``S``
(`examples.feature_delay_s`) lets the behaviour sequences, user counters,
session share and category recency see only events with ``ts`` < impression
ts - S, as if the online feature updater lagged S seconds; labels, splits and
the item counters do not change.

1. Builds the config's log into examples once per delay, in process, with the
   example generator's Beam graph (`beam_pipeline.run`, the config's settings).
2. tf.Transform analysis of the fresh train split (what the Transform component
   analyses), then the config's trainer (DIN on the demo config) once per seed,
   fitted on train and early-stopped on valid, exported with the transform graph
   attached (`feedrank.train.export`).
3. Scores every delay's eval split with that one model through its
   ``serving_tf_example`` signature: trained fresh, served stale.
4. ``--matched S``: transform, train and evaluate on the examples of delay S
   (a model that learnt with the features it is served).
Reports exact AUC, GAUC, logloss and the simulator oracle's AUC (same
impressions at every delay) per seed and their mean / median; writes
benchmarks/results/staleness_offline.json and docs/img/staleness.png.

``--online PATH.json`` ({staleness_s: ctr}, e.g. {"0": 0.061, "3600": 0.058})
adds the online simulation's CTR to the JSON (``online_ctr``) and draws it in a
second panel; ``--plot-only`` redraws from the existing JSON.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import time
from typing import Dict, List, Optional

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from feedrank import config as config_lib  # noqa: E402
from feedrank import features as F  # noqa: E402

log = logging.getLogger("staleness")
DELAYS = [0, 60, 600, 3600, 86400]
METRICS = ("auc", "gauc", "logloss", "oracle_auc", "oracle_lift_recovered")
LABELS = {0: "0", 60: "1 min", 600: "10 min", 3600: "1 h", 86400: "1 day"}


def build_examples(cfg, delay_s: int, workdir: str) -> Dict:
    """The config's examples at one feature delay (cached in ``workdir``); returns the summary."""
    from feedrank.examples import beam_pipeline

    out = os.path.join(workdir, f"examples_{delay_s}")
    done = os.path.join(out, "summary.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    settings = {**vars(cfg.examples), "feature_delay_s": int(delay_s)}
    start = time.perf_counter()
    summary = beam_pipeline.run(cfg.input_base, out, os.path.join(workdir, f"quarantine_{delay_s}"), settings,
                                list(cfg.beam_pipeline_args) or None, spec=cfg.features_spec)
    summary["build_s"] = round(time.perf_counter() - start, 1)
    with open(done, "w") as f:
        json.dump(summary, f, default=str)
    log.info("examples at delay %d s: %s in %.0f s", delay_s, summary["examples"], summary["build_s"])
    return summary


def analyze(examples_dir: str, out_dir: str, spec: F.FeatureSpec):
    """tf.Transform analysis of the train split with the feature contract ``spec`` (cached);
    returns the TFTransformOutput."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tfx_bsl.public import tfxio

    from feedrank.examples.tfdv_schema import make_schema
    from feedrank.transform.preprocessing import DECLARED_KEY, preprocessing_fn

    graph = os.path.join(out_dir, "transform_graph")
    if not os.path.exists(os.path.join(graph, "transform_fn")):
        files = sorted(glob.glob(os.path.join(examples_dir, "Split-train", "*")))
        source = tfxio.TFExampleRecord(files, schema=make_schema(spec))
        custom_config = {DECLARED_KEY: spec.to_json()}
        with beam.Pipeline() as p, tft_beam.Context(temp_dir=os.path.join(out_dir, "tmp")):
            raw = p | "Read" >> source.BeamSource()
            transform_fn = (raw, source.TensorAdapterConfig()) | tft_beam.AnalyzeDataset(
                lambda inputs: preprocessing_fn(inputs, custom_config))
            _ = transform_fn | tft_beam.WriteTransformFn(graph)
    return tft.TFTransformOutput(graph)


def train_and_export(cfg, examples_dir: str, tft_output, seed: int, model_dir: str, rate: float) -> Dict:
    """The config's trainer at one seed on raw examples, exported for serving (cached)."""
    from feedrank.train import export, trainer

    info_path = os.path.join(model_dir, "training_info.json")
    if os.path.exists(info_path):
        with open(info_path) as f:
            return json.load(f)
    spec = cfg.features_spec
    tcfg = {**cfg.trainer.to_dict(), "seed": int(seed), "raw_examples": True}
    if spec.declared:
        tcfg["declared_features"] = spec.to_json()
    files = {s: sorted(glob.glob(os.path.join(examples_dir, f"Split-{s}", "*"))) for s in ("train", "valid")}
    start = time.perf_counter()
    model, curves = trainer.train(files["train"], files["valid"], tft_output, tcfg, spec=spec)
    export.export(model, tft_output, model_dir, rate, spec=spec)
    info = {"train_s": round(time.perf_counter() - start, 1), "epochs": len(curves), "curves": curves}
    with open(info_path, "w") as f:
        json.dump(info, f, default=float)
    return info


def evaluate(cfg, model_dir: str, examples_dir: str) -> Dict:
    """Exact metrics of the eval split scored through ``serving_tf_example``."""
    from feedrank.evaluate.scoring import metrics_from_scores, score_split

    start = time.perf_counter()
    out = metrics_from_scores(score_split(model_dir, examples_dir, "eval"), cfg.input_base)
    out["score_s"] = round(time.perf_counter() - start, 1)
    return out


def changed_share(fresh_dir: str, stale_dir: str) -> float:
    """Share of eval examples whose serialized features differ from the fresh ones (same impressions)."""
    import tensorflow as tf

    def by_id(d: str) -> Dict[bytes, bytes]:
        files = sorted(glob.glob(os.path.join(d, "Split-eval", "*")))
        spec = {F.IMPRESSION_ID: tf.io.FixedLenFeature([], tf.string)}
        out: Dict[bytes, bytes] = {}
        for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(8192):
            ids = tf.io.parse_example(batch, spec)[F.IMPRESSION_ID].numpy()
            out.update(zip(ids, batch.numpy()))
        return out

    a, b = by_id(fresh_dir), by_id(stale_dir)
    if set(a) != set(b):
        raise RuntimeError(f"eval impressions differ between {fresh_dir} and {stale_dir}")
    return float(np.mean([a[i] != b[i] for i in a])) if a else 0.0


def summarize(rows: List[Dict]) -> Dict[str, float]:
    """mean, median and std over seeds of every metric."""
    out: Dict[str, float] = {"seeds": len(rows)}
    for m in METRICS:
        vals = [r[m] for r in rows if r.get(m) is not None]
        if vals:
            out[f"{m}_mean"], out[f"{m}_median"] = float(np.mean(vals)), float(np.median(vals))
            out[f"{m}_std"] = float(np.std(vals))
    return out


def read_online(path: Optional[str]) -> Optional[Dict[str, float]]:
    """``{staleness_s: ctr}`` from a JSON file (keys as strings or numbers), or None."""
    if not path:
        return None
    try:
        with open(path) as f:
            raw = json.load(f)
        return {str(int(float(k))): float(v) for k, v in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise SystemExit(f"--online {path}: expected a JSON object {{staleness_s: ctr}} ({e})") from None


def _x(delay_s: float) -> float:
    """Plot position: log seconds, with 0 (fresh) drawn at 10 s, left of the axis break."""
    return float(delay_s) if delay_s > 0 else 10.0


def markdown(result: Dict) -> str:
    """The result as a Markdown table (mean over seeds; [min, max] of the seeds)."""
    lines = ["| feature delay | eval AUC, trained fresh | vs fresh | eval examples changed | "
             "trained and served at the delay | online CTR |", "|---|---|---|---|---|---|"]
    fresh = result["trained_fresh_served_stale"]
    base = fresh.get("0", {}).get("auc_mean")
    online = result.get("online_ctr") or {}
    for d in result["delays_s"]:
        f = fresh[str(d)]
        runs = [r["auc"] for r in result["runs"] if r["trained_at_s"] == 0 and r["served_at_s"] == d]
        m = result["trained_and_served_at"].get(str(d), {})
        lines.append("| {} | {:.4f} [{:.4f}, {:.4f}] | {} | {} | {} | {} |".format(
            LABELS.get(d, f"{d} s"), f["auc_mean"], min(runs), max(runs),
            f"{f['auc_mean'] - base:+.4f}" if base is not None and d else "",
            f"{result['eval_changed_share'][str(d)]:.1%}" if d else "",
            f"{m['auc_mean']:.4f}" if m.get("auc_mean") is not None else "",
            f"{online[str(d)]:.4f}" if str(d) in online else ""))
    oracle = fresh.get("0", {}).get("oracle_auc_mean")
    if oracle is not None:
        lines.append(f"\nOracle AUC (the simulator's true click probability, same impressions): {oracle:.4f}")
    return "\n".join(lines)


def plot(result: Dict, path: str) -> None:
    """AUC vs feature delay (log x, 0 left of a break); online CTR in a second panel when present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    online = result.get("online_ctr")
    fig, axes = plt.subplots(1, 2 if online else 1, figsize=(11 if online else 6.5, 4.2), squeeze=False)
    ax = axes[0][0]
    delays = result["delays_s"]
    fresh = result["trained_fresh_served_stale"]
    xs = [_x(d) for d in delays]
    for seed in result["seeds"]:
        ys = [next((r["auc"] for r in result["runs"] if r["trained_at_s"] == 0 and r["served_at_s"] == d
                    and r["seed"] == seed), np.nan) for d in delays]
        ax.plot(xs, ys, "o", color="tab:blue", alpha=0.35, ms=4)
    ax.plot(xs, [fresh[str(d)]["auc_mean"] for d in delays], "-o", color="tab:blue",
            label=f"trained fresh, served stale (mean of {len(result['seeds'])} seeds)")
    matched = {int(k): v for k, v in result["trained_and_served_at"].items() if v.get("auc_mean") is not None}
    if len(matched) > 1:
        ks = sorted(matched)
        ax.plot([_x(k) for k in ks], [matched[k]["auc_mean"] for k in ks], "s--", color="tab:orange",
                label="trained and served at the delay")
    _delay_axis(ax, delays)
    ax.set_ylabel("eval AUC")
    ax.set_title(f"Offline: {result['model'].upper()} on {result['input_base']}")
    ax.legend(fontsize=8, loc="lower left")
    if online:
        ax2 = axes[0][1]
        ks = sorted(int(k) for k in online)
        ax2.plot([_x(k) for k in ks], [online[str(k)] for k in ks], "-o", color="tab:green")
        _delay_axis(ax2, ks)
        ax2.set_ylabel("CTR")
        ax2.set_title("Online: simulated A/B")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _delay_axis(ax, delays: List[int]) -> None:
    ax.set_xscale("log")
    ticks = sorted(set(delays) | {0})
    ax.set_xticks([_x(d) for d in ticks])
    ax.set_xticklabels([LABELS.get(d, f"{d} s") for d in ticks])
    ax.minorticks_off()
    ax.set_xlim(6, max(_x(d) for d in ticks) * 1.8)
    ax.axvline(30, color="grey", lw=0.6, ls=":")      # the break between "fresh" and the delays
    ax.set_xlabel("feature delay (behaviour older than this is visible)")
    ax.grid(alpha=0.3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.yaml"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--delays", type=int, nargs="+", default=DELAYS)
    p.add_argument("--matched", type=int, nargs="*", default=[60, 600, 3600],
                   help="delays also trained at (train and eval at the same staleness); 0 is the fresh model")
    p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "staleness"),
                   help="examples, transform graphs and models (reused when present)")
    p.add_argument("--online", help="JSON {staleness_s: ctr} of the online simulation, drawn in a 2nd panel")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "staleness_offline.json"))
    p.add_argument("--plot", default=os.path.join(ROOT, "docs", "img", "staleness.png"))
    p.add_argument("--plot-only", action="store_true", help="redraw --plot from --out (and --online)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in ("tensorflow", "absl", "apache_beam"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if min(args.delays + (args.matched or [0])) < 0:
        p.error("delays must be >= 0")
    online = read_online(args.online)
    if args.plot_only:
        with open(args.out) as f:
            result = json.load(f)
    else:
        result = run(args, online)
    if online is not None:
        result["online_ctr"] = online
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=str)
    plot(result, args.plot)
    print(markdown(result))
    print(f"\nwrote {args.out} and {args.plot}")


def run(args, online: Optional[Dict[str, float]]) -> Dict:
    """Every measurement of `main`; returns the result document."""
    from benchmarks.machine import machine_info, repo_relative

    cfg = config_lib.load(args.config)
    started = time.time()
    delays = sorted(set(args.delays) | {0} | set(args.matched or []))
    summaries = {d: build_examples(cfg, d, args.workdir) for d in delays}
    ex_dir = {d: os.path.join(args.workdir, f"examples_{d}") for d in delays}
    rate = float(summaries[0].get("negative_sampling_rate", cfg.examples.negative_sampling_rate))
    changed = {d: changed_share(ex_dir[0], ex_dir[d]) for d in delays if d}
    trained_at = [0] + [d for d in (args.matched or []) if d]
    runs: List[Dict] = []
    for t in trained_at:
        tft_output = analyze(ex_dir[t], os.path.join(args.workdir, f"transform_{t}"), cfg.features_spec)
        for seed in args.seeds:
            model_dir = os.path.join(args.workdir, f"model_{t}_seed{seed}")
            info = train_and_export(cfg, ex_dir[t], tft_output, seed, model_dir, rate)
            for d in (args.delays if t == 0 else [t]):
                m = evaluate(cfg, model_dir, ex_dir[d])
                runs.append({"trained_at_s": t, "served_at_s": d, "seed": seed, "epochs": info["epochs"],
                             "train_s": info["train_s"], **m})
                log.info("trained at %d s, served at %d s, seed %d: AUC %.4f", t, d, seed, m.get("auc", np.nan))
    fresh = {str(d): summarize([r for r in runs if r["trained_at_s"] == 0 and r["served_at_s"] == d])
             for d in args.delays}
    matched = {str(t): summarize([r for r in runs if r["trained_at_s"] == t and r["served_at_s"] == t])
               for t in trained_at}
    return {
        "config": repo_relative(args.config), "input_base": repo_relative(cfg.input_base),
        "model": cfg.trainer.model, "seeds": args.seeds, "delays_s": args.delays,
        "date": time.strftime("%Y-%m-%d"), "machine": machine_info("tensorflow", "apache_beam", "sklearn"),
        "wall_s": round(time.time() - started, 1),
        "wall_s_note": "this invocation only: examples, transform graphs and models found in --workdir are "
                       "reused (their build_s / train_s are from the run that made them)",
        "examples": {str(d): {"examples": s["examples"], "positives": s["positives"], "build_s": s.get("build_s")}
                     for d, s in summaries.items()},
        "eval_changed_share": {str(d): v for d, v in changed.items()},
        "trained_fresh_served_stale": fresh, "trained_and_served_at": matched, "runs": runs,
        **({"online_ctr": online} if online is not None else {}),
    }


if __name__ == "__main__":
    main()
