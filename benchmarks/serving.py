"""Open-loop benchmark of ``make serve``'s own stack, with the feature updater
on, beside a naive stock-kserve peer measured in the same run, plus a hot swap
and a Redis kill under load.

The stack is ``python -m serving.stack`` (what ``make serve`` runs) on the
benchmarked model (default: the newest version under ``model_store/din``),
staged under a work directory so a newer version can appear beside it.  The
launcher starts Redis, seeds it from ``--log`` with the columns the model
declares, starts the feature updater, the predictor and the transformer.

Open loop: request i is *scheduled* at ``i / rate`` seconds and timed from
that moment, whether or not earlier requests have finished, so a server that
falls behind shows its queueing in the latency (a closed-loop client hides
it).  Each run is bounded in count (``rate * duration``) and time (a request
past ``--timeout`` is an error).  Everything listens on loopback.

Targets, each with ``--candidates`` (120) candidates per request:

* ``predictor``: the stack's predictor, v1 columnar (the user's side once,
  synthetic inputs of the model's feature contract, 50-step histories);
* ``transformer``: the stack's ranking endpoint, ``{"user_id",
  "candidates", "show"}`` for the log's ``--users`` most active users and
  random posts; it reads Redis, calls the predictor and logs the shown posts
  to the event stream, which the updater applies;
* ``naive``: ``benchmarks/naive_predictor.py``, stock kserve v1, one JSON
  row per candidate repeating the user's side.

For each offered rate: p50/p95/p99, errors, degraded answers (the response's
``X-Feedrank-Degraded`` header and the transformer's
``feedrank_degraded_total``), and **server CPU per request**: user + system
CPU of every process of the stack (predictor, transformer, Redis, updater,
launcher) or of the peer, read before and after the rate step (its drain
second included).  A target stops at the first rate it cannot sustain; the
sustainable rate is the highest with 0 errors, >= 95 % of the offered rate
completed and p99 under ``--slo-ms``.

Faults, through the transformer at ``--disrupt-rate``: ``hot_swap`` (a newer
version directory appears under the predictor's model directory; the load
runs until the predictor serves it, and on) and ``redis_restart``
(``redis-server`` is killed; the stack is expected to bring it back): errors,
degraded answers, the time until Redis answers again and until the answers
are whole again, and which of the stack's processes survived.

Results go to ``benchmarks/results/serving.json``, the plot to
``docs/img/serving_latency.png``; ``python -m benchmarks.serving_report``
prints the README's tables from the results.  Run from the repository root with the
pipeline environment's Python (``-m``: as a script this file would shadow
the ``serving`` package):

    .venv/bin/python -m benchmarks.serving --model-dir model_store/din --log data/demo
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

from benchmarks import serving_report
from benchmarks import serving_stack as S
from benchmarks.machine import machine_info, repo_relative
from benchmarks.serving_load import open_loop, summarise
from feedrank import features as F
from feedrank.events import contract, io
from serving.common import procs
from serving.features import declared
from serving.predictor import payloads as P

log = logging.getLogger(__name__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "serving.json")
PLOT = os.path.join(ROOT, "docs", "img", "serving_latency.png")
DEGRADED_METRIC = "feedrank_degraded_total"
TARGETS = ("predictor", "transformer", "naive")
FAULTS = ("hot_swap", "redis_restart")
__all__ = ["open_loop", "summarise", "kserve_version", "main"]


def naive_body(user: Dict, cands: Dict) -> dict:
    """The naive peer's request: one instance per candidate, each repeating the user's side."""
    n = len(next(iter(cands.values())))
    return {"instances": [{**user, **{k: v[i] for k, v in cands.items()}} for i in range(n)]}


def ranking_requests(log_dir: str, users: int, candidates: int, show: int, seed: int = 0) -> List[bytes]:
    """Ranking requests for the log's ``users`` most active users, each with ``candidates`` random posts."""
    ev = io.read_events(log_dir)
    clicks = ev.loc[ev["event"] == contract.CLICK, "user_id"]
    who = list((clicks if len(clicks) else ev["user_id"]).value_counts().index[:users])
    posts = [str(i) for i in io.read_table(log_dir, contract.ITEMS)["item_id"]]
    rng = random.Random(seed)
    out = []
    for user in who:
        picked = rng.sample(posts, candidates) if len(posts) >= candidates else rng.choices(posts, k=candidates)
        body = {"user_id": str(user), "candidates": picked, **({"show": show} if show else {})}
        out.append(json.dumps(body).encode())
    return out


