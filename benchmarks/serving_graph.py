"""In-process latency of the exported ``serving_default``: user side broadcast vs shared.

    .venv/bin/python -m benchmarks.serving_graph [--config configs/demo.yaml]
        [--transform DIR] [--runs 5] [--calls 200] [--load-seconds 20]

Builds the config's DIN (untrained: latency does not depend on the weights)
for the config's feature contract (its ``features`` section) on the
vocabularies of a Transform output (``--transform``, or the config's latest
pipeline run, made with the same config) and exports it three ways:

* ``broadcast``: the user's side copied to N rows before the tf.Transform
  layer and the model (`ServingModule.broadcast_scores`);
* ``shared``: the exported ``serving_default`` (`feedrank.train.serving_graph`:
  user side transformed and run once, DIN's attention first layer folded);
* ``shared_xla``: the same with the model part compiled by XLA (jit_compile).

Each SavedModel is loaded in a fresh process per thread setting
(intra/inter-op threads), warmed up, and called back to back with one user
(every history at its full length: 50 clicks, 50 views, 20 conversions, 30
searches) and 1, 20 and 120 candidates; p50 and p99 of ``--calls`` calls,
median over ``--runs`` runs.  Then an open-loop load at ``--rate`` req/s of
120 candidates (each request timed from its scheduled start), for one
process with two threads and for two single-threaded processes, one per
core.  Writes benchmarks/results/serving_graph.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CANDIDATES = (1, 20, 120)
VARIANTS = ("broadcast", "shared", "shared_xla")


def transform_dir(args) -> str:
    if args.transform:
        return args.transform
    from feedrank import config as config_lib
    from feedrank.evaluate.mlmd_reader import latest_run

    run = latest_run(config_lib.load(args.config).metadata_path)
    if run is None:
        sys.exit(f"no pipeline run for {args.config}: run `python pipeline.py run --config {args.config}` "
                 "or pass --transform DIR")
    return run.artifact("Transform", "transform_graph").uri


def feature_spec(config: str):
    """The feature contract of the config file ``config`` (its ``features`` section)."""
    from feedrank import config as config_lib
    from feedrank import features as F

    return F.FeatureSpec.from_config(config_lib.load(config).features)


def export_variants(tft_dir: str, config: str, out: str, spec) -> Dict[str, str]:
    """Saves the three SavedModels of the feature contract ``spec`` under ``out``;
    returns {variant: path}."""
    import tensorflow as tf
    import tensorflow_transform as tft
    import yaml

    from feedrank.train import export as E
    from feedrank.train import serving_graph as SG
    from feedrank.train.families import build_model
    from feedrank.train.trainer import vocab_sizes

    with open(config) as f:
        trainer = dict(yaml.safe_load(f)["trainer"])
    tft_output = tft.TFTransformOutput(tft_dir)
    model = build_model("din", vocab_sizes(tft_output, spec=spec), trainer, spec=spec)

    class Broadcast(E.ServingModule):
        @tf.function(input_signature=[E.serving_input_signature(spec)])
        def serve_raw(self, request):
            return {E.OUTPUT_KEY: self.broadcast_scores(request)}

    paths = {}
    for name in VARIANTS:
        module = (Broadcast if name == "broadcast" else E.ServingModule)(model, tft_output, 1.0, spec=spec)
        if name == "shared_xla":
            module.request_scorer = SG.RequestScorer(model, module.tft_layer, jit_compile=True, spec=spec)
        paths[name] = os.path.join(out, name)
        tf.saved_model.save(module, paths[name], signatures={"serving_default": module.serve_raw})
    return paths


def make_request(tft_dir: str, n: int, spec_json: str, seed: int = 0):
    """One user with every history full, ``n`` candidates; values from the vocabularies.
    The inputs are those of the feature contract ``spec_json`` (`FeatureSpec.to_json`)."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft

    from feedrank import features as F
    from feedrank.transform.preprocessing import vocab_file_name

    spec = F.FeatureSpec.from_json(spec_json)
    out = tft.TFTransformOutput(tft_dir)
    rng = np.random.default_rng(seed)
    vocab = {v.name: [s.encode() for s in v.labels] if v.labels else out.vocabulary_by_name(vocab_file_name(v))
             for v in spec.vocabs}
    req = {s.name: tf.constant([rng.choice(vocab[s.vocab.name], s.max_len)]) for s in spec.seq_features}
    for f in spec.id_features:   # the user's ids once, the candidates' per candidate
        req[f.name] = tf.constant(rng.choice(vocab[f.vocab.name], 1 if f.side == "user" else n))
    for d in spec.request_dense("user"):
        req[d.name] = tf.constant((rng.random(1) * 20).astype(np.float32))
    for d in spec.request_dense("candidate"):
        req[d.name] = tf.constant((rng.random(n) * 20).astype(np.float32))
    for b in spec.bag_features:   # declared token bags: full rows, the user's once
        req[b.name] = tf.constant(rng.choice(vocab[b.vocab.name], (1 if b.side == "user" else n, b.max_len)))
    return req


