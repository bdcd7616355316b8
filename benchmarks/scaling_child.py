"""One example-generation run of the scaling benchmark, in its own process.

Usage::

    .venv/bin/python -m benchmarks.scaling_child --log DIR --work DIR --runner direct|portable \\
        --config configs/demo.yaml --result result.json

``direct``: Beam's DirectRunner, in-memory, one worker (the demo's settings).
``portable``: Beam's PortableRunner against Beam's own job service
(`apache_beam.runners.portability.local_job_service_main`) started here as a
child process, with LOOPBACK workers (the SDK harness runs in this process, the
runner and its shuffle data in the job service's).

The example generator logs a line when it starts and when it ends each read
unit, event-id shard, item shard and user shard (the start lines at DEBUG);
this process prints them to stderr, so the benchmark's sampler can key its
memory samples to the phase that is running.  Writes the run's summary and
its own timing to ``--result``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from typing import Iterator, List

logger = logging.getLogger(__name__)

DIRECT_ARGS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
JOB_SERVICE_MODULE = "apache_beam.runners.portability.local_job_service_main"
#: The first line printed by this process: the sampler then knows the job service's pid.
JOB_SERVICE_PID = "job service pid"
JOB_TIMEOUT_S = 24 * 3600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def job_service(timeout_s: float = 60.0) -> Iterator[List[str]]:
    """Beam's local job service in its own process; yields the portable runner's options.

    Its output joins this process's stderr, so worker log lines the runner
    relays are seen by the sampler too.
    """
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", JOB_SERVICE_MODULE, "--port", str(port)],
                            stdout=sys.stderr, stderr=subprocess.STDOUT)
    print(f"{JOB_SERVICE_PID} {proc.pid}", file=sys.stderr, flush=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the job service exited with {proc.returncode}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the job service never listened")
            time.sleep(0.2)
        # Beam 2.59 puts --job_server_timeout (default 60 s) on the job's state and message
        # streams too, so a job running longer than it fails with DEADLINE_EXCEEDED.
        yield ["--runner=PortableRunner", f"--job_endpoint=localhost:{port}", "--environment_type=LOOPBACK",
               f"--job_server_timeout={JOB_TIMEOUT_S}"]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run(log_dir: str, work: str, beam_args: List[str], config_file: str, overrides: dict) -> dict:
    """Example generation with the run config's ``examples`` settings (plus ``overrides``,
    e.g. ``events_per_shard``) and its feature contract."""
    import dataclasses

    from feedrank import config as C
    from feedrank.examples import beam_pipeline

    cfg = C.load(config_file)
    settings = dict(dataclasses.asdict(cfg.examples), **overrides)
    return beam_pipeline.run(log_dir, os.path.join(work, "examples"), os.path.join(work, "quarantine"),
                             settings, beam_args, spec=cfg.features_spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", required=True, help="the simulated log's directory")
    ap.add_argument("--work", required=True, help="where the examples and the quarantine go")
    ap.add_argument("--runner", choices=("direct", "portable"), default="direct")
    ap.add_argument("--config", default="configs/demo.yaml", help="the run config (its examples and features)")
    ap.add_argument("--set", default="{}", help="example-generation settings over the config's, as JSON")
    ap.add_argument("--result", required=True, help="JSON file for the summary and timing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(created).3f %(name)s %(message)s")
    logging.getLogger("feedrank.examples").setLevel(logging.DEBUG)   # the stages' "starting" lines too
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        beam_args = DIRECT_ARGS if args.runner == "direct" else stack.enter_context(job_service())
        summary = _run(args.log, args.work, beam_args, args.config, json.loads(args.set))
    wall = time.perf_counter() - t0
    with open(args.result, "w") as f:
        json.dump(dict(summary=summary, wall_s=wall, runner=args.runner), f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
