"""What a benchmark ran on: CPU model, cores, memory, load, Python and library versions."""
from __future__ import annotations

import os
import platform
from typing import Dict


def repo_relative(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (results never hold a machine's paths)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full = os.path.abspath(path) if "://" not in path else path
    return os.path.relpath(full, root) if full.startswith(root + os.sep) else path


def machine_info(*modules: str) -> Dict[str, object]:
    """The machine and the versions of ``modules`` (imported by name)."""
    info: Dict[str, object] = {"platform": platform.platform(), "python": platform.python_version(),
                               "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu_model"] = models[0] if models else platform.processor()
        with open("/proc/meminfo") as f:
            info["mem_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:  # not Linux: platform's answer is all there is
        info["cpu_model"] = platform.processor() or platform.machine()
    for name in modules:
        try:
            info[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            info[name] = None
    return info
