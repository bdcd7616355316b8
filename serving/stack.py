"""Local serving stack: Redis, the bulk load and the feature updater, plus
the predictor (``--model``) and the transformer (``make serve``).

    python -m serving.stack --log data/demo --model newest     # make serve
    python -m serving.stack --log data/demo --model models:/feedrank-demo-ranker@champion
    python -m serving.stack --log data/demo \
        [--predictor-url http://127.0.0.1:8080 --model-name feedrank --transformer-port 8081]
    python -m serving.stack --log data/demo --model models:/feedrank-demo@champion \
        --challenger-model models:/feedrank-demo@challenger --challenger-share 0.5 --sink-dir runs/ab

Starts ``redis-server`` on loopback unless one already answers on
``--redis-port`` (empty at start; an append-only file under
``<workdir>/redis`` keeps its data across its own restarts), seeds it from
``--log`` with the item / user columns the served model's feature contract
declares (skipped when already seeded), starts the updater on the
``fr:events`` stream; with ``--model`` the predictor (``newest``: the model
under ``--model-store`` with the newest pushed version; a model or version
directory; or ``models:/<name>@<alias>``) and the transformer against it, or
with ``--predictor-url`` the transformer against that predictor (both in the
serving environment).  Prints the URLs and a ready-to-paste ``curl``; Ctrl-C
stops what it started.

Supervision (`serving.common.procs.Supervisor`): a process of the stack that
exits is started again (after 0.5 s, doubling per exit, at most 30 s) while
the others go on; Redis comes back with its append-only file (the features,
the stream and the consumer groups, up to the last second of writes), the
transformer answers degraded while it is down and the consumers wait for it.
Only a process exiting more than 5 times in 5 minutes stops the stack.

A/B test: ``--challenger-model`` (same forms as ``--model``) starts a second
predictor on ``--challenger-port``; the transformer sends each user to one
arm by the stable user hash (``--challenger-share``, ``--ab-salt``).
``--sink-dir DIR`` starts the log sink (``serving.features.sink``), which
writes the served log to ``DIR/events`` and ``DIR/requests``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from typing import Callable, List, Optional

from feedrank import features as F
from feedrank.ab.assign import share_arg
from feedrank.events import contract, io, stream
from serving.common import procs
from serving.features import bootstrap, declared, redis_layout, writer

log = logging.getLogger(__name__)
INSTALL_HINT = "redis-server is missing: install it with `sudo apt-get install -y redis-server` (Debian/Ubuntu)"


def redis_data_dir(workdir: str) -> str:
    """Where the stack's Redis keeps its append-only file: ``<workdir>/redis``."""
    return os.path.join(workdir, "redis")


def start_redis(port: int, workdir: str, fresh: bool = False) -> Optional[subprocess.Popen]:
    """A loopback redis-server on ``port`` with its append-only file under `redis_data_dir`
    (None if a Redis already answers there).  ``fresh`` deletes that file first, so the
    server starts empty; otherwise it loads what the file holds."""
    if procs.redis_ping(port):
        log.info("using the Redis already on port %d", port)
        return None
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError(INSTALL_HINT)
    data_dir, log_path = redis_data_dir(workdir), os.path.join(workdir, "redis.log")
    if fresh:
        shutil.rmtree(data_dir, ignore_errors=True)
        open(log_path, "wb").close()
    proc = procs.spawn_redis(exe, port, data_dir, log_path)
    try:
        procs.wait_redis(port, 60.0, proc, log_path)
    except RuntimeError:
        procs.stop(proc)
        raise
    return proc


def redis_restart(port: int, workdir: str) -> Callable[[], subprocess.Popen]:
    """Starts the stack's Redis again on ``port`` from its append-only file (for the supervisor:
    returns at once, the other processes retry until it has loaded its data)."""
    exe = shutil.which("redis-server") or "redis-server"
    return lambda: procs.spawn_redis(exe, port, redis_data_dir(workdir), os.path.join(workdir, "redis.log"))


