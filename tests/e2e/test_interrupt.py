"""A stop signal mid-run: ``pipeline.py run`` (a real process running the tiny
pipeline) gets SIGTERM or Ctrl-C (SIGINT) while a component runs; it prints and
writes a summary with the status ``interrupted``, the signal and that component,
and exits with 128 + the signal's number."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from tests.helpers.config import ROOT, TINY_CONFIG

pytestmark = pytest.mark.e2e


def _config(tmp_path, data_dir) -> str:
    with open(TINY_CONFIG) as f:
        cfg = yaml.safe_load(f)
    cfg.update(pipeline_name="feedrank-interrupt", input_base=str(data_dir), run_root=str(tmp_path / "runs"),
               push_root=str(tmp_path / "model_store"))
    cfg["mlflow"] = dict(cfg["mlflow"], tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _run_until(config: str, line: str, timeout: float = 240.0):
    """Starts ``pipeline.py run``; returns (process, output lines so far) once ``line`` was printed."""
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "pipeline.py"), "run", "--config", config],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines, seen = [], threading.Event()

    def read():
        for out in proc.stdout:
            lines.append(out)
            if line in out:
                seen.set()
        seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not seen.wait(timeout) or proc.poll() is not None:
        proc.kill()
        pytest.fail(f"never saw {line!r}:\n{''.join(lines[-30:])}")
    return proc, lines, reader


@pytest.mark.parametrize("sig, component", [(signal.SIGTERM, "BehaviorExampleGen"),
                                            (signal.SIGINT, "StatisticsGen")])
def test_stop_signal_writes_an_interrupted_summary_naming_the_running_component(sig, component, tiny_data,
                                                                                tmp_path):
    proc, lines, reader = _run_until(_config(tmp_path, tiny_data), f"Component {component} is running.")
    time.sleep(1.0)  # well inside the component
    proc.send_signal(sig)
    try:
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    output = "".join(lines)
    assert proc.returncode == 128 + sig, output[-3000:]
    name = signal.Signals(sig).name
    assert "[INTERRUPTED]" in output and f"INTERRUPTED by {name} while {component} was running" in output
    assert "Traceback" not in output, output[-3000:]
    written = glob.glob(str(tmp_path / "runs" / "*" / "summary.json"))
    assert len(written) == 1
    with open(written[0]) as f:
        summary = json.load(f)
    assert summary["status"] == "interrupted"
    assert summary["interrupted"] == {"signal": name, "component": component}
    assert summary["components"][component]["state"] not in ("COMPLETE", "FAILED")
    assert all(c["state"] == "COMPLETE" for n, c in summary["components"].items() if n != component)
