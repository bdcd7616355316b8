"""The servers ``benchmarks/serving.py`` measures, started the way ``make serve``
starts them, and the disruptions it applies under load.

* :class:`Stack`: the predictor on a staged model directory (version ``1``, a
  link to the benchmarked SavedModel), Redis on loopback seeded by the bulk
  loader, and the transformer in front of the predictor;
* :meth:`Stack.hot_swap`: stages version ``2`` (the same SavedModel, loaded
  and warmed up again) and asks the predictor to swap it in;
* :meth:`Stack.restart_redis`: stops Redis and starts it again on the same
  port from the snapshot taken after seeding;
* :func:`plot`: latency against offered load, ours against the peer.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.request
from typing import Dict, List, Optional

from feedrank.events.stream import local_redis_url
from serving import stack
from serving.common import procs
from serving.features import bootstrap, declared, redis_layout, writer

log = logging.getLogger(__name__)
MODEL_NAME = "feedrank"


def version_dir(model_dir: str) -> str:
    """``model_dir`` itself when it is a version directory, else its newest version."""
    if os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        return os.path.abspath(model_dir)
    versions = [v for v in os.listdir(model_dir) if v.isdigit()
                and os.path.isfile(os.path.join(model_dir, v, "saved_model.pb"))] if os.path.isdir(model_dir) else []
    if not versions:
        raise FileNotFoundError(f"no SavedModel version under {model_dir}: run `make demo` first")
    return os.path.abspath(os.path.join(model_dir, max(versions, key=int)))


class Stack:
    """Predictor, Redis and transformer on free loopback ports; logs under ``workdir``."""

    def __init__(self, model_dir: str, workdir: str, threads: int, batch_size: int):
        self.workdir = workdir
        self.source = version_dir(model_dir)
        self.models = os.path.join(workdir, "models")
        os.makedirs(self.models, exist_ok=True)
        os.symlink(self.source, os.path.join(self.models, "1"))
        self.procs: Dict[str, subprocess.Popen] = {}
        self.predictor_port = procs.free_port()
        self.predictor_url = f"http://127.0.0.1:{self.predictor_port}"
        self._start("predictor", "serving.predictor", [
            "--model-dir", self.models, "--model-name", MODEL_NAME, "--http-port", str(self.predictor_port),
            "--batch-size", str(batch_size), "--threads", str(threads), "--max-in-flight", "1000",
            "--log-level", "WARNING"])
        self.redis_port = procs.free_port()
        self.redis_url = local_redis_url(self.redis_port)
        self.transformer_url = ""

    def _start(self, key: str, module: str, args: List[str]) -> None:
        self.procs[key] = procs.start_server(module, args, os.path.join(self.workdir, f"{key}.log"))

    def wait_predictor(self) -> None:
        procs.wait_ready(f"{self.predictor_url}/v2/models/{MODEL_NAME}/ready", 300, self.procs["predictor"],
                         os.path.join(self.workdir, "predictor.log"))

    def start_features(self, log_dir: str) -> float:
        """Redis seeded from ``log_dir`` and snapshotted (for the restart); the bulk load's seconds."""
        self.procs["redis"] = stack.start_redis(self.redis_port, os.path.abspath(self.workdir))
        t = time.perf_counter()
        client = writer.redis_client(self.redis_url)
        bootstrap.bootstrap(client, log_dir, redis_layout.Keys(), force=True,
                            spec=declared.spec_from_model(self.source))   # what the model reads
        seconds = time.perf_counter() - t
        client.save()  # dump.rdb in workdir: a restarted Redis comes back with the features
        return seconds

    def start_transformer(self) -> None:
        port = procs.free_port()
        self._start("transformer", "serving.transformer", [
            "--model-name", MODEL_NAME, "--predictor-url", self.predictor_url, "--redis", self.redis_url,
            "--http-port", str(port), "--max-in-flight", "1000", "--model", self.source])
        self.transformer_url = f"http://127.0.0.1:{port}"
        procs.wait_ready(f"{self.transformer_url}/v1/models/{MODEL_NAME}", 120, self.procs["transformer"],
                         os.path.join(self.workdir, "transformer.log"))

    def hot_swap(self) -> Dict:
        """Version 2 staged and swapped in through ``POST /admin/reload`` (blocks until swapped)."""
        os.symlink(self.source, os.path.join(self.models, "2"))
        req = urllib.request.Request(f"{self.predictor_url}/admin/reload", data=b"", method="POST")
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=300) as r:
            answer = json.loads(r.read())
        answer["swap_s"] = round(time.perf_counter() - t, 2)
        return answer

    def restart_redis(self, down_s: float) -> float:
        """Stops Redis, waits ``down_s``, starts it again from the snapshot; seconds until it answers."""
        procs.stop(self.procs.pop("redis"))
        time.sleep(down_s)
        t = time.perf_counter()
        self.procs["redis"] = stack.start_redis(self.redis_port, os.path.abspath(self.workdir))
        return time.perf_counter() - t

    def metric(self, name: str) -> float:
        """Sum of a counter on the transformer's ``/metrics``."""
        with urllib.request.urlopen(f"{self.transformer_url}/metrics", timeout=10) as r:
            text = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    def stop(self) -> None:
        for key in ("transformer", "predictor", "redis"):
            proc: Optional[subprocess.Popen] = self.procs.pop(key, None)
            if proc is not None:
                procs.stop(proc)


def plot(result: Dict, path: str) -> None:
    """p50 and p99 against offered req/s for each target (log scale), with the issue's p99 targets."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"predictor": "predictor alone (ours)", "transformer": "transformer + Redis (ours)",
              "naive": "naive peer (stock kserve, row per candidate)"}
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (target, res) in enumerate(result["targets"].items()):
        rows = [r for r in res["rates"] if r["p99_ms"] is not None]
        color = f"C{i}"
        ax.plot([r["offered"] for r in rows], [r["p99_ms"] for r in rows], "o-", color=color,
                label=f"{labels.get(target, target)} p99")
        ax.plot([r["offered"] for r in rows], [r["p50_ms"] for r in rows], "s--", color=color, alpha=0.6,
                label="p50")
        bad = [r for r in rows if r["errors"]]
        ax.plot([r["offered"] for r in bad], [r["p99_ms"] for r in bad], "x", color="k", markersize=9)
    for ms in (5, 10):
        ax.axhline(ms, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("offered load (req/s, open loop)")
    ax.set_ylabel("latency from scheduled start (ms)")
    ax.set_title(f"{result['candidates']}-candidate ranking request, {result['machine'].get('cpus')} CPUs "
                 f"(x: errors; dotted: 5 and 10 ms)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
