"""CPU seconds of this process and all its descendants, sampled over time.

A :class:`TreeCpuMeter` samples, every ``interval_s``, the cumulative CPU time
(user + system) of the process it runs in, of every live descendant (Beam
workers, a local MLflow server) and of the descendants already reaped
(``os.times()``'s children fields).  :meth:`TreeCpuMeter.between` then gives
the CPU seconds spent in any wall-clock interval, interpolated between
samples, so a pipeline's per-component CPU follows from the components'
start and end times.

CPU seconds travel between machines where wall time on shared cores does not:
a component that is starved of a core by another job takes longer, not more
CPU.
"""
from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from typing import Dict, List, Tuple

import psutil

log = logging.getLogger(__name__)


def tree_cpu_seconds(proc: psutil.Process) -> float:
    """Cumulative user + system CPU seconds of ``proc``, its live descendants and its reaped children."""
    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue   # exited between listing and reading: its time moves to the reaped fields
        total += c.user + c.system
    return total


def interpolate(samples: List[Tuple[float, float]], when: float) -> float:
    """The cumulative CPU at wall time ``when``, linear between the two samples around it
    (clamped to the first and last sample)."""
    if not samples:
        raise ValueError("no samples")
    times = [s[0] for s in samples]
    i = bisect.bisect_left(times, when)
    if i == 0:
        return samples[0][1]
    if i >= len(samples):
        return samples[-1][1]
    (t0, c0), (t1, c1) = samples[i - 1], samples[i]
    return c0 if t1 == t0 else c0 + (c1 - c0) * (when - t0) / (t1 - t0)


class TreeCpuMeter:
    """Samples the process tree's cumulative CPU in a daemon thread; a context manager."""

    def __init__(self, interval_s: float = 0.2, pid: int = 0):
        self._proc = psutil.Process(pid or os.getpid())
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-meter", daemon=True)
        self.samples: List[Tuple[float, float]] = []

    def _sample(self) -> None:
        # A child that has exited but is not yet reaped is counted neither live nor in the
        # parent's children times: the tree's total dips until the reap.  The true cumulative
        # CPU never falls, so a sample keeps at least the previous one's value.
        value = tree_cpu_seconds(self._proc)
        self.samples.append((time.time(), max(value, self.samples[-1][1]) if self.samples else value))

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._sample()
            except psutil.Error as e:   # the meter must never break the measured run
                log.debug("cpu sample skipped: %s", e)

    def __enter__(self) -> "TreeCpuMeter":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def between(self, start: float, end: float) -> float:
        """CPU seconds spent between wall times ``start`` and ``end``."""
        return max(0.0, interpolate(self.samples, end) - interpolate(self.samples, start))

    def per_interval(self, intervals: Dict[str, Tuple[float, float]]) -> Dict[str, float]:
        """CPU seconds of each named ``(start, end)`` interval, rounded to 0.1 s."""
        return {name: round(self.between(a, b), 1) for name, (a, b) in intervals.items()}
