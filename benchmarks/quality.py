"""Model-zoo quality: every family and the GBDT on the same examples, several seeds.

    .venv/bin/python -m benchmarks.quality [--config configs/quality.yaml] [--seeds 0 1 2]
                                          [--families din dien ... gbdt item_prior user_prior]
    .venv/bin/python -m benchmarks.quality --config configs/movielens.yaml --public movielens

1. Simulates ``input_base`` if it is missing (``--public movielens``: converts the real
   log a registry package ships instead, docs/public_logs.md) and runs the TFX pipeline once
   (example gen, validation, Transform, DIN Trainer, Evaluator, ...), so every
   model reads the same ExampleGen and Transform artifacts from MLMD.
2. Splits the eval day by user (a stable hash of user_id): *validation* users
   for early stopping / the GBDT's rounds / choosing the best family, *test*
   users for the reported figures.  Nothing is ever picked by test.
3. Trains each family with the Trainer's own ``train()`` (the config's trainer
   section, only ``model`` and ``seed`` change) and the LightGBM baseline on
   the raw examples of the same split, once per seed.
4. Reports on the test users, mean +- std over seeds: exact AUC (sklearn),
   GAUC (per-user, impression-weighted), logloss (after the negative-sampling
   correction) and the fraction of the oracle's AUC lift recovered (the
   simulator's hidden click probability on the same impressions).
5. Orders two rows only by a paired 95% interval over the test users (a bootstrap
   that draws users, `feedrank.evaluate.paired`) on the first seed's scores: every
   row against the config's family and against the item prior.  A seed std is not
   the error of an AUC.

Rows beside the families: ``item_prior`` and ``user_prior`` score an impression by the
post's or the user's smoothed CTR before it (the ``item_hist_ctr`` / ``user_hist_ctr``
inputs every model reads), with nothing trained.

Writes benchmarks/results/quality.json, prints a Markdown table and saves
docs/img/quality.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
import zlib
from typing import Dict, List, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from feedrank import config as config_lib  # noqa: E402
from feedrank import features as F  # noqa: E402
from feedrank.evaluate.scoring import metrics_from_scores  # noqa: E402
from feedrank.train.settings import TrainerSettings  # noqa: E402

log = logging.getLogger("quality")
FAMILIES = ["gbdt", "dnn", "wide_deep", "deepfm", "din", "dien", "bst", "double_channel", "multi_channel"]
# Untrained rows: the score is one input every model reads (the smoothed CTR before the impression).
PRIORS = {"item_prior": F.ITEM_HIST_CTR.name, "user_prior": F.USER_HIST_CTR.name}
PUBLIC = ("movielens",)
# Variants: a family plus trainer options (run with --families din_w2v; needs `word2vec.enabled`).
VARIANTS = {"din_w2v": ("din", {"word2vec": {"init": False, "freeze": False, "similarity": True}}),
            "gbdt_tfdf": ("gbdt", {})}   # the servable `gbdt` family (TF-DF), beside the LightGBM baseline
METRICS = ("auc", "gauc", "logloss", "calibration", "oracle_lift_recovered", "oracle_auc", "oracle_aggregate_auc",
           "auc_unseen_post", "auc_no_history")
# Slices of the eval impressions reported apart (see `slice_masks`).
SLICES = ("unseen_post", "no_history")


def is_test_user(users: np.ndarray) -> np.ndarray:
    """Stable half of the users (crc32 of the id is odd): the test users."""
    return np.array([zlib.crc32(u) % 2 == 1 for u in users])


def prepare(cfg, public: str = "") -> Dict[str, str]:
    """The log (simulated, or ``public``: converted) + one pipeline run; returns the artifact
    URIs everything reads."""
    from feedrank.evaluate.mlmd_reader import latest_run

    if not os.path.exists(os.path.join(cfg.input_base, "events.parquet")):
        if public == "movielens":
            from feedrank.events.public import movielens

            movielens.convert(cfg.input_base)
        else:
            from feedrank.events.simulator import simulate

            simulate(cfg.input_base, **cfg.simulate.kwargs())
    run = latest_run(cfg.metadata_path)
    if run is None or run.artifact("Transform", "transformed_examples") is None or (
            cfg.word2vec.enabled and run.artifact("Word2VecGen", "word_vectors") is None):
        import pipeline

        pipeline.run(cfg)
        run = latest_run(cfg.metadata_path)
    uris = {"examples": run.artifact("BehaviorExampleGen", "examples").uri,
            "transformed": run.artifact("Transform", "transformed_examples").uri,
            "transform_graph": run.artifact("Transform", "transform_graph").uri}
    if run.artifact("Word2VecGen", "word_vectors") is not None:
        uris["word_vectors"] = run.artifact("Word2VecGen", "word_vectors").uri
    log.info("artifacts: %s", uris)
    return uris


def split_eval(transformed_uri: str, user_of: Dict[bytes, bytes], workdir: str) -> Dict[str, str]:
    """Writes the transformed eval split as val.gz / test.gz by user."""
    import tensorflow as tf

    paths = {k: os.path.join(workdir, f"{k}.tfrecord.gz") for k in ("val", "test")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    os.makedirs(workdir, exist_ok=True)
    writers = {k: tf.io.TFRecordWriter(p + ".tmp", options="GZIP") for k, p in paths.items()}
    spec = {F.IMPRESSION_ID: tf.io.FixedLenFeature([], tf.string)}
    files = tf.io.gfile.glob(os.path.join(transformed_uri, "Split-eval", "*"))
    for rec in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        imp = tf.io.parse_single_example(rec, spec)[F.IMPRESSION_ID].numpy()
        test = bool(is_test_user(np.array([user_of[imp]]))[0])
        writers["test" if test else "val"].write(rec.numpy())
    for k, w in writers.items():
        w.close()
        os.replace(paths[k] + ".tmp", paths[k])
    return paths


def score_keras(model, path: str, transformed_spec: Dict, rate: float, spec: F.FeatureSpec) -> Dict[str, np.ndarray]:
    """Calibrated scores of a transformed TFRecord file (``spec``'s model inputs), keyed by impression id."""
    import tensorflow as tf

    from feedrank.train.export import correct_for_sampling

    wanted = set(spec.model_input_names()) | {F.IMPRESSION_ID}
    parse_spec = {k: v for k, v in transformed_spec.items() if k in wanted}
    ids, scores = [], []
    for batch in tf.data.TFRecordDataset([path], compression_type="GZIP").batch(8192):
        x = tf.io.parse_example(batch, parse_spec)
        ids.append(x.pop(F.IMPRESSION_ID).numpy())
        scores.append(correct_for_sampling(model(x, training=False), rate).numpy())
    return {"id": np.concatenate(ids), "score": np.concatenate(scores)}


def with_meta(scored: Dict[str, np.ndarray], meta: Dict[bytes, tuple]) -> Dict[str, np.ndarray]:
    users, labels = zip(*(meta[i] for i in scored["id"]))
    return {**scored, "user": np.array(users), "label": np.array(labels)}


def slice_masks(raw_eval: Dict, item_vocab: set) -> Dict[str, np.ndarray]:
    """Per eval example: ``unseen_post``, the candidate post is not in the train
    vocabulary (never seen in training, as candidate or in a history); and
    ``no_history``, the user has no behaviour before the impression (every
    behaviour sequence empty)."""
    n = int(raw_eval["n"])
    has = np.zeros(n, dtype=bool)
    for seq in F.SEQ_FEATURES:   # the built-in behaviour sequences (every other one is aligned with one)
        rows = np.asarray(raw_eval[seq.name][0], dtype=np.int64)
        has[rows] = True
    unseen = np.array([i not in item_vocab for i in raw_eval[F.ITEM_ID.name]], dtype=bool)
    return {"unseen_post": unseen, "no_history": ~has}


def evaluate(s: Dict[str, np.ndarray], cfg, ctx: Dict) -> Dict:
    """`metrics_from_scores` plus the exact AUC of every slice (None where one class is missing)."""
    from sklearn.metrics import roc_auc_score

    scored = with_meta(s, ctx["meta"])
    out = metrics_from_scores(scored, cfg.input_base)
    rows = np.array([ctx["row_of"][i] for i in s["id"]], dtype=np.int64)
    for name in SLICES:
        m = ctx["slices"][name][rows]
        y, p = scored["label"][m], scored["score"][m]
        out[f"n_{name}"] = int(m.sum())
        out[f"auc_{name}"] = float(roc_auc_score(y, p)) if len(y) and 0 < y.sum() < len(y) else None
    return out


def calibrated(scored: Dict[str, Dict[str, np.ndarray]], cfg, ctx: Dict) -> Tuple[Dict, str]:
    """Every row's scores through the calibration step the Trainer exports
    (`feedrank.train.calibration.choose` with ``trainer.calibration``), fitted on the
    validation users' scores: the baselines get the same step as the families."""
    from feedrank.train import calibration

    val = with_meta(scored["val"], ctx["meta"])
    calibrator, _ = calibration.choose(val["score"], val["label"], cfg.trainer.calibration)
    return ({split: {**s, "score": calibrator.predict(np.asarray(s["score"], np.float64))}
             for split, s in scored.items()}, calibrator.method)


def run_family(family: str, seed: int, cfg, ctx: Dict) -> Dict:
    """Trains one family with one seed; metrics on the validation and test users."""
    rate = cfg.examples.negative_sampling_rate
    start = time.perf_counter()
    spec = ctx["features_spec"]
    scored: Dict[str, Dict[str, np.ndarray]] = {}
    if family in PRIORS:
        out = {"epochs": 0}
        for split in ("val", "test"):
            scored[split] = {"id": ctx[f"{split}_ids"], "score": ctx["priors"][family][ctx[f"{split}_mask"]]}
        train_s = time.perf_counter() - start
    elif family == "gbdt":
        from feedrank.train import lightgbm_baseline as lgbm

        booster = lgbm.fit(ctx["gb_train_x"], ctx["gb_train_y"], ctx["gb_val_x"], ctx["gb_val_y"], seed=seed,
                           spec=spec)
        train_s = time.perf_counter() - start
        out = {"epochs": booster.best_iteration}
        from feedrank.train.export import correct_for_sampling

        for split in ("val", "test"):
            q = lgbm.predict(booster, ctx["gb_train_x"], ctx[f"gb_{split}_x"], spec=spec)
            scored[split] = {"id": ctx[f"gb_{split}_ids"], "score": correct_for_sampling(q, rate)}
    else:
        from feedrank.train import trainer

        model_name, extra = VARIANTS.get(family, (family, {}))
        settings = dataclasses.replace(cfg.trainer, model=model_name, seed=seed)
        tcfg = {**settings.to_dict(), **extra}
        if "word2vec" in extra:
            if "word_vectors" not in ctx["uris"]:
                raise SystemExit(f"{family} needs word vectors: set word2vec.enabled in the config")
            tcfg["word_vectors_uri"] = ctx["uris"]["word_vectors"]
        model, curves = trainer.train([os.path.join(ctx["transformed"], "Split-train", "*")],
                                      [ctx["paths"]["val"]], ctx["tft"], tcfg, spec=spec)
        train_s = time.perf_counter() - start
        best = max(curves, key=lambda c: c.get("val_auc", 0.0))
        out = {"epochs": best["epoch"], "params": int(model.count_params())}
        for split in ("val", "test"):
            scored[split] = score_keras(model, ctx["paths"][split], ctx["spec"], rate, spec)
    scored, out["calibrator"] = calibrated(scored, cfg, ctx)
    for split, s in scored.items():
        out[split] = evaluate(s, cfg, ctx)
        ctx["scores"][(family, seed, split)] = s
    out.update(family=family, seed=seed, train_s=round(train_s, 1))
    log.info("%s seed %d: val AUC %.4f, test AUC %.4f (lift %.3f), %.0f s", family, seed,
             out["val"].get("auc", float("nan")), out["test"].get("auc", float("nan")),
             out["test"].get("oracle_lift_recovered", float("nan")), train_s)
    return out


def load_context(cfg, uris: Dict[str, str], families: List[str], workdir: str) -> Dict:
    """Everything the families share: the config's feature contract, eval metadata,
    val/test files, GBDT frames."""
    import tensorflow_transform as tft

    from feedrank.train import lightgbm_baseline as lgbm

    spec = cfg.features_spec
    raw_eval = lgbm.read_raw(os.path.join(uris["examples"], "Split-eval"), spec=spec)
    ids = raw_eval[F.IMPRESSION_ID]
    meta = {i: (u, int(y)) for i, u, y in zip(ids, raw_eval[F.USER_ID], raw_eval[F.LABEL])}
    ctx: Dict = {"features_spec": spec, "meta": meta, "transformed": uris["transformed"], "uris": uris,
                 "paths": split_eval(uris["transformed"], {i: m[0] for i, m in meta.items()}, workdir)}
    ctx["tft"] = tft.TFTransformOutput(uris["transform_graph"])
    ctx["spec"] = ctx["tft"].transformed_feature_spec()
    from feedrank.transform.preprocessing import vocab_file_name

    item_vocab = set(ctx["tft"].vocabulary_by_name(vocab_file_name(F.ITEM_VOCAB)))
    ctx["slices"] = slice_masks(raw_eval, item_vocab)
    ctx["row_of"] = {i: k for k, i in enumerate(ids)}
    test_users = is_test_user(raw_eval[F.USER_ID])
    for split, mask in (("val", ~test_users), ("test", test_users)):
        ctx[f"{split}_mask"], ctx[f"{split}_ids"] = mask, ids[mask]
    ctx["priors"] = {name: np.asarray(raw_eval[col], dtype=float).reshape(-1) for name, col in PRIORS.items()}
    ctx["scores"] = {}   # (family, seed, split) -> {"id", "score"}: the paired comparisons read them
    log.info("eval slices: %s of %d impressions", {k: int(v.sum()) for k, v in ctx["slices"].items()}, len(ids))
    if "gbdt" in families:
        raw_train = lgbm.read_raw(os.path.join(uris["examples"], "Split-train"), spec=spec)
        ctx["gb_train_x"], ctx["gb_train_y"] = lgbm.features(raw_train, spec=spec), raw_train[F.LABEL]
        x_eval, test = lgbm.features(raw_eval, spec=spec), is_test_user(raw_eval[F.USER_ID])
        for split, mask in (("val", ~test), ("test", test)):
            ctx[f"gb_{split}_x"] = x_eval[mask].reset_index(drop=True)
            ctx[f"gb_{split}_y"] = raw_eval[F.LABEL][mask]
            ctx[f"gb_{split}_ids"] = ids[mask]
    return ctx


def paired_rows(cfg, ctx: Dict, families: List[str], seed: int, reference: str,
                resamples: int = 1000) -> List[Dict]:
    """Every family against ``reference`` and against the item prior on the test users' scores of
    ``seed``: the paired bootstrap interval over users of the AUC and GAUC differences."""
    from feedrank.evaluate import paired

    out, done = [], set()
    for ref in (r for r in (reference, "item_prior") if r in families):
        base = ctx["scores"][(ref, seed, "test")]
        order = np.argsort(base["id"])
        for fam in families:
            if fam == ref or frozenset((fam, ref)) in done:   # each pair once
                continue
            done.add(frozenset((fam, ref)))
            other = ctx["scores"][(fam, seed, "test")]
            pos = order[np.searchsorted(base["id"][order], other["id"])]
            if not np.array_equal(base["id"][pos], other["id"]):
                raise AssertionError(f"{fam} and {ref} were scored on different test impressions")
            scored = with_meta({"id": other["id"], "score": other["score"]}, ctx["meta"])
            diffs = paired.compare(scored["label"], scored["score"], base["score"][pos], scored["user"],
                                   resamples=resamples, seed=seed)
            for d in diffs.values():
                out.append({"a": fam, "b": ref, **d.to_dict(), "ordered": d.ordered})
    return out


def save_scores(path: str, ctx: Dict) -> None:
    """Every row's test scores, as ``<family>/<seed>/{id,score,label,user}`` arrays of one .npz."""
    arrays = {}
    for (family, seed, split), scored in ctx["scores"].items():
        if split == "test":
            for key, values in with_meta(scored, ctx["meta"]).items():
                values = np.asarray(values)   # ids and users as fixed-width bytes: no pickled objects
                arrays[f"{family}/{seed}/{key}"] = values.astype(bytes) if values.dtype == object else values
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, **arrays)
    log.info("wrote the test scores of %d rows to %s", len(arrays) // 4, path)


def aggregate(rows: List[Dict]) -> Dict[str, Dict]:
    """mean and std over seeds of every metric, per family and split."""
    out: Dict[str, Dict] = {}
    for fam in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == fam]
        agg: Dict = {"seeds": len(mine), "train_s": float(np.mean([r["train_s"] for r in mine]))}
        for split in ("val", "test"):
            for m in METRICS:
                vals = [r[split][m] for r in mine if r[split].get(m) is not None]
                if vals:
                    agg[f"{split}_{m}"] = [float(np.mean(vals)), float(np.std(vals))]
            for name in SLICES:
                agg[f"{split}_n_{name}"] = mine[0][split].get(f"n_{name}")
        out[fam] = agg
    return out


