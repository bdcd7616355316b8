"""What the command line prints: quiet native libraries, progress lines, heartbeats.

* `quiet_native_logs` silences TensorFlow's C++ start-up messages ("Unable to
  register cuDNN factory", oneDNN notices) and gRPC/absl pre-init warnings. It
  must run before TensorFlow is imported; ``-v`` skips it.
* `configure_logging` shows, without ``-v``, only the project's own logs, TFX's
  per-component progress lines and errors.
* `Heartbeat` prints a line with the elapsed time while a component runs
  longer than its interval (30 s), driven by TFX's "Component X is running." /
  "Component X is finished." log lines; `Heartbeat.current` names the running
  component (the run summary of an interrupted run shows it).
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import Callable, Dict, Optional

log = logging.getLogger(__name__)

# Environment read by native code at load time: TensorFlow's C++ logging (3: errors too,
# which include the cuDNN/cuFFT/cuBLAS registration messages), gRPC's and absl's.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "2"}
HEARTBEAT_S = 30.0
_COMPONENT_LINE = re.compile(r"^Component (?P<id>\S+) is (?P<state>running|finished)\.$")
_OWN_PACKAGES = ("feedrank", "components")
_OWN_DIRS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), p)
                  + os.sep for p in _OWN_PACKAGES)


def quiet_native_logs(verbose: bool) -> None:
    """Sets the native libraries' log levels unless ``verbose`` or already set by the user."""
    if verbose:
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)


def progress_only(record: logging.LogRecord) -> bool:
    """Without -v: the project's own logs (INFO and up), TFX's per-component
    progress lines, and errors; not the libraries' INFO chatter."""
    if record.levelno >= logging.ERROR:
        return True
    if record.name == "absl":
        return record.getMessage().startswith("Component ")
    if record.levelno < logging.INFO:
        return False
    own_name = record.name.split(".", 1)[0] in _OWN_PACKAGES
    return own_name or (record.pathname or "").startswith(_OWN_DIRS)


def configure_logging(verbose: bool) -> None:
    """INFO logs with timestamps; without ``verbose`` filtered by `progress_only`.

    absl's verbosity is set to INFO too: TensorFlow's SavedModel writer saves and
    restores it around each save, and restoring absl's default (WARNING) would
    hide TFX's component lines from the first Transform on.
    """
    from absl import logging as absl_logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.INFO)
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(progress_only)


def format_elapsed(seconds: float) -> str:
    """``95.2`` -> ``'1m35s'``; under a minute ``'42s'``."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Heartbeat(logging.Handler):
    """While a TFX component runs, logs ``<id> still running (<elapsed> elapsed)`` every
    ``interval`` seconds after the first ``interval``.

    Used as a context manager around a run: it listens on the ``absl`` logger (TFX's)
    and beats from a daemon thread. It sees the component lines only when INFO is
    enabled there, i.e. when progress is shown at all (the CLI, `configure_logging`).
    LocalDagRunner runs one component at a time, so a component that starts ends
    the heartbeat of any other.
    """

    def __init__(self, interval: float = HEARTBEAT_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(level=logging.INFO)
        self.interval = interval
        self._clock = clock
        self._running: Dict[str, list] = {}  # id -> [start, next beat]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def emit(self, record: logging.LogRecord) -> None:
        match = _COMPONENT_LINE.match(record.getMessage())
        if not match:
            return
        with self._lock:
            if match["state"] == "running":
                now = self._clock()
                self._running = {match["id"]: [now, now + self.interval]}
            else:
                self._running.pop(match["id"], None)

    @property
    def current(self) -> Optional[str]:
        """The component running now (started and not finished), or None."""
        with self._lock:
            return next(iter(self._running), None)

    def beat(self) -> None:
        """Logs one line for each component that is due; called by the thread."""
        now = self._clock()
        with self._lock:
            due = []
            for component_id, times in self._running.items():
                if now >= times[1]:
                    due.append((component_id, now - times[0]))
                    while times[1] <= now:  # the next multiple of the interval after the start
                        times[1] += self.interval
        for component_id, elapsed in due:
            log.info("%s still running (%s elapsed)", component_id, format_elapsed(elapsed))

    def _loop(self) -> None:
        tick = min(1.0, self.interval / 4)
        while not self._stop.wait(tick):
            self.beat()

    def __enter__(self) -> "Heartbeat":
        logging.getLogger("absl").addHandler(self)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        logging.getLogger("absl").removeHandler(self)
        with self._lock:
            self._running.clear()
