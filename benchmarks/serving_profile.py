"""Where a ranking request's CPU goes, stage by stage: the predictor and the transformer.

    .venv/bin/python -m benchmarks.serving_profile export --model-dir model_store/din --out runs/serving_profile/din
    .venv-serving/bin/python -m benchmarks.serving_profile --model-dir runs/serving_profile/din \\
        --baseline-dir model_store/din --redis redis://127.0.0.1:6379/0

``export`` (pipeline environment) rebuilds the Keras model of a pushed version
from the Trainer run that made it (its settings, its Transform output, its
examples' sampling rate, its calibration), restores the pushed weights and exports them again
with this checkout's `feedrank.train.export`, then checks that both SavedModels
score alike (``serving_tf_example`` identical, ``serving_default`` to 1e-5).
So one trained model is profiled as the unchanged export served it
(``--baseline-dir``: the pushed SavedModel, TensorFlow's default threads, the
keyword call of the signature) and as this checkout serves it (``--model-dir``:
`serving.predictor.store`'s call, ``--threads``).

The profile (serving environment), 120 candidates and 50-step histories by default:

* **predictor in-process**, baseline and current interleaved, in one child
  process per thread setting: per request, wall and process CPU time
  (`time.process_time`: all threads) of decoding the v1 JSON body, the
  contract's validation, building the tensors, the model call and encoding
  the response, and of kserve's whole path (``DataPlane`` decode,
  ``FeedrankPredictor.predict``, encode, the JSON response); medians;
* **inside the model call**: TensorFlow's profiler traces ``--trace-calls``
  calls; each op's time goes to a stage by its name scope
  (`feedrank.train.serving_graph.STAGES`: padding and crosses, the
  tf.Transform layer, the user side run once, the attention, the candidate
  side, the head), with the ops per request and the executor's time between
  ops.  An export without the scopes (the baseline) is attributed by layer
  names, ``unscoped`` where none fits.  The profiler slows small ops down: the
  shares carry over to the untraced call, the sums do not;
* **predictor over HTTP** (``python -m serving.predictor``, one server per
  variant, alternating blocks): closed-loop p50/p99 and the server's CPU per
  request (psutil), then an open loop at ``--rate`` for ``--seconds``
  (latency from each request's scheduled start);
* **transformer** (``--redis``: a Redis seeded for the model, e.g. by ``make
  serve`` or ``serving.features.bootstrap --model``): a `Ranker` in this process
  in front of the current predictor server, per stage (parsing, the Redis
  read, assembling the inputs, building and encoding the predictor request,
  the predictor call, decoding its answer, the response), its whole
  ``predict``, and the CPU per request of this process, the predictor and
  ``redis-server``, for the seeded users with the most clicks.

Results: ``benchmarks/results/serving_profile.json``.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import glob
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

from benchmarks.machine import machine_info, repo_relative

log = logging.getLogger(__name__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "serving_profile.json")
SCOPE = re.compile(r"(?:^|/)(raw_features|transform|user_side|attention|candidate_side)(?:_\d+)?/")
UNSCOPED = ((re.compile(r"transform_features_layer/"), "transform"),
            (re.compile(r"din_(?:view_)?attention|att_mlp|att_out"), "attention"),
            (re.compile(r"/head_"), "head"), (re.compile(r"/Ragged"), "raw_features"),
            (re.compile(r"_embedding/|_mean/|match_features/|item_id_dropout/|tf\.concat|tf\.stack|BroadcastTo"),
             "model_unscoped"))


def median_tree(runs: List[Any]) -> Any:
    """The leaf-by-leaf median of several runs' results (nested dicts of numbers)."""
    if isinstance(runs[0], dict):
        return {k: median_tree([r[k] for r in runs if k in r]) for k in runs[0]}
    if isinstance(runs[0], (int, float)) and not isinstance(runs[0], bool):
        return med([float(r) for r in runs])
    return runs[0]


def version_dir(path: str) -> str:
    """``path`` when it holds a SavedModel, else its newest numeric version directory."""
    from serving.predictor import store

    if store._is_version_dir(path):
        return path
    found = store.newest_version(path)
    if found is None:
        raise SystemExit(f"no SavedModel version under {path}")
    return found[1]


def med(xs: List[float], nd: int = 3) -> float:
    return round(statistics.median(xs), nd) if xs else float("nan")