def newest_model_dir(store: str) -> str:
    """``<store>/<model>`` holding the newest pushed version (the Pusher writes only blessed ones)."""
    best: Optional[tuple] = None
    for name in sorted(os.listdir(store)) if os.path.isdir(store) else []:
        model_dir = os.path.join(store, name)
        if not os.path.isdir(model_dir):
            continue
        versions = [int(v) for v in os.listdir(model_dir)
                    if v.isdigit() and os.path.isfile(os.path.join(model_dir, v, "saved_model.pb"))]
        if versions and (best is None or max(versions) > best[0]):
            best = (max(versions), model_dir)
    if best is None:
        raise FileNotFoundError(f"no pushed model under {store}/: run `make demo` first, "
                                f"or serve the registry's champion with MODEL=models:/<name>@champion")
    return best[1]


def predictor_source(spec: str, store: str, tracking_uri: str) -> List[str]:
    """The predictor's source arguments for ``spec``: ``newest``, a directory or a ``models:/`` URI."""
    if spec.startswith("models:/"):
        if not tracking_uri:
            from feedrank.tracking.server import ensure_server
            tracking_uri = ensure_server(os.path.join("runs", "mlflow"))
        return ["--model-uri", spec, "--tracking-uri", tracking_uri]
    model_dir = newest_model_dir(store) if spec == "newest" else spec
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    return ["--model-dir", model_dir, "--poll-s", "10"]


def declaration_for(spec: str, source: List[str], workdir: str) -> str:
    """Where the transformer reads the served model's declared columns (`serving.features.declared`):
    the pushed version directory, or for a ``models:/`` URI the version's push (its ``pushed_dir``
    tag) or its declaration file downloaded from the registry; "" when there is none."""
    if source and source[0] == "--model-dir":
        model_dir = source[1]
        if os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
            return model_dir
        versions = [v for v in os.listdir(model_dir) if v.isdigit()]
        return os.path.join(model_dir, max(versions, key=int)) if versions else model_dir
    from mlflow import MlflowClient, artifacts

    name, _, ref = spec[len("models:/"):].partition("@")
    client = MlflowClient(tracking_uri=source[source.index("--tracking-uri") + 1])
    if ref:
        mv = client.get_model_version_by_alias(name, ref)
    else:
        name, _, version = name.partition("/")
        mv = client.get_model_version(name, version)
    pushed = (mv.tags or {}).get("pushed_dir", "")
    if pushed and os.path.isdir(pushed):
        return pushed
    try:
        return artifacts.download_artifacts(artifact_uri=f"{mv.source.rstrip('/')}/{F.DECLARED_FILE}",
                                            dst_path=os.path.join(workdir, f"declared-{name}-{mv.version}"),
                                            tracking_uri=client.tracking_uri)
    except Exception as e:  # noqa: BLE001 - no declaration logged: built-in features only
        log.warning("%s has no %s (%s): the transformer sends the built-in features only", spec,
                    F.DECLARED_FILE, str(e).splitlines()[0] if str(e) else type(e).__name__)
        return ""




def transformer_args(args: argparse.Namespace, redis_url: str, challenger_url: str) -> List[str]:
    """The transformer's command line."""
    out = ["--model-name", args.model_name, "--predictor-url", args.predictor_url, "--redis", redis_url,
           "--http-port", str(args.transformer_port)]
    if challenger_url:
        out += ["--challenger-url", challenger_url, "--challenger-share", str(args.challenger_share)]
    if args.ab_salt:
        out += ["--ab-salt", args.ab_salt]
    if getattr(args, "declaration", ""):
        out += ["--model", args.declaration]
    if getattr(args, "redis_timeout_ms", None) is not None:
        out += ["--redis-timeout-ms", str(args.redis_timeout_ms)]
    return out


def sink_command(redis_url: str, sink_dir: str) -> List[str]:
    """The log sink's command line (pipeline environment: pyarrow)."""
    return [sys.executable, "-m", "serving.features.sink", "--redis", redis_url,
            "--events-dir", os.path.join(sink_dir, "events"), "--requests-dir", os.path.join(sink_dir, "requests")]


