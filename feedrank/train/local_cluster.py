"""A Trainer run_fn as the worker processes of one local cluster on loopback.

    python -m feedrank.train.local_cluster --run-fn feedrank.train.trainer.run_fn --fn-args args.json

runs one worker: the run_fn on the `WorkerArgs` in ``args.json`` (the fields of TFX's
``FnArgs`` the run_fns read), in the cluster the environment's ``TF_CONFIG`` names.
`run_cluster` starts ``num_workers`` of them, each with a ``TF_CONFIG`` naming all of
them (``localhost:<free port>``) and its own task index, as a multi-worker Trainer's
pods get theirs; one worker runs without ``TF_CONFIG``, as the ordinary Trainer.  It
waits with a deadline: a worker that fails, or a collective that hangs, ends in a
`ClusterError` carrying every worker's exit status and stderr tail, never in a hang.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from feedrank.ports import free_port
from feedrank.typed import ConfigError

log = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER_GRACE_S = 30.0   # after one worker fails, how long the others get to end on their own


@dataclasses.dataclass
class WorkerArgs:
    """The fields of TFX's ``FnArgs`` that `feedrank.train.trainer.run_fn` and
    `feedrank.sessions.trainer.run_fn` read."""
    train_files: List[str]
    eval_files: List[str]
    transform_output: str
    serving_model_dir: str
    model_run_dir: str
    custom_config: Dict[str, Any]
    hyperparameters: Optional[Dict[str, Any]] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WorkerArgs":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"worker args: unknown key(s) {unknown}; expected {sorted(names)}")
        return cls(**d)


@dataclasses.dataclass
class WorkerResult:
    """One worker process's end: exit status, wall seconds, the tails of its output."""
    index: int
    returncode: Optional[int]
    wall_seconds: float
    stdout_tail: str
    stderr_tail: str


class ClusterError(RuntimeError):
    """A worker failed or the cluster ran past its deadline; the message holds every worker's stderr tail."""

    def __init__(self, reason: str, results: Sequence[WorkerResult]):
        self.results = list(results)
        tails = "\n".join(f"--- worker {r.index}: exit {r.returncode}, stderr tail ---\n{r.stderr_tail}"
                          for r in self.results)
        super().__init__(f"{reason}\n{tails}")


def tf_config(addresses: Sequence[str], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` in a cluster of ``addresses`` (worker 0 is the chief)."""
    return json.dumps({"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}})


def _ports(n: int) -> List[int]:
    ports: List[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def _tail(path: str, chars: int) -> str:
    with open(path, errors="replace") as f:
        return f.read()[-chars:]


def run_cluster(run_fn: str, fn_args: WorkerArgs, num_workers: int, *, timeout_s: float = 600.0,
                env: Optional[Mapping[str, str]] = None, tail_chars: int = 4000,
                log_dir: Optional[str] = None) -> List[WorkerResult]:
    """Runs ``run_fn`` (``module.function``) as ``num_workers`` local worker processes on the
    same ``fn_args``; returns their results, or raises `ClusterError` when one exits non-zero
    or they are not all done within ``timeout_s`` (every worker still running is killed).
    ``log_dir``: keep each worker's whole output there (``worker-<i>.out``, ``.err``)."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    base = {k: v for k, v in (os.environ if env is None else env).items() if k != "TF_CONFIG"}
    base["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, base.get("PYTHONPATH", "")) if p)
    addresses = [f"localhost:{p}" for p in _ports(num_workers)]
    with tempfile.TemporaryDirectory(prefix="feedrank-cluster-") as tmp:
        args_path = os.path.join(tmp, "fn_args.json")
        with open(args_path, "w") as f:
            json.dump(dataclasses.asdict(fn_args), f)
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
        procs, outs = [], []
        start = time.perf_counter()
        for i in range(num_workers):
            worker_env = dict(base, **({"TF_CONFIG": tf_config(addresses, i)} if num_workers > 1 else {}))
            out, err = (open(os.path.join(log_dir or tmp, f"worker-{i}.{s}"), "w") for s in ("out", "err"))
            outs.append((out, err))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "feedrank.train.local_cluster", "--run-fn", run_fn, "--fn-args", args_path],
                stdout=out, stderr=err, env=worker_env, cwd=ROOT))
        log.info("started %d worker(s) of %s on %s", num_workers, run_fn, addresses)
        ended = _wait(procs, start + timeout_s)
        for out, err in outs:
            out.close()
            err.close()
        results = [WorkerResult(i, p.returncode, round(ended.get(i, time.perf_counter()) - start, 3),
                                _tail(outs[i][0].name, tail_chars), _tail(outs[i][1].name, tail_chars))
                   for i, p in enumerate(procs)]
    if any(p.returncode is None for p in procs) or len(ended) < num_workers:
        raise ClusterError(f"{run_fn}: the {num_workers} worker(s) were not done within {timeout_s:.0f} s", results)
    failed = [r.index for r in results if r.returncode != 0]
    if failed:
        raise ClusterError(f"{run_fn}: worker(s) {failed} failed", results)
    return results


def _wait(procs: List[subprocess.Popen], deadline: float) -> Dict[int, float]:
    """Polls until every process ended, or the deadline (then kills the rest); after one
    fails, the others get `PEER_GRACE_S` before they are killed (they may wait on it in a
    collective).  Returns {index: end time} of the processes that ended on their own."""
    ended: Dict[int, float] = {}
    while len(ended) < len(procs):
        now = time.perf_counter()
        for i, p in enumerate(procs):
            if i not in ended and p.poll() is not None:
                ended[i] = now
                if p.returncode != 0:
                    deadline = min(deadline, now + PEER_GRACE_S)
        if now > deadline:
            break
        time.sleep(0.2)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    return ended


def _function(path: str) -> Callable[[Any], None]:
    module, _, name = path.rpartition(".")
    if not module:
        raise ConfigError(f"--run-fn must be module.function, got {path!r}")
    return getattr(importlib.import_module(module), name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """One worker: the run_fn on the args file, in the cluster of ``TF_CONFIG``."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    ap = argparse.ArgumentParser(prog="python -m feedrank.train.local_cluster", description=__doc__.split("\n")[0])
    ap.add_argument("--run-fn", required=True, help="the run_fn, module.function")
    ap.add_argument("--fn-args", required=True, help="JSON of WorkerArgs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from feedrank.train.distribute import distribution_strategy

    try:
        distribution_strategy()   # first: collective ops are configured at program start
        with open(args.fn_args) as f:
            fn_args = WorkerArgs.from_dict(json.load(f))
        _function(args.run_fn)(fn_args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