def pct(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 3) if xs else float("nan")


class Clock:
    """Wall and process-CPU milliseconds per named stage (one sample per ``lap``)."""

    def __init__(self):
        self.samples: Dict[str, Dict[str, List[float]]] = {}
        self._t = (0.0, 0.0)

    def start(self) -> None:
        self._t = (time.perf_counter(), time.process_time())

    def lap(self, stage: str) -> None:
        w, c = time.perf_counter(), time.process_time()
        s = self.samples.setdefault(stage, {"wall": [], "cpu": []})
        s["wall"].append((w - self._t[0]) * 1e3)
        s["cpu"].append((c - self._t[1]) * 1e3)
        self._t = (w, c)

    def medians(self) -> Dict[str, Dict[str, float]]:
        out = {k: {"wall_ms": med(v["wall"]), "cpu_ms": med(v["cpu"]), "wall_p99_ms": pct(v["wall"], 0.99)}
               for k, v in self.samples.items()}
        out["stages_total"] = {u: round(sum(v[u] for v in out.values()), 3) for u in ("wall_ms", "cpu_ms")}
        return out


# ------------------------------------------------------------------ export (pipeline environment)
def export_again(model_dir: str, out: str, metadata: str) -> Dict[str, Any]:
    """Exports the pushed version ``model_dir``'s weights with this checkout's export to ``out``."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as mlmd

    from feedrank.train import calibration, export, trainer
    from feedrank.train.families import build_model
    from feedrank.train.settings import TrainerSettings
    from serving.predictor import payloads as P

    with open(os.path.join(model_dir, "push_meta.json")) as f:
        source = json.load(f)["source"]
    cc = mlmd.ConnectionConfig()
    cc.sqlite.filename_uri, cc.sqlite.connection_mode = metadata, mlmd.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(cc)
    artifact = next(a for a in store.get_artifacts() if a.uri == source)
    made = next(e for e in store.get_events_by_artifact_ids([artifact.id]) if e.type == mlmd.Event.OUTPUT)
    execution = store.get_executions_by_id([made.execution_id])[0]
    events = store.get_events_by_execution_ids([execution.id])
    by_key = {e.path.steps[0].key: a for e in events if e.type == mlmd.Event.INPUT
              for a in store.get_artifacts_by_id([e.artifact_id])}
    model_run = [a for e in events if e.type == mlmd.Event.OUTPUT and e.path.steps[0].key == "model_run"
                 for a in store.get_artifacts_by_id([e.artifact_id])]
    calibrator = calibration.read(model_run[0].uri) if model_run else None   # the pushed model's calibration
    settings = json.loads(execution.custom_properties["custom_config"].string_value)
    rate = float(by_key["examples"].custom_properties["negative_sampling_rate"].double_value or 1.0)
    config = TrainerSettings.from_dict(settings, "the Trainer's custom_config")
    spec = trainer.feature_spec(config)
    tft_output = tft.TFTransformOutput(by_key["transform_graph"].uri)
    model = build_model(config.model, trainer.vocab_sizes(tft_output, spec=spec), config, spec=spec)
    tf.train.Checkpoint(model=model).read(os.path.join(model_dir, "variables", "variables")) \
        .assert_existing_objects_matched().expect_partial()
    export.export(model, tft_output, out, rate, spec=spec, calibrator=calibrator)
    pushed, again = tf.saved_model.load(model_dir), tf.saved_model.load(out)
    eval_files = sorted(glob.glob(os.path.join(by_key["examples"].uri, "Split-eval", "*")))
    records = [r.numpy() for r in tf.data.TFRecordDataset(eval_files[:1], compression_type="GZIP").take(512)]
    scores = [m.signatures["serving_tf_example"](examples=tf.constant(records))["probabilities"].numpy()
              for m in (pushed, again)]
    np.testing.assert_array_equal(scores[0], scores[1])
    user, cands = P.synthetic(120, 50, spec=spec)
    req = {k: tf.constant([v] if isinstance(v, list) else [v]) for k, v in user.items()}
    req.update({k: tf.constant(v) for k, v in cands.items()})
    default = [m.signatures["serving_default"](**req)["probabilities"].numpy() for m in (pushed, again)]
    np.testing.assert_allclose(default[1], default[0], rtol=1e-5, atol=1e-6)
    return {"source": repo_relative(model_dir), "out": repo_relative(out),
            "transform": repo_relative(by_key["transform_graph"].uri), "sampling_rate": rate,
            "tf_example_records_equal": len(records),
            "serving_default_max_abs_diff": float(np.max(np.abs(default[1] - default[0])))}


# --------------------------------------------------------- in-process predictor (a child per thread setting)
def _threads(setting: str):
    import tensorflow as tf

    intra, inter = (int(x) for x in setting.split(":"))
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


def stage_of(op_name: str) -> str:
    """The serving stage of a traced op, by its name scope (`serving_graph.STAGES`) or layer names."""
    m = SCOPE.search(op_name)
    if m:
        return "head" if m.group(1) == "candidate_side" and "/head_" in op_name else m.group(1)
    return next((stage for pattern, stage in UNSCOPED if pattern.search(op_name)), "glue")


def trace(call: Callable[[], Any], calls: int) -> Dict[str, Any]:
    """Per-call medians of the op time by stage, ops and broadcasts per call, executor time between ops."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    logdir = tempfile.mkdtemp(prefix="serving-profile-")
    try:
        # level 3: also the ops the executor has learnt are cheap (their events are dropped below it)
        tf.profiler.experimental.start(logdir, tf.profiler.experimental.ProfilerOptions(host_tracer_level=3))
        for _ in range(calls):
            call()
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))[0], "rb") as f:
            space.ParseFromString(f.read())
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    windows, ops, process = [], [], []   # (start ps, end ps[, name, type])
    for plane in space.planes:
        md = plane.event_metadata
        for line in plane.lines:
            base = line.timestamp_ns * 1000
            for e in line.events:
                m, start = md[e.metadata_id], base + e.offset_ps
                if m.name == "KernelAndDeviceFunc::Run":
                    windows.append((start, start + e.duration_ps))
                elif m.display_name:   # an op: "name:type"
                    ops.append((start, e.duration_ps, m.name, m.display_name))
                elif m.name == "ExecutorState::Process":
                    process.append((start, e.duration_ps))
    windows.sort()
    per_call: List[Dict[str, float]] = [{} for _ in windows]

    def call_of(t: int) -> int:
        return next((i for i, (a, b) in enumerate(windows) if a <= t <= b), -1)

    for start, dur, name, kind in ops:
        i = call_of(start)
        if i < 0:
            continue
        d = per_call[i]
        stage = stage_of(name)
        d[stage] = d.get(stage, 0.0) + dur / 1e9
        d[f"ops:{stage}"] = d.get(f"ops:{stage}", 0) + 1
        d["ops"] = d.get("ops", 0) + 1
        d["op_ms"] = d.get("op_ms", 0.0) + dur / 1e9
        if kind == "BroadcastTo":
            d["broadcasts"] = d.get("broadcasts", 0) + 1
    for start, dur in process:
        i = call_of(start)
        if i >= 0:
            per_call[i]["executor_ms"] = per_call[i].get("executor_ms", 0.0) + dur / 1e9
    for i, (a, b) in enumerate(windows):
        per_call[i]["function_run_ms"] = (b - a) / 1e9
        per_call[i]["executor_ms"] = per_call[i].get("executor_ms", 0.0) - per_call[i].get("op_ms", 0.0)
    keys = sorted({k for d in per_call for k in d})
    return {k: med([d.get(k, 0.0) for d in per_call]) for k in keys}


