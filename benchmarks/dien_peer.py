"""Our DIEN vs a peer implementation (RecBole's DIEN, torch CPU): same examples, same run.

    # once: the peer's environment (benchmarks/peer/README.md)
    python3.11 -m venv .venv-peer && .venv-peer/bin/pip install -r benchmarks/peer/requirements.txt
    # a pipeline run whose Transform output is read (here the tiny one)
    TF_USE_LEGACY_KERAS=1 .venv/bin/python pipeline.py run --config configs/tiny.yaml --simulate-if-missing
    # the comparison
    TF_USE_LEGACY_KERAS=1 .venv/bin/python -m benchmarks.dien_peer --config configs/tiny.yaml
    # or name the Transform artifacts directly
    .venv/bin/python -m benchmarks.dien_peer --transformed DIR --transform-graph DIR

Input: the newest run in the config's MLMD store
(``<run_root>/<pipeline_name>/metadata.sqlite``), its Transform node's
``transformed_examples`` (Split-train/Split-eval GZIP TFRecords) and
``transform_graph`` (feature spec, vocabulary sizes).

Both splits are read into NumPy once and written to one ``.npz`` (every
transformed model input plus the label; sequences right-padded, 0 = pad, which
is checked).  Then, one after the other:

(a) ours, in a child process of the project's .venv python:
    ``feedrank.train.families.build_model('dien', ...)`` compiled exactly
    as ``feedrank.train.trainer.train`` compiles it (Adam, binary cross-entropy,
    the AUC/logloss metrics), fitted on the .npz arrays with ``model.fit``
    (``shuffle=True``, no validation during the timed epochs);
(b) the peer: ``benchmarks/peer/recbole_dien.py`` under ``.venv-peer/bin/python``:
    RecBole 1.2.1's ``recbole.model.sequential_recommender.dien.DIEN`` built
    from a RecBole ``Config`` and a minimal dataset object holding exactly
    these tensors, trained by RecBole's own ``Trainer._train_epoch`` (Adam).

Shared settings: epochs, batch size, learning rate, seed, one embedding width
E for item/category/region (RecBole uses one width for every field; ours gets
``embedding_dims`` all E, so both GRUs are 3E wide), the MLP sizes (our head
and auxiliary net = RecBole's ``mlp_hidden_size``, which it uses for its head,
auxiliary net and attention MLP), Dice in the head, no dropout, aux-loss
weight 1, intra-op threads.  The architectural differences are listed in
``benchmarks/peer/README.md`` and in the JSON.

Measured for each: training samples/s (train examples / epoch wall time,
median over epochs 2..N: epoch 1 holds tf.function tracing and warm-up), exact
eval AUC (sklearn ``roc_auc_score`` over the whole eval split, after every
epoch, outside the timed epochs), wall time.  Prints a table and writes
``benchmarks/results/dien_peer.json`` (machine, versions, ratio ours/peer).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Mapping, Sequence, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from benchmarks.machine import machine_info, repo_relative  # noqa: E402

# the .npz format's one reader, shared with the peer script (which cannot import feedrank)
from benchmarks.peer.recbole_dien import load_npz as read_npz  # noqa: E402
from feedrank import features as F  # noqa: E402

PEER_SCRIPT = os.path.join(ROOT, "benchmarks", "peer", "recbole_dien.py")
PEER_PYTHON = os.path.join(ROOT, ".venv-peer", "bin", "python")
SPLITS = ("train", "eval")


# --------------------------------------------------------------------------
# Input: the Transform artifacts of a pipeline run
# --------------------------------------------------------------------------
def transform_artifacts(config_path: str) -> Tuple[str, str, str]:
    """(transformed_examples uri, transform_graph uri, run id) of the newest run."""
    from feedrank import config as config_lib
    from feedrank.evaluate.mlmd_reader import latest_run

    cfg = config_lib.load(config_path)
    run = latest_run(cfg.metadata_path)
    if run is None:
        raise SystemExit(f"no pipeline run in {cfg.metadata_path}; run "
                         f"`pipeline.py run --config {config_path}` first")
    examples = run.artifact("Transform", "transformed_examples")
    graph = run.artifact("Transform", "transform_graph")
    if examples is None or graph is None:
        raise SystemExit(f"run {run.run_id} in {cfg.metadata_path} has no Transform outputs "
                         f"(components: {run.components})")
    return examples.uri, graph.uri, run.run_id


def model_spec(feature_spec: Mapping[str, object], spec: F.FeatureSpec) -> Dict[str, object]:
    """The transformed feature spec restricted to the model inputs of ``spec`` and the label."""
    wanted = set(spec.model_input_names()) | {F.LABEL}
    missing = wanted - set(feature_spec)
    if missing:
        raise ValueError(f"the transformed feature spec lacks {sorted(missing)}")
    return {k: v for k, v in feature_spec.items() if k in wanted}


def read_split(pattern_or_dir: str, feature_spec: Mapping[str, object], spec: F.FeatureSpec,
               batch: int = 4096) -> Dict[str, np.ndarray]:
    """Every example of one split (a Split-* directory or a file glob) as NumPy
    columns of ``spec``'s model inputs, in file order; ids as int32 (fits every
    vocabulary), dense float32."""
    import tensorflow as tf

    pattern = os.path.join(pattern_or_dir, "*") if tf.io.gfile.isdir(pattern_or_dir) else pattern_or_dir
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {pattern}")
    parse_spec = model_spec(feature_spec, spec)
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch).map(
        lambda s: tf.io.parse_example(s, parse_spec))
    parts: Dict[str, List[np.ndarray]] = {k: [] for k in parse_spec}
    for b in ds:
        for k, v in b.items():
            parts[k].append(v.numpy())
    out = {}
    for k, chunks in parts.items():
        a = np.concatenate(chunks) if chunks else np.zeros((0,), np.int64)
        out[k] = a.astype(np.float32 if a.dtype.kind == "f" else np.int32)
    return out


def sequence_lengths(ids: np.ndarray, name: str = "sequence") -> np.ndarray:
    """Lengths of right-padded id sequences [N, L]; ValueError unless every row
    is its real ids (non-zero) followed only by padding (0)."""
    real = ids != F.PAD_ID
    lengths = real.sum(axis=1)
    prefix = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    bad = np.flatnonzero((real != prefix).any(axis=1))
    if bad.size:
        raise ValueError(f"{name}: {bad.size} rows are not right-padded (first: row {bad[0]}: "
                         f"{ids[bad[0]].tolist()})")
    return lengths


def check_arrays(arrays: Mapping[str, np.ndarray], spec: F.FeatureSpec) -> Dict[str, object]:
    """Shapes, padding and alignment of one split's arrays (``spec``'s model inputs); returns a summary."""
    n = len(arrays[F.LABEL])
    for f in spec.id_features:
        assert arrays[F.idx(f.name)].shape == (n,), f.name
    for d in spec.dense_features:
        assert arrays[F.dense(d.name)].shape == (n,), d.name
    lengths = {}
    for s in spec.seq_features:
        a = arrays[F.idx(s.name)]
        if a.shape != (n, s.max_len):
            raise ValueError(f"{s.name}: shape {a.shape}, expected {(n, s.max_len)}")
        lengths[s.name] = sequence_lengths(a, s.name)
    for channel in (F.CLICK_SEQUENCE, F.VIEW_SEQUENCE, F.CONVERSION_SEQUENCE):
        first = lengths[channel[0].name]
        for s in channel[1:]:
            if not np.array_equal(first, lengths[s.name]):
                raise ValueError(f"{s.name} is not aligned with {channel[0].name}")
    clicks = lengths[F.CLICK_ITEMS.name]
    return {"examples": int(n), "positives": int(arrays[F.LABEL].sum()),
            "click_len_mean": round(float(clicks.mean()), 2) if n else 0.0,
            "click_len_zero_share": round(float((clicks == 0).mean()), 4) if n else 0.0}


def write_npz(path: str, splits: Mapping[str, Mapping[str, np.ndarray]],
              vocab_sizes: Mapping[str, int]) -> None:
    """``<split>/<feature>`` arrays plus ``vocab/<name>`` sizes in one .npz."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    flat = {f"{s}/{k}": v for s, arrays in splits.items() for k, v in arrays.items()}
    flat.update({f"vocab/{k}": np.int64(v) for k, v in vocab_sizes.items()})
    np.savez(path, **flat)


