"""Measures one child process tree: wall time, CPU seconds and resident memory, per phase.

`measure` starts a command, reads its stderr line by line and samples the
resident set size (RSS) of every process in its tree (the command and all its
descendants, e.g. Beam's job service) every ``interval_s`` seconds with psutil.

Phases: the example generator logs a line when it starts and when it ends a
read unit, an event-id shard, an item shard and a user shard (`PHASES`).  A sample belongs to the phase of the
latest such line, so "peak RSS of a phase" is the largest tree RSS seen while
that phase's lines were the latest: on a fused runner that executes its stages
one after the other this separates the stages; memory a stage leaves behind
(buffered shuffle data) is counted in the phases that follow.

CPU seconds come from ``wait4`` on the command: its own CPU plus that of every
descendant it waited for (the job service), so nothing is lost between samples.
The tree RSS is a sum of per-process RSS (shared pages counted once per process).
"""
from __future__ import annotations

import collections
import logging
import os
import re
import statistics
import subprocess
import threading
import time
from typing import Dict, Iterable, List, Optional, Sequence, TextIO, Tuple

import psutil

logger = logging.getLogger(__name__)

MB = 2 ** 20
SETUP = "setup"
#: (phase name, regex of its log lines, regex of the shard size in those lines or None).
PHASES: Tuple[Tuple[str, "re.Pattern[str]", Optional["re.Pattern[str]"]], ...] = (
    ("read_users", re.compile(r" users \S+ rows \d+\.\.\d+"), None),
    ("read", re.compile(r" read \S+ (rows \d+\.\.\d+|row group \S+: starting)"), None),
    ("dedupe", re.compile(r"event-id shard \d+:"), re.compile(r"event-id shard \d+: (\d+) events kept")),
    ("item_history", re.compile(r"item shard \d+:"), re.compile(r"item shard \d+: (\d+) events")),
    ("build", re.compile(r"user shard \d+:"), re.compile(r"user shard \d+: (\d+) events")),
    ("finalize", re.compile(r"example gen: \d+ events read"), None),
)
JOB_SERVICE_LINE = re.compile(r"^job service pid (\d+)")
#: A stage's start and end line of one shard: ``<created> <logger> <stage> shard <n>: ...``.
SHARD_LINE = re.compile(r"^(\d+\.\d+) \S+ (event-id|item|user) shard (\d+): (starting|(\d+) events)")
SHARD_PHASE = {"event-id": "dedupe", "item": "item_history", "user": "build"}


def phase_of(line: str) -> Optional[Tuple[str, Optional[int]]]:
    """``(phase, shard events or None)`` of a log line, None when it marks no phase."""
    for name, pattern, size in PHASES:
        if pattern.search(line):
            m = size.search(line) if size else None
            return name, int(m.group(1)) if m else None
    return None


def shard_costs(lines: Iterable[str]) -> Dict[str, List[float]]:
    """Microseconds per event of each shard, per phase, from the stages' start and end lines
    (their own timestamps): the stage's work on that shard, without the time between shards.

    On a shared machine the smallest of these is the figure least disturbed by other load.
    """
    started: Dict[Tuple[str, str], float] = {}
    out: Dict[str, List[float]] = collections.defaultdict(list)
    for line in lines:
        m = SHARD_LINE.search(line)
        if not m:
            continue
        t, stage, shard, what, events = float(m.group(1)), m.group(2), m.group(3), m.group(4), m.group(5)
        if what == "starting":
            started[(stage, shard)] = t
        elif (stage, shard) in started and int(events) > 0:
            out[SHARD_PHASE[stage]].append(1e6 * (t - started.pop((stage, shard))) / int(events))
    return dict(out)


def cost_summary(costs: Sequence[float]) -> Dict[str, float]:
    """min, median and max of per-shard costs."""
    return dict(min=round(min(costs), 2), median=round(statistics.median(costs), 2), max=round(max(costs), 2))