def cpu_row(delta: Dict, requests: int, client_s: float) -> Dict:
    """CPU per request (ms) in total and by role, from a `CpuMeter.delta`."""
    n = max(1, requests)
    return {"server_ms_per_request": round(delta["total_s"] * 1e3 / n, 3),
            "by_role_ms_per_request": {k: round(v * 1e3 / n, 3) for k, v in delta["by_role_s"].items()},
            "client_ms_per_request": round(client_s * 1e3 / n, 3), "exited": delta["exited"]}


def sustained(row: Dict, slo_ms: float) -> bool:
    """0 errors, at least 95 % of the offered rate answered, and p99 within ``slo_ms``."""
    return (row["errors"] == 0 and row["achieved_rps"] >= 0.95 * row["offered"]
            and row["p99_ms"] is not None and row["p99_ms"] <= slo_ms)


def sweep(target: str, url: str, bodies: List[bytes], meter: S.CpuMeter, args: argparse.Namespace,
          metric_url: str = "") -> Dict:
    """Every rate (median over runs, CPU over all runs) up to the first one the target cannot sustain."""
    if args.warmup_s > 0:   # warm the connection pool and the server
        asyncio.run(open_loop(url, bodies, 5, args.warmup_s, args.timeout))
    rows = []
    for rate in args.rate_list:
        before, deg0, client0 = meter.snapshot(), S.metric(metric_url, DEGRADED_METRIC), time.process_time()
        runs: List[Dict] = []
        for _ in range(args.runs):
            runs.append(asyncio.run(open_loop(url, bodies, rate, args.duration, args.timeout)))
            if runs[-1]["errors"]:  # overloaded: more runs would only queue behind this one's backlog
                break
        client_s = time.process_time() - client0
        time.sleep(args.drain_s)   # what the step left running (the served log, the updater) counts too
        row = summarise(runs)
        row["cpu"] = cpu_row(meter.delta(before, meter.snapshot()), row["sent"], client_s)
        if metric_url:
            deg1 = S.metric(metric_url, DEGRADED_METRIC)
            row["degraded_metric"] = deg1 - deg0 if None not in (deg0, deg1) else None
        rows.append(row)
        print(target, json.dumps(row), flush=True)
        if not sustained(row, args.slo_ms):
            time.sleep(args.timeout + 3.0)  # let the server drain what timed out before the next step
            break
    ok = [r["offered"] for r in rows if sustained(r, args.slo_ms)]
    return {"rates": rows, "max_sustainable_rps": max(ok) if ok else 0.0}


def idle_cpu(meter: S.CpuMeter, seconds: float) -> Dict:
    """CPU ms per second of the processes with no load (the floor under every step's figure)."""
    before = meter.snapshot()
    time.sleep(seconds)
    d = meter.delta(before, meter.snapshot())
    return {"ms_per_s": round(d["total_s"] * 1e3 / seconds, 2),
            "by_role_ms_per_s": {k: round(v * 1e3 / seconds, 2) for k, v in d["by_role_s"].items()}}


def faults(stack: S.ServeStack, bodies: List[bytes], args: argparse.Namespace) -> Dict:
    """Hot swap, then a Redis kill, each under open-loop load through the transformer."""
    url = f"{stack.transformer_url}/v1/models/{S.MODEL_NAME}:predict"
    out: Dict[str, Dict] = {}
    for name in args.fault_list:
        if stack.exit_code() is not None:
            out[name] = {"skipped": f"the stack exited with code {stack.exit_code()}"}
            continue
        if name == "hot_swap":
            during = stack.hot_swap
        else:
            def during() -> Dict:
                return stack.kill_redis(args.redis_signal, args.redis_wait_s)
        deg0 = S.metric(stack.transformer_url, DEGRADED_METRIC)
        row = asyncio.run(open_loop(url, bodies, args.disrupt_rate, args.disrupt_duration, args.timeout,
                                    during=during, at_s=args.disrupt_duration / 4, versions=name == "hot_swap"))
        deg1 = S.metric(stack.transformer_url, DEGRADED_METRIC)
        row["degraded_metric"] = deg1 - deg0 if None not in (deg0, deg1) else None
        at = row["disruption"]["at_s"]
        after = [t for t in row["bad_at_s"] if t >= at - 1.0]
        row["recover_s"] = round(max(after) - at, 2) if after else 0.0   # last error or degraded answer
        row["recovered"] = not after or max(after) < row["load_s"] - 1.0
        row["bad_at_s"] = [row["bad_at_s"][0], row["bad_at_s"][-1]] if row["bad_at_s"] else []
        time.sleep(1.0)
        row["stack_exit_code"] = stack.exit_code()
        row["processes_after"] = stack.meter.roles()
        if name == "redis_restart":
            row.update(stack.updater_state())
        out[name] = row
        print(name, json.dumps(row), flush=True)
    return out