def convert(transformed: str, transform_graph: str, npz_path: str, spec: F.FeatureSpec) -> Dict[str, object]:
    """Transform output -> .npz of ``spec``'s model inputs; returns the per-split summary and vocab sizes."""
    import tensorflow_transform as tft

    from feedrank.train.trainer import vocab_sizes

    tft_out = tft.TFTransformOutput(transform_graph)
    transformed_spec = tft_out.transformed_feature_spec()
    splits = {s: read_split(os.path.join(transformed, f"Split-{s}"), transformed_spec, spec) for s in SPLITS}
    summary = {s: check_arrays(a, spec) for s, a in splits.items()}
    vocab = vocab_sizes(tft_out, spec=spec)
    write_npz(npz_path, splits, vocab)
    return {"splits": summary, "vocab_sizes": vocab}


# --------------------------------------------------------------------------
# (a) ours
# --------------------------------------------------------------------------
def our_config(args) -> Dict[str, object]:
    e = args.embedding_size
    return {"model": "dien", "epochs": args.epochs, "batch_size": args.batch,
            "learning_rate": args.lr, "seed": args.seed,
            "embedding_dims": {"item": e, "category": e, "region": e, "token": e},
            "gru_units": 3 * e, "mlp_units": list(args.mlp), "aux_units": list(args.mlp),
            "activation": "dice", "dropout": 0.0, "aux_loss_weight": 1.0, "aux_negative_tries": 4}


