"""benchmarks.cpu_meter: interpolation by hand, and a real child process's CPU counted."""
import subprocess
import sys
import time

import psutil
import pytest

from benchmarks.cpu_meter import TreeCpuMeter, interpolate, tree_cpu_seconds


def test_interpolate_is_linear_between_samples_and_clamped_outside():
    samples = [(10.0, 1.0), (12.0, 2.0), (14.0, 6.0)]
    assert interpolate(samples, 11.0) == pytest.approx(1.5)
    assert interpolate(samples, 13.5) == pytest.approx(5.0)    # 2 + 4 * 0.75
    assert interpolate(samples, 12.0) == pytest.approx(2.0)
    assert interpolate(samples, 5.0) == 1.0 and interpolate(samples, 20.0) == 6.0
    with pytest.raises(ValueError):
        interpolate([], 1.0)


def test_between_and_per_interval_use_the_samples():
    meter = TreeCpuMeter()
    meter.samples = [(0.0, 0.0), (10.0, 5.0), (20.0, 5.0), (30.0, 11.0)]
    assert meter.between(5.0, 25.0) == pytest.approx(2.5 + 3.0)
    assert meter.per_interval({"a": (0.0, 10.0), "b": (10.0, 20.0), "c": (25.0, 30.0)}) == \
        {"a": 5.0, "b": 0.0, "c": 3.0}


def test_a_busy_child_process_is_counted_while_alive_and_after_it_is_reaped():
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass\n"
    me = psutil.Process()
    before = tree_cpu_seconds(me)
    with TreeCpuMeter(interval_s=0.05) as meter:
        child = subprocess.Popen([sys.executable, "-c", burn])
        child.wait(timeout=60)
        time.sleep(0.1)
    after = tree_cpu_seconds(me)
    assert after - before >= 0.9          # the child's second of CPU, reaped into children_user/system
    assert meter.samples[-1][1] - meter.samples[0][1] >= 0.9
    assert all(b[1] >= a[1] - 0.05 for a, b in zip(meter.samples, meter.samples[1:]))   # cumulative
