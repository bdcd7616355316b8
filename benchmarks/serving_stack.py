"""``make serve``'s own stack under ``benchmarks/serving.py``: started as
``python -m serving.stack`` (the command ``make serve`` runs), measured by the
CPU time of its processes, and disrupted the way production disrupts it.

* :class:`ServeStack`: the launcher on a staged model directory (the
  benchmarked version, linked under its own version number), the event log
  and free loopback ports.  The launcher starts Redis, seeds it with the
  columns the model declares, and starts the feature updater, the predictor
  (polling the staged directory) and the transformer;
* :class:`CpuMeter`: user + system CPU seconds of a process tree (psutil),
  snapshot before and after a load, broken down by role (``predictor``,
  ``transformer``, ``redis``, ``updater``, ``launcher`` ...);
* :meth:`ServeStack.hot_swap`: a newer version directory appears under the
  predictor's model directory; returns once the predictor serves it;
* :meth:`ServeStack.kill_redis`: kills ``redis-server`` and waits for the
  stack to bring it back on its port.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Tuple

import psutil
import redis

from feedrank import features as F
from feedrank.events.stream import local_redis_url
from serving.common import procs
from serving.features import redis_layout

log = logging.getLogger(__name__)
MODEL_NAME = "feedrank"
ROLES = (("redis-server", "redis"), ("serving.predictor", "predictor"), ("serving.transformer", "transformer"),
         ("serving.features.updater", "updater"), ("serving.features.sink", "sink"),
         ("naive_predictor", "naive"))

Snapshot = Dict[int, Tuple[str, float]]   # pid -> (role, CPU seconds so far)


def version_dir(model_dir: str) -> str:
    """``model_dir`` itself when it is a version directory, else its newest version."""
    if os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        return os.path.abspath(model_dir)
    versions = [v for v in os.listdir(model_dir) if v.isdigit()
                and os.path.isfile(os.path.join(model_dir, v, "saved_model.pb"))] if os.path.isdir(model_dir) else []
    if not versions:
        raise FileNotFoundError(f"no SavedModel version under {model_dir}: run `make demo` first")
    return os.path.abspath(os.path.join(model_dir, max(versions, key=int)))


def metric(url: str, name: str, timeout_s: float = 10.0) -> Optional[float]:
    """Sum of a Prometheus series over its labels on ``url``/metrics (None without a url or when unreachable)."""
    if not url:
        return None
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=timeout_s) as r:
            text = r.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def _role(proc: psutil.Process, root: int) -> str:
    if proc.pid == root:
        return "launcher"
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    return next((role for key, role in ROLES if key in cmd), os.path.basename(cmd.split(" ", 1)[0]) or "other")


class CpuMeter:
    """CPU seconds of the process ``root`` and all its descendants, by role."""

    def __init__(self, root: int, root_role: str = "launcher"):
        self.root = root
        self.root_role = root_role

    def processes(self) -> List[Tuple[psutil.Process, str]]:
        try:
            top = psutil.Process(self.root)
            tree = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        return [(p, self.root_role if p.pid == self.root else _role(p, self.root)) for p in tree]

    def snapshot(self) -> Snapshot:
        out: Snapshot = {}
        for p, role in self.processes():
            try:
                t = p.cpu_times()
                out[p.pid] = (role, t.user + t.system)
            except psutil.NoSuchProcess:
                continue
        return out

    @staticmethod
    def delta(before: Snapshot, after: Snapshot) -> Dict[str, object]:
        """CPU seconds spent between two snapshots, by role.  A process that started in between
        counts whole; one that exited in between is listed under ``exited`` (its last part is lost)."""
        by_role: Dict[str, float] = {}
        for pid, (role, cpu) in after.items():
            by_role[role] = by_role.get(role, 0.0) + cpu - (before[pid][1] if pid in before else 0.0)
        exited = sorted({before[pid][0] for pid in set(before) - set(after)})
        return {"by_role_s": {k: round(v, 4) for k, v in sorted(by_role.items())},
                "total_s": round(sum(by_role.values()), 4), "exited": exited}

    def pid_of(self, role: str) -> Optional[int]:
        return next((p.pid for p, r in self.processes() if r == role), None)

    def roles(self) -> List[str]:
        return sorted(r for _, r in self.processes())


class ServeStack:
    """``python -m serving.stack --log LOG --model <staged dir>`` on free ports, logs under ``workdir``."""

    def __init__(self, model_dir: str, log_dir: str, workdir: str, extra: Optional[List[str]] = None):
        self.workdir = os.path.abspath(workdir)
        self.source = version_dir(model_dir)
        self.version = os.path.basename(self.source)
        if not self.version.isdigit():
            self.version = "1"
        self.models = os.path.join(self.workdir, "models")   # the predictor's model dir (it polls it)
        os.makedirs(self.models, exist_ok=True)
        os.symlink(self.source, os.path.join(self.models, self.version))
        self.redis_port, self.predictor_port, self.transformer_port = (procs.free_port() for _ in range(3))
        self.predictor_url = f"http://127.0.0.1:{self.predictor_port}"
        self.transformer_url = f"http://127.0.0.1:{self.transformer_port}"
        self.redis_url = local_redis_url(self.redis_port)
        self.log_path = os.path.join(self.workdir, "stack.log")
        self.command = [sys.executable, "-m", "serving.stack", "--log", os.path.abspath(log_dir),
                        "--model", self.models, "--model-name", MODEL_NAME,
                        "--redis-port", str(self.redis_port), "--predictor-port", str(self.predictor_port),
                        "--transformer-port", str(self.transformer_port),
                        "--workdir", os.path.join(self.workdir, "serve"), *(extra or [])]
        self.proc: Optional[subprocess.Popen] = None
        self.meter: Optional[CpuMeter] = None
        self._seen: Dict[int, psutil.Process] = {}

    def start(self, timeout_s: float = 900.0) -> float:
        """Starts the launcher; seconds until the transformer and the predictor are ready."""
        t = time.perf_counter()
        self.proc = subprocess.Popen(self.command, cwd=procs.REPO_ROOT, env=procs.serving_env(),
                                     stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT)
        self.meter = CpuMeter(self.proc.pid)
        procs.wait_ready(f"{self.transformer_url}/v1/models/{MODEL_NAME}", timeout_s, self.proc, self.log_path)
        procs.wait_ready(f"{self.predictor_url}/v2/models/{MODEL_NAME}/ready", 60, self.proc, self.log_path)
        self._remember()
        return time.perf_counter() - t

    def _remember(self) -> None:
        for p, _ in self.meter.processes():
            self._seen.setdefault(p.pid, p)

    def snapshot(self) -> Snapshot:
        self._remember()
        return self.meter.snapshot()

    def exit_code(self) -> Optional[int]:
        return self.proc.poll() if self.proc else None

    def redis_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def served_version(self) -> Optional[str]:
        """The version whose ``feedrank_predictor_model_version`` gauge is 1."""
        try:
            with urllib.request.urlopen(f"{self.predictor_url}/metrics", timeout=5) as r:
                text = r.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        for line in text.splitlines():
            if line.startswith("feedrank_predictor_model_version{") and float(line.rsplit(" ", 1)[1]) == 1.0:
                return line.split('version="', 1)[1].split('"', 1)[0]
        return None

    def hot_swap(self, timeout_s: float = 300.0) -> Dict:
        """A newer version directory (the same SavedModel) under the predictor's model directory,
        as a push writes it; returns once the predictor serves it (or ``timeout_s`` passed)."""
        new = str(int(max(os.listdir(self.models), key=int)) + 1)
        os.symlink(self.source, os.path.join(self.models, new))
        t = time.perf_counter()
        while time.perf_counter() - t < timeout_s and self.served_version() != new:
            time.sleep(0.2)
        served = self.served_version()
        return {"new_version": new, "swapped": served == new, "swap_s": round(time.perf_counter() - t, 2)}

    def kill_redis(self, sig: int = signal.SIGKILL, wait_s: float = 60.0) -> Dict:
        """Kills redis-server with ``sig``; then waits up to ``wait_s`` for Redis to answer on its port."""
        client = self.redis_client()
        keys_before = client.dbsize()
        pid = self.meter.pid_of("redis")
        if pid is None:
            return {"error": "no redis-server under the stack"}
        self._remember()
        os.kill(pid, sig)
        t = time.perf_counter()
        back = None
        while time.perf_counter() - t < wait_s:
            try:
                if client.ping() and client.info("persistence").get("loading", 0) == 0:
                    back = time.perf_counter() - t
                    break
            except redis.RedisError:
                pass
            time.sleep(0.05)
        out = {"signal": signal.Signals(sig).name, "redis_back_s": round(back, 2) if back is not None else None,
               "restarted_under_stack": self.meter.pid_of("redis") not in (None, pid), "keys_before": keys_before}
        try:
            out["keys_after"] = client.dbsize()
        except redis.RedisError:
            out["keys_after"] = None
        return out

    def declared_seeded(self, spec: F.FeatureSpec, sample: int = 200) -> Dict:
        """The model's declared columns, and how many posts (of a sample) and users hold them in Redis."""
        keys, client = redis_layout.Keys(), self.redis_client()
        items = [c.feature_name for c in spec.declared_of("items")]
        users = [c.feature_name for c in spec.declared_of("users")]
        rows = [raw for _, (_, raw) in zip(range(sample), client.hscan_iter(keys.items))]
        stored = sum(1 for raw in rows if set(redis_layout.decode_item_declared(raw)) & set(items))
        return {"items": items, "users": users, "posts_sampled": len(rows), "posts_with_declared": stored,
                "users_with_declared": client.hlen(keys.user_attrs)}

    def updater_state(self) -> Dict:
        """Whether the updater still runs, and its consumer group on the event stream."""
        out: Dict[str, object] = {"updater_alive": self.meter.pid_of("updater") is not None}
        try:
            groups = self.redis_client().xinfo_groups("fr:events")
            out["groups"] = [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.items()
                              if k in ("name", "pending", "lag", "entries-read")} for g in groups]
        except redis.RedisError as e:
            out["groups_error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
        return out

    def stop(self) -> Optional[int]:
        """Ctrl-C to the launcher (it stops what it started), then SIGKILL to any of its processes left."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._remember()
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                log.warning("the stack did not stop in 60 s; killing it")
                self.proc.kill()
                self.proc.wait()
        for p in self._seen.values():
            try:
                if p.is_running():   # checks the pid was not reused (create time)
                    log.warning("killing %s (pid %d), left over by the stack", _role(p, -1), p.pid)
                    p.kill()
            except psutil.NoSuchProcess:
                continue
        return self.proc.returncode