def merged(path: str, new: Dict, families: List[str], parser) -> Dict:
    """``new``'s rows of ``families`` in place of those of the result at ``path``
    (which must come from the same config and artifacts); the update is recorded."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError) as e:
        parser.error(f"--update needs a readable result file at {path}: {e}")
    if old.get("config") != new["config"] or old.get("artifacts") != new["artifacts"]:
        parser.error(f"--update: {path} was measured with another config or other examples")
    order = list(old["families"]) + [f for f in families if f not in old["families"]]
    runs = [r for r in old["runs"] if r["family"] not in families] + new["runs"]
    runs.sort(key=lambda r: (r["seed"], order.index(r["family"])))
    updates = old.get("updates", []) + [{"families": families, "overrides": new["overrides"],
                                         "date": time.strftime("%Y-%m-%d"), "wall_s": new["wall_s"]}]
    fams = aggregate(runs)
    return {**old, "families": {f: fams[f] for f in order if f in fams}, "runs": runs, "updates": updates}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "quality.yaml"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--families", nargs="+", default=FAMILIES + list(PRIORS),
                   choices=FAMILIES + list(VARIANTS) + list(PRIORS))
    p.add_argument("--public", default="", choices=("",) + PUBLIC,
                   help="convert this real public log into input_base when it is missing "
                        "(docs/public_logs.md) instead of simulating")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the paired intervals")
    p.add_argument("--reference", default="", help="the row every other row is paired with (default: the "
                                                   "config's trainer.model)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML",
                   help="override trainer options for every family, e.g. --set embedding_l2=1e-5")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "quality.json"))
    p.add_argument("--plot", default=os.path.join(ROOT, "docs", "img", "quality.png"))
    p.add_argument("--scores", default="",
                   help="also write every row's test scores (with labels and users) to this .npz, for "
                        "`benchmarks.quality_ablation` to pair two runs on the same impressions")
    p.add_argument("--update", action="store_true",
                   help="replace only these families' rows in the existing --out file (same config, "
                        "same examples) and keep the others")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = config_lib.load(args.config)
    edits = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set expects KEY=VALUE, got {item!r}")
        edits[key] = yaml.safe_load(value)
    try:
        cfg.trainer = TrainerSettings.from_dict({**cfg.trainer.to_dict(every_group=True), **edits}, "--set")
    except config_lib.ConfigError as e:
        p.error(str(e))
    started = time.time()
    uris = prepare(cfg, args.public)
    ctx = load_context(cfg, uris, args.families, os.path.join(cfg.pipeline_dir, "quality_split"))
    rows = [run_family(f, s, cfg, ctx) for s in args.seeds for f in args.families]
    from benchmarks import quality_report
    from benchmarks.machine import machine_info, repo_relative

    result = {"config": os.path.relpath(args.config, ROOT), "seeds": args.seeds, "overrides": args.set,
              "artifacts": {k: repo_relative(v) for k, v in uris.items()},
              "machine": machine_info("tensorflow", "lightgbm", "sklearn"),
              "wall_s": round(time.time() - started, 1), "families": aggregate(rows), "runs": rows,
              "paired": paired_rows(cfg, ctx, args.families, args.seeds[0], args.reference or cfg.trainer.model,
                                    args.resamples),
              "public": args.public}
    if args.update:
        result = merged(args.out, result, args.families, p)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=str)
    if args.scores:
        save_scores(args.scores, ctx)
    print(quality_report.markdown(result))
    quality_report.plot(result, args.plot)
    print(f"\nwrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