def inproc(opts: Dict[str, Any]) -> Dict[str, Any]:
    """Child process: the predictor's stages for each variant of ``opts`` (one thread setting)."""
    _threads(next(iter(opts["variants"].values()))["threads"])
    import orjson
    import tensorflow as tf
    from fastapi.responses import ORJSONResponse
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane

    from serving.predictor import payloads as P
    from serving.predictor import store
    from serving.predictor.contract import Contract
    from serving.predictor.model import FeedrankPredictor, PredictorConfig

    n = opts["candidates"]
    loaded = {k: store.load(k, v["dir"], n) for k, v in opts["variants"].items()}
    for k, v in opts["variants"].items():
        if v["call"] == "keywords":   # the signature called with keyword arguments, as the unchanged path did
            loaded[k] = dataclasses.replace(loaded[k], flat_call=None)
    user, cands = P.synthetic(n, opts["history"], spec=next(iter(loaded.values())).spec)
    body = orjson.dumps(P.v1_body(user, cands))
    contracts = {k: Contract(m.input_specs, 1000, m.spec) for k, m in loaded.items()}
    clocks = {k: Clock() for k in loaded}

    def one(k: str, clock: Clock) -> None:
        clock.start()
        payload = orjson.loads(body)
        clock.lap("decode")
        batch = contracts[k].from_v1(payload)
        clock.lap("validate")
        feed = {name: tf.constant(v) for name, v in batch.user.items()}
        feed.update({name: tf.constant(v) for name, v in batch.candidates.items()})
        clock.lap("tensors")
        probs = loaded[k].probabilities(feed)
        clock.lap("model")
        orjson.dumps({"outputs": {"probabilities": probs.tolist()}, "model_name": "feedrank", "model_version": k})
        clock.lap("encode")

    for _ in range(10):
        for k in loaded:
            one(k, Clock())
    for _ in range(opts["requests"]):
        for k in loaded:   # interleaved: machine noise hits every variant alike
            one(k, clocks[k])
    result: Dict[str, Any] = {k: {"stages": c.medians()} for k, c in clocks.items()}

    async def kserve_path() -> None:
        repo, predictors = ModelRepository(), {}
        for k, m in loaded.items():
            predictors[k] = FeedrankPredictor(k, opts["variants"][k]["dir"], PredictorConfig(threads=1))
            predictors[k]._install(m)
            predictors[k].ready = True
            repo.update(predictors[k])
        plane, headers = DataPlane(model_registry=repo), {"content-type": "application/json"}
        clock = {k: Clock() for k in loaded}
        for i in range(10 + opts["requests"]):
            for k in loaded:
                c = clock[k] if i >= 10 else Clock()
                c.start()
                request, attrs = plane.decode(body, headers)
                response, _ = await plane.infer(k, request, headers)
                response, _ = plane.encode(k, response, headers, attrs)
                ORJSONResponse(content=response).body   # noqa: B018 - the response's serialisation, as kserve's
                c.lap("kserve_path")
        for k, c in clock.items():
            result[k]["kserve_path"] = c.medians()["kserve_path"]
        for p in predictors.values():
            p.stop()

    asyncio.run(kserve_path())
    batch = next(iter(contracts.values())).from_v1(orjson.loads(body))
    feed = {name: tf.constant(v) for name, v in {**batch.user, **batch.candidates}.items()}
    for k, m in loaded.items():
        g = result[k]["graph"] = trace(lambda: m.probabilities(feed), opts["trace_calls"])
        # the untraced model call's CPU split by the traced shares of ops (by stage) and executor
        traced = g.get("op_ms", 0.0) + g.get("executor_ms", 0.0)
        model_cpu = result[k]["stages"]["model"]["cpu_ms"]
        result[k]["model_cpu_estimate_ms"] = {
            stage: round(model_cpu * g[stage] / traced, 3) for stage in sorted(g)
            if traced > 0 and (f"ops:{stage}" in g or stage == "executor_ms")}
    return result