def run_ours(npz_path: str, args, spec: F.FeatureSpec) -> Dict[str, object]:
    import tf_keras as keras
    from sklearn.metrics import roc_auc_score

    from feedrank.train.families import build_model
    from feedrank.train.settings import TrainerSettings

    splits, vocab = read_npz(npz_path)
    names = spec.model_input_names()

    def xy(split):
        a = splits[split]
        x = {k: a[k].astype(np.int64) if a[k].dtype.kind == "i" else a[k] for k in names}
        return x, a[F.LABEL].astype(np.float32)

    (x_train, y_train), (x_eval, y_eval) = xy("train"), xy("eval")
    cfg = TrainerSettings.from_yaml(our_config(args), "ours")
    keras.utils.set_random_seed(cfg.seed)
    model = build_model("dien", vocab, cfg, spec=spec)
    model.compile(  # as feedrank.train.trainer.train compiles it
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(num_thresholds=2000, name="auc"),
                 keras.metrics.BinaryCrossentropy(name="logloss")])

    class Epochs(keras.callbacks.Callback):
        """Times each epoch's training; then (untimed) scores the eval split."""

        def __init__(self):
            super().__init__()
            self.rows: List[Dict[str, float]] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.t0
            p = self.model.predict(x_eval, batch_size=4096, verbose=0)
            self.rows.append({"epoch": epoch + 1, "train_s": round(seconds, 3),
                              "samples_per_s": round(len(y_train) / seconds, 1),
                              "train_loss": round(float(logs["loss"]), 5),
                              "eval_auc": float(roc_auc_score(y_eval, p))})
            print(f"  ours epoch {epoch + 1}: {seconds:.1f} s, "
                  f"{len(y_train) / seconds:,.0f} samples/s, eval AUC {self.rows[-1]['eval_auc']:.4f}",
                  flush=True)

    epochs = Epochs()
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=cfg.batch_size, epochs=cfg.epochs,
              shuffle=True, callbacks=[epochs], verbose=0)
    wall = time.perf_counter() - start
    return {"name": "ours (feedrank dien, tf_keras)", "params": int(model.count_params()),
            "config": {k: cfg.to_dict()[k] for k in sorted(our_config(args))},
            "epochs": epochs.rows, "wall_s": round(wall, 2)}


