"""The embedded MLflow tracking server: a local ``mlflow server`` process.

  url = ensure_server("runs/mlflow")     # start it, or reuse the one already up
  stop_server("runs/mlflow")

It keeps runs and the model registry in SQLite (``<root>/mlflow.db``) and
serves artifacts from ``<root>/artifacts`` through the server itself
(``mlflow-artifacts:/``), so clients need only the URL.  The process is
detached from the caller (its own session), so it outlives
``python pipeline.py mlflow`` and is reused by later runs; ``<root>/server.json``
records its pid and URL, and a lock file makes concurrent starts safe.

With ``mlflow.tracking_uri`` set (or ``$MLFLOW_TRACKING_URI``), nothing is
started: `tracking_uri` only checks that the remote server answers.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, Iterator, Optional

from feedrank.ports import free_port
from feedrank.tracking import TrackingError, configured_uri, local_server_dir

STATE_FILE = "server.json"
LOG_FILE = "server.log"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True if an MLflow server answers ``GET <url>/health`` with 200."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raises TrackingError unless an http(s) tracking URI answers its health check."""
    if urllib.parse.urlparse(uri).scheme not in ("http", "https"):
        return  # sqlite:///, file:, databricks: no server to probe
    if not healthy(uri, timeout):
        raise TrackingError(f"MLflow tracking server {uri} is not reachable (GET /health failed); "
                            f"start it or fix mlflow.tracking_uri")


@contextlib.contextmanager
def answering(uri: str, doing: str) -> Iterator[None]:
    """Turns a failure while ``doing`` something on the server at ``uri`` into one
    TrackingError naming MLflow, the URL and what was being done, when the server
    no longer answers its health check; other errors pass through unchanged.

    MLflow's client retries a refused connection with exponential backoff (minutes
    with its defaults); `fail_fast` bounds that first.
    """
    try:
        yield
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised below unless the server is gone
        if urllib.parse.urlparse(uri).scheme in ("http", "https") and not healthy(uri):
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise TrackingError(f"MLflow tracking server {uri} stopped answering while {doing} "
                                f"({type(e).__name__}: {first}); start it again and re-run: the "
                                f"pipeline's artifacts are intact and the earlier components "
                                f"come from the cache") from None
        raise


def fail_fast(retries: int = 2, timeout_s: int = 30) -> None:
    """Bounds MLflow's HTTP retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``..._TIMEOUT``)
    in this process, unless the user set them: about 10 s instead of minutes when the
    server goes away."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return False
        except OSError:
            return True


@contextlib.contextmanager
def _locked(root: str) -> Iterator[None]:
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "server.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_state(root: str) -> Optional[Dict]:
    path = os.path.join(root, STATE_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _mlflow_command() -> list:
    script = os.path.join(os.path.dirname(sys.executable), "mlflow")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "mlflow"]


def _tail(path: str, n: int = 5) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f.readlines() if line.strip()]
        return " | ".join(lines[-n:])
    except OSError:
        return ""


def ensure_server(root: str, host: str = "127.0.0.1", port: int = 0, timeout: float = 120.0) -> str:
    """Returns the URL of the local server for ``root``, starting it if it is not up.

    ``port`` 0 picks a free port (only when a new server is started).
    """
    root = os.path.abspath(root)
    with _locked(root):
        state = read_state(root)
        if state and healthy(state["url"]):
            if port and int(state["port"]) != int(port):
                raise TrackingError(f"the local MLflow server for {root} already runs on port "
                                    f"{state['port']}, not the configured {port}; stop it with "
                                    f"`python pipeline.py mlflow --stop`")
            return state["url"]
        if port and _port_in_use(host, port):
            raise TrackingError(f"port {port} on {host} is in use by another process (not the MLflow "
                                f"server of {root}); set mlflow.port to a free port, or 0 to pick one")
        port = int(port) or free_port(host)
        url = f"http://{host}:{port}"
        log_path = os.path.join(root, LOG_FILE)
        os.makedirs(os.path.join(root, ARTIFACTS_DIR), exist_ok=True)
        cmd = _mlflow_command() + [
            "server", "--backend-store-uri", f"sqlite:///{os.path.join(root, DB_FILE)}",
            "--artifacts-destination", os.path.join(root, ARTIFACTS_DIR),
            "--host", host, "--port", str(port), "--workers", "1"]
        first = not os.path.exists(os.path.join(root, DB_FILE))
        print(f"mlflow: starting a local server at {url} (store {root}"
              f"{'; the first start creates the database, 20-40 s' if first else ''})",
              file=sys.stderr, flush=True)
        started = time.monotonic()
        with open(log_path, "ab") as log:
            # No job executor (huey workers): tracking and the registry don't need it.
            env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=root, env=env, start_new_session=True)
        deadline, said = time.monotonic() + timeout, time.monotonic()
        while not healthy(url):
            if time.monotonic() - said >= 10:
                print(f"mlflow: waiting for the server to answer ({time.monotonic() - started:.0f} s)",
                      file=sys.stderr, flush=True)
                said = time.monotonic()
            if proc.poll() is not None:
                raise TrackingError(f"mlflow server exited with code {proc.returncode} "
                                    f"(log {log_path}): {_tail(log_path)}")
            if time.monotonic() > deadline:
                _terminate(proc.pid)
                raise TrackingError(f"mlflow server did not become healthy at {url} within "
                                    f"{timeout:.0f} s (log {log_path})")
            time.sleep(0.5)
        with open(os.path.join(root, STATE_FILE), "w") as f:
            json.dump({"pid": proc.pid, "url": url, "host": host, "port": port,
                       "backend_store_uri": f"sqlite:///{os.path.join(root, DB_FILE)}",
                       "artifacts_destination": os.path.join(root, ARTIFACTS_DIR)}, f, indent=1)
        print(f"mlflow: the server answers at {url} after {time.monotonic() - started:.0f} s",
              file=sys.stderr, flush=True)
        return url


def _terminate(pid: int, grace: float = 10.0) -> None:
    """SIGTERM to the server's process group (it has its own session), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:  # not our child: poll for its exit
                if not _alive(pid):
                    return
            time.sleep(0.1)


def stop_server(root: str) -> bool:
    """Stops the local server recorded under ``root``; False if none was running."""
    root = os.path.abspath(root)
    with _locked(root):
        state = read_state(root)
        if not state:
            return False
        running = _alive(int(state["pid"]))
        if running:
            _terminate(int(state["pid"]))
        os.remove(os.path.join(root, STATE_FILE))
        return running


def tracking_uri(cfg, start: bool = True) -> str:
    """The tracking URI for ``cfg``: the configured remote one (checked), or the local server.

    ``start=False`` never starts a process: it returns the running local
    server's URL, or the URL it would have on the configured port.
    """
    uri = configured_uri(cfg)
    if uri:
        if start:
            check_reachable(uri)
        return uri
    root = local_server_dir(cfg)
    if start:
        return ensure_server(root, cfg.mlflow.host, cfg.mlflow.port)
    state = read_state(root)
    if state and healthy(state["url"]):
        return state["url"]
    return f"http://{cfg.mlflow.host}:{cfg.mlflow.port or 5000}"


def ensure_tracking(cfg):
    """``cfg`` with ``mlflow.tracking_uri`` resolved: the local server started/reused, or the
    remote one checked.  `feedrank.runners.local.run_local` calls this before building the pipeline."""
    import dataclasses

    return dataclasses.replace(cfg, mlflow=dataclasses.replace(cfg.mlflow, tracking_uri=tracking_uri(cfg)))