# ------------------------------------------------------------------------------ over HTTP
@dataclasses.dataclass
class Server:
    """One predictor process."""

    name: str
    proc: subprocess.Popen
    url: str

    def cpu_s(self) -> float:
        import psutil
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system


def start_predictor(name: str, model_dir: str, threads: str, log_dir: str) -> Server:
    from feedrank.ports import free_port
    from serving.common import procs

    intra, inter = threads.split(":")
    port = free_port()
    log_path = os.path.join(log_dir, f"predictor-{name}.log")
    proc = procs.start_server("serving.predictor", ["--model-dir", model_dir, "--http-port", str(port),
                                                    "--intra-op-threads", intra, "--inter-op-threads", inter,
                                                    "--log-level", "WARNING"], log_path)
    procs.wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", 300, proc, log_path)
    return Server(name, proc, f"http://127.0.0.1:{port}")


def closed_loop(servers: List[Server], body: bytes, requests: int, blocks: int = 4) -> Dict[str, Any]:
    """Sequential requests in alternating blocks: latency p50/p99 and server CPU per request."""
    import http.client
    import urllib.parse

    lat: Dict[str, List[float]] = {s.name: [] for s in servers}
    cpu: Dict[str, List[float]] = {s.name: [] for s in servers}
    conns = {s.name: http.client.HTTPConnection(urllib.parse.urlparse(s.url).netloc, timeout=10) for s in servers}
    headers = {"Content-Type": "application/json"}
    per_block = max(1, requests // blocks)
    for block in range(blocks + 1):   # block 0 warms up
        for s in servers:
            c0 = s.cpu_s()
            for _ in range(per_block):
                t0 = time.perf_counter()
                conns[s.name].request("POST", "/v1/models/feedrank:predict", body, headers)
                r = conns[s.name].getresponse()
                r.read()
                if r.status != 200:
                    raise RuntimeError(f"{s.name} answered {r.status}")
                if block:
                    lat[s.name].append((time.perf_counter() - t0) * 1e3)
            if block:
                cpu[s.name].append((s.cpu_s() - c0) * 1e3 / per_block)
    return {s.name: {"requests": len(lat[s.name]), "p50_ms": pct(lat[s.name], 0.5), "p99_ms": pct(lat[s.name], 0.99),
                     "server_cpu_ms_per_request": med(cpu[s.name])} for s in servers}


async def _open_loop(url: str, body: bytes, rate: float, seconds: float) -> Dict[str, Any]:
    import aiohttp

    n = int(rate * seconds)
    lat: List[float] = []
    errors = 0

    async def one(session, at: float) -> None:
        nonlocal errors
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        try:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
                    return
        except (aiohttp.ClientError, asyncio.TimeoutError):
            errors += 1
            return
        lat.append((time.perf_counter() - at) * 1e3)

    timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=64)) as session:
        t0 = time.perf_counter() + 0.2
        await asyncio.gather(*(one(session, t0 + i / rate) for i in range(n)))
    return {"offered_rps": rate, "requests": n, "errors": errors, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99)}