def run_ours_child(args) -> Dict[str, object]:
    """`run_ours` in a fresh interpreter (this script with --ours-worker), so both
    sides are measured alike: each in its own process, this one idle meanwhile."""
    out_json = os.path.join(os.path.dirname(os.path.abspath(args.npz)), "ours_result.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--ours-worker", out_json,
           "--npz", os.path.abspath(args.npz), "--epochs", str(args.epochs), "--batch", str(args.batch),
           "--lr", str(args.lr), "--seed", str(args.seed), "--embedding-size", str(args.embedding_size),
           "--threads", str(args.threads), "--mlp", *map(str, args.mlp)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    with open(out_json) as f:
        result = json.load(f)
    result["subprocess_wall_s"] = round(time.perf_counter() - start, 2)
    return result


# --------------------------------------------------------------------------
# (b) the peer, in its own interpreter
# --------------------------------------------------------------------------
def run_peer(npz_path: str, args, out_json: str) -> Dict[str, object]:
    if not os.path.exists(args.peer_python):
        raise SystemExit(f"{args.peer_python} not found; create the peer env (benchmarks/peer/README.md)")
    cmd = [args.peer_python, PEER_SCRIPT, "--npz", os.path.abspath(npz_path),
           "--out", os.path.abspath(out_json), "--epochs", str(args.epochs),
           "--batch", str(args.batch), "--lr", str(args.lr), "--seed", str(args.seed),
           "--embedding-size", str(args.embedding_size), "--threads", str(args.threads),
           "--mlp", *map(str, args.mlp)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "PYTHONPATH"))}
    env.update({"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)})
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - start
    with open(out_json) as f:
        result = json.load(f)
    result["subprocess_wall_s"] = round(wall, 2)
    return result


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------
def summarize(result: Dict[str, object]) -> Dict[str, object]:
    """Median samples/s over epochs 2..N (epoch 1 if it is the only one), final and best AUC."""
    rows = result["epochs"]
    timed = rows[1:] or rows
    result["samples_per_s"] = round(statistics.median(r["samples_per_s"] for r in timed), 1)
    result["timed_epochs"] = [r["epoch"] for r in timed]
    result["eval_auc"] = rows[-1]["eval_auc"]
    result["best_eval_auc"] = max(r["eval_auc"] for r in rows)
    return result


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def uncommitted_code() -> List[str]:
    """Tracked files under feedrank/ and benchmarks/ that differ from HEAD (the model code run)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "feedrank",
                              "benchmarks"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [line[3:] for line in out.splitlines()]


def our_versions() -> Dict[str, str]:
    import sklearn
    import tensorflow as tf
    import tf_keras

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__, "numpy": np.__version__, "sklearn": sklearn.__version__}


ARCH_DIFFERENCES = [
    "Inputs: ours also reads the page-view, conversion and search histories (mean-pooled) and the 6 "
    "dense features; RecBole's DIEN reads only the click sequence, the candidate and the user "
    "features (here the user region), so ours does strictly more work per example.",
    "Embeddings: ours shares one region table between candidate, click sequence and user region; "
    "RecBole keeps separate user and item tables (FMEmbedding) and initialises them Xavier-normal.",
    "Item features: RecBole looks item features up from an item table by item id; each distinct "
    "(item_id_idx, category_id_idx, region_id_idx) triple of the data is one RecBole item whose "
    "features are exactly those three ids, so both embed the same ids (OOV-bucket ids stay shared).",
    "Empty click histories: torch's pack_padded_sequence rejects length 0, so the peer sees one "
    "padding step for them (length clamped to 1); ours masks every step and keeps a zero state.",
    "Auxiliary-loss negatives: RecBole's SeqSampler draws one uniform negative per step once "
    "before training (fixed over epochs, only != the positive at that step); ours draws per step "
    "in-graph every batch, re-drawing ids found anywhere in the sequence.",
    "Attention in the evolution layer: RecBole uses an MLP attention (DIN unit, [4*3E] + "
    "mlp_hidden_size, sigmoid, softmax over real steps); ours a bilinear score with a softmax "
    "over real steps.",
    "Head: RecBole's MLP has BatchNorm + Dice and logits with BCEWithLogits; ours Dice (its own "
    "batch statistics) and a sigmoid output with binary cross-entropy. Ours also updates the "
    "trainer's AUC/logloss metrics every step.",
    "Inference: RecBole's predict() runs the auxiliary net too (its forward always does).",
]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:10]))
    src = p.add_argument_group("input (one of)")
    src.add_argument("--config", help="pipeline YAML: read its newest run's Transform outputs from MLMD")
    src.add_argument("--transformed", help="a transformed_examples artifact dir (Split-train, Split-eval)")
    src.add_argument("--transform-graph", help="the matching transform_graph artifact dir")
    p.add_argument("--npz", default=os.path.join(ROOT, "data", "dien_peer", "examples.npz"),
                   help="where the examples are written (default: data/dien_peer/examples.npz, git-ignored)")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "dien_peer.json"))
    p.add_argument("--epochs", type=int, default=4,
                   help="epochs for both (configs/dien.yaml: 4; >= 2, epoch 1 is not timed)")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--embedding-size", type=int, default=16,
                   help="E: item, category and region embedding width for both (GRUs are 3E)")
    p.add_argument("--mlp", type=int, nargs="+", default=[200, 80],
                   help="MLP hidden sizes (our head and aux net; RecBole's mlp_hidden_size)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (TF) / torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peer-python", default=PEER_PYTHON)
    p.add_argument("--only", choices=("ours", "peer"), help="run one side only (debugging)")
    p.add_argument("--ours-worker", metavar="OUT_JSON", help=argparse.SUPPRESS)  # internal: (a) in a child
    args = p.parse_args(argv)
    # the peer reads the built-in features only, so both sides train on them
    spec = F.BUILTIN
    if args.ours_worker:  # train ours on --npz in this fresh process, write the result, exit
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        with open(args.ours_worker, "w") as f:
            json.dump(run_ours(args.npz, args, spec), f)
        return
    if bool(args.transformed) != bool(args.transform_graph) or bool(args.config) == bool(args.transformed):
        p.error("give --config, or both --transformed and --transform-graph")

    run_id = None
    if args.config:
        transformed, graph, run_id = transform_artifacts(args.config)
    else:
        transformed, graph = args.transformed, args.transform_graph
    print(f"reading {transformed}", flush=True)
    t0 = time.perf_counter()
    data = convert(transformed, graph, args.npz, spec)
    print(f"wrote {args.npz} in {time.perf_counter() - t0:.1f} s: {json.dumps(data['splits'])}", flush=True)

    load_before = os.getloadavg()
    results = {}
    if args.only in (None, "ours"):
        print("(a) ours", flush=True)
        results["ours"] = summarize(run_ours_child(args))
    if args.only in (None, "peer"):
        print("(b) peer: RecBole DIEN", flush=True)
        peer_json = os.path.join(os.path.dirname(os.path.abspath(args.npz)), "peer_result.json")
        results["peer"] = summarize(run_peer(args.npz, args, peer_json))
    load_after = os.getloadavg()

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {**machine_info(), "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after": [round(x, 2) for x in load_after]},
        "versions": {"ours": our_versions(), "peer": results.get("peer", {}).get("versions", {})},
        "git_commit": git_commit(), "uncommitted_code": uncommitted_code(),
        "input": {"config": args.config, "run_id": run_id, "transformed_examples": repo_relative(transformed),
                  "transform_graph": repo_relative(graph), **data},
        "settings": {"epochs": args.epochs, "batch": args.batch, "learning_rate": args.lr,
                     "embedding_size": args.embedding_size, "mlp": args.mlp, "threads": args.threads,
                     "seed": args.seed, "timing": "train examples / epoch wall time, median over "
                     "epochs 2..N; eval AUC: sklearn roc_auc_score on the whole eval split"},
        "architecture_differences": ARCH_DIFFERENCES,
        **results,
    }
    if "ours" in results and "peer" in results:
        o, q = results["ours"], results["peer"]
        report["ratio_samples_per_s"] = round(o["samples_per_s"] / q["samples_per_s"], 3)
        report["auc_delta"] = round(o["eval_auc"] - q["eval_auc"], 4)
        report["target_met"] = bool(report["ratio_samples_per_s"] >= 1.5 and o["eval_auc"] >= q["eval_auc"])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)

    print()
    print(f"{'':34s} {'samples/s':>10s} {'eval AUC':>9s} {'best AUC':>9s} {'wall s':>8s} {'params':>9s}")
    for r in results.values():
        print(f"{r['name']:34s} {r['samples_per_s']:10,.0f} {r['eval_auc']:9.4f} "
              f"{r['best_eval_auc']:9.4f} {r['wall_s']:8.1f} {r['params']:9,d}")
    if "ratio_samples_per_s" in report:
        print(f"ours/peer samples/s: {report['ratio_samples_per_s']:.2f}x (target >= 1.5x), "
              f"AUC delta {report['auc_delta']:+.4f}; target met: {report['target_met']}")
    print(f"load average before/after: {report['machine']['load_avg_before']} / "
          f"{report['machine']['load_avg_after']}; wrote {args.out}")


if __name__ == "__main__":
    main()
