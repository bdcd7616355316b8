"""What gzip and the v2 binary tensor extension save on a predictor request.

One request of ``--candidates`` candidates with ``--history``-step histories,
encoded five ways (v1 JSON, v1 JSON + gzip, v2 JSON, v2 binary, v2 binary +
gzip): bytes on the wire, the client's encode time, and the server's parse
time (the same decode steps the predictor runs: gunzip, JSON or binary
tensor decoding, then the contract's validation into numpy arrays; medians
of ``--reps``).  With ``--url`` of a running predictor it also times full
HTTP round trips per encoding.  The request carries the built-in features,
plus the declared columns of ``--declared`` (an exported model directory or
its declaration file; match it to the predictor's model).  Run it in the
serving environment:

    .venv-serving/bin/python -m benchmarks.request_size \\
        [--url http://127.0.0.1:8080 --model feedrank --declared model_store/din/1700000000]
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

import orjson
import tensorflow as tf
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.v2_datamodels import InferenceRequest

from benchmarks.machine import machine_info
from feedrank import features as F
from serving.features import declared
from serving.predictor import payloads as P
from serving.predictor.contract import Contract

log = logging.getLogger(__name__)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "request_size.json")


def _contract(max_candidates: int, spec: F.FeatureSpec) -> Contract:
    """The predictor's contract of a ``serving_default`` taking ``spec``'s raw features."""
    specs = {}
    rows = {s.name for s in spec.seq_features} | {b.name for b in spec.bag_features if b.side == "user"}
    for name in spec.features_of_side("user"):
        specs[name] = tf.TensorSpec([None, None] if name in rows else [None],
                                    tf.float32 if spec.is_dense(name) else tf.string)
    for f in spec.id_features:
        if f.side == "candidate":
            specs[f.name] = tf.TensorSpec([None], tf.string)
    for d in spec.request_dense("candidate"):
        specs[d.name] = tf.TensorSpec([None], tf.float32)
    for b in spec.bag_features:
        if b.side == "candidate":
            specs[b.name] = tf.TensorSpec([None, None], tf.string)
    return Contract(specs, max_candidates, spec)


def _time(fn: Callable[[], object], reps: int) -> Dict[str, float]:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return {"p50_ms": round(statistics.median(ts), 4), "p95_ms": round(ts[int(0.95 * (len(ts) - 1))], 4)}


def measure(candidates: int, history: int, reps: int, level: int,
            spec: F.FeatureSpec = F.BUILTIN) -> Dict[str, Dict[str, object]]:
    user, cands = P.synthetic(candidates, history, spec=spec)
    contract = _contract(max(1000, candidates), spec)
    v1 = json.dumps(P.v1_body(user, cands)).encode()
    v2 = json.dumps(P.v2_json_body(user, cands)).encode()
    binary, hlen = P.v2_binary_body(user, cands)
    v1_gz, binary_gz = gzip.compress(v1, level), gzip.compress(binary, level)

    def parse_v1(body: bytes) -> None:
        contract.from_v1(orjson.loads(body))

    def parse_v2_json() -> None:   # what FastAPI and kserve's dataplane do, then the contract
        req = InferenceRequest.model_validate(orjson.loads(v2))
        contract.from_v2(InferRequest.from_inference_request(req, "m"))

    def parse_binary(body: bytes) -> None:
        contract.from_v2(InferRequest.from_bytes(body, hlen, "m"))

    cases = {
        "v1_json": (len(v1), lambda: json.dumps(P.v1_body(user, cands)).encode(), lambda: parse_v1(v1)),
        "v1_json_gzip": (len(v1_gz), lambda: gzip.compress(json.dumps(P.v1_body(user, cands)).encode(), level),
                         lambda: parse_v1(gzip.decompress(v1_gz))),
        "v2_json": (len(v2), lambda: json.dumps(P.v2_json_body(user, cands)).encode(), parse_v2_json),
        "v2_binary": (len(binary), lambda: P.v2_binary_body(user, cands), lambda: parse_binary(binary)),
        "v2_binary_gzip": (len(binary_gz), lambda: gzip.compress(P.v2_binary_body(user, cands)[0], level),
                           lambda: parse_binary(gzip.decompress(binary_gz))),
    }
    out = {}
    for name, (size, encode, parse) in cases.items():
        out[name] = {"bytes": size, "vs_v1_json": round(size / len(v1), 3),
                     "client_encode": _time(encode, reps), "server_parse": _time(parse, reps)}
    return out


def http_round_trips(url: str, model: str, candidates: int, history: int, reps: int, level: int,
                     spec: F.FeatureSpec = F.BUILTIN) -> Dict:
    import requests

    user, cands = P.synthetic(candidates, history, spec=spec)
    v1 = json.dumps(P.v1_body(user, cands)).encode()
    binary, hlen = P.v2_binary_body(user, cands)
    j = {"Content-Type": "application/json"}
    bh = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(hlen)}
    calls = {
        "v1_json": (f"{url}/v1/models/{model}:predict", v1, j),
        "v1_json_gzip": (f"{url}/v1/models/{model}:predict", gzip.compress(v1, level),
                         {**j, "Content-Encoding": "gzip"}),
        "v2_json": (f"{url}/v2/models/{model}/infer", json.dumps(P.v2_json_body(user, cands)).encode(), j),
        "v2_binary": (f"{url}/v2/models/{model}/infer", binary, bh),
        "v2_binary_gzip": (f"{url}/v2/models/{model}/infer", gzip.compress(binary, level),
                           {**bh, "Content-Encoding": "gzip"}),
    }
    s = requests.Session()
    out = {}
    for name, (u, body, headers) in calls.items():
        def call() -> None:
            r = s.post(u, data=body, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"{name}: HTTP {r.status_code} {r.text[:200]}")
        out[name] = _time(call, reps)
    return out


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", type=int, default=120)
    p.add_argument("--history", type=int, default=50)
    p.add_argument("--reps", type=int, default=300)
    p.add_argument("--gzip-level", type=int, default=6)
    p.add_argument("--url", default="", help="a running predictor, for HTTP round trips")
    p.add_argument("--model", default="feedrank")
    p.add_argument("--http-reps", type=int, default=200)
    p.add_argument("--declared", default="", help="an exported model (or its declaration file): its declared "
                                                  "item/user columns are in the request (default: none)")
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    spec = declared.spec_from_model(args.declared)
    result = {"candidates": args.candidates, "history": args.history, "gzip_level": args.gzip_level,
              "reps": args.reps, "declared": [c.feature_name for c in spec.declared],
              "encodings": measure(args.candidates, args.history, args.reps, args.gzip_level, spec),
              "machine": machine_info("tensorflow", "kserve")}
    if args.url:
        result["http_round_trip"] = http_round_trips(args.url, args.model, args.candidates, args.history,
                                                     args.http_reps, args.gzip_level, spec)
    print(json.dumps(result, indent=1))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