def open_loop(server: Server, body: bytes, rate: float, seconds: float) -> Dict[str, Any]:
    c0 = server.cpu_s()
    out = asyncio.run(_open_loop(f"{server.url}/v1/models/feedrank:predict", body, rate, seconds))
    out["server_cpu_ms_per_request"] = round((server.cpu_s() - c0) * 1e3 / max(1, out["requests"]), 3)
    return out


# ------------------------------------------------------------------------------ transformer
def transformer_profile(model_dir: str, redis_url: str, predictor: Server, requests: int,
                        candidates: int) -> Dict[str, Any]:
    """The transformer's stages in this process, in front of ``predictor``, on the seeded Redis."""
    import httpx
    import orjson
    import psutil
    import redis

    from serving.features import online, redis_layout
    from serving.transformer import ranker as R
    from serving.transformer import request as rq

    sync = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = redis_layout.Keys()
    clicks = [(sync.zcard(k), k.rsplit(":", 1)[1]) for k in sync.scan_iter(keys.seq("click", "*"), count=5000)]
    users = [u for _, u in sorted(clicks, reverse=True)[:20]]
    items = list(sync.hrandfield(keys.items, candidates * len(users)))
    redis_proc = psutil.Process(int(sync.info("server")["process_id"]))
    ranker = R.Ranker("feedrank", R.RankerConfig(predictor_url=predictor.url, redis_url=redis_url, model=model_dir,
                                                  redis_timeout_s=1.0))
    ranker.load()
    payloads = [{"user_id": u, "candidates": items[i * candidates:(i + 1) * candidates], "show": 10}
                for i, u in enumerate(users)]

    def cpu(p) -> float:
        t = p.cpu_times()
        return t.user + t.system

    async def run() -> Dict[str, Any]:
        client = httpx.AsyncClient(base_url=predictor.url, timeout=5.0)
        clock, whole = Clock(), Clock()
        for i in range(20 + requests):
            c = clock if i >= 20 else Clock()
            payload = payloads[i % len(payloads)]
            c.start()
            req = rq.parse(payload, 1000)
            c.lap("parse")
            user, imp, clk = await ranker._read_redis(req, ranker.items)
            c.lap("redis_read")
            inputs = online.raw_inputs(user, req.candidates, ranker.items, imp, clk, req.ts, ranker.spec)
            c.lap("assemble_inputs")
            body = json.dumps(online.v1_request(inputs, ranker.spec)).encode()
            c.lap("build_predictor_request")
            r = await client.post("/v1/models/feedrank:predict", content=body,
                                  headers={"Content-Type": "application/json"})
            c.lap("predictor_call")
            scores = R._probabilities(r.json())
            c.lap("decode_predictor_answer")
            order = sorted(range(len(scores)), key=lambda j: -scores[j])
            orjson.dumps({"ranking": [{"post_id": req.candidates[j], "score": scores[j]} for j in order]})
            c.lap("respond")
        me = psutil.Process()
        before = (cpu(me), cpu(redis_proc), predictor.cpu_s())
        for i in range(requests):
            whole.start()
            await ranker.predict(dict(payloads[i % len(payloads)]))
            whole.lap("predict")
        after = (cpu(me), cpu(redis_proc), predictor.cpu_s())
        await client.aclose()
        per = [round((b - a) * 1e3 / requests, 3) for a, b in zip(before, after)]
        return {"stages": clock.medians(), "predict": whole.medians()["predict"],
                "cpu_ms_per_request": {"transformer_process": per[0], "redis_server": per[1], "predictor": per[2],
                                       "total": round(sum(per), 3)}}

    out = asyncio.run(run())
    out.update(users=len(users), candidates=candidates, note="the served-log write (middleware) and the "
               "transformer's HTTP server are not included; predictor_call includes the predictor's work")
    return out