class _State:
    """What the reader and the sampler threads share."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phase = SETUP
        self.phase_start: Dict[str, float] = {SETUP: time.monotonic()}
        self.phase_end: Dict[str, float] = {}
        self.largest_shard: Dict[str, int] = {}
        self.job_service_pid: Optional[int] = None
        self.peak_tree: Dict[str, int] = collections.defaultdict(int)
        self.peak_role: Dict[str, Dict[str, int]] = collections.defaultdict(lambda: collections.defaultdict(int))
        self.samples: List[Tuple[float, int]] = []
        self.peak_disk = 0
        self.done = threading.Event()


def _reader(stream: TextIO, state: _State, tee: Optional[TextIO]) -> None:
    for line in stream:
        if tee is not None:
            tee.write(line)
        m = JOB_SERVICE_LINE.search(line)
        found = phase_of(line)
        with state.lock:
            if m:
                state.job_service_pid = int(m.group(1))
            if found is None:
                continue
            name, size = found
            now = time.monotonic()
            if name != state.phase:
                state.phase_end[state.phase] = now
                state.phase_start.setdefault(name, now)
                state.phase = name
            state.phase_end[name] = now
            if size is not None:
                state.largest_shard[name] = max(state.largest_shard.get(name, 0), size)


def _tree_rss(root: psutil.Process, job_pid: Optional[int]) -> Dict[str, int]:
    """RSS in bytes of the tree, split into ``client`` (the command itself) and
    ``job_service`` (that process and its descendants) and ``other``."""
    out = collections.Counter()
    try:
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return out
    job_tree = set()
    if job_pid is not None:
        try:
            job = psutil.Process(job_pid)
            job_tree = {job_pid} | {p.pid for p in job.children(recursive=True)}
        except psutil.Error:
            pass
    for p in procs:
        try:
            rss = p.memory_info().rss
        except psutil.Error:
            continue
        role = "client" if p.pid == root.pid else "job_service" if p.pid in job_tree else "other"
        out[role] += rss
    return out


def dir_bytes(path: str) -> int:
    """Bytes of the files under ``path`` (0 when it is missing; files vanishing meanwhile are skipped)."""
    total = 0
    for base, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(base, name)).st_size
            except OSError:
                continue
    return total


def _sampler(root: psutil.Process, state: _State, interval_s: float, disk_dir: Optional[str],
             disk_every: int = 10) -> None:
    t0 = time.monotonic()
    n = 0
    while not state.done.is_set():
        if disk_dir and n % disk_every == 0:
            state.peak_disk = max(state.peak_disk, dir_bytes(disk_dir))
        n += 1
        with state.lock:
            job_pid, phase = state.job_service_pid, state.phase
        by_role = _tree_rss(root, job_pid)
        total = sum(by_role.values())
        with state.lock:
            state.samples.append((round(time.monotonic() - t0, 2), total))
            state.peak_tree[phase] = max(state.peak_tree[phase], total)
            for role, rss in by_role.items():
                state.peak_role[phase][role] = max(state.peak_role[phase][role], rss)
        state.done.wait(interval_s)


def measure(cmd: Sequence[str], interval_s: float = 0.2, log_path: Optional[str] = None,
            disk_dir: Optional[str] = None) -> Dict[str, object]:
    """Runs ``cmd`` and returns its wall and CPU seconds, peak tree RSS and the per-phase figures
    (and the peak bytes under ``disk_dir``, sampled every 10th interval, when given)."""
    state = _State()
    tee = open(log_path, "w") if log_path else None
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace")
    root = psutil.Process(proc.pid)
    threads = [threading.Thread(target=_reader, args=(proc.stderr, state, tee), daemon=True),
               threading.Thread(target=_sampler, args=(root, state, interval_s, disk_dir), daemon=True)]
    for t in threads:
        t.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        raise
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    state.done.set()
    for t in threads:
        t.join(10)
    costs: Dict[str, List[float]] = {}
    if tee is not None:
        tee.close()
        with open(log_path) as f:
            costs = shard_costs(f)
    with state.lock:
        end = time.monotonic()
        phases = {}
        for name in state.phase_start:
            phases[name] = dict(
                start_s=round(state.phase_start[name] - state.phase_start[SETUP], 2),
                seconds=round(state.phase_end.get(name, end) - state.phase_start[name], 2),
                peak_rss_mb=round(state.peak_tree.get(name, 0) / MB, 1),
                peak_rss_mb_by_process={r: round(v / MB, 1) for r, v in state.peak_role[name].items()},
                largest_shard_events=state.largest_shard.get(name),
                shard_us_per_event=cost_summary(costs[name]) if costs.get(name) else None)
        peak_by_role: Dict[str, int] = collections.Counter()
        for roles in state.peak_role.values():
            for role, v in roles.items():
                peak_by_role[role] = max(peak_by_role[role], v)
        return dict(returncode=proc.returncode, wall_s=round(wall, 2),
                    cpu_s=round(usage.ru_utime + usage.ru_stime, 2),
                    cpu_user_s=round(usage.ru_utime, 2), cpu_system_s=round(usage.ru_stime, 2),
                    max_single_process_rss_mb=round(usage.ru_maxrss / 1024, 1),
                    peak_rss_mb=round(max(state.peak_tree.values(), default=0) / MB, 1),
                    peak_rss_mb_by_process={r: round(v / MB, 1) for r, v in peak_by_role.items()},
                    peak_disk_mb=round(state.peak_disk / MB, 1) if disk_dir else None,
                    phases=phases, samples=len(state.samples),
                    rss_trace_mb=[(t, round(v / MB)) for t, v in state.samples[::max(1, len(state.samples) // 400)]])