def _pct(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def child_latency(opts: dict) -> dict:
    """Back-to-back calls: {variant: {n: {p50, p99}}} (ms, median over runs).

    Variants and candidate counts are interleaved within every run, so a
    change in the machine's load hits them alike.
    """
    import tensorflow as tf

    fns = {v: tf.saved_model.load(p).signatures["serving_default"] for v, p in opts["paths"].items()}
    requests = {n: make_request(opts["tft"], n, opts["spec"]) for n in CANDIDATES}
    for fn in fns.values():
        for req in requests.values():
            for _ in range(20):
                fn(**req)
    p50s: Dict = {(v, n): [] for v in fns for n in CANDIDATES}
    p99s: Dict = {(v, n): [] for v in fns for n in CANDIDATES}
    cpu: Dict = {(v, n): [] for v in fns for n in CANDIDATES}
    for _ in range(opts["runs"]):
        for n, req in requests.items():
            for v, fn in fns.items():
                times = []
                cpu0 = time.process_time()
                for _ in range(opts["calls"]):
                    t0 = time.perf_counter()
                    fn(**req)["probabilities"].numpy()
                    times.append((time.perf_counter() - t0) * 1e3)
                cpu[v, n].append((time.process_time() - cpu0) * 1e3 / opts["calls"])
                p50s[v, n].append(_pct(times, 0.5))
                p99s[v, n].append(_pct(times, 0.99))
    # cpu_ms: CPU time of all the process's threads per call, which other
    # processes' load on the machine barely changes (unlike wall-clock tails)
    return {v: {n: {"p50_ms": round(statistics.median(p50s[v, n]), 3),
                    "p99_ms": round(statistics.median(p99s[v, n]), 3),
                    "cpu_ms": round(statistics.median(cpu[v, n]), 3)} for n in CANDIDATES} for v in fns}


def child_load(opts: dict) -> dict:
    """Open loop at ``rate`` req/s for ``seconds`` with ``workers`` threads: latencies (ms)."""
    import tensorflow as tf

    fn = tf.saved_model.load(opts["path"]).signatures["serving_default"]
    req = make_request(opts["tft"], 120, opts["spec"])
    for _ in range(30):
        fn(**req)
    latencies: List[float] = []
    lock = threading.Lock()

    def one(scheduled: float) -> None:
        fn(**req)["probabilities"].numpy()
        with lock:
            latencies.append((time.perf_counter() - scheduled) * 1e3)

    # two processes sharing the load start together (wall clock), after both warmed up
    start = time.perf_counter() + max(0.2, opts.get("start_at", 0.0) - time.time())
    count = int(opts["rate"] * opts["seconds"])
    with ThreadPoolExecutor(opts["workers"]) as pool:
        for i in range(count):
            scheduled = start + i / opts["rate"]
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, scheduled)
    return {"latencies_ms": latencies}


def spawn(mode: str, opts: dict, intra: int, inter: int) -> subprocess.Popen:
    env = dict(os.environ, FEEDRANK_BENCH_CHILD=json.dumps({"mode": mode, "intra": intra, "inter": inter,
                                                            **opts}))
    return subprocess.Popen([sys.executable, "-m", "benchmarks.serving_graph"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)


def run_child(mode: str, opts: dict, intra: int, inter: int) -> dict:
    out, _ = spawn(mode, opts, intra, inter).communicate()
    return json.loads(out.strip().splitlines()[-1])


def summarize(latencies: List[float], rate: float) -> dict:
    return {"requests": len(latencies), "offered_rps": rate,
            **{f"p{q}_ms": round(_pct(latencies, q / 100), 2) for q in (50, 95, 99)},
            "max_ms": round(max(latencies), 2)}


def main() -> None:
    child = os.environ.get("FEEDRANK_BENCH_CHILD")
    if child:
        opts = json.loads(child)
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(opts["intra"])
        tf.config.threading.set_inter_op_parallelism_threads(opts["inter"])
        print(json.dumps((child_latency if opts["mode"] == "latency" else child_load)(opts)))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.yaml"))
    p.add_argument("--transform", default="")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--load-seconds", type=float, default=20.0)
    p.add_argument("--threads", default="0:0,1:1,2:1,2:2", help="intra:inter settings (0 = TF default)")
    p.add_argument("--no-load", action="store_true", help="skip the open-loop load")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "serving_graph.json"))
    args = p.parse_args()
    from benchmarks.machine import machine_info

    tft_dir = transform_dir(args)
    spec = feature_spec(args.config)
    report: Dict = {"machine": machine_info("tensorflow"), "config": os.path.relpath(args.config, ROOT),
                    "command": "python -m benchmarks.serving_graph " + " ".join(sys.argv[1:]),
                    "latency": {}, "load_120_candidates": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_variants(tft_dir, args.config, tmp, spec)
        base = {"tft": tft_dir, "spec": spec.to_json(), "runs": args.runs, "calls": args.calls}
        for setting in args.threads.split(","):
            intra, inter = (int(v) for v in setting.split(":"))
            report["latency"][setting] = run_child("latency", {**base, "paths": paths}, intra, inter)
            print(setting, json.dumps(report["latency"][setting]), flush=True)
        load = {"tft": tft_dir, "spec": spec.to_json(), "seconds": args.load_seconds}
        for variant in () if args.no_load else ("broadcast", "shared"):
            one = run_child("load", {**load, "path": paths[variant], "rate": args.rate, "workers": 2}, 2, 2)
            at = time.time() + 30.0
            procs = [spawn("load", {**load, "path": paths[variant], "rate": args.rate / 2, "workers": 1,
                                    "start_at": at}, 1, 1) for _ in range(2)]
            split = sum((json.loads(pr.communicate()[0].strip().splitlines()[-1])["latencies_ms"]
                         for pr in procs), [])
            report["load_120_candidates"][variant] = {
                "one_process_2_threads": summarize(one["latencies_ms"], args.rate),
                "two_processes_1_thread": summarize(split, args.rate)}
            print(variant, json.dumps(report["load_120_candidates"][variant]), flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