# ------------------------------------------------------------------------------ report
def ratios(result: Dict[str, Any]) -> Dict[str, float]:
    """current / baseline of the CPU figures both variants have."""
    inproc = {k: v for per in result.get("in_process", {}).values() for k, v in per.items()}
    out: Dict[str, float] = {}
    if "baseline" in inproc and "current" in inproc:
        for stage in ("model", "stages_total"):
            out[f"in_process_{stage}_cpu"] = round(inproc["current"]["stages"][stage]["cpu_ms"]
                                                   / inproc["baseline"]["stages"][stage]["cpu_ms"], 3)
        out["kserve_path_cpu"] = round(inproc["current"]["kserve_path"]["cpu_ms"]
                                       / inproc["baseline"]["kserve_path"]["cpu_ms"], 3)
    http = result.get("http", {}).get("closed_loop", {})
    if "baseline" in http and "current" in http:
        out["http_server_cpu_per_request"] = round(http["current"]["server_cpu_ms_per_request"]
                                                   / http["baseline"]["server_cpu_ms_per_request"], 3)
    return out


def report(result: Dict[str, Any]) -> str:
    """The breakdown as text tables."""
    inproc = {k: v for per in result.get("in_process", {}).values() for k, v in per.items()}
    names = [k for k in ("baseline", "current") if k in inproc]
    lines = ["predictor in-process, median ms per request (cpu / wall): " + " | ".join(names)]
    for stage in ("decode", "validate", "tensors", "model", "encode", "stages_total"):
        lines.append(f"  {stage:<24}" + " | ".join(
            "{cpu_ms:7.3f} / {wall_ms:7.3f}".format(**inproc[k]["stages"][stage]) for k in names))
    lines.append(f"  {'kserve path (all)':<24}" + " | ".join(
        "{cpu_ms:7.3f} / {wall_ms:7.3f}".format(**inproc[k]["kserve_path"]) for k in names))
    lines.append("inside the model call: traced ms per call, ops per call, estimated ms of the untraced call's CPU:")
    stages = sorted({s[4:] for k in names for s in inproc[k]["graph"] if s.startswith("ops:")}) + ["executor_ms"]
    for stage in stages:
        lines.append(f"  {stage:<24}" + " | ".join("{:7.3f} ms {:5.0f} ops {:7.3f} ms".format(
            inproc[k]["graph"].get(stage, 0.0), inproc[k]["graph"].get(f"ops:{stage}", 0),
            inproc[k]["model_cpu_estimate_ms"].get(stage, 0.0)) for k in names))
    for key in ("op_ms", "function_run_ms", "ops", "broadcasts"):
        lines.append(f"  {key:<24}" + " | ".join(f"{inproc[k]['graph'].get(key, 0.0):7.3f}" for k in names))
    for kind in ("closed_loop", "open_loop"):
        for k, v in result.get("http", {}).get(kind, {}).items():
            lines.append(f"HTTP {kind} {k}: " + json.dumps(v))
    if "transformer" in result:
        t = result["transformer"]
        lines.append("transformer, median ms per request (cpu / wall):")
        for stage, v in t["stages"].items():
            lines.append(f"  {stage:<24} {v['cpu_ms']:7.3f} / {v['wall_ms']:7.3f}")
        lines.append("  CPU per request: " + json.dumps(t["cpu_ms_per_request"]))
    lines.append("ratios current/baseline: " + json.dumps(result.get("ratios", {})))
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["_inproc"]:
        print(json.dumps(inproc(json.loads(argv[1]))))
        return 0
    if argv[:1] == ["export"]:
        p = argparse.ArgumentParser(prog="python -m benchmarks.serving_profile export")
        p.add_argument("--model-dir", required=True, help="a pushed version dir, or model_store/<model> (newest)")
        p.add_argument("--out", required=True)
        p.add_argument("--metadata", default="runs/feedrank-demo/metadata.sqlite", help="the pipeline's MLMD store")
        a = p.parse_args(argv[1:])
        print(json.dumps(export_again(version_dir(a.model_dir), a.out, a.metadata), indent=1))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True, help="the SavedModel this checkout exported (`export`)")
    p.add_argument("--baseline-dir", default="", help="the same model as the unchanged export made it")
    p.add_argument("--candidates", type=int, default=120)
    p.add_argument("--history", type=int, default=50)
    p.add_argument("--requests", type=int, default=300, help="in-process requests per variant and run")
    p.add_argument("--runs", type=int, default=3, help="in-process runs (fresh processes; medians of their medians)")
    p.add_argument("--trace-calls", type=int, default=30)
    p.add_argument("--threads", default="1:1", help="the current variant's intra:inter-op threads (0: TF's default)")
    p.add_argument("--http-requests", type=int, default=400, help="closed-loop HTTP requests per variant")
    p.add_argument("--rate", type=float, default=50.0, help="open-loop requests per second (0: none)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--redis", default="", help="a Redis seeded for --model-dir: profile the transformer too")
    p.add_argument("--transformer-requests", type=int, default=200)
    p.add_argument("--note", default="", help="saved with the results (e.g. what else ran on the machine)")
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    from serving.common import procs
    from serving.features import declared
    from serving.predictor import payloads as P

    variants = {"current": {"dir": version_dir(args.model_dir), "threads": args.threads, "call": "store"}}
    if args.baseline_dir:
        variants["baseline"] = {"dir": version_dir(args.baseline_dir), "threads": "0:0", "call": "keywords"}
    result: Dict[str, Any] = {
        "machine": machine_info("tensorflow", "kserve"), "date": time.strftime("%Y-%m-%d"),
        "command": "python -m benchmarks.serving_profile " + " ".join(
            repo_relative(a) if os.path.exists(a) else a for a in argv),
        "variants": {k: {**v, "dir": repo_relative(v["dir"])} for k, v in variants.items()},
        "candidates": args.candidates, "history": args.history, "note": args.note, "in_process": {}}
    for threads in sorted({v["threads"] for v in variants.values()}):   # TF's threads are per process
        opts = {"variants": {k: v for k, v in variants.items() if v["threads"] == threads},
                "candidates": args.candidates, "history": args.history, "requests": args.requests,
                "trace_calls": args.trace_calls}
        runs = []
        for _ in range(args.runs):
            run = subprocess.run([sys.executable, "-m", "benchmarks.serving_profile", "_inproc", json.dumps(opts)],
                                 cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
            runs.append(json.loads(run.stdout.strip().splitlines()[-1]))
        result["in_process"][f"threads {threads}"] = median_tree(runs)
    user, cands = P.synthetic(args.candidates, args.history, spec=declared.spec_from_model(variants["current"]["dir"]))
    body = json.dumps(P.v1_body(user, cands)).encode()
    with tempfile.TemporaryDirectory() as logs:
        servers = [start_predictor(k, v["dir"], v["threads"], logs) for k, v in variants.items()]
        try:
            result["http"] = {"closed_loop": closed_loop(servers, body, args.http_requests)}
            if args.rate > 0:
                result["http"]["open_loop"] = {s.name: open_loop(s, body, args.rate, args.seconds) for s in servers}
            if args.redis:
                result["transformer"] = transformer_profile(variants["current"]["dir"], args.redis, servers[0],
                                                            args.transformer_requests, args.candidates)
        finally:
            for s in servers:
                procs.stop(s.proc)
    result["ratios"] = ratios(result)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