def consumer(cmd: List[str], log_path: str, append: bool = False) -> subprocess.Popen:
    """Starts a stream consumer (the updater, the sink) in the pipeline environment, its output
    to ``log_path`` (``append``: after what is there, as a restarted process does)."""
    return subprocess.Popen(cmd, stdout=open(log_path, "ab" if append else "wb"), stderr=subprocess.STDOUT,
                            cwd=procs.REPO_ROOT, env=procs.serving_env())


def example_request(log_dir: str, n: int = 5) -> dict:
    """A request for the log's most active user and ``n`` posts."""
    ev = io.read_events(log_dir)
    user = ev.loc[ev["event"] == contract.CLICK, "user_id"].value_counts().index[0]
    items = list(io.read_table(log_dir, contract.ITEMS)["item_id"][:n])
    return {"user_id": str(user), "candidates": [str(i) for i in items]}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.stack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", required=True, help="event log to seed Redis from")
    p.add_argument("--redis-port", type=int, default=6379)
    p.add_argument("--workdir", default="runs/serve", help="logs of the started processes")
    p.add_argument("--model", default="", help="start the predictor on this model: newest (under --model-store), "
                   "a model or version directory, or models:/<name>@<alias>")
    p.add_argument("--model-store", default="model_store", help="where --model newest looks")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", ""),
                   help="MLflow server for a models:/ URI (default: the local one under runs/mlflow)")
    p.add_argument("--predictor-port", type=int, default=8080)
    p.add_argument("--predictor-url", default="", help="start the transformer against this predictor")
    p.add_argument("--model-name", default="feedrank")
    p.add_argument("--transformer-port", type=int, default=8081)
    ab = p.add_argument_group("A/B test and served log")
    ab.add_argument("--challenger-model", default="", help="a second predictor (the challenger arm), "
                    "same forms as --model")
    ab.add_argument("--challenger-port", type=int, default=8082)
    ab.add_argument("--challenger-share", type=share_arg, default=0.5, help="share of users on the challenger")
    ab.add_argument("--ab-salt", default="", help="salt of the user hash (default: the transformer's, feedrank-ab)")
    ab.add_argument("--sink-dir", default="", help="start the log sink: the served log to DIR/events, DIR/requests")
    p.add_argument("--redis-timeout-ms", type=float, default=None,
                   help="the transformer's Redis read timeout (default: the transformer's); beyond it a "
                        "request is ranked without the online features")
    p.add_argument("--updater-delay-s", type=float, default=0.0,
                   help="apply an event to the features only once the stream's event time has passed its "
                        "ts + this (stale features, for the staleness study; default %(default)s)")
    args = p.parse_args(argv)
    if args.challenger_model and not (args.model or args.predictor_url):
        p.error("--challenger-model needs a champion: --model or --predictor-url")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or kill stops the stack, even when started in the background
        signal.signal(sig, signal.default_int_handler)
    os.makedirs(args.workdir, exist_ok=True)
    url = stream.local_redis_url(args.redis_port)
    workdir = os.path.abspath(args.workdir)
    sup = procs.Supervisor()   # every process it starts is started again when it exits
    try:
        source = predictor_source(args.model, args.model_store, args.tracking_uri) if args.model else []
        challenger = (predictor_source(args.challenger_model, args.model_store, args.tracking_uri)
                      if args.challenger_model else [])
        r = start_redis(args.redis_port, workdir, fresh=True)
    except (FileNotFoundError, RuntimeError) as e:  # no model / no redis-server / no MLflow
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        args.declaration = declaration_for(args.model, source, args.workdir) if source else ""
    except Exception as e:  # noqa: BLE001 - MLflow: no such model, alias or server
        print(f"error: cannot resolve {args.model}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
              file=sys.stderr)
        if r is not None:
            procs.stop(r)
        return 2
    try:
        spec: F.FeatureSpec = declared.spec_from_model(args.declaration)   # the served model's contract
    except (ValueError, OSError) as e:   # an unreadable declaration file
        print(f"error: {e}", file=sys.stderr)
        if r is not None:
            procs.stop(r)
        return 2
    if r is not None:
        sup.add("redis", r, redis_restart(args.redis_port, workdir), os.path.join(workdir, "redis.log"))
    try:
        p_log = os.path.join(args.workdir, "predictor.log")
        if source:  # loads and warms up while Redis is seeded
            log.info("starting the predictor on %s", source[1])
            p_args = [*source, "--model-name", args.model_name, "--http-port", str(args.predictor_port)]
            predictor = sup.add("predictor", procs.start_server("serving.predictor", p_args, p_log),
                                lambda: procs.start_server("serving.predictor", p_args, p_log, append=True), p_log)
            args.predictor_url = f"http://127.0.0.1:{args.predictor_port}"
        c_log, challenger_url = os.path.join(args.workdir, "challenger.log"), ""
        if challenger:
            log.info("starting the challenger predictor on %s", challenger[1])
            c_args = [*challenger, "--model-name", args.model_name, "--http-port", str(args.challenger_port)]
            c_proc = sup.add("challenger", procs.start_server("serving.predictor", c_args, c_log),
                             lambda: procs.start_server("serving.predictor", c_args, c_log, append=True), c_log)
            challenger_url = f"http://127.0.0.1:{args.challenger_port}"
        client = writer.redis_client(url)
        try:
            bootstrap.bootstrap(client, args.log, redis_layout.Keys(), spec=spec)
        except bootstrap.AlreadySeeded as e:
            log.info("%s", e)
            bootstrap.ensure_columns(client, args.log, redis_layout.Keys(), spec)   # the columns the model reads
        updater_log = os.path.join(args.workdir, "updater.log")
        updater_cmd = [sys.executable, "-m", "serving.features.updater", "--redis", url, "--stream",
                       stream.DEFAULT_STREAM]
        if args.updater_delay_s:
            updater_cmd += ["--delay-s", str(args.updater_delay_s)]
        sup.add("updater", consumer(updater_cmd, updater_log),
                lambda: consumer(updater_cmd, updater_log, append=True), updater_log)
        print(f"redis:   {url}  (events: XADD {stream.DEFAULT_STREAM}; updater log {updater_log})")
        if args.sink_dir:
            sink_log, sink_cmd = os.path.join(args.workdir, "sink.log"), sink_command(url, args.sink_dir)
            sup.add("sink", consumer(sink_cmd, sink_log), lambda: consumer(sink_cmd, sink_log, append=True), sink_log)
            print(f"sink:    served log -> {args.sink_dir}/events, {args.sink_dir}/requests  (log {sink_log})")
        if source:
            procs.wait_ready(f"{args.predictor_url}/v2/models/{args.model_name}/ready", 600, predictor, p_log)
            print(f"predictor: {args.predictor_url}/v1/models/{args.model_name}:predict  (v2: "
                  f"/v2/models/{args.model_name}/infer; log {p_log})")
        if challenger:
            procs.wait_ready(f"{challenger_url}/v2/models/{args.model_name}/ready", 600, c_proc, c_log)
            print(f"challenger: {challenger_url}/v1/models/{args.model_name}:predict  "
                  f"({100 * args.challenger_share:g}% of users; log {c_log})")
        if args.predictor_url:
            t_log, t_args = os.path.join(args.workdir, "transformer.log"), transformer_args(args, url, challenger_url)
            t_proc = sup.add("transformer", procs.start_server("serving.transformer", t_args, t_log),
                             lambda: procs.start_server("serving.transformer", t_args, t_log, append=True), t_log)
            t_url = f"http://127.0.0.1:{args.transformer_port}"
            procs.wait_ready(f"{t_url}/v1/models/{args.model_name}", 120, t_proc, t_log)
            body = json.dumps(example_request(args.log))
            print(f"ranking: {t_url}/v1/models/{args.model_name}:predict  (log {t_log})")
            print(f"try:     curl -s -H 'Content-Type: application/json' -d '{body}' "
                  f"{t_url}/v1/models/{args.model_name}:predict")
        print("Ctrl-C stops the stack.")
        sup.run()   # a process that exits is started again; the others go on meanwhile
        return 0
    except procs.CrashLoop as e:
        log.error("%s; stopping the stack (logs in %s)", e, args.workdir)
        return 1
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as e:  # a server exited or never became ready
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        sup.stop_all()


if __name__ == "__main__":
    sys.exit(main())