def kserve_version() -> Optional[str]:
    """kserve's version in the serving environment (the servers' Python)."""
    try:
        code = "from importlib.metadata import version; print(version('kserve'))"
        out = subprocess.run([procs.SERVING_PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def shown(path: str) -> str:
    """A path as results show it: repository-relative, else its last two parts (no machine paths)."""
    rel = repo_relative(path)
    return rel if not os.path.isabs(rel) else os.path.join("...", *rel.split(os.sep)[-2:])


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="model_store/din", help="a model directory (newest version) or a version")
    p.add_argument("--log", default="data/demo", help="event log make serve seeds Redis from")
    p.add_argument("--candidates", type=int, default=120)
    p.add_argument("--users", type=int, default=100, help="distinct users of the ranking requests")
    p.add_argument("--show", type=int, default=10, help="posts shown per ranking request (logged impressions)")
    p.add_argument("--history", type=int, default=50, help="history length of the predictor's synthetic user")
    p.add_argument("--rates", default="10,25,50,100,200,400", help="offered req/s, ascending")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup-s", type=float, default=2.0, help="seconds of 5 req/s before a target's first rate")
    p.add_argument("--drain-s", type=float, default=1.0, help="seconds after a step still counted in its CPU")
    p.add_argument("--idle-s", type=float, default=3.0, help="seconds of the stack's idle CPU measured first")
    p.add_argument("--timeout", type=float, default=2.0, help="per-request timeout (an error)")
    p.add_argument("--slo-ms", type=float, default=100.0, help="p99 above this is not sustained")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--faults", default=",".join(FAULTS), help="faults under load ('' for none)")
    p.add_argument("--disrupt-rate", type=float, default=50.0, help="req/s through the transformer during a fault")
    p.add_argument("--disrupt-duration", type=float, default=12.0, help="seconds of load (more while a fault lasts)")
    p.add_argument("--redis-signal", default="KILL", help="signal that stops redis-server (KILL, TERM)")
    p.add_argument("--redis-wait-s", type=float, default=30.0, help="how long Redis may take to come back")
    p.add_argument("--workdir", default="", help="the stack's staged model and logs (default: a temp dir)")
    p.add_argument("--out", default=OUT)
    p.add_argument("--plot", default=PLOT, help="latency plot (PNG); '' for none")
    args = p.parse_args(argv)
    args.rate_list = sorted(float(r) for r in args.rates.split(","))
    args.target_list = [t for t in args.targets.split(",") if t]
    args.fault_list = [f for f in args.faults.split(",") if f]
    for given, known, what in ((args.target_list, TARGETS, "targets"), (args.fault_list, FAULTS, "faults")):
        if set(given) - set(known):
            p.error(f"unknown {what} {sorted(set(given) - set(known))}; known: {', '.join(known)}")
    try:
        args.redis_signal = signal.Signals[f"SIG{args.redis_signal.upper().removeprefix('SIG')}"]
        S.version_dir(args.model_dir)
    except KeyError:
        p.error(f"unknown signal {args.redis_signal}")
    except FileNotFoundError as e:
        p.error(str(e))
    if not os.path.isdir(args.log):
        p.error(f"event log {args.log} does not exist (make demo simulates data/demo; or pass --log)")
    return args


def run_stack(args: argparse.Namespace, bodies: Dict[str, List[bytes]], spec: F.FeatureSpec, workdir: str,
              result: Dict) -> None:
    """The stack's targets and the faults, into ``result``."""
    stack = S.ServeStack(args.model_dir, args.log, workdir)
    result["stack_command"] = " ".join("python" if a == sys.executable else
                                       a.replace(stack.workdir, "<workdir>") if a.startswith(stack.workdir)
                                       else shown(a) if os.path.isabs(a) else a for a in stack.command)
    try:
        result["stack_start_s"] = round(stack.start(), 1)
        log.info("make serve's stack is up in %.1f s: %s", result["stack_start_s"], ", ".join(stack.meter.roles()))
        result["stack_processes"] = stack.meter.roles()
        result["declared_columns"] = stack.declared_seeded(spec)   # what make serve seeded for the model
        result["idle_cpu"] = idle_cpu(stack.meter, args.idle_s)
        if "predictor" in args.target_list:
            url = f"{stack.predictor_url}/v1/models/{S.MODEL_NAME}:predict"
            result["targets"]["predictor"] = sweep("predictor", url, bodies["predictor"], stack.meter, args)
        if "transformer" in args.target_list:
            url = f"{stack.transformer_url}/v1/models/{S.MODEL_NAME}:predict"
            result["targets"]["transformer"] = sweep("transformer", url, bodies["transformer"], stack.meter, args,
                                                     metric_url=stack.transformer_url)
        if args.fault_list:
            result["faults"] = faults(stack, bodies["transformer"], args)
    finally:
        t = time.perf_counter()
        result["stack_exit_code"] = stack.stop()
        log.info("the stack stopped in %.1f s (exit code %s)", time.perf_counter() - t, result["stack_exit_code"])


def start_naive(args: argparse.Namespace, workdir: str) -> Tuple[subprocess.Popen, int, str]:
    """The naive peer on the same SavedModel (it loads while the stack runs; it is measured alone)."""
    port, log_path = procs.free_port(), os.path.join(workdir, "naive.log")
    proc = procs.start_server("benchmarks.naive_predictor", [
        "--model-dir", S.version_dir(args.model_dir), "--http-port", str(port)], log_path)
    return proc, port, log_path


def run_naive(naive: Tuple[subprocess.Popen, int, str], body: List[bytes], args: argparse.Namespace) -> Dict:
    """The naive peer's sweep; stops it."""
    proc, port, log_path = naive
    try:
        procs.wait_ready(f"http://127.0.0.1:{port}/v2/models/naive/ready", 300, proc, log_path)
        meter = S.CpuMeter(proc.pid, root_role="naive")
        return sweep("naive", f"http://127.0.0.1:{port}/v1/models/naive:predict", body, meter, args)
    finally:
        procs.stop(proc)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    source = S.version_dir(args.model_dir)
    spec = declared.spec_from_model(source)   # the benchmarked model's feature contract
    user, cands = P.synthetic(args.candidates, args.history, spec=spec)
    bodies = {"predictor": [json.dumps(P.v1_body(user, cands)).encode()],
              "naive": [json.dumps(naive_body(user, cands)).encode()],
              "transformer": ranking_requests(args.log, args.users, args.candidates, args.show)}
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="serving-bench-"))
    os.makedirs(workdir, exist_ok=True)
    result = {"candidates": args.candidates, "history": args.history, "users": len(bodies["transformer"]),
              "show": args.show, "duration_s": args.duration, "runs": args.runs, "timeout_s": args.timeout,
              "slo_ms": args.slo_ms, "model_dir": shown(source), "log": shown(args.log), "targets": {},
              "machine": {**machine_info("tensorflow"), "kserve": kserve_version()}}
    naive = start_naive(args, workdir) if "naive" in args.target_list else None
    try:
        if {"predictor", "transformer"} & set(args.target_list) or args.fault_list:
            run_stack(args, bodies, spec, workdir, result)
        if naive is not None:
            result["targets"]["naive"] = run_naive(naive, bodies["naive"], args)
    finally:
        if naive is not None:
            procs.stop(naive[0])
    result["request_bytes"] = {k: len(v[0]) for k, v in bodies.items()}
    for ours in ("predictor", "transformer"):
        if {ours, "naive"} <= set(result["targets"]):
            a, b = (result["targets"][t]["max_sustainable_rps"] for t in (ours, "naive"))
            result[f"{ours}_vs_naive_rps_ratio"] = round(a / b, 2) if b else None
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    if args.plot and result["targets"]:
        serving_report.plot(result, args.plot)
    print(serving_report.summary_table(result), serving_report.rates_table(result),
          serving_report.faults_table(result), sep="\n\n")
    print(f"results: {shown(args.out)}" + (f"; plot: {shown(args.plot)}" if args.plot else "")
          + f"; the stack's logs: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
